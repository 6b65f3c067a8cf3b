// Addresses, prefixes and MACs: parsing, formatting and arithmetic, in one
// neutral place for every layer (netlink encodes with it, IPAM counts with it,
// the API, CLI, drivers and DNS validate with it).
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { CnmdError } from '../errors';

// ---- bytes (the kernel's form) ----

export function ipToBytes(ip: string): Buffer | undefined {
  if (ip.includes(':')) return ipv6ToBytes(ip);
  const parts = ip.split('.');
  if (parts.length !== 4) return undefined;
  const out = Buffer.alloc(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255 || (p.length > 1 && p[0] === '0')) return undefined;
    out[i] = n;
  }
  return out;
}

function ipv6ToBytes(ip: string): Buffer | undefined {
  let s = ip;
  const zone = s.indexOf('%');
  if (zone !== -1) return undefined;
  let tail4: Buffer | undefined;
  const lastColon = s.lastIndexOf(':');
  if (s.slice(lastColon + 1).includes('.')) {
    tail4 = ipToBytes(s.slice(lastColon + 1));
    if (!tail4) return undefined;
    s = s.slice(0, lastColon + 1) + '0:0';
  }
  const dbl = s.indexOf('::');
  if (dbl !== s.lastIndexOf('::')) return undefined;
  const head = dbl === -1 ? s.split(':') : s.slice(0, dbl) === '' ? [] : s.slice(0, dbl).split(':');
  const rest = dbl === -1 ? [] : s.slice(dbl + 2) === '' ? [] : s.slice(dbl + 2).split(':');
  const groups =
    dbl === -1 ? head : [...head, ...new Array(8 - head.length - rest.length).fill('0'), ...rest];
  if (groups.length !== 8 || (dbl !== -1 && head.length + rest.length > 7)) return undefined;
  const out = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(groups[i])) return undefined;
    out.writeUInt16BE(parseInt(groups[i], 16), i * 2);
  }
  if (tail4) tail4.copy(out, 12);
  return out;
}

/**
 * Where an IPv6 address's eight 16-bit groups are written `::`: the longest
 * run of two or more zero groups, the first if tied (RFC 5952, and glibc's
 * inet_ntop). start is -1 when there is none.
 */
export function longestZeroRun(groups: number[]): { start: number; len: number } {
  let start = -1;
  let len = 0;
  for (let i = 0; i < groups.length;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === 0) j++;
    if (j - i > len && j - i >= 2) {
      start = i;
      len = j - i;
    }
    i = j;
  }
  return { start, len };
}

export function bytesToIp(b: Buffer): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16)
    throw new CnmdError('MALFORMED_REPLY', `malformed netlink address: ${b.length}-byte address`, {
      op: 'netlink',
    });
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff)
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const { start: bestStart, len: bestLen } = longestZeroRun(groups);
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function macToBytes(mac: string): Buffer | undefined {
  if (!isMac(mac)) return undefined;
  return Buffer.from(mac.replace(/:/g, ''), 'hex');
}

const HEX2 = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export function bytesToMac(b: Buffer): string {
  if (b.length === 0) return '';
  let s = HEX2[b[0]];
  for (let i = 1; i < b.length; i++) s += ':' + HEX2[b[i]];
  return s;
}

export interface Prefix {
  ip: Buffer;
  prefixLen: number;
  family: 4 | 6;
}

/** "10.0.0.2/24" or "fd00::1/64" (a bare address means a host prefix). */
export function parsePrefix(s: string): Prefix | undefined {
  if (typeof s !== 'string') return undefined;
  const slash = s.indexOf('/');
  const ip = ipToBytes(slash === -1 ? s : s.slice(0, slash));
  if (!ip) return undefined;
  const max = ip.length * 8;
  let prefixLen = max;
  if (slash !== -1) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return undefined;
    prefixLen = Number(p);
    if (prefixLen > max) return undefined;
  }
  return { ip, prefixLen, family: ip.length === 4 ? 4 : 6 };
}

// ---- big integers and CIDRs (IPAM's arithmetic) ----

export interface Cidr {
  family: 4 | 6;
  /** Network address (host bits cleared). */
  base: bigint;
  prefixLen: number;
  /** Number of addresses. */
  size: bigint;
}

export function bits(family: 4 | 6): number {
  return family === 4 ? 32 : 128;
}

export function ipToBig(ip: string): { family: 4 | 6; value: bigint } | undefined {
  const b = ipToBytes(ip);
  if (!b) return undefined;
  return { family: b.length === 4 ? 4 : 6, value: BigInt('0x' + b.toString('hex')) };
}

export function bigToIp(value: bigint, family: 4 | 6): string {
  const len = family === 4 ? 4 : 16;
  const hex = value.toString(16).padStart(len * 2, '0');
  return bytesToIp(Buffer.from(hex, 'hex'));
}

/** Parses "10.1.0.0/16"; `strict` refuses host bits set (as Docker does for --subnet). */
export function parseCidr(s: string, strict = false): Cidr | undefined {
  if (typeof s !== 'string') return undefined;
  // No whitespace and no leading zeros in the length: user input is taken as written, or refused.
  const m = /^([^/\s]+)\/(0|[1-9]\d{0,2})$/.exec(s);
  if (!m) return undefined;
  const ip = ipToBig(m[1]);
  if (!ip) return undefined;
  const prefixLen = Number(m[2]);
  const total = bits(ip.family);
  if (prefixLen > total) return undefined;
  const hostBits = BigInt(total - prefixLen);
  const base = (ip.value >> hostBits) << hostBits;
  if (strict && base !== ip.value) return undefined;
  return { family: ip.family, base, prefixLen, size: 1n << hostBits };
}

export function formatCidr(c: Cidr): string {
  return `${bigToIp(c.base, c.family)}/${c.prefixLen}`;
}

export function contains(c: Cidr, family: 4 | 6, value: bigint): boolean {
  return c.family === family && value >= c.base && value < c.base + c.size;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && a.base < b.base + b.size && b.base < a.base + a.size;
}

/** `c` is inside `outer` (equal counts). */
export function within(c: Cidr, outer: Cidr): boolean {
  return c.family === outer.family && c.base >= outer.base && c.base + c.size <= outer.base + outer.size;
}

// ---- checks and text forms ----

/** 4, 6, or 0 when `s` is not a plain IP address. */
export function ipFamily(s: unknown): 0 | 4 | 6 {
  return typeof s === 'string' ? (isIP(s) as 0 | 4 | 6) : 0;
}

/** The family of "10.1.0.2/24" or "fd00::2/64", 0 when it is not an address with a prefix. */
export function cidrFamily(s: unknown): 0 | 4 | 6 {
  if (typeof s !== 'string') return 0;
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (!m) return 0;
  const f = ipFamily(m[1]);
  if (f === 0 || Number(m[2]) > (f === 4 ? 32 : 128)) return 0;
  return f;
}

/** "10.1.0.2/24" -> "10.1.0.2"; a plain address is returned as is (undefined as undefined). */
export function stripPrefix(s: string): string;
export function stripPrefix(s: string | undefined): string | undefined;
export function stripPrefix(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  const i = s.indexOf('/');
  return i < 0 ? s : s.slice(0, i);
}

/** Lower-case "aa:bb:cc:dd:ee:ff", or undefined when `s` is not a 48-bit MAC. */
export function normalizeMac(s: unknown): string | undefined {
  if (typeof s !== 'string' || !isMac(s)) return undefined;
  return s.toLowerCase();
}

/** A dotted-quad IPv4 address (each part at most 255). */
export function isIPv4(s: string): boolean {
  return (
    /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(s) && s.split('.').every((p) => Number(p) <= 255)
  );
}

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/** A 48-bit MAC written "aa:bb:cc:dd:ee:ff" (either case). */
export function isMac(s: string): boolean {
  return MAC_RE.test(s);
}

/** Docker's container MAC: 02:42 followed by the four bytes of the IPv4 address. */
export function macFromIPv4(cidr: string): string {
  const ip = stripPrefix(cidr).split('.').map(Number);
  return ['02', '42', ...ip.map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** A random unicast, locally administered MAC. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02; // unicast, locally administered
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
