// Global (overlay) networks through the cluster: the controller's side of
// src/cluster/cluster.ts. A global network is created in the cluster store
// first and mirrored into every host's local store (so network ls/inspect and
// connect work as for local ones); the driver's network is made eagerly on
// every host, so the first attach costs the same as the next and a restart
// restores it like any other. Endpoints on global networks are published
// after the API answered; other hosts' endpoints feed the driver's peers
// (setPeers, also on a reconcile loop) and the embedded DNS.
import type { Driver, OverlayPeer, PeerChange } from '../../drivers/driver';
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
  /** The engine's joined endpoints on cnmd-overlay networks bound to global ones (engine-overlay.ts). */
  enginePublications?(): EndpointPublication[];
}

function plain(cidr?: string): string | undefined {
  return stripPrefix(cidr);
}

export class ClusterNetworks {
  readonly cluster: Cluster;
  private readonly h: ClusterHooks;
  /** Networks whose whole peer set is to be handed to the driver again. */
  private readonly dirty = new Set<string>();
  /** Endpoints (by network) that changed since they were last handed to the driver. */
  private readonly changed = new Map<string, Set<string>>();
  /** Networks whose driver took a whole peer set: changes build on it. */
  private readonly seeded = new Set<string>();
  private pushing = false;
  private scheduled = false;

  constructor(cluster: Cluster, hooks: ClusterHooks) {
    this.cluster = cluster;
    this.h = hooks;
  }

  async start(): Promise<void> {
    await this.cluster.start({
      networkPut: (rec) => this.h.mirror(rec),
      networkDelete: (id) => this.h.unmirror(id),
      peersChanged: (id, endpointId) => this.peersChanged(id, endpointId),
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
    out.push(...(this.h.enginePublications?.() ?? []));
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
      .map(toPeer)
      .filter((p): p is OverlayPeer => !!p);
  }

  /**
   * One network's peers changed: one endpoint (endpointId), or maybe all; or,
   * networkId undefined, the reconcile loop ticked: every network in full.
   */
  private peersChanged(networkId?: string, endpointId?: string): void {
    // The DNS view is invalidated on a tick too: after a watch resumes, a change may have come in bulk.
    this.h.dnsChanged();
    if (!networkId) {
      for (const n of this.h.store.list<NetworkRecord>(KIND.network))
        if (n.scope === 'global' && n.state === 'ready') this.dirty.add(n.id);
    } else if (endpointId === undefined) {
      this.dirty.add(networkId);
    } else if (!this.dirty.has(networkId)) {
      let ids = this.changed.get(networkId);
      if (!ids) this.changed.set(networkId, (ids = new Set()));
      ids.add(endpointId);
    }
    // After the events of one watch message (emitted in one go): they are handed over together.
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => {
        this.scheduled = false;
        void this.push();
      });
    }
  }

  /**
   * Hands changes to the drivers until none is left, one network at a time:
   * a dirty network's whole peer set (setPeers: validation and two dumps), a
   * changed one's changed endpoints only (updatePeers: their entries, no dump).
   */
  private async push(): Promise<void> {
    if (this.pushing) return;
    this.pushing = true;
    try {
      while (this.dirty.size || this.changed.size) {
        const full = this.dirty.size > 0;
        const id = full ? this.dirty.values().next().value! : this.changed.keys().next().value!;
        const ids = this.changed.get(id);
        this.dirty.delete(id);
        this.changed.delete(id);
        const n = this.h.store.get<NetworkRecord>(KIND.network, id);
        const d = n && n.state === 'ready' ? this.h.drivers.get(n.driver) : undefined;
        if (!d?.setPeers) continue;
        if (!full && ids && d.updatePeers && this.seeded.has(id)) {
          const change: PeerChange = { put: [], remove: [] };
          for (const eid of ids) {
            const p = toPeer(this.cluster.remoteEndpoint(id, eid));
            if (p) change.put.push(p);
            else change.remove.push(eid);
          }
          const ok = await d.updatePeers(id, change).then(
            () => true,
            (e) => {
              this.h.log.warn({ err: e, network: id }, 'updating overlay peers failed: setting them in full');
              return false;
            },
          );
          if (!ok) this.dirty.add(id);
          continue;
        }
        this.seeded.delete(id);
        await d.setPeers(id, this.peers(id)).then(
          () => this.seeded.add(id),
          (e) => this.h.log.error({ err: e, network: id }, 'setting overlay peers failed'),
        );
      }
    } finally {
      this.pushing = false;
    }
  }
}

/** An endpoint record as a driver's peer (none without an IPv4 address and a MAC). */
function toPeer(e: EndpointPublication | undefined): OverlayPeer | undefined {
  if (!e?.ipv4 || !e.mac) return undefined;
  return { endpointId: e.id, address: plain(e.ipv4)!, address6: plain(e.ipv6), mac: e.mac, vtep: e.vtep };
}
