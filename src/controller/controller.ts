// The CNM controller's facade: the one object the API, the plugin layer and
// the daemon call. It wires the controller's parts (docs/architecture.md):
//   lookup.ts     networks, sandboxes, endpoints by reference; drivers/IPAMs by name
//   networks.ts   network create (IPAM pools, driver), delete, prune, defaults
//   sandboxes.ts  sandbox create (endpoints, netns, wiring) and delete
//   endpoints.ts  endpoint prepare, wire, disconnect; published ports
//   gateway.ts    each sandbox's default routes
//   dns-view.ts   the embedded DNS's records, upstreams, hosts/resolv.conf
//   recovery.ts   start-up reconciliation and leak sweeps
//   cluster.ts    global (overlay) networks through the cluster store
//   live.ts       a sandbox's runtime state (LiveSandbox), one owner
//   engine.ts     the Docker engine's objects (plugin protocol)
// Every multi-step operation rolls back on failure; a record's `state` lets a
// restart after SIGKILL finish or undo what was in flight.
import type { Driver } from '../../drivers/driver';
import type { Cluster } from '../cluster/cluster';
import type { DnsNetwork, RecordSource } from '../dns/records';
import { EmbeddedDns } from '../dns/service';
import type { Ipam } from '../ipam/ipam';
import type { Logger } from '../log';
import type { NetnsManager } from '../netns/netns';
import type { NetnsPool } from '../netns/pool';
import type { LanProbe } from '../ipam/dhcp/probe';
import type { Store } from '../store/store';
import type { Core } from './core';
import { ClusterNetworks } from './cluster';
import { DnsView } from './dns-view';
import { ConnectOptions, Endpoints } from './endpoints';
import { EngineObjects } from './engine';
import { DefaultRoutes } from './gateway';
import { LiveSandboxes } from './live';
import { Lookup, PluginLoader } from './lookup';
import { KeyedMutex } from './mutex';
import { NetworkCreateRequest, Networks } from './networks';
import { EndpointRecord, NetworkRecord, SandboxRecord } from './records';
import { Recovery } from './recovery';
import type { SandboxFiles } from './sandbox-files';
import { SandboxCreateRequest, Sandboxes } from './sandboxes';

export { EMBEDDED_DNS_OPTION } from './dns-view';
export type { ConnectOptions } from './endpoints';
export type { PluginLoader } from './lookup';
export type { NetworkCreateRequest } from './networks';
export type { SandboxCreateRequest } from './sandboxes';

export interface ControllerDeps {
  store: Store;
  netns: NetnsManager;
  /** Ready-made namespaces for new sandboxes (optional). */
  pool?: NetnsPool;
  files: SandboxFiles;
  drivers: Map<string, Driver>;
  ipams: Map<string, Ipam>;
  log: Logger;
  /** The host's resolv.conf, read when a sandbox is made. */
  hostResolvConf?: string;
  /** Upstream query timeout of the embedded DNS (default 4 s, as Docker). */
  dnsTimeoutMs?: number;
  /** Speaks DHCP on a parent for the engine's endpoints before and after their links (cnmd-ipam's dhcp mode). */
  probe?: LanProbe;
  /** Finds remote plugins (drivers/remote, ipam/remote) for names cnmd has no driver or IPAM of its own for. */
  plugins?: PluginLoader;
  /** This host's membership in the cluster (--cluster-store): global networks. */
  cluster?: Cluster;
}

export class Controller implements RecordSource {
  /** Serialises operations on the same objects; keys and what each guards: locks.ts (not reentrant). */
  private readonly locks = new KeyedMutex();
  private readonly pool?: NetnsPool;
  /** Every sandbox's runtime state (netlink handle, pooled sockets, gateways, DNS view), closed in one place. */
  private readonly live: LiveSandboxes;
  private readonly lookup: Lookup;
  private readonly view: DnsView;
  private readonly nets: Networks;
  private readonly sbs: Sandboxes;
  private readonly eps: Endpoints;
  private readonly recovery: Recovery;
  readonly dns: EmbeddedDns;
  /** Networks, endpoints and IPAM pools the Docker engine made through cnmd's plugin sockets. */
  readonly engine: EngineObjects;
  /** Global networks through the cluster store; absent without --cluster-store. */
  readonly cluster?: ClusterNetworks;

  constructor(d: ControllerDeps) {
    const { store, log, files } = d;
    const locks = this.locks;
    this.pool = d.pool;
    this.dns = new EmbeddedDns({
      records: { networksOf: (id) => this.view.networksOf(id) },
      log,
      forwarder: { timeoutMs: d.dnsTimeoutMs },
    });
    this.live = new LiveSandboxes(this.dns);
    this.engine = new EngineObjects({
      store,
      drivers: d.drivers,
      ipams: d.ipams,
      locks,
      log,
      changed: () => this.view.changed(),
      cluster: () => this.cluster?.cluster,
      probe: d.probe,
    });
    this.lookup = new Lookup({
      store,
      engine: this.engine,
      drivers: d.drivers,
      ipams: d.ipams,
      plugins: d.plugins,
    });
    const cluster = (this.cluster =
      d.cluster &&
      new ClusterNetworks(d.cluster, {
        store,
        drivers: d.drivers,
        log,
        mirror: (g) => this.nets.mirror(g),
        unmirror: (id) => this.nets.unmirror(id),
        dnsChanged: () => this.view.changed(),
        enginePublications: () => this.engine.publications(d.cluster!),
      }));
    const core: Core = {
      store,
      netns: d.netns,
      pool: d.pool,
      files,
      lookup: this.lookup,
      live: this.live,
      locks,
      log,
      cluster,
    };
    const hostResolvConf = d.hostResolvConf ?? '/etc/resolv.conf';
    const view = (this.view = new DnsView({ ...core, dns: this.dns, hostResolvConf }));
    const routes = new DefaultRoutes(this.lookup, this.live);
    const endpoints = (this.eps = new Endpoints({ ...core, view, routes }));
    this.nets = new Networks(core);
    const sandboxes = (this.sbs = new Sandboxes({ ...core, view, endpoints }));
    this.recovery = new Recovery({ ...core, view, routes, endpoints, sandboxes, engine: this.engine });
  }

  /** RecordSource: the networks (with embedded DNS) a sandbox is on, with every endpoint on them. */
  networksOf(sandboxId: string): DnsNetwork[] {
    return this.view.networksOf(sandboxId);
  }

  /** Whether a network has the embedded DNS. */
  dnsEnabled(n: NetworkRecord): boolean {
    return this.view.dnsEnabled(n);
  }

  /** cnmd's own networks and, after them, the engine's (made through the plugin). */
  networks(): NetworkRecord[] {
    return this.lookup.networks();
  }

  sandboxes(): SandboxRecord[] {
    return this.lookup.sandboxes();
  }

  /** What the network's driver adds to its inspect. */
  driverInspect(n: NetworkRecord): Record<string, unknown> | undefined {
    return this.lookup.driverOf(n)?.inspect?.(n.id);
  }

  endpoints(networkId?: string): EndpointRecord[] {
    return this.lookup.endpoints(networkId);
  }

  /** By full id, then exact name, then unique id prefix (as the docker CLI resolves). */
  network(ref: string): NetworkRecord {
    return this.lookup.network(ref);
  }

  sandbox(ref: string): SandboxRecord {
    return this.lookup.sandbox(ref);
  }

  createNetwork(req: NetworkCreateRequest): Promise<NetworkRecord> {
    return this.nets.create(req);
  }

  /** force: also an engine network whose engine is gone (EngineObjects.forceRemove). */
  deleteNetwork(ref: string, opts: { force?: boolean } = {}): Promise<void> {
    const n = this.lookup.network(ref);
    if (n.owner === 'engine' && opts.force) return this.engine.forceRemove(n.id);
    return this.nets.delete(ref);
  }

  /** Removes every network no sandbox uses (not the defaults). */
  pruneNetworks(match?: (n: NetworkRecord) => boolean): Promise<string[]> {
    return this.nets.prune(match);
  }

  /** The daemon's default networks (bridge on cnm0, host, none), made on first start. */
  ensureDefaultNetworks(): Promise<void> {
    return this.nets.ensureDefaults();
  }

  createSandbox(req: SandboxCreateRequest): Promise<SandboxRecord> {
    return this.sbs.create(req);
  }

  deleteSandbox(ref: string): Promise<void> {
    return this.sbs.delete(ref);
  }

  connect(networkRef: string, sandboxRef: string, opts: ConnectOptions = {}): Promise<EndpointRecord> {
    return this.eps.connect(networkRef, sandboxRef, opts);
  }

  disconnect(networkRef: string, sandboxRef: string): Promise<void> {
    return this.eps.disconnect(networkRef, sandboxRef);
  }

  /** Brings kernel and store back in line after a stop or a SIGKILL (recovery.ts). */
  start(): Promise<void> {
    return this.recovery.start();
  }

  /**
   * Joins the cluster (after start: the local store is consistent), mirrors
   * its global networks and publishes this host's endpoints on them.
   */
  async startCluster(): Promise<void> {
    await this.cluster?.start();
  }

  /** Closes sandbox handles and resolvers; kernel objects and records stay for the next start. */
  close(): void {
    void this.cluster?.cluster.close();
    // DHCP renewals stop; the leases stay recorded for the next start.
    for (const ipam of this.lookup.ipams.values()) ipam.leases?.close();
    this.live.closeAll();
    this.dns.close();
    this.pool?.close();
  }
}
