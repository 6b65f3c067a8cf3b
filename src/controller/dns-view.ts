// What a sandbox sees of names: the embedded DNS's records (the networks it
// is on, with every endpoint on them), where unknown names go, and the
// contents of its /etc/hosts and resolv.conf. Also starts its resolver.
import type { DnsEndpoint, DnsNetwork, RecordSource } from '../dns/records';
import { RESOLVER_IP } from '../dns/resolver';
import type { EmbeddedDns } from '../dns/service';
import { closeFds } from '../netns/netns';
import type { Core } from './core';
import { EndpointRecord, KIND, NetworkRecord, SandboxRecord } from './records';
import { ResolvConfCache } from './resolv-cache';
import { hostsFile, resolvConf } from './sandbox-files';
import { stripPrefix } from '../net/addr';

/** Network option that turns the embedded DNS off for a network (libnetwork#1085). */
export const EMBEDDED_DNS_OPTION = 'cnmd.network.embedded_dns';

/** systemd-resolved's stub listener, and the file that lists its real upstreams. */
const RESOLVED_STUB = '127.0.0.53';
const RESOLVED_UPSTREAMS = '/run/systemd/resolve/resolv.conf';

export interface DnsViewDeps extends Core {
  dns: EmbeddedDns;
  /** The host's resolv.conf, read when a sandbox is made. */
  hostResolvConf: string;
}

export class DnsView implements RecordSource {
  private readonly d: DnsViewDeps;
  /** Bumped by changed(): a LiveSandbox's cached view of an older generation is stale. */
  private generation = 0;
  private readonly resolvFiles = new ResolvConfCache();

  constructor(d: DnsViewDeps) {
    this.d = d;
  }

  /** Every cached view is stale: call after any change to endpoints or their records. */
  changed(): void {
    this.generation++;
  }

  /**
   * Docker: user-defined networks have the embedded DNS; the default bridge and drivers without it (host,
   * none) do not.
   */
  dnsEnabled(n: NetworkRecord): boolean {
    if (n.isDefault || this.d.lookup.driverOf(n)?.capabilities().embeddedDns === false) return false;
    return n.options[EMBEDDED_DNS_OPTION] !== 'false';
  }

  sandboxUsesDns(sb: SandboxRecord): boolean {
    return sb.endpoints.some((id) => {
      const e = this.d.lookup.endpointRecord(id);
      const n = e && this.d.lookup.networkOf(e);
      return !!n && this.dnsEnabled(n);
    });
  }

  /** RecordSource: the networks (with embedded DNS) sandboxId is on, with every endpoint on them. */
  networksOf(sandboxId: string): DnsNetwork[] {
    const live = this.d.live.get(sandboxId);
    if (live?.view?.generation === this.generation) return live.view.networks;
    const networks = this.build(sandboxId);
    if (live) live.view = { generation: this.generation, networks };
    return networks;
  }

  private build(sandboxId: string): DnsNetwork[] {
    const { store } = this.d;
    const sandboxes = new Map(store.list<SandboxRecord>(KIND.sandbox).map((s) => [s.id, s]));
    const eps = store.list<EndpointRecord>(KIND.endpoint).filter((e) => e.state === 'ready');
    const mine = new Set(eps.filter((e) => e.sandboxId === sandboxId).map((e) => e.networkId));
    const out: DnsNetwork[] = [];
    for (const netId of mine) {
      const n = store.get<NetworkRecord>(KIND.network, netId);
      if (!n || !this.dnsEnabled(n)) continue;
      out.push({
        id: n.id,
        name: n.name,
        endpoints: eps
          .filter((e) => e.networkId === netId && sandboxes.has(e.sandboxId))
          .map((e): DnsEndpoint => {
            const sb = sandboxes.get(e.sandboxId)!;
            return {
              sandboxId: sb.id,
              names: [...new Set([sb.name, sb.hostname])],
              aliases: e.aliases,
              ipv4: stripPrefix(e.ipv4),
              ipv6: stripPrefix(e.ipv6),
            };
          })
          .concat(n.scope === 'global' && this.d.cluster ? this.d.cluster.dnsEndpoints(n.id) : []),
      });
    }
    return out;
  }

  /**
   * Where a sandbox's unknown names go: its --dns servers, else the host's (loopback ones included: queried
   * from the host netns).
   */
  upstreamsOf(sb: SandboxRecord): () => string[] {
    return () => {
      if (sb.dns.servers.length) return sb.dns.servers.slice(0, 3);
      const leased = this.leasedDns(sb.id);
      if (leased.length) return leased;
      let host = this.readHostResolvConf().nameservers;
      if (host.length === 1 && host[0] === RESOLVED_STUB) {
        // systemd-resolved's stub: its real upstreams are listed in its own file.
        const real = this.readResolvConf(RESOLVED_UPSTREAMS);
        if (real) host = real.nameservers;
      }
      return host.slice(0, 3);
    };
  }

  /** Serves a resolver adopted by ensureDns(sb, true), once the API has answered. */
  serve(sandboxId: string): void {
    this.d.dns.serve(sandboxId);
  }

  stop(sandboxId: string): void {
    this.d.dns.stop(sandboxId);
  }

  /** Whether the sandbox's resolver runs. */
  running(sandboxId: string): boolean {
    return this.d.dns.has(sandboxId);
  }

  /**
   * Starts the sandbox's resolver if it needs one. serveLater: sockets from the
   * pool (bound and listening already) are only adopted, and served once the
   * API has answered (createSandbox).
   */
  async ensureDns(sb: SandboxRecord, serveLater = false): Promise<void> {
    const { dns } = this.d;
    const pooled = this.d.live.get(sb.id)?.takePooledSockets() ?? [];
    if (sb.hostNetns || !this.sandboxUsesDns(sb)) {
      closeFds(pooled);
      return;
    }
    if (serveLater && pooled.length) dns.adopt(sb.id, this.upstreamsOf(sb), pooled);
    else await dns.ensure(sb.id, sb.key, this.upstreamsOf(sb), pooled.length ? pooled : undefined);
  }

  /** /etc/hosts entries of the sandbox: its own addresses under its hostname. */
  hostsOf(sb: SandboxRecord): string {
    const out: { ip: string; names: string[] }[] = [];
    for (const id of sb.endpoints) {
      const e = this.d.lookup.endpointRecord(id);
      if (!e) continue;
      for (const ip of [e.ipv4, e.ipv6]) if (ip) out.push({ ip: stripPrefix(ip)!, names: [sb.hostname] });
    }
    return hostsFile(out);
  }

  /**
   * The DNS servers the DHCP servers of the sandbox's endpoints offer, in
   * join order (the sandbox read again: endpoints come and go after its
   * resolver started).
   */
  private leasedDns(sandboxId: string): string[] {
    const sb = this.d.store.get<SandboxRecord>(KIND.sandbox, sandboxId);
    const out = new Set<string>();
    for (const id of sb?.endpoints ?? [])
      for (const ip of this.d.lookup.endpointRecord(id)?.dhcp?.dns ?? []) out.add(ip);
    return [...out].slice(0, 3);
  }

  /**
   * The sandbox's resolv.conf: the embedded DNS when it uses it, else its
   * --dns settings (else the servers its DHCP leases offer) over the host's.
   */
  resolvConfOf(sb: SandboxRecord): string {
    const host = this.readHostResolvConf();
    if (!this.sandboxUsesDns(sb)) {
      const leased = sb.dns.servers.length ? [] : this.leasedDns(sb.id);
      return resolvConf(host, leased.length ? { ...sb.dns, servers: leased } : sb.dns);
    }
    // The embedded DNS: 127.0.0.11, the search domains kept, ndots:0 unless the user set ndots.
    const options = sb.dns.options.length ? sb.dns.options : host.options;
    const withNdots = options.some((o) => o.startsWith('ndots:')) ? options : [...options, 'ndots:0'];
    return resolvConf(
      { nameservers: [], search: host.search, options: [] },
      { servers: [RESOLVER_IP], search: sb.dns.search, options: withNdots },
    );
  }

  /** The contents of the sandbox's hostname, hosts and resolv.conf files. */
  filesOf(sb: SandboxRecord): { hostname: string; hosts: string; resolvConf: string } {
    return { hostname: sb.hostname, hosts: this.hostsOf(sb), resolvConf: this.resolvConfOf(sb) };
  }

  private readHostResolvConf(): NonNullable<ReturnType<ResolvConfCache['read']>> {
    return this.readResolvConf(this.d.hostResolvConf) ?? { nameservers: [], search: [], options: [] };
  }

  /** A resolv.conf, parsed; undefined when it does not exist (logged when it cannot be read). */
  private readResolvConf(path: string): ReturnType<ResolvConfCache['read']> {
    try {
      return this.resolvFiles.read(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        this.d.log.warn({ err: e, path }, 'resolv.conf unreadable: ignoring it');
      return undefined;
    }
  }
}
