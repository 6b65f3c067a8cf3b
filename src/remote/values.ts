// Checks on the addresses a plugin sends back: a reply is input from another
// process, and a malformed address must fail the call, not reach the kernel.
import { isIP } from 'node:net';

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

/** "10.1.0.2/24" -> "10.1.0.2"; a plain address is returned as is. */
export function stripPrefix(s: string): string {
  const i = s.indexOf('/');
  return i < 0 ? s : s.slice(0, i);
}

/** Lower-case "aa:bb:cc:dd:ee:ff", or undefined when `s` is not a 48-bit MAC. */
export function normalizeMac(s: unknown): string | undefined {
  if (typeof s !== 'string' || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) return undefined;
  return s.toLowerCase();
}
