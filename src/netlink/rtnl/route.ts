// Routes: RTM_NEWROUTE/DELROUTE/GETROUTE payloads and decoding.
import { invalidArgument } from '../../errors';
import { AttrWriter, Attrs, malformed } from '../codec';
import { bytesToIp, ipToBytes, parsePrefix } from '../../net/addr';
import * as C from './constants';

export type RouteScope = 'universe' | 'link' | 'host';
export type RouteType = 'unicast' | 'local' | 'blackhole' | 'unreachable' | 'prohibit';

export interface RouteSpec {
  /** "default", a CIDR, or undefined for the default route. */
  dst?: string;
  gateway?: string;
  oifIndex?: number;
  /** Routing table id (default: main). */
  table?: number;
  scope?: RouteScope;
  type?: RouteType;
  /** Preferred source address. */
  src?: string;
  /** Metric. */
  priority?: number;
  /** RTPROT_* (default: boot, as `ip route add`). */
  protocol?: number;
  /** Needed only for a default route without a gateway: 4 (default) or 6. */
  family?: 4 | 6;
}

export interface Route {
  family: 4 | 6;
  dst: string;
  gateway?: string;
  oifIndex?: number;
  table: number;
  protocol: number;
  scope: RouteScope | number;
  type: RouteType | number;
  src?: string;
  priority?: number;
}

const SCOPES: Record<RouteScope, number> = {
  universe: C.RT_SCOPE_UNIVERSE,
  link: C.RT_SCOPE_LINK,
  host: C.RT_SCOPE_HOST,
};
const TYPES: Record<RouteType, number> = {
  unicast: C.RTN_UNICAST,
  local: C.RTN_LOCAL,
  blackhole: C.RTN_BLACKHOLE,
  unreachable: C.RTN_UNREACHABLE,
  prohibit: C.RTN_PROHIBIT,
};
const RT_SCOPE_NOWHERE = 255;

function rtmsg(
  family: number,
  dstLen: number,
  table: number,
  protocol: number,
  scope: number,
  type: number,
): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeUInt8(dstLen, 1);
  b.writeUInt8(table < 256 ? table : C.RT_TABLE_UNSPEC, 4);
  b.writeUInt8(protocol, 5);
  b.writeUInt8(scope, 6);
  b.writeUInt8(type, 7);
  return b;
}

export type RouteOp = 'route add' | 'route replace' | 'route del';

export function encodeRoute(op: RouteOp, spec: RouteSpec): Buffer {
  const object = spec.dst ?? 'default';
  let dst: { ip: Buffer; prefixLen: number } | undefined;
  let family: 4 | 6 | undefined = spec.family;
  if (spec.dst !== undefined && spec.dst !== 'default') {
    const p = parsePrefix(spec.dst);
    if (!p)
      throw invalidArgument(
        op,
        object,
        `destination "${spec.dst}" is not a CIDR (want e.g. 10.1.0.0/16) or "default"`,
      );
    dst = p;
    family = p.family;
  }
  let gw: Buffer | undefined;
  if (spec.gateway !== undefined) {
    gw = ipToBytes(spec.gateway);
    if (!gw) throw invalidArgument(op, object, `gateway "${spec.gateway}" is not an IP address`);
    const gf = gw.length === 4 ? 4 : 6;
    if (family !== undefined && family !== gf)
      throw invalidArgument(
        op,
        object,
        `gateway ${spec.gateway} is IPv${gf} but the destination is IPv${family}`,
      );
    family = gf;
  }
  family ??= 4;
  if (op !== 'route del' && !gw && spec.oifIndex === undefined && (spec.type ?? 'unicast') === 'unicast') {
    throw invalidArgument(op, object, 'a unicast route needs a gateway or an output device');
  }
  const table = spec.table ?? C.RT_TABLE_MAIN;
  if (!Number.isInteger(table) || table < 1 || table > 0xffffffff)
    throw invalidArgument(op, object, `table ${table} is not valid`);
  let scope: number;
  if (spec.scope !== undefined) {
    if (!(spec.scope in SCOPES))
      throw invalidArgument(
        op,
        object,
        `scope "${spec.scope}" is not one of ${Object.keys(SCOPES).join(', ')}`,
      );
    scope = SCOPES[spec.scope];
  } else if (op === 'route del') scope = RT_SCOPE_NOWHERE;
  else if (spec.type === 'local') scope = C.RT_SCOPE_HOST;
  else if ((spec.type ?? 'unicast') !== 'unicast') scope = C.RT_SCOPE_UNIVERSE;
  else scope = gw ? C.RT_SCOPE_UNIVERSE : C.RT_SCOPE_LINK;
  let type = 0;
  if (spec.type !== undefined) {
    if (!(spec.type in TYPES))
      throw invalidArgument(
        op,
        object,
        `route type "${spec.type}" is not one of ${Object.keys(TYPES).join(', ')}`,
      );
    type = TYPES[spec.type];
  } else if (op !== 'route del') type = C.RTN_UNICAST;
  const protocol = spec.protocol ?? (op === 'route del' ? 0 : C.RTPROT_BOOT);
  const w = new AttrWriter(64);
  w.raw(rtmsg(family === 4 ? C.AF_INET : C.AF_INET6, dst?.prefixLen ?? 0, table, protocol, scope, type));
  if (table >= 256) w.u32(C.RTA_TABLE, table);
  if (dst && dst.prefixLen > 0) w.bytes(C.RTA_DST, dst.ip);
  if (gw) w.bytes(C.RTA_GATEWAY, gw);
  if (spec.oifIndex !== undefined) w.u32(C.RTA_OIF, spec.oifIndex);
  if (spec.src !== undefined) {
    const s = ipToBytes(spec.src);
    if (!s) throw invalidArgument(op, object, `source "${spec.src}" is not an IP address`);
    w.bytes(C.RTA_PREFSRC, s);
  }
  if (spec.priority !== undefined) w.u32(C.RTA_PRIORITY, spec.priority);
  return w.toBuffer();
}

export function encodeRouteDump(family: 0 | 4 | 6 = 0): Buffer {
  return rtmsg(family === 4 ? C.AF_INET : family === 6 ? C.AF_INET6 : C.AF_UNSPEC, 0, 0, 0, 0, 0);
}

function named<T extends string>(table: Record<T, number>, v: number): T | number {
  return (Object.entries(table) as [T, number][]).find(([, n]) => n === v)?.[0] ?? v;
}

export function decodeRoute(payload: Buffer): Route {
  if (payload.length < 12) throw malformed('route', `rtmsg needs 12 bytes, got ${payload.length}`);
  const family = payload.readUInt8(0) === C.AF_INET6 ? 6 : 4;
  const dstLen = payload.readUInt8(1);
  const a = Attrs.parse(payload.subarray(12), 'route');
  const dst = a.get(C.RTA_DST);
  const gw = a.get(C.RTA_GATEWAY);
  const src = a.get(C.RTA_PREFSRC);
  const r: Route = {
    family,
    dst: dst
      ? `${bytesToIp(dst)}/${dstLen}`
      : dstLen === 0
        ? 'default'
        : `${family === 4 ? '0.0.0.0' : '::'}/${dstLen}`,
    table: a.u32(C.RTA_TABLE) ?? payload.readUInt8(4),
    protocol: payload.readUInt8(5),
    scope: named(SCOPES, payload.readUInt8(6)),
    type: named(TYPES, payload.readUInt8(7)),
  };
  if (gw) r.gateway = bytesToIp(gw);
  const oif = a.u32(C.RTA_OIF);
  if (oif !== undefined) r.oifIndex = oif;
  if (src) r.src = bytesToIp(src);
  const prio = a.u32(C.RTA_PRIORITY);
  if (prio !== undefined) r.priority = prio;
  return r;
}
