// The embedded DNS's answers, computed at query time from the controller's
// records (so they change the moment an endpoint joins or leaves). Lookup
// rules are libnetwork's (resolver.go, sandbox_dns_unix.go): for "a.b.c",
// the full name on every network the asking sandbox shares, then "a.b" on
// network "c", then "a" on network "b.c"; aliases before names;
// case-insensitive; several addresses shuffled.
import { bytesToIp } from '../net/addr';

export interface DnsEndpoint {
  sandboxId: string;
  /** Sandbox name and host name; aliases are network-scoped. */
  names: string[];
  aliases: string[];
  ipv4?: string;
  ipv6?: string;
}

export interface DnsNetwork {
  id: string;
  name: string;
  endpoints: DnsEndpoint[];
}

export interface RecordSource {
  /**
   * The networks the sandbox is attached to that have the embedded DNS. The
   * same array while nothing changed, a new one after any change, never
   * mutated in place: resolvers cache answers on its identity.
   */
  networksOf(sandboxId: string): DnsNetwork[];
}

export interface Found {
  /** The name exists on a shared network (answer authoritatively, even with no address of the asked family). */
  exists: boolean;
  addresses: string[];
}

export function shuffle<T>(a: T[]): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function matchOn(net: DnsNetwork, name: string, family: 4 | 6): Found {
  const hits = (pick: (e: DnsEndpoint) => boolean) => net.endpoints.filter(pick);
  // Aliases win over names (libnetwork resolves service aliases first).
  let eps = hits((e) => e.aliases.some((a) => a.toLowerCase() === name));
  if (!eps.length) eps = hits((e) => e.names.some((n) => n.toLowerCase() === name));
  const addrs = eps.map((e) => (family === 4 ? e.ipv4 : e.ipv6)).filter((x): x is string => !!x);
  return { exists: eps.length > 0, addresses: addrs };
}

/** Addresses of `qname` (no trailing dot) as seen from sandboxId, shuffled. */
export function lookup(src: RecordSource, sandboxId: string, qname: string, family: 4 | 6): Found {
  const all = find(src.networksOf(sandboxId), qname.replace(/\.$/, '').toLowerCase(), family);
  shuffle(all.addresses);
  return all;
}

/** Addresses of `name` (lower case, no trailing dot) on nets, in record order: callers shuffle. */
export function find(nets: DnsNetwork[], name: string, family: 4 | 6): Found {
  const all: Found = { exists: false, addresses: [] };
  const merge = (f: Found) => {
    all.exists ||= f.exists;
    for (const a of f.addresses) if (!all.addresses.includes(a)) all.addresses.push(a);
  };
  for (const n of nets) merge(matchOn(n, name, family));
  if (!all.exists) {
    // "a.b" on network "c", then "a" on network "b.c".
    const labels = name.split('.');
    for (let cut = labels.length - 1; cut >= 1 && !all.exists; cut--) {
      const host = labels.slice(0, cut).join('.');
      const netName = labels.slice(cut).join('.');
      for (const n of nets) if (n.name.toLowerCase() === netName) merge(matchOn(n, host, family));
    }
  }
  return all;
}

/** PTR: "<name>.<network>." for an endpoint address on a network the sandbox shares. */
export function reverse(src: RecordSource, sandboxId: string, ip: string): string | undefined {
  return reverseOn(src.networksOf(sandboxId), ip);
}

/** reverse() on a view of the records the caller already holds (the fast path's). */
export function reverseOn(nets: DnsNetwork[], ip: string): string | undefined {
  for (const n of nets) {
    for (const e of n.endpoints) {
      if (e.ipv4 === ip || e.ipv6 === ip) return `${e.names[0]}.${n.name}`;
    }
  }
  return undefined;
}

/** "4.3.2.1.in-addr.arpa" -> "1.2.3.4"; nibble format for ip6.arpa. */
export function ptrToIp(qname: string): string | undefined {
  const n = qname.replace(/\.$/, '').toLowerCase();
  if (n.endsWith('.in-addr.arpa')) {
    const parts = n.slice(0, -'.in-addr.arpa'.length).split('.');
    if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) return undefined;
    return parts.reverse().join('.');
  }
  if (n.endsWith('.ip6.arpa')) {
    const nib = n.slice(0, -'.ip6.arpa'.length).split('.');
    if (nib.length !== 32 || nib.some((x) => !/^[0-9a-f]$/.test(x))) return undefined;
    const hex = nib.reverse().join('');
    const groups = hex.match(/.{4}/g)!.map((g) => g.replace(/^0+(?=.)/, ''));
    return bytesToIp(Buffer.from(groups.map((g) => g.padStart(4, '0')).join(''), 'hex'));
  }
  return undefined;
}
