// Rule text in the form iptables-save prints it, so that "is this rule present?" can be
// answered by comparing strings.
//
// iptables-save (1.8, nf_tables) prints the base parameters first, in a fixed order
// (`-s`, `-d`, `-i`, `-o`, `-p`, `-f`, each with its `!`), addresses with their prefix
// (`/32`, `/128`, host bits cleared, IPv6 compressed as inet_ntop does), `-p` by name,
// and the implicit protocol match (`-p tcp --dport 80` -> `-p tcp -m tcp --dport 80`).
// Matches and the target keep the order they were given in. canonicalRule() does the
// same for those cases; everything else is kept as given (write such rules as
// iptables-save prints them). Verified against iptables v1.8.9 in the tests.
import { invalidArgument } from '../errors';
import type { Family } from './firewall';
import { longestZeroRun } from '../net/addr';

// ---- tokens ----------------------------------------------------------------------------

/** Splits rule text like iptables-restore does: whitespace, with "double quoted" tokens. */
export function tokenize(rule: string): string[] {
  const out: string[] = [];
  let i = 0;
  const s = rule;
  while (i < s.length) {
    while (i < s.length && /\s/.test(s[i])) i++;
    if (i >= s.length) break;
    let tok = '';
    let quoted = false;
    if (s[i] === '"') {
      quoted = true;
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === '\\' && i + 1 < s.length) {
          tok += s[i + 1];
          i += 2;
        } else tok += s[i++];
      }
      if (i >= s.length) throw invalidArgument('firewall rule', rule, 'unterminated quote');
      i++;
    } else {
      while (i < s.length && !/\s/.test(s[i])) tok += s[i++];
    }
    out.push(quoted ? quote(tok) : tok);
  }
  return out;
}

/** Quotes a value the way iptables-save does: only when it needs it. */
function quote(v: string): string {
  if (v !== '' && !/[\s"\\']/.test(v)) return v;
  return '"' + v.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

// ---- addresses -------------------------------------------------------------------------

function parseV4(s: string): number[] | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

/** 16 bytes, or undefined. Accepts `::`, and an embedded dotted quad at the end. */
function parseV6(s: string): number[] | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  let tail: number[] = [];
  let text = s;
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.')) {
    const v4 = parseV4(s.slice(lastColon + 1));
    if (!v4 || lastColon < 0) return undefined;
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]];
    text = s.slice(0, lastColon + 1);
    if (!text.endsWith('::')) text = text.slice(0, -1);
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parse = (h: string): number[] | undefined => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  if (!head || !rest) return undefined;
  const want = 8 - tail.length;
  let words: number[];
  if (halves.length === 2) {
    const fill = want - head.length - rest.length;
    if (fill < 1) return undefined;
    words = [...head, ...new Array(fill).fill(0), ...rest, ...tail];
  } else {
    if (head.length !== want) return undefined;
    words = [...head, ...tail];
  }
  const bytes: number[] = [];
  for (const w of words) bytes.push(w >> 8, w & 0xff);
  return bytes;
}

/** IPv6 text as glibc's inet_ntop writes it (lowercase, longest zero run >= 2 compressed). */
function formatV6(b: number[]): string {
  const w: number[] = [];
  for (let i = 0; i < 16; i += 2) w.push((b[i] << 8) | b[i + 1]);
  const { start: best, len: bestLen } = longestZeroRun(w);
  const v4tail = best === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff));
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === best) {
      out += i === 0 ? '::' : ':';
      i += bestLen - 1;
      continue;
    }
    if (v4tail && i === 6) {
      out += `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
      break;
    }
    out += w[i].toString(16) + (i < 7 ? ':' : '');
  }
  return out;
}

function maskBytes(b: number[], prefix: number): number[] {
  return b.map((x, i) => {
    const bitsHere = Math.max(0, Math.min(8, prefix - i * 8));
    return x & ((0xff00 >> bitsHere) & 0xff);
  });
}

function maskToPrefix(mask: number[]): number | undefined {
  let n = 0;
  let ended = false;
  for (const x of mask) {
    for (let bit = 7; bit >= 0; bit--) {
      const set = (x >> bit) & 1;
      if (set && ended) return undefined;
      if (set) n++;
      else ended = true;
    }
  }
  return n;
}

/**
 * `addr[/prefix|/mask]` as iptables-save prints it: network address with host bits
 * cleared and an explicit prefix. Undefined for anything else (host names, lists).
 */
export function canonicalAddress(
  value: string,
  family: Family,
): { text: string; prefix: number } | undefined {
  const [addr, mask, extra] = value.split('/');
  if (extra !== undefined || addr === undefined) return undefined;
  const bytes = family === 'ipv4' ? parseV4(addr) : parseV6(addr);
  if (!bytes) return undefined;
  const total = bytes.length * 8;
  let prefix = total;
  if (mask !== undefined) {
    if (/^\d{1,3}$/.test(mask)) prefix = Number(mask);
    else {
      const m = family === 'ipv4' ? parseV4(mask) : parseV6(mask);
      const p = m ? maskToPrefix(m) : undefined;
      if (p === undefined) return undefined;
      prefix = p;
    }
    if (prefix > total) return undefined;
  }
  const net = maskBytes(bytes, prefix);
  const text = family === 'ipv4' ? net.join('.') : formatV6(net);
  return { text: `${text}/${prefix}`, prefix };
}

// ---- rules -----------------------------------------------------------------------------

const BASE_OPTS: Record<string, 's' | 'd' | 'i' | 'o' | 'p' | 'f'> = {
  '-s': 's',
  '--source': 's',
  '--src': 's',
  '-d': 'd',
  '--destination': 'd',
  '--dst': 'd',
  '-i': 'i',
  '--in-interface': 'i',
  '-o': 'o',
  '--out-interface': 'o',
  '-p': 'p',
  '--protocol': 'p',
  '-f': 'f',
  '--fragment': 'f',
};
const BASE_ORDER = ['s', 'd', 'i', 'o', 'p', 'f'] as const;
const BASE_FLAG: Record<string, string> = { s: '-s', d: '-d', i: '-i', o: '-o', p: '-p', f: '-f' };

const PROTO_NAMES: Record<string, string> = {
  '1': 'icmp',
  '2': 'igmp',
  '6': 'tcp',
  '17': 'udp',
  '33': 'dccp',
  '41': 'ipv6',
  '47': 'gre',
  '50': 'esp',
  '51': 'ah',
  '58': 'ipv6-icmp',
  '132': 'sctp',
  '136': 'udplite',
  icmpv6: 'ipv6-icmp',
  icmp6: 'ipv6-icmp',
};

/** Implicit match module per protocol, and the options that load it. */
const PROTO_MATCH: Record<string, { module: string; options: string[] }> = {
  tcp: {
    module: 'tcp',
    options: ['--sport', '--source-port', '--dport', '--destination-port', '--tcp-flags', '--tcp-option'],
  },
  udp: { module: 'udp', options: ['--sport', '--source-port', '--dport', '--destination-port'] },
  udplite: { module: 'udplite', options: ['--sport', '--source-port', '--dport', '--destination-port'] },
  sctp: {
    module: 'sctp',
    options: ['--sport', '--source-port', '--dport', '--destination-port', '--chunk-types'],
  },
  dccp: {
    module: 'dccp',
    options: ['--sport', '--source-port', '--dport', '--destination-port', '--dccp-types', '--dccp-option'],
  },
  icmp: { module: 'icmp', options: ['--icmp-type'] },
  'ipv6-icmp': { module: 'icmp6', options: ['--icmpv6-type'] },
};

const LONG_ALIASES: Record<string, string> = {
  '--match': '-m',
  '--jump': '-j',
  '--goto': '-g',
  '--source-port': '--sport',
  '--destination-port': '--dport',
};

const CT_ORDER = ['INVALID', 'NEW', 'RELATED', 'ESTABLISHED', 'UNTRACKED', 'SNAT', 'DNAT'];

function sortStates(v: string): string {
  const items = v.split(',').map((x) => x.toUpperCase());
  if (!items.every((x) => CT_ORDER.includes(x))) return v;
  return CT_ORDER.filter((x) => items.includes(x)).join(',');
}

/**
 * The rule as iptables-save would print it (see the file comment for what is normalized).
 * Throws INVALID_ARGUMENT for addresses iptables would expand into several rules
 * (lists, host names), since such a rule could never be found again by its text.
 */
export function canonicalRule(rule: string, family: Family): string {
  const op = 'firewall rule';
  const toks = tokenize(rule);
  const base: Partial<Record<'s' | 'd' | 'i' | 'o' | 'p' | 'f', { neg: boolean; value?: string }>> = {};
  const rest: string[] = [];
  let neg = false;
  for (let k = 0; k < toks.length; k++) {
    let t = toks[k];
    if (t === '!') {
      neg = true;
      continue;
    }
    const key = BASE_OPTS[t];
    // Base parameters may come anywhere (getopt), even after -m or -j; match and target
    // options are long options with other names.
    if (key) {
      if (key === 'f') {
        base.f = { neg };
      } else {
        const value = toks[++k];
        if (value === undefined) throw invalidArgument(op, rule, `${t} needs a value`);
        base[key] = { neg, value };
      }
      neg = false;
      continue;
    }
    t = LONG_ALIASES[t] ?? t;
    if (neg) rest.push('!');
    neg = false;
    rest.push(t);
    if ((t === '--ctstate' || t === '--state') && k + 1 < toks.length) rest.push(sortStates(toks[++k]));
    // iptables-save always quotes u32's program (xt_u32's print does).
    else if (t === '--u32' && k + 1 < toks.length) rest.push(`"${toks[++k].replace(/^"(.*)"$/, '$1')}"`);
  }
  if (neg) rest.push('!');

  // Addresses.
  for (const key of ['s', 'd'] as const) {
    const b = base[key];
    if (!b || b.value === undefined) continue;
    const a = canonicalAddress(b.value, family);
    if (!a)
      throw invalidArgument(
        op,
        rule,
        `-${key} ${b.value}: one ${family === 'ipv4' ? 'IPv4' : 'IPv6'} address or network per rule`,
      );
    if (a.prefix === 0 && !b.neg) delete base[key];
    else b.value = a.text;
  }
  // Protocol.
  if (base.p?.value !== undefined) {
    let p = base.p.value.toLowerCase();
    p = PROTO_NAMES[p] ?? p;
    if ((p === 'all' || p === '0') && !base.p.neg) delete base.p;
    else base.p.value = p;
  }
  // Implicit protocol match, where its first option appears (unless loaded explicitly).
  const proto = base.p && !base.p.neg ? base.p.value : undefined;
  const pm = proto ? PROTO_MATCH[proto] : undefined;
  if (pm) {
    const targetAt = rest.findIndex((r) => r === '-j' || r === '-g');
    const end = targetAt < 0 ? rest.length : targetAt;
    let explicit = false;
    for (let k = 0; k < end; k++) if (rest[k] === '-m' && rest[k + 1] === pm.module) explicit = true;
    if (!explicit) {
      const at = rest.findIndex((r, k) => k < end && pm.options.includes(r));
      if (at >= 0) {
        const insertAt = at > 0 && rest[at - 1] === '!' ? at - 1 : at;
        rest.splice(insertAt, 0, '-m', pm.module);
      }
    }
  }

  const out: string[] = [];
  for (const key of BASE_ORDER) {
    const b = base[key];
    if (!b) continue;
    if (b.neg) out.push('!');
    out.push(BASE_FLAG[key]);
    if (b.value !== undefined) out.push(b.value);
  }
  out.push(...rest);
  return out.join(' ');
}

/** The chain a rule jumps or goes to (`-j X` / `-g X`), if any. */
export function ruleTarget(rule: string): string | undefined {
  const toks = rule.split(/\s+/);
  for (let k = 0; k < toks.length - 1; k++)
    if (toks[k] === '-j' || toks[k] === '-g' || toks[k] === '--jump' || toks[k] === '--goto')
      return toks[k + 1];
  return undefined;
}
