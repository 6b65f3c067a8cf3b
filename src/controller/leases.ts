// Endpoints addressed by a link-bound IPAM (DHCP, ipam.ts LinkIpam): the
// lease is asked once the driver's join has the interface up and without an
// address in the sandbox, then the address goes on the interface and the
// lease into the endpoint's record (a restart re-requests it); renewals land
// here to be persisted, and an address that changed replaces the old one.
import { CnmdError, bestEffort, ignoreNotFound } from '../errors';
import type { LeaseLink, LinkIpam, LinkLease } from '../ipam/ipam';
import { Handle } from '../netlink/handle';
import type { Core } from './core';
import type { DnsView } from './dns-view';
import type { DefaultRoutes } from './gateway';
import { LOCK } from './locks';
import { EndpointRecord, KIND, NetworkRecord, SandboxRecord } from './records';

export interface LeasesDeps extends Core {
  view: DnsView;
  routes: DefaultRoutes;
}

export class LinkLeases {
  private readonly d: LeasesDeps;

  constructor(d: LeasesDeps) {
    this.d = d;
  }

  /** The network's link-bound IPAM, if it has one. */
  of(n: NetworkRecord): LinkIpam | undefined {
    return this.d.lookup.ipams.get(n.ipamDriver)?.leases;
  }

  private linkOf(sb: SandboxRecord, ep: EndpointRecord, n: NetworkRecord): LeaseLink {
    return {
      nsPath: sb.key,
      ifname: ep.ifname,
      parent: n.options.parent || n.name,
      endpointId: ep.id,
      hostname: sb.hostname,
    };
  }

  /** Leases an address for a joined endpoint and configures it; the lease is recorded before the address goes on. */
  async attach(
    link: LinkIpam,
    ep: EndpointRecord,
    n: NetworkRecord,
    sb: SandboxRecord,
    h: Handle,
  ): Promise<void> {
    const where = this.linkOf(sb, ep, n);
    let lease = await link.acquire(where, n.ipamOptions);
    // An address another endpoint of the network holds: the server gave it twice (its lease file lost, or
    // hostile). Declined, and asked once more: the server offers another.
    for (let again = true; ; again = false) {
      const holder = this.holderOf(n, ep, lease.address);
      if (!holder) break;
      await link.decline(where, lease);
      if (!again)
        throw new CnmdError(
          'CONFLICT',
          `endpoint join: the DHCP server on parent ${where.parent} offered ${lease.address}, which endpoint ${holder.id.slice(0, 12)} of network ${n.name} holds (declined twice): fix the server`,
          { op: 'endpoint join', object: lease.address },
        );
      lease = await link.acquire(where, n.ipamOptions);
    }
    this.apply(ep, lease);
    this.d.store.put(KIND.endpoint, ep.id, ep);
    await h.addrAdd(ep.ifname, lease.address);
    link.keep(where, lease, n.ipamOptions, (l) => this.renewed(sb.id, ep.id, l));
  }

  private holderOf(n: NetworkRecord, ep: EndpointRecord, cidr: string): EndpointRecord | undefined {
    const ip = cidr.split('/')[0];
    return this.d.store
      .list<EndpointRecord>(KIND.endpoint)
      .find((e) => e.networkId === n.id && e.id !== ep.id && e.ipv4?.split('/')[0] === ip);
  }

  /** Undoes attach: the lease goes back to the server (a rollback: failures logged). */
  async detach(link: LinkIpam, ep: EndpointRecord, n: NetworkRecord, sb: SandboxRecord): Promise<void> {
    const lease = ep.dhcp;
    if (!lease) return link.forget(ep.id);
    await bestEffort(this.d.log, 'dhcp release', ep.id, () => link.release(this.linkOf(sb, ep, n), lease));
  }

  /**
   * Every DHCP lease of a sandbox about to lose its netns goes back first,
   * while its interface can still speak for it.
   */
  async releaseAll(sb: SandboxRecord): Promise<void> {
    for (const id of sb.endpoints) {
      const ep = this.d.lookup.endpointRecord(id);
      // Only a leased endpoint has something to give back: the network is read for those alone.
      if (!ep?.dhcp) continue;
      const n = this.d.lookup.networkOf(ep);
      const link = n && this.of(n);
      if (link) await this.detach(link, ep, n, sb);
    }
  }

  /** After a restart: the recorded lease is asked for again at once, then kept. */
  resume(ep: EndpointRecord, n: NetworkRecord, sb: SandboxRecord): void {
    const link = this.of(n);
    if (!link || !ep.dhcp) return;
    link.keep(this.linkOf(sb, ep, n), ep.dhcp, n.ipamOptions, (l) => this.renewed(sb.id, ep.id, l), {
      now: true,
    });
  }

  private apply(ep: EndpointRecord, lease: LinkLease): void {
    ep.dhcp = lease;
    ep.ipv4 = lease.address;
    ep.gatewayVia = lease.gateway ? { gw: lease.gateway, dev: ep.ifname } : undefined;
  }

  /** A renewal's lease, persisted; a new address replaces the old one on the interface, its route and /etc/hosts. */
  private async renewed(sbId: string, epId: string, lease: LinkLease): Promise<void> {
    await this.d.locks.lock([LOCK.sb(sbId)], async () => {
      const { store, log } = this.d;
      const ep = store.get<EndpointRecord>(KIND.endpoint, epId);
      const sb = store.get<SandboxRecord>(KIND.sandbox, sbId);
      if (!ep?.dhcp || !sb) return;
      const old = ep.dhcp;
      this.apply(ep, lease);
      if (old.address !== lease.address || old.gateway !== lease.gateway) {
        log.warn(
          { endpoint: epId, was: old.address, now: lease.address, gateway: lease.gateway },
          'dhcp server gave the endpoint a new address: replacing it',
        );
        const h = this.d.live.of(sb).handle();
        // The old address goes first: a new one in the same subnet would be its secondary, and the kernel
        // removes the secondaries with their primary (the interface was left with no address at all).
        if (old.address !== lease.address) await ignoreNotFound(h.addrDel(ep.ifname, old.address));
        await h.addrAdd(ep.ifname, lease.address);
        store.put(KIND.endpoint, ep.id, ep);
        this.d.view.changed();
        await this.d.routes.update(sb, h);
        if (this.d.files.exists(sb.id)) this.d.files.writeHosts(sb.id, this.d.view.hostsOf(sb));
        return;
      }
      store.put(KIND.endpoint, ep.id, ep);
    });
  }
}
