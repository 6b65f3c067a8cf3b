// The daemon: wires config, store, IPAM, drivers, controller and API; recovers
// state at start; shuts down cleanly (networks stay for the next start).
import * as fs from 'node:fs';
import { BridgeDriver } from '../drivers/bridge/bridge';
import type { BridgeFirewall } from '../drivers/bridge/firewall';
import type { Driver } from '../drivers/driver';
import { HostDriver } from '../drivers/host/host';
import { NullDriver } from '../drivers/null/null';
import { OverlayDriver } from '../drivers/overlay/overlay';
import { KeyRingAgent } from './cluster/ring-agent';
import { MacvlanDriver } from '../drivers/macvlan/macvlan';
import { IpvlanDriver } from '../drivers/ipvlan/ipvlan';
import { ParentTable } from '../drivers/lanlink/parents';
import { RemoteDriver } from '../drivers/remote/remote';
import { RemoteIpam } from './ipam/remote';
import { DOCKER_SPEC_DIRS } from './remote/discovery';
import { ENGINE_CHECK_MS, inspectEngineNetwork } from './remote/engine-api';
import { CnmdError, bestEffort } from './errors';
import { ApiServer, apiTlsOptions, baseRouter, startApiServer } from './api/server';
import { mountNetworkRoutes } from './api/networks';
import { mountSandboxRoutes } from './api/sandboxes';
import { Config, parseHost } from './config';
import { Controller } from './controller/controller';
import type { EndpointRecord } from './controller/records';
import { SandboxFiles } from './controller/sandbox-files';
import { DefaultIpam, type PoolDescription } from './ipam/default';
import { ClusterIpam } from './ipam/cluster';
import { DHCP_IPAM, DhcpIpam } from './ipam/dhcp/dhcp';
import { Cluster } from './cluster/cluster';
import { resolveAdvertise } from './cluster/advertise';
import { readClusterSecret } from './cluster/keys';
import * as crypto from 'node:crypto';
import * as os from 'node:os';
import { IptablesBridgeFirewall } from '../drivers/bridge/iptables';
import type { FirewallBackend } from './firewall/firewall';
import { IptablesBackend } from './firewall/iptables';
import { PortPublisher } from './portmap/publisher';
import type { Ipam } from './ipam/ipam';
import { createLogger, Logger } from './log';
import { Handle } from './netlink/handle';
import { NetnsManager, sandboxSysctls } from './netns/netns';
import { NetnsPool } from './netns/pool';
import { LanProbe } from './ipam/dhcp/probe';
import { RESOLVER_SOCKETS, armResolverSockets } from './dns/resolver';
import { pluginDefs, PluginServers, startPluginServers } from './plugin/server';

import { SqliteStore } from './store/sqlite';
import type { Store } from './store/store';
import { VERSION } from './version';
import { InstanceLock } from './instance-lock';
import { claimSocketPath } from './unix-socket';
import { stripPrefix } from './net/addr';

export interface DaemonParts {
  /** The firewall the bridge driver programs; the default is iptables in the daemon's netns. */
  bridgeFirewall?: (log: Logger, backend: FirewallBackend, userlandProxy: boolean) => BridgeFirewall;
}

export class Daemon {
  readonly config: Config;
  readonly log: Logger;
  private api?: ApiServer;
  private plugins?: PluginServers;
  private store?: Store;
  private host?: Handle;
  private ports?: PortPublisher;
  private backend?: IptablesBackend;
  private lock?: InstanceLock;
  private overlay?: OverlayDriver;
  private ring?: KeyRingAgent;
  controller?: Controller;
  private clusterRetry?: NodeJS.Timeout;
  private clusterIpam?: ClusterIpam;
  private readonly parts: DaemonParts;

  constructor(config: Config, log?: Logger, parts: DaemonParts = {}) {
    this.config = config;
    this.log = log ?? createLogger(config.logLevel);
    this.parts = parts;
  }

  async start(): Promise<void> {
    try {
      await this.startParts();
    } catch (e) {
      // What did start is undone (sockets closed, locks released): the roots are free for a next attempt.
      await bestEffort(this.log, 'daemon start rollback', undefined, () => this.teardown());
      throw e;
    }
  }

  private async startParts(): Promise<void> {
    const c = this.config;
    const started = process.hrtime.bigint();
    // Files named by flags are read before anything changes: a wrong one refuses the start.
    const tls = c.tls
      ? apiTlsOptions({ cert: c.tlsCert!, key: c.tlsKey!, ca: c.tlsCaCert, verify: c.tlsVerify })
      : undefined;
    const secret = c.clusterSecretFile ? readClusterSecret(c.clusterSecretFile) : undefined;
    fs.mkdirSync(c.dataRoot, { recursive: true, mode: 0o700 });
    fs.mkdirSync(c.execRoot, { recursive: true, mode: 0o755 });
    // Before anything reads or changes state: a second daemon on these roots stops here.
    this.lock = InstanceLock.acquire(c);
    // A socket another daemon serves is found before recovery changes anything in the kernel.
    const apiAddr = parseHost(c.host);
    if (apiAddr.kind === 'unix') await claimSocketPath(apiAddr.path, '--host');
    const store = (this.store = new SqliteStore(c.dataRoot));
    const host = (this.host = Handle.at(null));
    const files = new SandboxFiles(c.execRoot);
    const netns = new NetnsManager(c.execRoot, { sysctls: sandboxSysctls() });
    const localIpam = new DefaultIpam(store, {
      hostNetworks: async () =>
        (await host.routeList({ table: 0 }))
          .filter((r) => r.dst !== 'default' && r.type === 'unicast')
          .map((r) => r.dst),
      describePool: (poolId, ip) => this.describePool(poolId, ip),
      reserved: () => this.controller?.engine.foreignPools() ?? [],
      localPools: c.defaultAddressPools,
    });
    // With a cluster store: this host's membership, and the default IPAM's global space in address blocks.
    const cluster = c.clusterStore ? await this.joinCluster(store, host) : undefined;
    const ipam: Ipam = cluster
      ? new ClusterIpam(
          store,
          localIpam,
          () => ({ store: cluster.store, hostId: cluster.hostId }),
          this.log,
          {
            blockGraceSeconds: c.clusterBlockGrace,
          },
        )
      : localIpam;
    // One model of the iptables tables for the whole daemon: networks and published ports share it.
    const backend = (this.backend = new IptablesBackend({ log: this.log, spareProcesses: true }));
    const firewall = (this.parts.bridgeFirewall ?? defaultBridgeFirewall)(this.log, backend, c.userlandProxy);
    const ports = (this.ports = new PortPublisher({
      backend,
      userlandProxy: c.userlandProxy,
      log: this.log,
    }));
    ports.allocator.describeOwner = (endpointId) => this.describeEndpoint(endpointId);
    await ports.start();
    // One table of parent links for both: macvlan and ipvlan never share a parent.
    const parents = new ParentTable();
    const drivers = new Map<string, Driver>([
      ['bridge', new BridgeDriver({ host, firewall, ports, log: this.log })],
      ['host', new HostDriver()],
      ['null', new NullDriver()],
      [
        'overlay',
        (this.overlay = new OverlayDriver({
          host,
          // The VTEP is --cluster-advertise's address; no cluster store, no VTEP: overlay networks are refused.
          vtep: () => cluster?.vtep,
          vxlanPort: c.vxlanPort,
          clusterSecret: secret,
          firewall: backend,
          onSendStateLost: () => this.ring?.requestRotation(),
          execRoot: c.execRoot,
          gateway: { firewall, ports },
          log: this.log,
        })),
      ],
      ['macvlan', new MacvlanDriver({ host, log: this.log, parents })],
      ['ipvlan', new IpvlanDriver({ host, log: this.log, parents })],
    ]);
    const ipams = new Map<string, Ipam>([
      ['default', ipam],
      // Addresses from the LAN's DHCP server, for macvlan and ipvlan l2 networks.
      [DHCP_IPAM, new DhcpIpam(this.log)],
    ]);
    const pool = new NetnsPool(netns, c.execRoot, {
      size: c.netnsPoolSize,
      log: this.log,
      sockets: { specs: RESOLVER_SOCKETS, arm: armResolverSockets },
    });
    // Names cnmd has no driver or IPAM for are looked up as Docker plugins: in the plugin dir, then Docker's spec dirs.
    const dirs = { socketDirs: [c.pluginDir], specDirs: [...DOCKER_SPEC_DIRS] };
    const absent = (e: unknown) => {
      if (e instanceof CnmdError && e.code === 'NOT_FOUND' && e.op === 'plugin discovery') return undefined;
      throw e;
    };
    const plugins = {
      driver: (name: string) => RemoteDriver.load(name, { dirs, host, log: this.log }).catch(absent),
      ipam: (name: string) => RemoteIpam.load(name, { dirs, log: this.log }).catch(absent),
    };
    // With the secret: the key ring in the cluster store, installed into the overlay driver's SAs.
    if (cluster && secret)
      this.ring = new KeyRingAgent({
        store: cluster.store,
        hostId: cluster.hostId,
        secret,
        rotationMs: c.encryptionKeyRotation * 1000,
        ttlSeconds: c.clusterTtl,
        log: this.log,
        install: (ring, error) => this.overlay!.setKeyRing(ring, error),
      });
    const controller = (this.controller = new Controller({
      store,
      netns,
      probe: new LanProbe(host, netns, this.log),
      pool,
      files,
      drivers,
      ipams,
      log: this.log,
      hostResolvConf: c.resolvConf,
      plugins,
      cluster,
    }));
    let recovered!: () => void;
    const ready = new Promise<void>((resolve) => (recovered = resolve));
    this.plugins = await startPluginServers(
      c.pluginDir,
      pluginDefs(controller, (d) => drivers.has(d)),
      this.log,
      ready,
    );
    await controller.start();
    await controller.ensureDefaultNetworks();
    if (c.engineHost) await this.checkEngine(controller);
    if (cluster) {
      if (ipam instanceof ClusterIpam) this.clusterIpam = ipam;
      if (ipam instanceof ClusterIpam)
        cluster.onTick = async () => {
          await ipam.retryReleases();
          await ipam.reclaimBlocks();
        };
      await this.startCluster(controller);
    }
    recovered();
    const router = baseRouter();
    mountNetworkRoutes(router, controller);
    mountSandboxRoutes(router, controller, files);
    if (apiAddr.kind === 'tcp' && !c.tls)
      this.log.warn(
        { listen: c.host },
        'the API is served on TCP without TLS (--insecure-tcp): anyone who can reach the port is root on this host; use --tlsverify',
      );
    if (apiAddr.kind === 'tcp' && c.tls && !c.tlsVerify)
      this.log.warn(
        { listen: c.host },
        'TLS without --tlsverify: any client can use the API; require client certificates with --tlsverify',
      );
    this.api = await startApiServer(apiAddr, router, this.log, {
      maxConnections: c.maxConnections,
      tls,
    });
    this.log.info(
      {
        version: VERSION,
        dataRoot: c.dataRoot,
        execRoot: c.execRoot,
        pluginDir: c.pluginDir,
        pid: process.pid,
        ms: Number(process.hrtime.bigint() - started) / 1e6,
      },
      'cnmd started',
    );
  }

  /**
   * --engine-host: engine networks and endpoints the engine no longer knows
   * are removed (it removed them while cnmd was down and gave up on its
   * calls). Bounded: an engine that does not answer in time keeps them.
   */
  private async checkEngine(controller: Controller): Promise<void> {
    const addr = parseHost(this.config.engineHost);
    const signal = AbortSignal.timeout(ENGINE_CHECK_MS);
    const r = await controller.engine.reconcileWithEngine((id) => inspectEngineNetwork(addr, id, signal));
    this.log.info(
      { engine: this.config.engineHost, removed: r, ms: ENGINE_CHECK_MS },
      'engine networks checked',
    );
  }

  /** How messages name an endpoint: by its sandbox (cnmd's own) or as the engine's. */
  private describeEndpoint(endpointId: string): string | undefined {
    const c = this.controller;
    const ep = c?.endpoints().find((e) => e.id === endpointId);
    if (!c || !ep) return undefined;
    if (ep.owner === 'engine') return `a Docker engine container (endpoint ${ep.id.slice(0, 12)})`;
    const sb = c.sandboxes().find((s) => s.id === ep.sandboxId);
    return sb ? `sandbox "${sb.name}"` : undefined;
  }

  /** For IPAM's messages: the network holding a pool, its gateway, and what holds an address. */
  private describePool(poolId: string, ip?: string): PoolDescription | undefined {
    const c = this.controller;
    if (!c) return undefined;
    const plain = (cidr?: string) => stripPrefix(cidr);
    const holderOf = (eps: EndpointRecord[]) => {
      const ep = ip === undefined ? undefined : eps.find((e) => plain(e.ipv4) === ip || plain(e.ipv6) === ip);
      return ep && this.describeEndpoint(ep.id);
    };
    const n = c.networks().find((x) => x.pools.some((p) => p.poolId === poolId));
    if (n) {
      const gw = n.pools.find((p) => p.poolId === poolId)?.gateway;
      return { network: `network "${n.name}"`, gateway: plain(gw), holder: holderOf(c.endpoints(n.id)) };
    }
    // A pool the engine leased through cnmd-ipam: its network is cnmd's only when its driver is cnmd's too
    // (the engine's name for it never reaches a plugin).
    const lease = c.engine.leases().find((l) => l.poolId === poolId);
    if (!lease) return undefined;
    const en = c.engine.networks().find((x) => x.pools.some((p) => p.pool === lease.pool));
    if (!en) return { network: 'a Docker engine network' };
    const gw = en.pools.find((p) => p.pool === lease.pool)?.gateway;
    return {
      network: `Docker engine network ${en.id.slice(0, 12)}`,
      gateway: plain(gw),
      holder: holderOf(c.engine.endpoints(en.id)),
    };
  }

  /** This host in the cluster: its id (kept in the local store), its VTEP, the store client. */
  private async joinCluster(store: Store, host: Handle): Promise<Cluster> {
    const c = this.config;
    const vtep = await resolveAdvertise(host, c.clusterAdvertise);
    let self = store.get<{ id: string }>('cluster-self', 'host');
    if (!self) {
      self = { id: crypto.randomBytes(16).toString('hex') };
      store.put('cluster-self', 'host', self);
    }
    // etcd's client (grpc, protobufjs: ~9 MB of heap) is loaded only by a daemon that joins a cluster.
    const { ClusterStore } = await import('./cluster/etcd');
    const clusterStore = new ClusterStore({
      url: c.clusterStore,
      cacert: c.clusterStoreCacert || undefined,
      cert: c.clusterStoreCert || undefined,
      key: c.clusterStoreKey || undefined,
      log: this.log,
    });
    return new Cluster({
      store: clusterStore,
      hostId: self.id,
      hostName: os.hostname(),
      vtep,
      ttlSeconds: c.clusterTtl,
      log: this.log,
    });
  }

  /**
   * Joins the cluster; an unreachable store does not keep the daemon from
   * serving local networks: it is retried in the background meanwhile (global
   * networks wait for it).
   */
  private async startCluster(controller: Controller): Promise<void> {
    try {
      // The ring first: the cluster's encrypted networks are made here as soon as it starts.
      await this.ring?.start();
      await controller.startCluster();
      // This host's blocks against the store's before anything is allocated (reclaimed while it was away?).
      await this.clusterIpam
        ?.reclaimBlocks()
        .catch((e) =>
          this.log.warn({ err: e }, 'address block check at join failed: retried by the cluster loop'),
        );
    } catch (e) {
      this.log.error({ err: e, store: this.config.clusterStore }, 'cluster store unreachable: retrying');
      this.clusterRetry = setTimeout(() => void this.startCluster(controller), 2000);
      this.clusterRetry.unref();
    }
  }

  async stop(): Promise<void> {
    await this.teardown();
    this.log.info('cnmd stopped');
  }

  private async teardown(): Promise<void> {
    // Both stop accepting at once and let their requests in flight finish (bounded, http-drain.ts).
    await Promise.all([this.plugins?.close(), this.api?.close()]);
    if (this.clusterRetry) clearTimeout(this.clusterRetry);
    await this.ring?.close();
    this.controller?.close();
    this.overlay?.close();
    this.ports?.close();
    this.backend?.close();
    this.host?.close();
    this.store?.close();
    this.lock?.release();
  }
}

function defaultBridgeFirewall(
  log: Logger,
  backend: FirewallBackend,
  userlandProxy: boolean,
): BridgeFirewall {
  return new IptablesBridgeFirewall(log, { backend, userlandProxy });
}
