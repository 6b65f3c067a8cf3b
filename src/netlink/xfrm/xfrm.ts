// XFRM (IPsec) over NETLINK_XFRM: security associations (states) and
// policies, with marks, reqid and AEAD/auth/crypt algorithms. Struct layouts
// are <linux/xfrm.h> on 64-bit Linux (xfrm_usersa_info 224 bytes,
// xfrm_userpolicy_info 168, xfrm_user_tmpl 64, xfrm_selector 56).
import { invalidArgument } from '../../errors';
import { AttrWriter, Attrs, malformed } from '../codec';
import { bytesToIp, ipToBytes, parsePrefix } from '../../net/addr';

export const XFRM_MSG_NEWSA = 0x10;
export const XFRM_MSG_DELSA = 0x11;
export const XFRM_MSG_GETSA = 0x12;
export const XFRM_MSG_NEWPOLICY = 0x13;
export const XFRM_MSG_DELPOLICY = 0x14;
export const XFRM_MSG_GETPOLICY = 0x15;
export const XFRM_MSG_UPDPOLICY = 0x19;
export const XFRM_MSG_UPDSA = 0x1a;
export const XFRM_MSG_FLUSHSA = 0x1c;
export const XFRM_MSG_FLUSHPOLICY = 0x1d;

export const XFRMA_ALG_AUTH = 1;
export const XFRMA_ALG_CRYPT = 2;
export const XFRMA_TMPL = 5;
export const XFRMA_ALG_AEAD = 18;
export const XFRMA_ALG_AUTH_TRUNC = 20;
export const XFRMA_MARK = 21;
export const XFRMA_REPLAY_ESN_VAL = 23;
/** xfrm_usersa_info.flags: extended (64-bit) sequence numbers. */
export const XFRM_STATE_ESN = 128;
/** The largest ESN replay window: a bitmap of at most 128 32-bit words. */
export const ESN_WINDOW_MAX = 4096;

export const IPPROTO_ESP = 50;
export const IPPROTO_AH = 51;
export const IPSEC_PROTO_ANY = 255;
const IPPROTOS: Record<string, number> = { tcp: 6, udp: 17, icmp: 1, icmpv6: 58, sctp: 132, any: 0 };

const XFRM_INF = 0xffffffffffffffffn;
const AF_INET = 2;
const AF_INET6 = 10;

export type XfrmProto = 'esp' | 'ah';
export type XfrmMode = 'transport' | 'tunnel';
export type PolicyDir = 'in' | 'out' | 'fwd';
const MODES: Record<XfrmMode, number> = { transport: 0, tunnel: 1 };
const DIRS: Record<PolicyDir, number> = { in: 0, out: 1, fwd: 2 };

export interface XfrmMark {
  value: number;
  mask?: number;
}

export interface XfrmSelector {
  /** CIDRs; default: the state's/policy's addresses as host prefixes, or any. */
  src?: string;
  dst?: string;
  proto?: 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'sctp' | 'any' | number;
  sport?: number;
  dport?: number;
}

export interface XfrmAlgo {
  name: string;
  /** Key bytes (hex string or Buffer). */
  key: Buffer | string;
}
export interface XfrmAead extends XfrmAlgo {
  /** ICV length in bits (64, 96 or 128 for GCM). */
  icvBits: number;
}
export interface XfrmAuth extends XfrmAlgo {
  truncBits?: number;
}

export interface XfrmStateSpec {
  src: string;
  dst: string;
  proto?: XfrmProto;
  spi: number;
  mode?: XfrmMode;
  reqid?: number;
  replayWindow?: number;
  /**
   * Extended (64-bit) sequence numbers with this replay window (1..4096): a
   * busy SA never hits the 2^32 wrap. Then replayWindow is ignored.
   */
  esnWindow?: number;
  aead?: XfrmAead;
  auth?: XfrmAuth;
  crypt?: XfrmAlgo;
  mark?: XfrmMark;
  selector?: XfrmSelector;
}

export interface XfrmStateId {
  src?: string;
  dst: string;
  proto?: XfrmProto;
  spi: number;
  mark?: XfrmMark;
}

export interface XfrmState {
  src: string;
  dst: string;
  proto: XfrmProto | number;
  spi: number;
  mode: XfrmMode | number;
  reqid: number;
  replayWindow: number;
  family: 4 | 6;
  aead?: { name: string; keyBits: number; icvBits: number };
  auth?: { name: string; keyBits: number; truncBits?: number };
  crypt?: { name: string; keyBits: number };
  mark?: XfrmMark;
  /** With ESN: the window and the 64-bit output/input sequence numbers. */
  esn?: { window: number; oseq: bigint; seq: bigint };
  /** replay: duplicates inside the anti-replay window; outOfWindow: packets older than it. */
  stats: { bytes: bigint; packets: bigint; replay: number; outOfWindow: number; integrityFailed: number };
  /** Output sequence counter (replay state), when reported. */
  selector: { src: string; dst: string; proto: number; sport: number; dport: number };
}

export interface XfrmTemplate {
  src?: string;
  dst?: string;
  proto?: XfrmProto;
  spi?: number;
  mode?: XfrmMode;
  reqid?: number;
  optional?: boolean;
}

export interface XfrmPolicySpec {
  selector: XfrmSelector & { src: string; dst: string };
  dir: PolicyDir;
  action?: 'allow' | 'block';
  priority?: number;
  index?: number;
  mark?: XfrmMark;
  templates?: XfrmTemplate[];
}

export interface XfrmPolicyId {
  selector: XfrmSelector & { src: string; dst: string };
  dir: PolicyDir;
  mark?: XfrmMark;
}

export interface XfrmPolicy {
  selector: { src: string; dst: string; proto: number; sport: number; dport: number; family: 4 | 6 };
  dir: PolicyDir | number;
  action: 'allow' | 'block';
  priority: number;
  index: number;
  mark?: XfrmMark;
  templates: { src: string; dst: string; proto: number; spi: number; mode: number; reqid: number }[];
}

function addr16(op: string, what: string, ip: string): { bytes: Buffer; family: 4 | 6 } {
  const b = ipToBytes(ip);
  if (!b) throw invalidArgument(op, ip, `${what} "${ip}" is not an IP address`);
  const out = Buffer.alloc(16);
  b.copy(out);
  return { bytes: out, family: b.length === 4 ? 4 : 6 };
}

function keyBytes(op: string, a: XfrmAlgo): Buffer {
  if (Buffer.isBuffer(a.key)) return a.key;
  const hex = a.key.startsWith('0x') ? a.key.slice(2) : a.key;
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw invalidArgument(op, a.name, `key of ${a.name} is not hex`);
  return Buffer.from(hex, 'hex');
}

function protoNumber(op: string, p: XfrmSelector['proto']): number {
  if (p === undefined) return 0;
  if (typeof p === 'number') return p;
  const n = IPPROTOS[p];
  if (n === undefined)
    throw invalidArgument(op, String(p), `protocol "${p}" is not one of ${Object.keys(IPPROTOS).join(', ')}`);
  return n;
}

/** struct xfrm_selector (56 bytes) at off. */
function writeSelector(op: string, b: Buffer, off: number, sel: XfrmSelector, fallbackFamily: 4 | 6): 4 | 6 {
  let family: 4 | 6 = fallbackFamily;
  for (const [key, at, plenAt] of [
    ['dst', 0, 42],
    ['src', 16, 43],
  ] as const) {
    const v = sel[key];
    if (v === undefined) continue;
    const p = parsePrefix(v);
    if (!p) throw invalidArgument(op, v, `selector ${key} "${v}" is not an address or CIDR`);
    p.ip.copy(b, off + at);
    b.writeUInt8(p.prefixLen, off + plenAt);
    family = p.family;
  }
  if (sel.dport !== undefined) {
    b.writeUInt16BE(sel.dport, off + 32);
    b.writeUInt16BE(0xffff, off + 34);
  }
  if (sel.sport !== undefined) {
    b.writeUInt16BE(sel.sport, off + 36);
    b.writeUInt16BE(0xffff, off + 38);
  }
  b.writeUInt16LE(family === 4 ? AF_INET : AF_INET6, off + 40);
  b.writeUInt8(protoNumber(op, sel.proto), off + 44);
  return family;
}

function readSelector(b: Buffer, off: number) {
  const family = b.readUInt16LE(off + 40) === AF_INET6 ? 6 : 4;
  const len = family === 4 ? 4 : 16;
  return {
    dst: `${bytesToIp(b.subarray(off, off + len))}/${b.readUInt8(off + 42)}`,
    src: `${bytesToIp(b.subarray(off + 16, off + 16 + len))}/${b.readUInt8(off + 43)}`,
    dport: b.readUInt16BE(off + 32),
    sport: b.readUInt16BE(off + 36),
    family: family as 4 | 6,
    proto: b.readUInt8(off + 44),
  };
}

function writeLifetimeInfinite(b: Buffer, off: number): void {
  // Byte and packet limits of 0 would expire the SA/policy at once.
  for (let i = 0; i < 4; i++) b.writeBigUInt64LE(XFRM_INF, off + i * 8);
}

function writeMark(w: AttrWriter, m: XfrmMark | undefined): void {
  if (!m) return;
  const b = Buffer.alloc(8);
  b.writeUInt32LE(m.value >>> 0, 0);
  b.writeUInt32LE((m.mask ?? 0xffffffff) >>> 0, 4);
  w.bytes(XFRMA_MARK, b);
}

function readMark(a: Attrs): XfrmMark | undefined {
  const v = a.get(XFRMA_MARK);
  if (!v || v.length < 8) return undefined;
  return { value: v.readUInt32LE(0), mask: v.readUInt32LE(4) };
}

function algoName(op: string, name: string): Buffer {
  const b = Buffer.alloc(64);
  if (Buffer.byteLength(name) >= 64)
    throw invalidArgument(op, name, 'algorithm name is longer than 63 bytes');
  b.write(name, 'utf8');
  return b;
}

function protoOf(op: string, p: XfrmProto | undefined): number {
  if (p === undefined || p === 'esp') return IPPROTO_ESP;
  if (p === 'ah') return IPPROTO_AH;
  throw invalidArgument(op, String(p), `XFRM protocol "${p}" is not esp or ah`);
}

function checkSpi(op: string, spi: number): void {
  if (!Number.isInteger(spi) || spi < 1 || spi > 0xffffffff)
    throw invalidArgument(op, String(spi), `SPI ${spi} is outside 1..0xffffffff`);
}

/** XFRM_MSG_NEWSA / UPDSA payload: xfrm_usersa_info + algorithm and mark attributes. */
export function encodeStateAdd(spec: XfrmStateSpec): Buffer {
  const op = 'xfrm state add';
  checkSpi(op, spec.spi);
  const src = addr16(op, 'source', spec.src);
  const dst = addr16(op, 'destination', spec.dst);
  if (src.family !== dst.family)
    throw invalidArgument(op, spec.dst, 'source and destination are of different families');
  if (!spec.aead && !spec.auth && !spec.crypt)
    throw invalidArgument(op, spec.dst, 'a state needs an aead, or auth and/or crypt algorithm');
  const mode = MODES[spec.mode ?? 'transport'];
  if (mode === undefined)
    throw invalidArgument(op, spec.dst, `mode "${spec.mode}" is not transport or tunnel`);
  const info = Buffer.alloc(224);
  writeSelector(op, info, 0, spec.selector ?? {}, src.family);
  // xfrm_id at 56: daddr, spi (be32), proto
  dst.bytes.copy(info, 56);
  info.writeUInt32BE(spec.spi >>> 0, 72);
  info.writeUInt8(protoOf(op, spec.proto), 76);
  src.bytes.copy(info, 80); // saddr
  writeLifetimeInfinite(info, 96); // lft: byte/packet limits; add/use expiry stay 0 = never
  info.writeUInt32LE(spec.reqid ?? 0, 208);
  info.writeUInt16LE(src.family === 4 ? AF_INET : AF_INET6, 212);
  info.writeUInt8(mode, 214);
  const esn = spec.esnWindow;
  if (esn !== undefined && !(Number.isInteger(esn) && esn >= 1 && esn <= ESN_WINDOW_MAX))
    throw invalidArgument(op, String(esn), `ESN replay window ${esn} is not in 1..${ESN_WINDOW_MAX}`);
  // With ESN the window is in the ESN attribute; the kernel refuses a legacy window beside it.
  info.writeUInt8(esn === undefined ? (spec.replayWindow ?? 32) : 0, 215);
  if (esn !== undefined) info.writeUInt8(XFRM_STATE_ESN, 216);
  const w = new AttrWriter(512);
  w.raw(info);
  // xfrm_algo_aead / xfrm_algo_auth: name[64], key bits, one more u32 (ICV / truncation bits), key.
  // xfrm_algo (crypt): name[64], key bits, key.
  const algo = (a: XfrmAlgo, extra?: number): Buffer => {
    const key = keyBytes(op, a);
    const head = extra === undefined ? 68 : 72;
    const b = Buffer.alloc(head + key.length);
    algoName(op, a.name).copy(b, 0);
    b.writeUInt32LE(key.length * 8, 64);
    if (extra !== undefined) b.writeUInt32LE(extra, 68);
    key.copy(b, head);
    return b;
  };
  if (spec.aead) w.bytes(XFRMA_ALG_AEAD, algo(spec.aead, spec.aead.icvBits));
  if (spec.auth) w.bytes(XFRMA_ALG_AUTH_TRUNC, algo(spec.auth, spec.auth.truncBits ?? 96));
  if (spec.crypt) w.bytes(XFRMA_ALG_CRYPT, algo(spec.crypt));
  // After the algorithms, as iproute2 sends it.
  if (esn !== undefined) {
    // xfrm_replay_state_esn: bmp_len, oseq, seq, oseq_hi, seq_hi, replay_window; the bitmap (zero)
    // is left out, as iproute2 does: the kernel allocates it from bmp_len.
    const r = Buffer.alloc(24);
    r.writeUInt32LE(Math.ceil(esn / 32), 0);
    r.writeUInt32LE(esn, 20);
    w.bytes(XFRMA_REPLAY_ESN_VAL, r);
  }
  writeMark(w, spec.mark);
  return w.toBuffer();
}

/** XFRM_MSG_DELSA / GETSA payload: xfrm_usersa_id (+ source address and mark). */
export function encodeStateId(op: string, id: XfrmStateId): Buffer {
  checkSpi(op, id.spi);
  const dst = addr16(op, 'destination', id.dst);
  const b = Buffer.alloc(24);
  dst.bytes.copy(b, 0);
  b.writeUInt32BE(id.spi >>> 0, 16);
  b.writeUInt16LE(dst.family === 4 ? AF_INET : AF_INET6, 20);
  b.writeUInt8(protoOf(op, id.proto), 22);
  const w = new AttrWriter(64);
  w.raw(b);
  if (id.src !== undefined) w.bytes(13 /* XFRMA_SRCADDR */, addr16(op, 'source', id.src).bytes);
  writeMark(w, id.mark);
  return w.toBuffer();
}

export function encodeStateFlush(proto: XfrmProto | 'any' = 'any'): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(proto === 'any' ? IPSEC_PROTO_ANY : protoOf('xfrm state flush', proto), 0);
  return b;
}

function readAlg(v: Buffer | undefined, withExtra: boolean) {
  if (!v) return undefined;
  if (v.length < (withExtra ? 72 : 68)) throw malformed('xfrm algorithm', `${v.length} bytes`);
  const nul = v.indexOf(0);
  return {
    name: v.toString('utf8', 0, nul === -1 || nul > 64 ? 64 : nul),
    keyBits: v.readUInt32LE(64),
    extra: withExtra ? v.readUInt32LE(68) : undefined,
  };
}

export function decodeState(payload: Buffer): XfrmState {
  if (payload.length < 224)
    throw malformed('xfrm state', `xfrm_usersa_info needs 224 bytes, got ${payload.length}`);
  const family = payload.readUInt16LE(212) === AF_INET6 ? 6 : 4;
  const len = family === 4 ? 4 : 16;
  const a = Attrs.parse(payload.subarray(224), 'xfrm state');
  const proto = payload.readUInt8(76);
  const mode = payload.readUInt8(214);
  const sel = readSelector(payload, 0);
  const s: XfrmState = {
    dst: bytesToIp(payload.subarray(56, 56 + len)),
    src: bytesToIp(payload.subarray(80, 80 + len)),
    spi: payload.readUInt32BE(72),
    proto: proto === IPPROTO_ESP ? 'esp' : proto === IPPROTO_AH ? 'ah' : proto,
    mode: mode === 0 ? 'transport' : mode === 1 ? 'tunnel' : mode,
    reqid: payload.readUInt32LE(208),
    replayWindow: payload.readUInt8(215),
    family,
    stats: {
      bytes: payload.readBigUInt64LE(160),
      packets: payload.readBigUInt64LE(168),
      outOfWindow: payload.readUInt32LE(192),
      replay: payload.readUInt32LE(196),
      integrityFailed: payload.readUInt32LE(200),
    },
    selector: { src: sel.src, dst: sel.dst, proto: sel.proto, sport: sel.sport, dport: sel.dport },
  };
  const aead = readAlg(a.get(XFRMA_ALG_AEAD), true);
  if (aead) s.aead = { name: aead.name, keyBits: aead.keyBits, icvBits: aead.extra! };
  const auth = readAlg(a.get(XFRMA_ALG_AUTH_TRUNC), true);
  if (auth) s.auth = { name: auth.name, keyBits: auth.keyBits, truncBits: auth.extra };
  else {
    const plain = readAlg(a.get(XFRMA_ALG_AUTH), false);
    if (plain) s.auth = { name: plain.name, keyBits: plain.keyBits };
  }
  const crypt = readAlg(a.get(XFRMA_ALG_CRYPT), false);
  if (crypt) s.crypt = { name: crypt.name, keyBits: crypt.keyBits };
  const mark = readMark(a);
  if (mark) s.mark = mark;
  const r = a.get(XFRMA_REPLAY_ESN_VAL);
  if (r && r.length >= 24) {
    const hiLo = (hi: number, lo: number) => (BigInt(r.readUInt32LE(hi)) << 32n) | BigInt(r.readUInt32LE(lo));
    s.esn = { window: r.readUInt32LE(20), oseq: hiLo(12, 4), seq: hiLo(16, 8) };
  }
  return s;
}

/** XFRM_MSG_NEWPOLICY / UPDPOLICY payload: xfrm_userpolicy_info + templates + mark. */
export function encodePolicyAdd(spec: XfrmPolicySpec): Buffer {
  const op = 'xfrm policy add';
  const dir = DIRS[spec.dir];
  if (dir === undefined)
    throw invalidArgument(op, String(spec.dir), `direction "${spec.dir}" is not in, out or fwd`);
  const info = Buffer.alloc(168);
  const family = writeSelector(op, info, 0, spec.selector, 4);
  writeLifetimeInfinite(info, 56);
  info.writeUInt32LE(spec.priority ?? 0, 152);
  info.writeUInt32LE(spec.index ?? 0, 156);
  info.writeUInt8(dir, 160);
  info.writeUInt8(spec.action === 'block' ? 1 : 0, 161);
  const w = new AttrWriter(512);
  w.raw(info);
  const tmpls = spec.templates ?? [];
  if (tmpls.length > 0) {
    const t = Buffer.alloc(64 * tmpls.length);
    tmpls.forEach((tm, i) => {
      const off = i * 64;
      if (tm.dst !== undefined) addr16(op, 'template destination', tm.dst).bytes.copy(t, off);
      t.writeUInt32BE((tm.spi ?? 0) >>> 0, off + 16);
      t.writeUInt8(protoOf(op, tm.proto), off + 20);
      const tf = tm.src ?? tm.dst;
      t.writeUInt16LE(
        tf && addr16(op, 'template address', tf).family === 6 ? AF_INET6 : family === 6 ? AF_INET6 : AF_INET,
        off + 24,
      );
      if (tm.src !== undefined) addr16(op, 'template source', tm.src).bytes.copy(t, off + 28);
      t.writeUInt32LE(tm.reqid ?? 0, off + 44);
      const mode = MODES[tm.mode ?? 'transport'];
      if (mode === undefined)
        throw invalidArgument(op, String(tm.mode), `template mode "${tm.mode}" is not transport or tunnel`);
      t.writeUInt8(mode, off + 48);
      t.writeUInt8(tm.optional ? 1 : 0, off + 50);
      // Any algorithm: the SA decides.
      t.writeUInt32LE(0xffffffff, off + 52);
      t.writeUInt32LE(0xffffffff, off + 56);
      t.writeUInt32LE(0xffffffff, off + 60);
    });
    w.bytes(XFRMA_TMPL, t);
  }
  writeMark(w, spec.mark);
  return w.toBuffer();
}

/** XFRM_MSG_DELPOLICY / GETPOLICY payload: xfrm_userpolicy_id (+ mark). */
export function encodePolicyId(op: string, id: XfrmPolicyId): Buffer {
  const dir = DIRS[id.dir];
  if (dir === undefined)
    throw invalidArgument(op, String(id.dir), `direction "${id.dir}" is not in, out or fwd`);
  const b = Buffer.alloc(64);
  writeSelector(op, b, 0, id.selector, 4);
  b.writeUInt8(dir, 60);
  const w = new AttrWriter(96);
  w.raw(b);
  writeMark(w, id.mark);
  return w.toBuffer();
}

export function decodePolicy(payload: Buffer): XfrmPolicy {
  if (payload.length < 168)
    throw malformed('xfrm policy', `xfrm_userpolicy_info needs 168 bytes, got ${payload.length}`);
  const a = Attrs.parse(payload.subarray(168), 'xfrm policy');
  const dirN = payload.readUInt8(160);
  const p: XfrmPolicy = {
    selector: readSelector(payload, 0),
    dir: (Object.entries(DIRS).find(([, n]) => n === dirN)?.[0] as PolicyDir | undefined) ?? dirN,
    action: payload.readUInt8(161) === 1 ? 'block' : 'allow',
    priority: payload.readUInt32LE(152),
    index: payload.readUInt32LE(156),
    templates: [],
  };
  const t = a.get(XFRMA_TMPL);
  if (t) {
    if (t.length % 64 !== 0) throw malformed('xfrm policy', `template list of ${t.length} bytes`);
    for (let off = 0; off < t.length; off += 64) {
      const fam = t.readUInt16LE(off + 24) === AF_INET6 ? 16 : 4;
      p.templates.push({
        dst: bytesToIp(t.subarray(off, off + fam)),
        spi: t.readUInt32BE(off + 16),
        proto: t.readUInt8(off + 20),
        src: bytesToIp(t.subarray(off + 28, off + 28 + fam)),
        reqid: t.readUInt32LE(off + 44),
        mode: t.readUInt8(off + 48),
      });
    }
  }
  const mark = readMark(a);
  if (mark) p.mark = mark;
  return p;
}
