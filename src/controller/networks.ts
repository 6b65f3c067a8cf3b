// Networks: create (IPAM pools and gateways, then the driver), delete, prune,
// and the daemon's default networks. Whether a network takes IPAM pools is
// the driver's Capabilities.needsIpam.
import { DEFAULT_BRIDGE_DEVICE, OPT } from '../../drivers/bridge/options';
import { CnmdError, TeardownErrors, bestEffort, hasCode, invalidArgument } from '../errors';
import type { GlobalNetworkRecord } from '../cluster/records';
import { GLOBAL_SPACE, Ipam } from '../ipam/ipam';
import type { IpamPolicy } from '../../drivers/driver';
import { contains, ipToBig, parseCidr } from '../net/addr';
import { runSteps, Step } from '../steps';
import { LOCK } from './locks';
import type { Core } from './core';
import { EndpointRecord, IpamConfig, KIND, NetworkRecord, PoolAllocation } from './records';
import { networkSpec } from './specs';
import { newId } from './util';
import { checkName, checkNetworkOptions } from './validate';

export interface NetworkCreateRequest {
  name: string;
  driver?: string;
  options?: Record<string, string>;
  ipam?: { driver?: string; config?: IpamConfig[]; options?: Record<string, string> };
  enableIPv6?: boolean;
  internal?: boolean;
  attachable?: boolean;
  labels?: Record<string, string>;
  /** Only for the daemon's own default networks and for plugin-created ones. */
  id?: string;
  isDefault?: boolean;
  /** A global network another host created: mirrored here from the cluster store's record. */
  fromCluster?: GlobalNetworkRecord;
}

/** The driver of a network created without one (Docker's default). */
export const DEFAULT_DRIVER = 'bridge';
export const DEFAULT_IPAM = 'default';

/** The daemon's default networks (Docker's bridge, host, none), made on first start when their driver exists. */
export const DEFAULT_NETWORKS: NetworkCreateRequest[] = [
  {
    name: 'bridge',
    driver: DEFAULT_DRIVER,
    isDefault: true,
    options: { [OPT.defaultBridge]: 'true', [OPT.name]: DEFAULT_BRIDGE_DEVICE },
  },
  { name: 'host', driver: 'host', isDefault: true },
  { name: 'none', driver: 'null', isDefault: true },
];

export class Networks {
  private readonly d: Core;

  constructor(d: Core) {
    this.d = d;
  }

  async create(req: NetworkCreateRequest): Promise<NetworkRecord> {
    const op = 'network create';
    const { store, lookup, log } = this.d;
    checkName(op, 'network', req.name);
    checkNetworkOptions(op, req.options ?? {});
    const driverName = req.driver || DEFAULT_DRIVER;
    const driver = await lookup.loadDriver(driverName, op);
    const caps = driver.capabilities();
    const global = caps.scope === 'global';
    // The cluster store holds global networks only: another record there would make a local network on every host.
    if (req.fromCluster && !global)
      throw invalidArgument(
        op,
        driverName,
        `${op} ${req.name}: the cluster store's network ${req.fromCluster.id} has driver ${driverName}, which is not global-scope: not mirrored`,
      );
    if (global && !this.d.cluster)
      throw new CnmdError(
        'FORBIDDEN',
        `${op} ${req.name}: ${driverName} networks need a cluster store; start cnmd with --cluster-store ` +
          `etcd://HOST:2379`,
        { op, object: req.name },
      );
    const id = req.fromCluster?.id ?? req.id ?? newId();
    const keys = [LOCK.netName(req.name), LOCK.net(id), ...(caps.singleton ? [LOCK.driver(driverName)] : [])];
    return this.d.locks.lock(keys, async () => {
      const existing = store.list<NetworkRecord>(KIND.network);
      if (existing.some((n) => n.name === req.name)) {
        throw new CnmdError('ALREADY_EXISTS', `network with name ${req.name} already exists`, {
          op,
          object: req.name,
        });
      }
      if (caps.singleton && existing.some((n) => n.driver === driverName)) {
        throw new CnmdError('FORBIDDEN', `only one instance of "${driverName}" network is allowed`, {
          op,
          object: req.name,
        });
      }
      const ipamDriver = req.ipam?.driver || DEFAULT_IPAM;
      const ipam = await lookup.loadIpam(ipamDriver, op);
      // Refused before the cluster store or IPAM record anything.
      if (!req.fromCluster) await driver.checkNetwork?.(req.name, req.options ?? {});
      // A global network exists in the cluster store first: its VNI and subnets are decided there.
      const shared =
        global &&
        (req.fromCluster ?? (await this.d.cluster!.cluster.createNetwork(globalSpec(id, driverName, req))));
      if (shared) req = { ...req, options: shared.options, ipam: { ...req.ipam, config: shared.ipamConfig } };
      const config = req.ipam?.config ?? [];
      const rec: NetworkRecord = {
        id,
        name: req.name,
        driver: driverName,
        scope: caps.scope,
        created: new Date().toISOString(),
        enableIPv6: !!req.enableIPv6,
        internal: !!req.internal,
        attachable: !!req.attachable,
        ingress: false,
        labels: req.labels ?? {},
        options: req.options ?? {},
        ipamDriver,
        ipamOptions: req.ipam?.options ?? {},
        ipamConfig: config,
        pools: [],
        isDefault: !!req.isDefault,
        state: 'creating',
      };
      if (config.some((c) => c.subnet?.includes(':')) && !rec.enableIPv6) {
        throw invalidArgument(op, req.name, 'an IPv6 subnet was given without --ipv6 (EnableIPv6)');
      }
      // Before the record: options the driver refuses leave nothing behind.
      const policy: IpamPolicy = driver.ipamPolicy?.({
        id,
        options: rec.options,
        internal: rec.internal,
      }) ?? {
        gateway: 'ipam',
      };
      if (ipam.leases) {
        checkLinkIpam(op, rec, driverName, policy, caps.needsIpam !== false);
        ipam.leases.checkOptions(op, rec.ipamOptions);
      }
      store.put(KIND.network, id, rec);
      const steps: Step[] = [];
      // A link-bound IPAM (DHCP) has no pools: each endpoint's address comes at its join.
      if (caps.needsIpam !== false && !ipam.leases) steps.push(this.ipamStep(ipam, rec, config, policy));
      steps.push({
        name: 'driver',
        do: () => driver.createNetwork(networkSpec(rec)),
        undo: () => driver.deleteNetwork(id),
      });
      try {
        await runSteps(steps, (step, e) => log.error({ err: e, network: id, step }, 'rollback step failed'));
      } catch (e) {
        store.delete(KIND.network, id);
        if (shared && !req.fromCluster)
          await this.d
            .cluster!.cluster.removeNetwork(id, req.name)
            .catch((re) => log.error({ err: re, network: id }, 'cluster rollback of network create failed'));
        throw e;
      }
      rec.state = 'ready';
      store.put(KIND.network, id, rec);
      log.info(
        { network: id, name: rec.name, driver: driverName, pools: rec.pools.map((p) => p.pool) },
        'network created',
      );
      return rec;
    });
  }

  /** The network's pools: the configured subnets (or one free pool per family), each with its gateway. */
  private ipamStep(ipam: Ipam, rec: NetworkRecord, config: IpamConfig[], policy: IpamPolicy): Step {
    const v4 = config.filter((c) => !c.subnet || !c.subnet.includes(':'));
    const v6 = config.filter((c) => c.subnet?.includes(':'));
    const wanted: { cfg: IpamConfig; v6: boolean }[] = [
      ...(v4.length ? v4 : [{}]).map((cfg) => ({ cfg, v6: false })),
      ...(rec.enableIPv6 ? (v6.length ? v6 : [{}]) : []).map((cfg) => ({ cfg, v6: true })),
    ];
    return {
      name: 'ipam',
      do: async () => {
        for (const w of wanted) rec.pools.push(await this.allocatePool(ipam, rec, w.cfg, w.v6, policy));
      },
      undo: async () => {
        for (const p of rec.pools.reverse()) await this.releasePool(ipam, p);
        rec.pools = [];
      },
    };
  }

  private async allocatePool(
    ipam: Ipam,
    rec: NetworkRecord,
    cfg: IpamConfig,
    v6: boolean,
    policy: IpamPolicy,
  ): Promise<PoolAllocation> {
    const op = 'network create';
    const gatewayGiven = cfg.gateway !== undefined && cfg.gateway !== '';
    const gatewayMode = v6 ? (policy.gatewayIPv6 ?? policy.gateway) : policy.gateway;
    if (gatewayGiven && gatewayMode === 'none')
      throw invalidArgument(
        op,
        cfg.gateway,
        `--gateway ${cfg.gateway}: ${policy.why ?? 'this network has no gateway'}; remove it`,
      );
    const pool = await ipam.requestPool({
      addressSpace: rec.scope === 'global' ? GLOBAL_SPACE : undefined,
      pool: cfg.subnet,
      subPool: cfg.ipRange,
      v6,
      options: rec.ipamOptions,
      partition: policy.partition,
    });
    const alloc: PoolAllocation = {
      poolId: pool.poolId,
      pool: pool.pool,
      gatewayAllocated: false,
      ipRange: cfg.ipRange,
      auxAddresses: {},
      v6,
    };
    // Persist each allocation as it happens, so a crash between here and "ready" is undone at restart.
    rec.pools.push(alloc);
    this.d.store.put(KIND.network, rec.id, rec);
    rec.pools.pop();
    try {
      if (cfg.gateway !== undefined && cfg.gateway !== '') checkGateway(op, cfg.gateway, pool.pool);
      for (const [name, ip] of Object.entries(cfg.auxAddresses ?? {})) {
        if (cfg.gateway && ip === cfg.gateway)
          throw invalidArgument(op, ip, `auxiliary address ${name}=${ip} is the gateway`);
      }
      if (gatewayGiven || gatewayMode === 'ipam') {
        alloc.gateway = await ipam.requestAddress(pool.poolId, cfg.gateway || undefined, { gateway: true });
        alloc.gatewayAllocated = true;
      }
      for (const [name, ip] of Object.entries(cfg.auxAddresses ?? {})) {
        await ipam.requestAddress(pool.poolId, ip);
        alloc.auxAddresses[name] = ip;
      }
      return alloc;
    } catch (e) {
      // A rollback: its failures are logged, the allocation's error is the answer.
      await bestEffort(this.d.log, 'pool release', alloc.pool, () => this.releasePool(ipam, alloc));
      throw e;
    }
  }

  /**
   * Gives a pool back with the addresses the network held in it; every release is tried, failures reported
   * together.
   */
  private async releasePool(ipam: Ipam, p: PoolAllocation): Promise<void> {
    const errs = new TeardownErrors('pool release', p.pool, this.d.log);
    for (const [name, ip] of Object.entries(p.auxAddresses))
      await errs.step(`release auxiliary address ${name}`, () => ipam.releaseAddress(p.poolId, ip));
    if (p.gatewayAllocated && p.gateway)
      await errs.step('release gateway', () => ipam.releaseAddress(p.poolId, p.gateway!));
    await errs.step('release pool', () => ipam.releasePool(p.poolId));
    errs.throwIfFailed();
  }

  /** fromCluster: the cluster store removed it (another host's rm): only the local copy goes. */
  async delete(ref: string, opts: { fromCluster?: boolean } = {}): Promise<void> {
    const op = 'network rm';
    const { store, lookup, log } = this.d;
    const n0 = lookup.network(ref);
    lookup.refuseEngineNetwork(
      n0,
      op,
      'remove it with docker network rm (or, if no engine uses it any more, with cnmctl network rm --force)',
    );
    await this.d.locks.lock([LOCK.net(n0.id), LOCK.netName(n0.name)], async () => {
      const n = store.get<NetworkRecord>(KIND.network, n0.id);
      if (!n) throw new CnmdError('NOT_FOUND', `network ${ref} not found`, { op, object: ref });
      if (n.isDefault)
        throw new CnmdError('FORBIDDEN', `${n.name} is a pre-defined network and cannot be removed`, {
          op,
          object: n.name,
        });
      // Global: refused while any host has endpoints on it (IN_USE naming them); then gone from every host.
      if (n.scope === 'global' && !opts.fromCluster && this.d.cluster)
        await this.d.cluster.cluster.removeNetwork(n.id, n.name);
      const eps = store.list<EndpointRecord>(KIND.endpoint).filter((e) => e.networkId === n.id);
      if (eps.length) {
        throw new CnmdError(
          'IN_USE',
          `error while removing network: network ${n.name} id ${n.id} has active endpoints`,
          { op, object: n.name },
        );
      }
      n.state = 'deleting';
      store.put(KIND.network, n.id, n);
      await this.finishDelete(n);
      log.info({ network: n.id, name: n.name }, 'network removed');
    });
  }

  /**
   * The driver's network, then the pools. A driver failure keeps the record
   * ('deleting': a restart's cleanupNetwork finishes it); pool releases are
   * logged and do not keep the network.
   */
  private async finishDelete(n: NetworkRecord): Promise<void> {
    const driver = this.d.lookup.driverOf(n);
    if (driver) await driver.deleteNetwork(n.id);
    const ipam = this.d.lookup.ipams.get(n.ipamDriver);
    if (ipam)
      for (const p of n.pools)
        await this.releasePool(ipam, p).catch((e) =>
          this.d.log.warn({ err: e, pool: p.poolId }, 'pool release failed'),
        );
    this.d.store.delete(KIND.network, n.id);
  }

  /** Removes every network no sandbox uses (not the defaults, not the engine's). */
  async prune(match: (n: NetworkRecord) => boolean = () => true): Promise<string[]> {
    const { lookup } = this.d;
    const used = new Set(lookup.endpoints().map((e) => e.networkId));
    const removed: string[] = [];
    for (const n of lookup.networks()) {
      if (n.isDefault || n.owner === 'engine' || used.has(n.id) || !match(n)) continue;
      try {
        await this.delete(n.id);
        removed.push(n.name);
      } catch (e) {
        // Gone meanwhile, or joined meanwhile: not this prune's to remove.
        if (!hasCode(e, 'IN_USE', 'NOT_FOUND')) throw e;
      }
    }
    return removed;
  }

  /** The cluster has a global network: made on this host too, unless it is here already. */
  async mirror(g: GlobalNetworkRecord): Promise<void> {
    const n = this.d.store.get<NetworkRecord>(KIND.network, g.id);
    if (n) return;
    const clash = this.d.store.list<NetworkRecord>(KIND.network).find((x) => x.name === g.name);
    if (clash) {
      this.d.log.error(
        { network: g.id, name: g.name, local: clash.id },
        'global network not mirrored: a network of this host has its name',
      );
      return;
    }
    await this.create({
      name: g.name,
      driver: g.driver,
      enableIPv6: g.enableIPv6,
      internal: g.internal,
      attachable: g.attachable,
      labels: g.labels,
      ipam: { options: g.ipamOptions },
      fromCluster: g,
    });
  }

  /** The cluster no longer has a global network: its local copy goes (kept while local endpoints use it). */
  async unmirror(id: string): Promise<void> {
    const n = this.d.store.get<NetworkRecord>(KIND.network, id);
    if (!n || n.scope !== 'global') return;
    if (this.d.store.list<EndpointRecord>(KIND.endpoint).some((e) => e.networkId === id)) {
      this.d.log.warn(
        { network: id, name: n.name },
        'global network removed from the cluster but used here: kept',
      );
      return;
    }
    // This host's own rm may be finishing it: gone meanwhile is done.
    await this.delete(id, { fromCluster: true }).catch((e) => {
      if (!hasCode(e, 'NOT_FOUND')) throw e;
    });
  }

  /** The daemon's default networks, made on first start (those whose driver this daemon has). */
  async ensureDefaults(): Promise<void> {
    const have = new Set(this.d.lookup.networks().map((n) => n.name));
    for (const d of DEFAULT_NETWORKS) {
      if (have.has(d.name) || !this.d.lookup.drivers.has(d.driver!)) continue;
      await this.create(d);
    }
  }
}

/** What the cluster store is asked to create for a global network. */
function globalSpec(id: string, driver: string, req: NetworkCreateRequest) {
  return {
    id,
    name: req.name,
    driver,
    options: req.options ?? {},
    labels: req.labels ?? {},
    internal: !!req.internal,
    attachable: !!req.attachable,
    enableIPv6: !!req.enableIPv6,
    ipamOptions: req.ipam?.options ?? {},
    ipamConfig: req.ipam?.config ?? [],
  };
}

/**
 * A link-bound IPAM (--ipam-driver dhcp) takes everything from the LAN's
 * server: only drivers whose endpoints are on a LAN of their own, IPv4, and
 * no pool settings of the user's.
 */
function checkLinkIpam(
  op: string,
  rec: NetworkRecord,
  driver: string,
  policy: IpamPolicy,
  needsIpam: boolean,
): void {
  const what = `--ipam-driver ${rec.ipamDriver}`;
  if (!needsIpam || !policy.lanLeases)
    throw invalidArgument(
      op,
      rec.name,
      `${what}: ${policy.noLanLeases ?? `${driver} endpoints are not on a LAN of their own`}; the LAN's DHCP server addresses macvlan networks and ipvlan l2 networks with -o parent=`,
    );
  if (rec.ipamConfig.length)
    throw invalidArgument(
      op,
      rec.name,
      `${what}: the LAN's DHCP server gives the subnet, gateway and addresses: remove --subnet, --ip-range, --gateway and --aux-address`,
    );
  if (rec.enableIPv6)
    throw invalidArgument(op, rec.name, `${what} gives IPv4 addresses only (no DHCPv6): remove --ipv6`);
}

/** A gateway the user asked for must be a host address inside the pool's subnet. */
function checkGateway(op: string, gateway: string, subnet: string): void {
  const g = ipToBig(gateway);
  const c = parseCidr(subnet)!;
  if (!g || !contains(c, g.family, g.value))
    throw invalidArgument(op, gateway, `gateway ${gateway} is not inside subnet ${subnet}`);
  const isBroadcast = c.family === 4 && c.size > 2n && g.value === c.base + c.size - 1n;
  if ((g.value === c.base && c.size > 2n) || isBroadcast) {
    throw invalidArgument(
      op,
      gateway,
      `gateway ${gateway} is the ${isBroadcast ? 'broadcast' : 'network'} address of ${subnet}; pick a host address`,
    );
  }
}
