// IP arithmetic on bigints for IPAM: parse/format, CIDR, overlap.
import { bytesToIp, ipToBytes } from '../netlink/codec';

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
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s.trim());
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
