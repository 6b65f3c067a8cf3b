// The embedded DNS's fast path: the queries nearly every client sends (one
// question, class IN, type A, AAAA or PTR, at most an EDNS0 OPT) answered
// straight from the query's bytes, without decoding into objects and encoding
// back. A query costs a scan of its name, a Map lookup and one small buffer.
//
// It answers only what it answers exactly as the general path
// (resolver.ts, dns-packet) would, save for name compression (answers point
// at the question, 0xc00c, as most servers do). Anything else, multiple
// questions, other types or classes, names with bytes outside [A-Za-z0-9_-],
// a name the sandbox's networks do not know (forwarded), an answer that
// would need truncation, or a malformed query, is left to the general path,
// so behaviour there is unchanged.
//
// Answers are cached per sandbox by (name, type) while the sandbox's records
// are unchanged: RecordSource.networksOf returns a new array after any
// change, and a new array empties the cache.
import { ipToBytes } from '../net/addr';
import { DnsNetwork, find, ptrToIp, RecordSource, reverseOn, shuffle } from './records';

export const TTL = 600;
/** The UDP size every client may send (RFC 1035), and our limit without EDNS0. */
export const UDP_MAX = 512;
/** The UDP payload size our OPT advertises: the daemon reads datagrams of any size. */
export const EDNS_UDP_SIZE = 4096;
/** Names cached per sandbox; past it the cache starts over (a flood of random names cannot grow it). */
export const CACHE_MAX = 1024;
const TCP_MAX = 65535;

export const TYPE = { A: 1, PTR: 12, AAAA: 28, OPT: 41 } as const;
const CLASS_IN = 1;
const HEADER = 12;
/** Longest name on the wire, the final zero included (RFC 1035 3.1). */
const NAME_MAX = 255;
const OPT_RR = 11;
/** An answer's owner: a compression pointer to the question's name, right after the header. */
const PTR_TO_QUESTION = 0xc00c;

/** Bytes a label may hold on the fast path: letters, digits, '-' and '_' (others go the general way). */
const NAME_BYTE = new Uint8Array(256);
for (const c of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_')
  NAME_BYTE[c.charCodeAt(0)] = 1;

export interface Question {
  /** Offset just past QTYPE and QCLASS. */
  end: number;
  qtype: number;
  /** The name's wire form and QTYPE as a latin1 string, lower case: the cache key. */
  key: string;
  /** The query's RD bit, echoed. */
  rd: number;
  /** EDNS0: the client's UDP payload size (at least 512), 0 when the query has no OPT. */
  udpSize: number;
  /** EDNS0 DO bit, copied into our OPT (RFC 3225). */
  dnssecOk: boolean;
}

/** The end of a fast-path name starting at off (past its zero byte), or -1. */
function nameEnd(msg: Buffer, off: number): number {
  const start = off;
  for (;;) {
    if (off >= msg.length) return -1;
    const len = msg[off];
    if (len === 0) break;
    // 0x40 and up: compression pointers and reserved label types, never in a plain query.
    if (len > 63 || off + 1 + len > msg.length) return -1;
    for (let i = off + 1; i <= off + len; i++) if (!NAME_BYTE[msg[i]]) return -1;
    off += len + 1;
  }
  if (off === start || off + 1 - start > NAME_MAX) return -1; // the root, or too long
  return off + 1;
}

/**
 * The question of a query the fast path may answer, or undefined. Header:
 * QR, opcode and TC clear, QDCOUNT 1, ANCOUNT and NSCOUNT 0, ARCOUNT 0 or 1
 * (an OPT, version 0); nothing after.
 */
export function parseQuery(msg: Buffer): Question | undefined {
  if (msg.length < HEADER + 6) return undefined;
  if ((msg[2] & 0xfa) !== 0) return undefined;
  if (msg[4] !== 0 || msg[5] !== 1 || (msg[6] | msg[7] | msg[8] | msg[9] | msg[10]) !== 0 || msg[11] > 1)
    return undefined;
  const ne = nameEnd(msg, HEADER);
  if (ne < 0 || ne + 4 > msg.length) return undefined;
  const qtype = (msg[ne] << 8) | msg[ne + 1];
  if (qtype !== TYPE.A && qtype !== TYPE.AAAA && qtype !== TYPE.PTR) return undefined;
  if (((msg[ne + 2] << 8) | msg[ne + 3]) !== CLASS_IN) return undefined;
  const end = ne + 4;
  let udpSize = 0;
  let dnssecOk = false;
  if (msg[11] === 1) {
    const opt = parseOpt(msg, end);
    if (!opt) return undefined;
    udpSize = opt.udpSize;
    dnssecOk = opt.dnssecOk;
  } else if (end !== msg.length) {
    return undefined;
  }
  // toLowerCase leaves length bytes and QTYPE alone: both are below 'A' or not letters.
  const key = msg.toString('latin1', HEADER, ne + 2).toLowerCase();
  return { end, qtype, key, rd: msg[2] & 0x01, udpSize, dnssecOk };
}

/**
 * The OPT record at off, the last thing in the message: root name, type 41,
 * CLASS the payload size, TTL extended rcode / version / flags, RDATA options
 * (cookies and the like: ignored, as a server without them may).
 */
function parseOpt(msg: Buffer, off: number): { udpSize: number; dnssecOk: boolean } | undefined {
  if (off + OPT_RR > msg.length || msg[off] !== 0 || msg.readUInt16BE(off + 1) !== TYPE.OPT) return undefined;
  // Version 0 only: another wants BADVERS, which the general path decides about.
  if (msg[off + 6] !== 0) return undefined;
  if (off + OPT_RR + msg.readUInt16BE(off + 9) !== msg.length) return undefined;
  return { udpSize: Math.max(UDP_MAX, msg.readUInt16BE(off + 3)), dnssecOk: (msg[off + 7] & 0x80) !== 0 };
}

/** "\x04beta\x05front\x00..." -> "beta.front". */
function dotted(key: string): string {
  const labels: string[] = [];
  for (let i = 0; key.charCodeAt(i) !== 0; i += key.charCodeAt(i) + 1)
    labels.push(key.slice(i + 1, i + 1 + key.charCodeAt(i)));
  return labels.join('.');
}

/** A name in wire form, or undefined when it does not fit one (the general path then answers). */
export function encodeName(name: string): Buffer | undefined {
  const labels = name.replace(/\.$/, '').split('.');
  const parts: Buffer[] = [];
  for (const l of labels) {
    const b = Buffer.from(l, 'utf8');
    if (b.length === 0 || b.length > 63) return undefined;
    parts.push(Buffer.from([b.length]), b);
  }
  const out = Buffer.concat([...parts, Buffer.from([0])]);
  return out.length <= NAME_MAX ? out : undefined;
}

/** One answer record, whole: owner pointer, type, class IN, TTL, RDATA. */
function record(qtype: number, rdata: Buffer): Buffer {
  const rr = Buffer.alloc(12 + rdata.length);
  rr.writeUInt16BE(PTR_TO_QUESTION, 0);
  rr.writeUInt16BE(qtype, 2);
  rr.writeUInt16BE(CLASS_IN, 4);
  rr.writeUInt32BE(TTL, 6);
  rr.writeUInt16BE(rdata.length, 10);
  rdata.copy(rr, 12);
  return rr;
}

/** The answer records for a question (in record order), or null: not for the fast path. */
export function buildAnswers(nets: DnsNetwork[], q: Question): Buffer[] | null {
  const name = dotted(q.key);
  if (q.qtype === TYPE.PTR) {
    const ip = ptrToIp(name);
    const target = ip && reverseOn(nets, ip);
    const wire = target ? encodeName(target) : undefined;
    return wire ? [record(TYPE.PTR, wire)] : null;
  }
  const family = q.qtype === TYPE.A ? 4 : 6;
  const found = find(nets, name, family);
  if (!found.exists) return null;
  const out: Buffer[] = [];
  for (const a of found.addresses) {
    const b = ipToBytes(a);
    if (!b || b.length !== (family === 4 ? 4 : 16)) return null;
    out.push(record(q.qtype, b));
  }
  return out;
}

/**
 * Header and question copied, then the records and our OPT; undefined past limit (truncation is the general
 * path's).
 */
export function writeReply(msg: Buffer, q: Question, answers: Buffer[], limit: number): Buffer | undefined {
  let size = q.end + (q.udpSize ? OPT_RR : 0);
  for (const rr of answers) size += rr.length;
  if (size > limit) return undefined;
  const out = Buffer.allocUnsafe(size);
  msg.copy(out, 0, 0, q.end);
  out[2] = 0x84 | q.rd; // QR, AA, RD as asked
  out[3] = 0x80; // RA, NOERROR
  out.writeUInt16BE(answers.length, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(q.udpSize ? 1 : 0, 10);
  let off = q.end;
  for (const rr of answers) {
    out.set(rr, off);
    off += rr.length;
  }
  if (q.udpSize) writeOpt(out, off, q.dnssecOk);
  return out;
}

function writeOpt(out: Buffer, off: number, dnssecOk: boolean): void {
  out[off] = 0;
  out.writeUInt16BE(TYPE.OPT, off + 1);
  out.writeUInt16BE(EDNS_UDP_SIZE, off + 3);
  out.writeUInt32BE(dnssecOk ? 0x8000 : 0, off + 5);
  out.writeUInt16BE(0, off + 9);
}

/** One sandbox's fast path: its answer cache, valid while its records are unchanged. */
export class FastPath {
  private readonly records: RecordSource;
  private readonly sandboxId: string;
  private nets?: DnsNetwork[];
  private readonly cache = new Map<string, Buffer[] | null>();

  constructor(records: RecordSource, sandboxId: string) {
    this.records = records;
    this.sandboxId = sandboxId;
  }

  /** The reply to msg, or undefined: the general path must answer it. */
  answer(msg: Buffer, tcp: boolean): Buffer | undefined {
    const q = parseQuery(msg);
    if (!q) return undefined;
    const answers = this.answers(q);
    if (!answers) return undefined;
    // Round robin as the general path: every reply in a fresh random order.
    if (answers.length > 1) shuffle(answers);
    return writeReply(msg, q, answers, tcp ? TCP_MAX : q.udpSize || UDP_MAX);
  }

  private answers(q: Question): Buffer[] | null {
    const nets = this.records.networksOf(this.sandboxId);
    if (nets !== this.nets) {
      this.cache.clear();
      this.nets = nets;
    }
    let hit = this.cache.get(q.key);
    if (hit === undefined) {
      if (this.cache.size >= CACHE_MAX) this.cache.clear();
      hit = buildAnswers(nets, q);
      this.cache.set(q.key, hit);
    }
    return hit;
  }
}
