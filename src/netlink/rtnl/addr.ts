// Addresses: RTM_NEWADDR/DELADDR/GETADDR payloads and decoding.
import { invalidArgument } from '../../errors';
import { AttrWriter, Attrs, malformed } from '../codec';
import { bytesToIp, parsePrefix } from '../../net/addr';
import * as C from './constants';

export interface AddrOptions {
  /** Skip IPv6 duplicate address detection (container interfaces). */
  nodad?: boolean;
  label?: string;
  /** IPv4 broadcast; default: computed from the prefix, as `brd +`. */
  broadcast?: string | false;
}

export interface Addr {
  index: number;
  family: 4 | 6;
  address: string;
  prefixLen: number;
  /** "10.0.0.2/24" */
  cidr: string;
  scope: number;
  flags: number;
  label?: string;
  broadcast?: string;
  local?: string;
}

function ifaddrmsg(family: number, prefixLen: number, flags: number, scope: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(family, 0);
  b.writeUInt8(prefixLen, 1);
  b.writeUInt8(flags & 0xff, 2);
  b.writeUInt8(scope, 3);
  b.writeUInt32LE(index, 4);
  return b;
}

function broadcastOf(ip: Buffer, prefixLen: number): Buffer {
  const out = Buffer.from(ip);
  const n = out.readUInt32BE(0);
  const mask = prefixLen === 0 ? 0 : (~0 << (32 - prefixLen)) >>> 0;
  out.writeUInt32BE(((n & mask) | (~mask >>> 0)) >>> 0, 0);
  return out;
}

/** Payload for RTM_NEWADDR (add) or RTM_DELADDR (del) of `cidr` on link `index`. */
export function encodeAddr(
  op: 'addr add' | 'addr del',
  index: number,
  cidr: string,
  opts: AddrOptions = {},
): Buffer {
  const p = parsePrefix(cidr);
  if (!p)
    throw invalidArgument(
      op,
      cidr,
      `"${cidr}" is not an address with prefix (want e.g. 10.0.0.2/24 or fd00::2/64)`,
    );
  if (!Number.isInteger(index) || index <= 0)
    throw invalidArgument(op, cidr, `link index ${index} is not valid`);
  const family = p.family === 4 ? C.AF_INET : C.AF_INET6;
  const flags = opts.nodad ? C.IFA_F_NODAD : 0;
  const w = new AttrWriter(64);
  w.raw(ifaddrmsg(family, p.prefixLen, flags, C.RT_SCOPE_UNIVERSE, index));
  w.bytes(C.IFA_LOCAL, p.ip);
  w.bytes(C.IFA_ADDRESS, p.ip);
  if (p.family === 4 && op === 'addr add' && opts.broadcast !== false && p.prefixLen < 31) {
    if (typeof opts.broadcast === 'string') {
      const b = parsePrefix(opts.broadcast);
      if (!b || b.family !== 4)
        throw invalidArgument(op, cidr, `broadcast "${opts.broadcast}" is not an IPv4 address`);
      w.bytes(C.IFA_BROADCAST, b.ip);
    } else {
      w.bytes(C.IFA_BROADCAST, broadcastOf(p.ip, p.prefixLen));
    }
  }
  if (opts.label !== undefined) w.str(C.IFA_LABEL, opts.label);
  if (flags) w.u32(C.IFA_FLAGS, flags);
  return w.toBuffer();
}

export function encodeAddrDump(family: 0 | 4 | 6 = 0, index = 0): Buffer {
  return ifaddrmsg(family === 4 ? C.AF_INET : family === 6 ? C.AF_INET6 : C.AF_UNSPEC, 0, 0, 0, index);
}

export function decodeAddr(payload: Buffer): Addr {
  if (payload.length < 8) throw malformed('address', `ifaddrmsg needs 8 bytes, got ${payload.length}`);
  const fam = payload.readUInt8(0);
  const prefixLen = payload.readUInt8(1);
  const a = Attrs.parse(payload.subarray(8), 'address');
  // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL the local address.
  const raw = a.get(C.IFA_LOCAL) ?? a.get(C.IFA_ADDRESS);
  if (!raw) throw malformed('address', 'no IFA_ADDRESS/IFA_LOCAL');
  const address = bytesToIp(raw);
  const out: Addr = {
    index: payload.readUInt32LE(4),
    family: fam === C.AF_INET6 ? 6 : 4,
    address,
    prefixLen,
    cidr: `${address}/${prefixLen}`,
    scope: payload.readUInt8(3),
    flags: a.u32(C.IFA_FLAGS) ?? payload.readUInt8(2),
  };
  const label = a.str(C.IFA_LABEL);
  if (label) out.label = label;
  const brd = a.get(C.IFA_BROADCAST);
  if (brd) out.broadcast = bytesToIp(brd);
  return out;
}
