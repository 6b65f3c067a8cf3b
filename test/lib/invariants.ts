// Invariants that must hold between a daemon's store, its kernel objects and its
// firewall whenever it is quiet: after fuzzing, storms, SIGKILL and restart. The
// store is read from the SQLite file itself (read-only), the kernel with `ip -j`
// and the netns mounts from mountinfo, the rules with iptables-save: three
// observers that do not go through the daemon's code.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { eventually } from './fixture';
import type { RunningDaemon } from './daemon';

interface Rec {
  id: string;
  state?: string;
  [k: string]: any;
}

export interface StoreView {
  networks: Rec[];
  endpoints: Rec[];
  sandboxes: Rec[];
  engineNetworks: Rec[];
  engineEndpoints: Rec[];
  pools: Rec[];
  leases: Rec[];
}

export interface LinkView {
  ifname: string;
  kind?: string;
  alias?: string;
  addrs: string[];
}

export interface KernelView {
  links: LinkView[];
  /** Files under <exec-root>/netns (without `default`). */
  netnsFiles: string[];
  /** Files under <exec-root>/pool/netns, and whether each is a mount (a netns). */
  poolFiles: { name: string; mounted: boolean }[];
  /** iptables-save and ip6tables-save output, all tables. */
  rules: string[];
}

export interface InvariantOptions {
  /** Records in `creating`/`deleting` are allowed (a snapshot of a busy daemon). */
  allowInFlight?: boolean;
  /** Host-netns links that are not cnmd's and are expected (besides lo). */
  foreignLinks?: (name: string) => boolean;
}

/** The store's records, read from <data-root>/cnmd.db without the daemon. */
export function readStore(dataRoot: string): StoreView {
  const db = new Database(path.join(dataRoot, 'cnmd.db'), { readonly: true, fileMustExist: true });
  try {
    const list = (kind: string): Rec[] =>
      (db.prepare('SELECT value FROM objects WHERE kind = ?').all(kind) as { value: string }[]).map(
        (r) => JSON.parse(r.value) as Rec,
      );
    return {
      networks: list('network'),
      endpoints: list('endpoint'),
      sandboxes: list('sandbox'),
      engineNetworks: list('engine-network'),
      engineEndpoints: list('engine-endpoint'),
      pools: list('ipam-pool'),
      leases: list('ipam-lease'),
    };
  } finally {
    db.close();
  }
}

function mountPoints(): Set<string> {
  const out = new Set<string>();
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp) out.add(mp.replace(/\\040/g, ' '));
  }
  return out;
}

function ls(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

/** What the daemon's host netns and exec-root hold. */
export function readKernel(d: RunningDaemon): KernelView {
  const addrs = new Map<string, string[]>();
  for (const a of d.host.ipj('addr')) {
    addrs.set(
      a.ifname,
      (a.addr_info ?? []).filter((i: any) => i.scope !== 'link').map((i: any) => `${i.local}/${i.prefixlen}`),
    );
  }
  const links: LinkView[] = d.host.ipj('-d', 'link').map((l: any) => ({
    ifname: l.ifname,
    kind: l.linkinfo?.info_kind,
    alias: l.ifalias,
    addrs: addrs.get(l.ifname) ?? [],
  }));
  const mounts = mountPoints();
  const poolDir = path.join(d.execRoot, 'pool', 'netns');
  return {
    links,
    netnsFiles: ls(path.join(d.execRoot, 'netns')).filter((f) => f !== 'default'),
    poolFiles: ls(poolDir).map((name) => ({ name, mounted: mounts.has(path.join(poolDir, name)) })),
    rules: ['iptables-save', 'ip6tables-save'].map((cmd) => d.host.run(cmd, [])),
  };
}

function parseCidr(s: string): { v6: boolean; base: bigint; bits: number; len: number } | undefined {
  const [ip, len] = s.split('/');
  const v6 = ip.includes(':');
  let value = 0n;
  if (v6) {
    const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    for (const g of groups) value = (value << 16n) | BigInt(parseInt(g || '0', 16));
  } else {
    for (const o of ip.split('.')) value = (value << 8n) | BigInt(Number(o));
  }
  const bits = v6 ? 128 : 32;
  const l = Number(len ?? bits);
  const mask = ((1n << BigInt(bits)) - 1n) ^ ((1n << BigInt(bits - l)) - 1n);
  return { v6, base: value & mask, bits, len: l };
}

function overlap(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  if (!x || !y || x.v6 !== y.v6) return false;
  const len = BigInt(x.bits - Math.min(x.len, y.len));
  return x.base >> len === y.base >> len;
}

const plain = (cidr?: string) => cidr?.split('/')[0];

/** Interface names a rule line matches on (`-i X`, `-o X`, with or without `!`). */
function ruleInterfaces(line: string): string[] {
  return [...line.matchAll(/(?:^| )-[io] (\S+)/g)].map((m) => m[1]);
}

/** Every broken invariant, as one sentence each; empty when all hold. Pure: unit-testable on made-up views. */
export function violations(s: StoreView, k: KernelView, opts: InvariantOptions = {}): string[] {
  const out: string[] = [];
  const all = [
    ...s.networks.map((r) => ['network', r] as const),
    ...s.endpoints.map((r) => ['endpoint', r] as const),
    ...s.sandboxes.map((r) => ['sandbox', r] as const),
    ...s.engineNetworks.map((r) => ['engine network', r] as const),
    ...s.engineEndpoints.map((r) => ['engine endpoint', r] as const),
  ];
  if (!opts.allowInFlight)
    for (const [kind, r] of all)
      if (r.state && r.state !== 'ready') out.push(`store: ${kind} ${r.name ?? r.id} is still ${r.state}`);

  // References between records.
  const nets = new Map([...s.networks, ...s.engineNetworks].map((n) => [n.id, n]));
  const sbs = new Map(s.sandboxes.map((x) => [x.id, x]));
  const eps = new Map(s.endpoints.map((e) => [e.id, e]));
  for (const e of [...s.endpoints, ...s.engineEndpoints])
    if (!nets.has(e.networkId)) out.push(`store: endpoint ${e.id} names missing network ${e.networkId}`);
  for (const e of s.endpoints)
    if (e.sandboxId && !sbs.has(e.sandboxId))
      out.push(`store: endpoint ${e.id} names missing sandbox ${e.sandboxId}`);
  for (const sb of s.sandboxes)
    for (const id of sb.endpoints ?? [])
      if (!eps.has(id)) out.push(`store: sandbox ${sb.name} lists missing endpoint ${id}`);

  // No address twice in a network, and never the gateway.
  for (const n of nets.values()) {
    const seen = new Map<string, string>();
    const gws = new Set((n.pools ?? []).map((p: any) => plain(p.gateway)).filter(Boolean));
    for (const e of [...s.endpoints, ...s.engineEndpoints].filter((x) => x.networkId === n.id)) {
      for (const a of [plain(e.ipv4), plain(e.ipv6)]) {
        if (!a) continue;
        if (seen.has(a))
          out.push(`store: address ${a} held by endpoints ${seen.get(a)} and ${e.id} of ${n.name}`);
        if (gws.has(a)) out.push(`store: endpoint ${e.id} of ${n.name} holds the gateway ${a}`);
        seen.set(a, e.id);
      }
    }
  }

  // Pools: never two overlapping in one address space; every pool record is someone's.
  const held: { who: string; pool: string; space: string }[] = [];
  for (const n of nets.values())
    for (const p of n.pools ?? [])
      if (n.ipamDriver === 'default' || !n.ipamDriver)
        held.push({ who: `network ${n.name}`, pool: p.pool, space: String(p.poolId).split('/')[0] });
  for (const l of s.leases)
    held.push({ who: `engine lease ${l.poolId}`, pool: l.pool, space: String(l.poolId).split('/')[0] });
  for (let i = 0; i < held.length; i++)
    for (let j = i + 1; j < held.length; j++)
      if (held[i].space === held[j].space && overlap(held[i].pool, held[j].pool))
        out.push(`store: ${held[i].who} (${held[i].pool}) overlaps ${held[j].who} (${held[j].pool})`);
  const claimed = new Set([
    ...[...nets.values()].flatMap((n) => (n.pools ?? []).map((p: any) => p.poolId)),
    ...s.leases.map((l) => l.poolId),
  ]);
  for (const p of s.pools) if (!claimed.has(p.id)) out.push(`store: ipam pool ${p.id} belongs to no network`);

  // Kernel links: every cnmd-aliased link is a live record's; every bridge network and endpoint has its link.
  const byAlias = new Map<string, LinkView[]>();
  for (const l of k.links)
    if (l.alias?.startsWith('cnmd:')) byAlias.set(l.alias, [...(byAlias.get(l.alias) ?? []), l]);
  const wantAliases = new Set<string>();
  for (const n of nets.values())
    if (n.driver === 'bridge' && n.state === 'ready') wantAliases.add(`cnmd:net:${n.id}`);
  for (const e of [...s.endpoints, ...s.engineEndpoints]) {
    const n = nets.get(e.networkId);
    if (
      n?.driver === 'bridge' &&
      e.state === 'ready' &&
      (e.sandboxId || e.sandboxKey || e.owner === 'engine')
    )
      wantAliases.add(`cnmd:ep:${e.networkId}:${e.id}`);
  }
  for (const [alias, ls] of byAlias) {
    if (ls.length > 1) out.push(`kernel: ${ls.map((l) => l.ifname).join(', ')} share alias ${alias}`);
    const [, kind, netId, epId] = alias.split(':');
    // The overlay driver's (drivers/overlay/README.md): cnmd_gwbridge itself, kept once made; its
    // ports by sandbox (cnmd:ovgw:<sandbox>:<cidr>); a vxlan device between its creation and its move.
    const owner =
      kind === 'ovgwbridge'
        ? true
        : kind === 'ovgw'
          ? s.sandboxes.find((x) => x.id === netId)
          : kind === 'net' || kind === 'ovnet'
            ? nets.get(netId)
            : (eps.get(epId) ?? s.engineEndpoints.find((e) => e.id === epId));
    if (!owner) out.push(`kernel: ${ls[0].ifname} (${alias}) belongs to no record (leaked)`);
  }
  for (const a of wantAliases)
    if (a.startsWith('cnmd:net:') && !byAlias.has(a)) out.push(`kernel: no bridge carries ${a}`);
  const bridgeOf = new Map<string, string>(); // ifname -> network id
  for (const l of k.links) {
    if (l.alias?.startsWith('cnmd:net:')) bridgeOf.set(l.ifname, l.alias.split(':')[2]);
    if (l.alias === 'cnmd:ovgwbridge') bridgeOf.set(l.ifname, 'overlay gateway bridge');
  }
  // A joined engine endpoint's container end (SrcName, cnmd<first 11 of its id>, no alias) waits in
  // this netns until the engine moves it into the container: expected while the endpoint is joined.
  const handedToEngine = new Set(
    s.engineEndpoints.filter((e) => e.sandboxKey).map((e) => `cnmd${String(e.id).slice(0, 11)}`),
  );
  for (const l of k.links) {
    if (l.ifname === 'lo' || l.alias?.startsWith('cnmd:') || opts.foreignLinks?.(l.ifname)) continue;
    if (l.kind === 'veth' && handedToEngine.has(l.ifname)) continue;
    out.push(`kernel: link ${l.ifname} (${l.kind ?? 'no kind'}) is not cnmd's and not expected (leaked?)`);
  }
  const addrOwner = new Map<string, string>();
  for (const l of k.links)
    for (const a of l.addrs) {
      if (addrOwner.has(a)) out.push(`kernel: ${a} is on both ${addrOwner.get(a)} and ${l.ifname}`);
      addrOwner.set(a, l.ifname);
    }

  // Sandbox namespaces: one file per sandbox with its own netns, all mounted; the pool holds netns only.
  const wantNs = s.sandboxes
    .filter((x) => !x.hostNetns)
    .map((x) => x.id)
    .sort();
  const extra = k.netnsFiles.filter((f) => !wantNs.includes(f));
  const missing = wantNs.filter((f) => !k.netnsFiles.includes(f));
  if (extra.length) out.push(`netns: ${extra.join(', ')} belong to no sandbox (leaked)`);
  if (missing.length && !opts.allowInFlight)
    out.push(`netns: sandboxes ${missing.join(', ')} have no netns file`);
  for (const p of k.poolFiles) if (!p.mounted) out.push(`netns pool: ${p.name} is a stub file, not a netns`);

  // Rules: no wildcard interface, none for a bridge that is gone, no duplicates, DNAT only to live endpoints.
  const liveAddrs = new Set(
    [...s.endpoints, ...s.engineEndpoints]
      .filter((e) => (e.ports ?? []).length > 0)
      .flatMap((e) => [plain(e.ipv4), plain(e.ipv6)])
      .filter(Boolean) as string[],
  );
  // An overlay sandbox's ports are DNATed to its address on cnmd_gwbridge (its port's alias names it).
  const publishing = new Set(s.endpoints.filter((e) => (e.ports ?? []).length > 0).map((e) => e.sandboxId));
  for (const l of k.links) {
    const gw = /^cnmd:ovgw:([^:]+):(.+)\/\d+$/.exec(l.alias ?? '');
    if (gw && publishing.has(gw[1])) liveAddrs.add(gw[2]);
  }
  for (const save of k.rules) {
    let table = '';
    const seen = new Set<string>();
    for (const line of save.split('\n')) {
      if (line.startsWith('*')) {
        table = line.slice(1);
        seen.clear();
        continue;
      }
      if (!line.startsWith('-A ')) continue;
      const chain = line.split(' ')[1];
      const ours =
        chain.startsWith('CNMD') ||
        / -j CNMD/.test(line) ||
        (chain === 'POSTROUTING' && /MASQUERADE|CHECKSUM/.test(line)) ||
        (table === 'raw' && / -j DROP/.test(line));
      if (!ours) continue;
      if (seen.has(line)) out.push(`rules: duplicate in ${table}: ${line}`);
      seen.add(line);
      for (const i of ruleInterfaces(line)) {
        if (i === 'lo') continue;
        if (/[+*]/.test(i)) out.push(`rules: wildcard interface in ${table}: ${line}`);
        else if (!bridgeOf.has(i)) out.push(`rules: ${table}: ${line} names ${i}, no live cnmd bridge`);
      }
      const dnat = / -j DNAT --to-destination \[?([0-9a-f.:]+?)\]?(?::[\d\-/]+)?$/.exec(line);
      if (dnat && !liveAddrs.has(dnat[1]))
        out.push(`rules: DNAT to ${dnat[1]} but no endpoint with published ports has it: ${line}`);
    }
  }
  return out;
}

/** Waits (bounded) until every invariant holds on daemon `d`; fails with the whole list otherwise. */
export async function assertInvariants(
  d: RunningDaemon,
  opts: InvariantOptions & { ms?: number } = {},
): Promise<void> {
  await eventually(() => {
    const v = violations(readStore(d.dataRoot), readKernel(d), opts);
    if (v.length) throw new Error(`${v.length} invariant(s) broken:\n  ${v.join('\n  ')}`);
  }, opts.ms ?? 5000);
}
