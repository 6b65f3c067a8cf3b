// Global (overlay) networks through the cluster: the controller's side of
// src/cluster/cluster.ts. A global network is created in the cluster store
// first and mirrored into every host's local store (so network ls/inspect and
// connect work as for local ones); the driver's network is made eagerly on
// every host, so the first attach costs the same as the next and a restart
// restores it like any other. Endpoints on global networks are published
// after the API answered; other hosts' endpoints feed the driver's peers
// (setPeers, also on a reconcile loop) and the embedded DNS.
import type { Driver, OverlayPeer } from '../../drivers/driver';
import type { Cluster } from '../cluster/cluster';
import type { EndpointPublication, GlobalNetworkRecord } from '../cluster/records';
import type { DnsEndpoint } from '../dns/records';
import type { Logger } from '../log';
import type { Store } from '../store/store';
import { EndpointRecord, KIND, NetworkRecord, SandboxRecord } from './records';
import { stripPrefix } from '../net/addr';

/** What the glue needs of the controller. */
export interface ClusterHooks {
  store: Store;
  drivers: Map<string, Driver>;
  log: Logger;
  /** Makes a network from the cluster's record on this host (IPAM pool, driver), under its lock. */
  mirror(rec: GlobalNetworkRecord): Promise<void>;
  /** Removes the local copy of a network the cluster no longer has. */
  unmirror(id: string): Promise<void>;
  /** The embedded DNS's cached view is stale. */
  dnsChanged(): void;
}

function plain(cidr?: string): string | undefined {
  return stripPrefix(cidr);
}

export class ClusterNetworks {
  readonly cluster: Cluster;
  private readonly h: ClusterHooks;
  /** Networks whose peers changed since they were last handed to the driver. */
  private readonly dirty = new Set<string>();
  private pushing = false;

  constructor(cluster: Cluster, hooks: ClusterHooks) {
    this.cluster = cluster;
    this.h = hooks;
  }

  async start(): Promise<void> {
    await this.cluster.start({
      networkPut: (rec) => this.h.mirror(rec),
      networkDelete: (id) => this.h.unmirror(id),
      peersChanged: (id) => this.peersChanged(id),
      localEndpoints: () => this.localPublications(),
    });
    // Global networks removed from the cluster while this daemon was down.
    for (const n of this.h.store.list<NetworkRecord>(KIND.network))
      if (n.scope === 'global' && !this.cluster.networks.has(n.id)) await this.h.unmirror(n.id);
  }

  private localPublications(): EndpointPublication[] {
    const nets = new Map(
      this.h.store
        .list<NetworkRecord>(KIND.network)
        .filter((n) => n.scope === 'global')
        .map((n) => [n.id, n]),
    );
    const out: EndpointPublication[] = [];
    for (const e of this.h.store.list<EndpointRecord>(KIND.endpoint)) {
      if (e.state !== 'ready' || !nets.has(e.networkId)) continue;
      const sb = this.h.store.get<SandboxRecord>(KIND.sandbox, e.sandboxId);
      if (sb) out.push(this.publication(e, sb));
    }
    return out;
  }

  private publication(e: EndpointRecord, sb: SandboxRecord): EndpointPublication {
    return {
      id: e.id,
      networkId: e.networkId,
      name: sb.name,
      hostname: sb.hostname,
      aliases: e.aliases,
      ipv4: e.ipv4,
      ipv6: e.ipv6,
      mac: e.mac,
      host: this.cluster.hostId,
      vtep: this.cluster.vtep,
    };
  }

  /** An endpoint on a global network joined: published (after the reply; retried until the store takes it). */
  joined(e: EndpointRecord, n: NetworkRecord, sb: SandboxRecord): void {
    if (n.scope === 'global') this.cluster.publish(this.publication(e, sb));
  }

  left(e: EndpointRecord, n: NetworkRecord | undefined): void {
    if (n?.scope === 'global') this.cluster.unpublish(e.networkId, e.id);
  }

  /** Other hosts' endpoints on a network, as the embedded DNS answers them. */
  dnsEndpoints(networkId: string): DnsEndpoint[] {
    return this.cluster.remoteEndpoints(networkId).map((e) => ({
      sandboxId: `remote:${e.id}`,
      names: [...new Set([e.name, e.hostname])],
      aliases: e.aliases,
      ipv4: plain(e.ipv4),
      ipv6: plain(e.ipv6),
    }));
  }

  peers(networkId: string): OverlayPeer[] {
    return this.cluster
      .remoteEndpoints(networkId)
      .filter((e) => e.ipv4 && e.mac)
      .map((e) => ({
        endpointId: e.id,
        address: plain(e.ipv4)!,
        address6: plain(e.ipv6),
        mac: e.mac!,
        vtep: e.vtep,
      }));
  }

  /** One network's peers changed (or, undefined, the reconcile loop ticked: every network). */
  private peersChanged(networkId?: string): void {
    // The DNS view is invalidated on a tick too: after a watch resumes, a change may have come in bulk.
    this.h.dnsChanged();
    if (networkId) {
      this.dirty.add(networkId);
    } else {
      for (const n of this.h.store.list<NetworkRecord>(KIND.network))
        if (n.scope === 'global' && n.state === 'ready') this.dirty.add(n.id);
    }
    void this.push();
  }

  /** Hands each dirty network's peers to its driver, one network at a time, until none is dirty. */
  private async push(): Promise<void> {
    if (this.pushing) return;
    this.pushing = true;
    try {
      while (this.dirty.size) {
        const id = this.dirty.values().next().value!;
        this.dirty.delete(id);
        const n = this.h.store.get<NetworkRecord>(KIND.network, id);
        const d = n && n.state === 'ready' ? this.h.drivers.get(n.driver) : undefined;
        if (!d?.setPeers) continue;
        await d
          .setPeers(id, this.peers(id))
          .catch((e) => this.h.log.error({ err: e, network: id }, 'setting overlay peers failed'));
      }
    } finally {
      this.pushing = false;
    }
  }
}
