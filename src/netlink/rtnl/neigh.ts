// Neighbours (ARP/NDP entries, proxy entries) and the bridge forwarding
// database (AF_BRIDGE neighbours, with a VXLAN destination for overlays).
import { invalidArgument } from '../../errors';
import { AttrWriter, Attrs, malformed } from '../codec';
import { bytesToIp, bytesToMac, ipToBytes, macToBytes } from '../../net/addr';
import * as C from './constants';

export type NeighState = 'permanent' | 'noarp' | 'reachable' | 'stale';
const STATES: Record<NeighState, number> = {
  permanent: C.NUD_PERMANENT,
  noarp: C.NUD_NOARP,
  reachable: C.NUD_REACHABLE,
  stale: C.NUD_STALE,
};

export interface NeighSpec {
  index: number;
  ip: string;
  /** Required unless proxy. */
  mac?: string;
  state?: NeighState;
  /** A proxy ARP/NDP entry (`ip neigh add proxy IP dev X`). */
  proxy?: boolean;
}

export interface FdbSpec {
  index: number;
  mac: string;
  /** Remote VTEP for a VXLAN device. */
  dst?: string;
  vni?: number;
  port?: number;
  vlan?: number;
  /** The entry belongs to the device itself (vxlan), default; false: to its master bridge. */
  self?: boolean;
  master?: boolean;
  /** Default permanent; "noarp" is `static`. */
  state?: 'permanent' | 'noarp' | 'reachable';
}

export interface Neigh {
  family: number;
  index: number;
  ip?: string;
  mac?: string;
  state: number;
  flags: number;
  proxy: boolean;
  permanent: boolean;
  dst?: string;
  vni?: number;
  port?: number;
  vlan?: number;
  masterIndex?: number;
}

function ndmsg(family: number, index: number, state: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt16LE(state, 8);
  b.writeUInt8(flags, 10);
  return b;
}

export function encodeNeigh(op: 'neigh add' | 'neigh del', spec: NeighSpec): Buffer {
  const ip = ipToBytes(spec.ip);
  if (!ip) throw invalidArgument(op, spec.ip, `"${spec.ip}" is not an IP address`);
  if (!Number.isInteger(spec.index) || spec.index <= 0)
    throw invalidArgument(op, spec.ip, `link index ${spec.index} is not valid`);
  const state = spec.state === undefined ? C.NUD_PERMANENT : STATES[spec.state];
  if (state === undefined)
    throw invalidArgument(
      op,
      spec.ip,
      `state "${spec.state}" is not one of ${Object.keys(STATES).join(', ')}`,
    );
  const w = new AttrWriter(48);
  w.raw(ndmsg(ip.length === 4 ? C.AF_INET : C.AF_INET6, spec.index, state, spec.proxy ? C.NTF_PROXY : 0));
  w.bytes(C.NDA_DST, ip);
  if (spec.mac !== undefined) {
    const mac = macToBytes(spec.mac);
    if (!mac) throw invalidArgument(op, spec.ip, `"${spec.mac}" is not a MAC address`);
    w.bytes(C.NDA_LLADDR, mac);
  } else if (op === 'neigh add' && !spec.proxy) {
    throw invalidArgument(op, spec.ip, 'a neighbour entry needs a MAC address (or proxy: true)');
  }
  return w.toBuffer();
}

export function encodeFdb(op: 'fdb add' | 'fdb append' | 'fdb replace' | 'fdb del', spec: FdbSpec): Buffer {
  const mac = macToBytes(spec.mac);
  if (!mac) throw invalidArgument(op, spec.mac, `"${spec.mac}" is not a MAC address`);
  if (!Number.isInteger(spec.index) || spec.index <= 0)
    throw invalidArgument(op, spec.mac, `link index ${spec.index} is not valid`);
  const state = { permanent: C.NUD_PERMANENT, noarp: C.NUD_NOARP, reachable: C.NUD_REACHABLE }[
    spec.state ?? 'permanent'
  ];
  if (state === undefined)
    throw invalidArgument(op, spec.mac, `state "${spec.state}" is not one of permanent, noarp, reachable`);
  let flags = 0;
  if (spec.self ?? !spec.master) flags |= C.NTF_SELF;
  if (spec.master) flags |= C.NTF_MASTER;
  const w = new AttrWriter(64);
  w.raw(ndmsg(C.AF_BRIDGE, spec.index, state, flags));
  w.bytes(C.NDA_LLADDR, mac);
  if (spec.dst !== undefined) {
    const dst = ipToBytes(spec.dst);
    if (!dst) throw invalidArgument(op, spec.mac, `destination "${spec.dst}" is not an IP address`);
    w.bytes(C.NDA_DST, dst);
  }
  if (spec.vlan !== undefined) w.u16(C.NDA_VLAN, spec.vlan);
  if (spec.port !== undefined) w.u16be(C.NDA_PORT, spec.port);
  if (spec.vni !== undefined) w.u32(C.NDA_VNI, spec.vni);
  return w.toBuffer();
}

export function encodeNeighDump(family: number, index = 0): Buffer {
  const w = new AttrWriter(32);
  w.raw(ndmsg(family, 0, 0, 0));
  // With strict checking the kernel filters by NDA_IFINDEX for us.
  if (index) w.u32(C.NDA_IFINDEX, index);
  return w.toBuffer();
}

export function encodeProxyNeighDump(family: number): Buffer {
  return ndmsg(family, 0, 0, C.NTF_PROXY);
}

export function decodeNeigh(payload: Buffer): Neigh {
  if (payload.length < 12) throw malformed('neighbour', `ndmsg needs 12 bytes, got ${payload.length}`);
  const family = payload.readUInt8(0);
  const state = payload.readUInt16LE(8);
  const flags = payload.readUInt8(10);
  const a = Attrs.parse(payload.subarray(12), 'neighbour');
  const n: Neigh = {
    family,
    index: payload.readInt32LE(4),
    state,
    flags,
    proxy: (flags & C.NTF_PROXY) !== 0,
    permanent: (state & C.NUD_PERMANENT) !== 0,
  };
  const dst = a.get(C.NDA_DST);
  const mac = a.get(C.NDA_LLADDR);
  if (mac && mac.length === 6) n.mac = bytesToMac(mac);
  if (dst) {
    if (family === C.AF_BRIDGE) n.dst = bytesToIp(dst);
    else n.ip = bytesToIp(dst);
  }
  const vni = a.u32(C.NDA_VNI);
  if (vni !== undefined) n.vni = vni;
  const port = a.u16be(C.NDA_PORT);
  if (port !== undefined) n.port = port;
  const vlan = a.u16(C.NDA_VLAN);
  if (vlan !== undefined) n.vlan = vlan;
  const master = a.u32(C.NDA_MASTER);
  if (master !== undefined) n.masterIndex = master;
  return n;
}
