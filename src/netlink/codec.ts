// The netlink wire format: message headers, attributes (TLVs), nesting,
// 4-byte alignment, multipart streams and error/ACK payloads with the
// kernel's extended ACK TLVs. Pure functions over Buffers, no I/O.
import { CnmdError } from '../errors';

export const NLMSG_HDRLEN = 16;
export const NLA_HDRLEN = 4;

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_ECHO = 0x8;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP_FILTERED = 0x20;
// GET modifiers
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
// NEW modifiers
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
// ACK modifiers
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;

export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

// Extended ACK TLVs (enum nlmsgerr_attrs).
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;
export const NLMSGERR_ATTR_COOKIE = 3;
export const NLMSGERR_ATTR_POLICY = 4;
export const NLMSGERR_ATTR_MISS_TYPE = 5;
export const NLMSGERR_ATTR_MISS_NEST = 6;

export function align4(n: number): number {
  return (n + 3) & ~3;
}

export function malformed(what: string, detail: string): CnmdError {
  return new CnmdError('MALFORMED_REPLY', `malformed netlink ${what}: ${detail}`, {
    op: 'netlink decode',
    object: what,
  });
}

/**
 * Builds a sequence of attributes. Writes straight into one growing buffer;
 * nested() back-patches the container's length, so nothing is copied twice.
 */
export class AttrWriter {
  private buf: Buffer;
  private len = 0;

  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  get length(): number {
    return this.len;
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  /** Raw bytes (a fixed struct header), padded to 4 bytes with zeros. */
  raw(data: Uint8Array): this {
    const padded = align4(data.length);
    this.reserve(padded);
    this.buf.set(data, this.len);
    this.buf.fill(0, this.len + data.length, this.len + padded);
    this.len += padded;
    return this;
  }

  private header(type: number, payloadLen: number): number {
    const total = align4(NLA_HDRLEN + payloadLen);
    this.reserve(total);
    this.buf.writeUInt16LE(NLA_HDRLEN + payloadLen, this.len);
    this.buf.writeUInt16LE(type, this.len + 2);
    const at = this.len + NLA_HDRLEN;
    this.buf.fill(0, at + payloadLen, this.len + total);
    this.len += total;
    return at;
  }

  flag(type: number): this {
    this.header(type, 0);
    return this;
  }
  u8(type: number, v: number): this {
    const at = this.header(type, 1);
    this.buf.writeUInt8(v, at);
    return this;
  }
  u16(type: number, v: number): this {
    const at = this.header(type, 2);
    this.buf.writeUInt16LE(v, at);
    return this;
  }
  u16be(type: number, v: number): this {
    const at = this.header(type, 2);
    this.buf.writeUInt16BE(v, at);
    return this;
  }
  u32(type: number, v: number): this {
    const at = this.header(type, 4);
    this.buf.writeUInt32LE(v >>> 0, at);
    return this;
  }
  s32(type: number, v: number): this {
    const at = this.header(type, 4);
    this.buf.writeInt32LE(v, at);
    return this;
  }
  u32be(type: number, v: number): this {
    const at = this.header(type, 4);
    this.buf.writeUInt32BE(v >>> 0, at);
    return this;
  }
  u64(type: number, v: bigint): this {
    const at = this.header(type, 8);
    this.buf.writeBigUInt64LE(v, at);
    return this;
  }
  /** A NUL-terminated string, as the kernel's NLA_STRING/NLA_NUL_STRING expect. */
  str(type: number, s: string): this {
    const bytes = Buffer.from(s, 'utf8');
    const at = this.header(type, bytes.length + 1);
    this.buf.set(bytes, at);
    this.buf[at + bytes.length] = 0;
    return this;
  }
  bytes(type: number, data: Uint8Array): this {
    const at = this.header(type, data.length);
    this.buf.set(data, at);
    return this;
  }
  nested(type: number, fill: (w: AttrWriter) => void): this {
    const start = this.len;
    this.header(type | NLA_F_NESTED, 0);
    fill(this);
    this.buf.writeUInt16LE(this.len - start, start);
    return this;
  }
  /** A nested attribute whose payload starts with a fixed struct (veth's peer ifinfomsg). */
  nestedWithHeader(type: number, header: Uint8Array, fill: (w: AttrWriter) => void): this {
    const start = this.len;
    this.header(type, 0);
    this.raw(header);
    fill(this);
    this.buf.writeUInt16LE(this.len - start, start);
    return this;
  }

  toBuffer(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

/** One netlink message: the 16-byte header, then a payload. */
export interface NlMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  payload: Buffer;
}

export function encodeMessage(
  type: number,
  flags: number,
  seq: number,
  payload: Uint8Array,
  pid = 0,
): Buffer {
  const len = NLMSG_HDRLEN + payload.length;
  const out = Buffer.alloc(align4(len));
  out.writeUInt32LE(len, 0);
  out.writeUInt16LE(type, 4);
  out.writeUInt16LE(flags, 6);
  out.writeUInt32LE(seq >>> 0, 8);
  out.writeUInt32LE(pid >>> 0, 12);
  out.set(payload, NLMSG_HDRLEN);
  return out;
}

/** Splits one datagram into its messages; throws MALFORMED_REPLY on bad lengths. */
export function decodeMessages(buf: Buffer): NlMessage[] {
  const out: NlMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) {
      throw malformed('message', `length ${len} at offset ${off} of a ${buf.length}-byte datagram`);
    }
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  if (off < buf.length) {
    throw malformed('message', `${buf.length - off} trailing bytes at offset ${off} do not hold a header`);
  }
  return out;
}

/** Parsed attributes of one level. Repeated types keep every occurrence. */
export class Attrs {
  private readonly map = new Map<number, Buffer[]>();

  static parse(buf: Buffer, what = 'attribute'): Attrs {
    const a = new Attrs();
    let off = 0;
    while (off + NLA_HDRLEN <= buf.length) {
      const len = buf.readUInt16LE(off);
      const type = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
      if (len < NLA_HDRLEN || off + len > buf.length) {
        throw malformed(what, `attribute type ${type} length ${len} at offset ${off} of ${buf.length}`);
      }
      const value = buf.subarray(off + NLA_HDRLEN, off + len);
      const list = a.map.get(type);
      if (list) list.push(value);
      else a.map.set(type, [value]);
      off += align4(len);
    }
    // The last attribute may lack its padding; anything shorter than a header is garbage.
    if (off < buf.length) throw malformed(what, `${buf.length - off} stray bytes after the last attribute`);
    return a;
  }

  has(type: number): boolean {
    return this.map.has(type);
  }
  get(type: number): Buffer | undefined {
    return this.map.get(type)?.[0];
  }
  all(type: number): Buffer[] {
    return this.map.get(type) ?? [];
  }
  types(): number[] {
    return [...this.map.keys()];
  }

  private sized(type: number, size: number): Buffer | undefined {
    const v = this.get(type);
    if (v === undefined) return undefined;
    if (v.length < size) throw malformed('attribute', `type ${type} has ${v.length} bytes, expected ${size}`);
    return v;
  }
  u8(type: number): number | undefined {
    return this.sized(type, 1)?.readUInt8(0);
  }
  u16(type: number): number | undefined {
    return this.sized(type, 2)?.readUInt16LE(0);
  }
  u16be(type: number): number | undefined {
    return this.sized(type, 2)?.readUInt16BE(0);
  }
  u32(type: number): number | undefined {
    return this.sized(type, 4)?.readUInt32LE(0);
  }
  s32(type: number): number | undefined {
    return this.sized(type, 4)?.readInt32LE(0);
  }
  u32be(type: number): number | undefined {
    return this.sized(type, 4)?.readUInt32BE(0);
  }
  u64(type: number): bigint | undefined {
    return this.sized(type, 8)?.readBigUInt64LE(0);
  }
  str(type: number): string | undefined {
    const v = this.get(type);
    if (v === undefined) return undefined;
    const nul = v.indexOf(0);
    return v.toString('utf8', 0, nul === -1 ? v.length : nul);
  }
  nested(type: number): Attrs | undefined {
    const v = this.get(type);
    return v === undefined ? undefined : Attrs.parse(v, `nested attribute ${type}`);
  }
}

/** The payload of an NLMSG_ERROR message: 0 = ACK, otherwise a negative errno. */
export interface NlError {
  /** Positive errno, 0 for an ACK. */
  errno: number;
  /** The header of the request this answers. */
  request: { len: number; type: number; flags: number; seq: number; pid: number };
  /** NLMSGERR_ATTR_MSG: the kernel's human-readable reason. */
  message?: string;
  /** NLMSGERR_ATTR_OFFS: byte offset of the offending attribute in the request. */
  offset?: number;
  cookie?: Buffer;
  missingType?: number;
}

export function decodeError(msg: NlMessage): NlError {
  const p = msg.payload;
  if (p.length < 4 + NLMSG_HDRLEN)
    throw malformed('error', `payload of ${p.length} bytes is shorter than errno + header`);
  const errno = 0 - p.readInt32LE(0);
  const reqLen = p.readUInt32LE(4);
  const out: NlError = {
    errno,
    request: {
      len: reqLen,
      type: p.readUInt16LE(8),
      flags: p.readUInt16LE(10),
      seq: p.readUInt32LE(12),
      pid: p.readUInt32LE(16),
    },
  };
  if (msg.flags & NLM_F_ACK_TLVS) {
    // The original request follows unless NLM_F_CAPPED; TLVs come after it.
    const echoed = msg.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(reqLen);
    const start = 4 + echoed;
    if (start > p.length) throw malformed('error', `extended ACK starts at ${start} beyond ${p.length}`);
    const tlv = Attrs.parse(p.subarray(start), 'extended ACK');
    out.message = tlv.str(NLMSGERR_ATTR_MSG);
    out.offset = tlv.u32(NLMSGERR_ATTR_OFFS);
    out.cookie = tlv.get(NLMSGERR_ATTR_COOKIE);
    out.missingType = tlv.u32(NLMSGERR_ATTR_MISS_TYPE);
  }
  return out;
}

/** NLMSG_DONE carries an int (an error for a failed dump) and, with extack, TLVs. */
export function decodeDone(msg: NlMessage): NlError | undefined {
  const p = msg.payload;
  if (p.length < 4) return undefined;
  const errno = -p.readInt32LE(0);
  if (errno === 0) return undefined;
  const out: NlError = { errno, request: { len: 0, type: 0, flags: 0, seq: msg.seq, pid: msg.pid } };
  if (msg.flags & NLM_F_ACK_TLVS && p.length > 4) {
    const tlv = Attrs.parse(p.subarray(4), 'extended ACK');
    out.message = tlv.str(NLMSGERR_ATTR_MSG);
    out.offset = tlv.u32(NLMSGERR_ATTR_OFFS);
  }
  return out;
}
