// The Docker engine's objects: networks and endpoints it creates through
// cnmd's plugin sockets, and the IPAM pools it holds through cnmd-ipam. The
// engine owns their lifecycle (it never sends them again after a cnmd
// restart), so they are persisted like cnmd's own, restored at start, and
// refused to cnmd's own API for removal. They live under their own store
// kinds: a network id can be both cnmd's (through drivers/remote) and the
// engine's view of the same id on the plugin side.
import type { Driver, IpamData, JoinInfo } from '../../drivers/driver';
import { CnmdError, TeardownErrors, bestEffort, invalidArgument } from '../errors';
import type { Ipam } from '../ipam/ipam';
import { contains, ipToBig, isMac, overlaps, parseCidr, stripPrefix } from '../net/addr';
import type { Logger } from '../log';
import type { PortBinding } from '../portmap/spec';
import type { EngineNetworkAnswer } from '../remote/engine-api';
import type { Store } from '../store/store';
import { LOCK } from './locks';
import { endpointSpec, networkSpec } from './specs';
import type { KeyedMutex } from './mutex';
import { EndpointRecord, IpamLeaseRecord, KIND, NetworkRecord, PoolAllocation } from './records';
import { boundNetworkOrThrow, driverNetworkId, enginePublication, overlayBinding } from './engine-overlay';
import type { EndpointPublication } from '../cluster/records';
import type { LanProbe } from '../ipam/dhcp/probe';
import { EngineDhcp } from './engine-dhcp';
import { checkSandboxKey } from './validate';

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface EngineNetworkRequest {
  id: string;
  /** The user's -o options (com.docker.network.generic). */
  options: Record<string, string>;
  enableIPv6: boolean;
  internal: boolean;
  ipv4: IpamData[];
  ipv6: IpamData[];
}

export interface EngineInterface {
  /** CIDRs, as the engine's IPAM gave them. */
  address?: string;
  addressIPv6?: string;
  mac?: string;
}

export interface EngineDeps {
  store: Store;
  drivers: Map<string, Driver>;
  ipams: Map<string, Ipam>;
  locks: KeyedMutex;
  log: Logger;
  /** Called whenever the set of endpoints changes (views cache them). */
  changed(): void;
  /** This host in the cluster (--cluster-store): endpoints of cnmd-overlay networks are published there. */
  cluster?(): EngineClusterLink | undefined;
  /** Speaks DHCP for an endpoint before and after its link (cnmd-ipam's dhcp mode). */
  probe?: LanProbe;
}

export interface EngineClusterLink {
  hostId: string;
  vtep: string;
  publish(p: EndpointPublication): void;
  unpublish(networkId: string, endpointId: string): void;
}

/**
 * The name an engine network shows in cnmd (the engine never tells its name): its id's 12-hex prefix, as
 * `docker network ls` shows it.
 */
export function engineNetworkName(id: string): string {
  return id.slice(0, 12);
}

/**
 * The temporary name of the interface handed to the engine: unique per endpoint, never a cnmd host-side name
 * (veth…).
 */
export function engineSrcName(endpointId: string): string {
  return `cnmd${endpointId.slice(0, 11)}`;
}

export class EngineObjects {
  private readonly d: EngineDeps;
  /** cnmd-ipam's dhcp mode. */
  private readonly dhcp: EngineDhcp;

  constructor(deps: EngineDeps) {
    this.d = deps;
    this.dhcp = new EngineDhcp(deps);
  }

  networks(): NetworkRecord[] {
    return this.d.store.list<NetworkRecord>(KIND.engineNetwork).filter((n) => n.state === 'ready');
  }

  endpoints(networkId?: string): EndpointRecord[] {
    const all = this.d.store.list<EndpointRecord>(KIND.engineEndpoint).filter((e) => e.state === 'ready');
    return networkId ? all.filter((e) => e.networkId === networkId) : all;
  }

  private driver(name: string, op: string): Driver {
    const d = this.d.drivers.get(name);
    if (!d)
      throw new CnmdError(
        'NOT_FOUND',
        `${op}: cnmd has no "${name}" driver (it has ${[...this.d.drivers.keys()].join(', ')})`,
        { op, object: name },
      );
    return d;
  }

  private network(op: string, id: unknown): NetworkRecord {
    if (typeof id !== 'string' || id === '')
      throw invalidArgument(
        op,
        String(id),
        'NetworkID is missing: give the id of a network created through this plugin',
      );
    const n = this.d.store.get<NetworkRecord>(KIND.engineNetwork, id);
    if (!n || n.state !== 'ready') {
      throw new CnmdError(
        'NOT_FOUND',
        `${op}: network ${id} not found: it was not created through this plugin (or was removed); create it ` +
          `with docker network create -d cnmd-bridge`,
        { op, object: id },
      );
    }
    return n;
  }

  private endpoint(op: string, networkId: string, id: unknown): EndpointRecord {
    if (typeof id !== 'string' || id === '') throw invalidArgument(op, String(id), 'EndpointID is missing');
    const e = this.d.store.get<EndpointRecord>(KIND.engineEndpoint, id);
    if (!e || e.state !== 'ready' || e.networkId !== networkId) {
      throw new CnmdError('NOT_FOUND', `${op}: endpoint ${id} not found in network ${networkId}`, {
        op,
        object: id,
      });
    }
    return e;
  }

  private pools(op: string, data: IpamData[], v6: boolean): PoolAllocation[] {
    return data.map((d) => {
      const c = typeof d.pool === 'string' ? parseCidr(d.pool) : undefined;
      if (!c || (c.family === 6) !== v6)
        throw invalidArgument(
          op,
          String(d.pool),
          `IPv${v6 ? 6 : 4}Data Pool ${JSON.stringify(d.pool)} is not an IPv${v6 ? 6 : 4} CIDR`,
        );
      if (d.gateway !== undefined && d.gateway !== '') {
        const g = ipToBig(stripPrefix(d.gateway)!);
        if (!g || !contains(c, g.family, g.value))
          throw invalidArgument(op, d.gateway, `Gateway ${d.gateway} is not inside pool ${d.pool}`);
      }
      const prefix = d.pool.split('/')[1];
      const gateway = d.gateway
        ? d.gateway.includes('/')
          ? d.gateway
          : `${d.gateway}/${prefix}`
        : undefined;
      const aux: Record<string, string> = {};
      for (const [k, v] of Object.entries(d.auxAddresses ?? {})) aux[k] = stripPrefix(v)!;
      return { poolId: '', pool: d.pool, gateway, gatewayAllocated: false, auxAddresses: aux, v6 };
    });
  }

  // ---- networks ----

  async createNetwork(driverName: string, req: EngineNetworkRequest): Promise<NetworkRecord> {
    const op = 'plugin create network';
    if (typeof req.id !== 'string' || !ID_RE.test(req.id))
      throw invalidArgument(op, String(req.id), 'NetworkID is missing or not an id (letters, digits, _ . -)');
    const driver = this.driver(driverName, op);
    return this.d.locks.lock([LOCK.engineNet(req.id)], async () => {
      if (this.d.store.get<NetworkRecord>(KIND.engineNetwork, req.id)) {
        throw new CnmdError('ALREADY_EXISTS', `${op}: network ${req.id} already exists`, {
          op,
          object: req.id,
        });
      }
      const rec: NetworkRecord = {
        id: req.id,
        name: engineNetworkName(req.id),
        driver: driverName,
        // The engine's view: a bound cnmd-overlay network is local to it (the cluster is cnmd's business).
        scope: driverName === 'overlay' ? 'local' : driver.capabilities().scope,
        created: new Date().toISOString(),
        enableIPv6: req.enableIPv6,
        internal: req.internal,
        attachable: false,
        ingress: false,
        labels: {},
        options: req.options,
        ipamDriver: 'engine',
        ipamOptions: {},
        ipamConfig: [],
        pools: [...this.pools(op, req.ipv4, false), ...this.pools(op, req.ipv6, true)],
        isDefault: false,
        owner: 'engine',
        state: 'creating',
      };
      if (!rec.pools.some((p) => !p.v6))
        throw invalidArgument(
          op,
          req.id,
          'IPv4Data is empty: the network needs an IPv4 pool (the engine sends one from its IPAM driver)',
        );
      const dhcpPool = this.dhcp.poolFor(rec);
      if (driverName === 'overlay') {
        rec.boundTo = overlayBinding(op, this.d.store, rec.id, rec.options, rec.pools, this.leases()).id;
      } else if (dhcpPool) {
        // The LAN's subnet, addressed by its server: no pool of cnmd's to clash with.
        this.dhcp.bind(op, rec, driver, dhcpPool);
      } else {
        this.refuseGlobalLease(op, rec);
        this.refuseOverlap(op, rec);
      }
      // No await since the check: a cnmd network made meanwhile sees this record (foreignPools).
      this.d.store.put(KIND.engineNetwork, rec.id, rec);
      try {
        // A bound network's data plane is its cnmd overlay network's, made when that was mirrored here.
        if (!rec.boundTo) await driver.createNetwork(networkSpec(rec));
      } catch (e) {
        this.d.store.delete(KIND.engineNetwork, rec.id);
        this.dhcp.unbind(rec);
        throw e;
      }
      rec.state = 'ready';
      this.d.store.put(KIND.engineNetwork, rec.id, rec);
      this.d.log.info(
        {
          network: rec.id,
          driver: driverName,
          pools: rec.pools.map((p) => p.pool),
          owner: 'engine',
          boundTo: rec.boundTo,
        },
        'network created',
      );
      return rec;
    });
  }

  /**
   * A pool the engine's own IPAM chose (not leased through cnmd-ipam) that
   * overlaps one of cnmd's networks would put one subnet on two bridges, and
   * routes to both: refused. Synchronous, so the check and the record that
   * makes the pool visible to cnmd's own creates are one step.
   */
  private refuseOverlap(op: string, rec: NetworkRecord): void {
    const leased = new Set(this.leases().map((l) => l.pool));
    const own = this.d.store
      .list<NetworkRecord>(KIND.network)
      .flatMap((n) => n.pools.map((p) => ({ pool: p.pool, by: `network ${n.name}` })));
    // The IPAM's pools too: a cnmd network being made has its pool before its record names it.
    const allocated = (this.d.ipams.get('default')?.pools?.() ?? [])
      .filter((p) => !leased.has(p.pool))
      .map((p) => ({ pool: p.pool, by: `IPAM pool ${p.id}` }));
    // Another engine network's pool, leased or not: the engine never asks for one pool twice, a hostile
    // client can, and one subnet on two bridges breaks both.
    const engine = this.d.store
      .list<NetworkRecord>(KIND.engineNetwork)
      .filter((n) => n.id !== rec.id && !n.dhcpPool)
      .flatMap((n) => n.pools.map((p) => ({ pool: p.pool, by: `engine network ${n.id.slice(0, 12)}` })));
    for (const p of rec.pools) {
      const c = parseCidr(p.pool)!;
      const others = leased.has(p.pool) ? engine : [...own, ...allocated, ...engine];
      const clash = others.find((o) => {
        const oc = parseCidr(o.pool);
        return !!oc && overlaps(oc, c);
      });
      if (clash)
        throw new CnmdError(
          'CONFLICT',
          `${op}: pool ${p.pool} overlaps ${clash.pool} of cnmd's ${clash.by}; choose another subnet`,
          { op, object: p.pool },
        );
    }
  }

  /** A cnmd overlay network's cluster-wide pool is for the engine networks bound to it (cnmd-overlay) only. */
  private refuseGlobalLease(op: string, rec: NetworkRecord): void {
    const global = new Set(
      this.leases()
        .filter((l) => l.global)
        .map((l) => l.pool),
    );
    const p = rec.pools.find((x) => global.has(x.pool));
    if (p)
      throw new CnmdError(
        'CONFLICT',
        `${op}: pool ${p.pool} is the subnet of a cnmd overlay network: only a cnmd-overlay network bound to it ` +
          `(-o cnmd.network=NAME) may use it; choose another subnet`,
        { op, object: p.pool },
      );
  }

  /** Pools of engine networks that cnmd's IPAM did not hand out: taken for cnmd's own networks too. */
  foreignPools(): string[] {
    const leased = new Set(this.leases().map((l) => l.pool));
    return this.d.store
      .list<NetworkRecord>(KIND.engineNetwork)
      .flatMap((n) => n.pools.map((p) => p.pool))
      .filter((p) => !leased.has(p));
  }

  async deleteNetwork(id: unknown): Promise<void> {
    const op = 'plugin delete network';
    const n0 = this.network(op, id);
    await this.d.locks.lock([LOCK.engineNet(n0.id)], async () => {
      const n = this.network(op, n0.id);
      const eps = this.d.store.list<EndpointRecord>(KIND.engineEndpoint).filter((e) => e.networkId === n.id);
      if (eps.length)
        throw new CnmdError(
          'CONFLICT',
          `${op}: network ${n.id} still has ${eps.length} endpoint(s); delete them first`,
          { op, object: n.id },
        );
      n.state = 'deleting';
      this.d.store.put(KIND.engineNetwork, n.id, n);
      if (!n.boundTo) await this.d.drivers.get(n.driver)?.deleteNetwork(n.id);
      this.d.store.delete(KIND.engineNetwork, n.id);
      this.d.log.info({ network: n.id, owner: 'engine' }, 'network removed');
    });
  }

  /**
   * `cnmctl network rm --force`, or the engine said at start it does not know
   * the network (reconcileWithEngine): an engine network whose engine is gone
   * (it removed its containers and the network while cnmd was down, gave up on
   * the failed calls, and never sends them again). Its endpoints (ports,
   * veths), its bridge and rules, and the cnmd-ipam leases of its pools go; the
   * engine is not asked. A failed step stops it: the records go only with the
   * kernel objects.
   */
  async forceRemove(id: string, why = 'removed by the operator (--force)'): Promise<void> {
    const op = 'network rm --force';
    await this.d.locks.lock([LOCK.engineNet(id)], async () => {
      const n = this.d.store.get<NetworkRecord>(KIND.engineNetwork, id);
      if (!n) throw new CnmdError('NOT_FOUND', `network ${id} not found`, { op, object: id });
      for (const ep of this.d.store
        .list<EndpointRecord>(KIND.engineEndpoint)
        .filter((e) => e.networkId === id))
        await this.dropEndpoint(n, ep);
      this.d.changed();
      n.state = 'deleting';
      this.d.store.put(KIND.engineNetwork, n.id, n);
      if (!n.boundTo) await this.d.drivers.get(n.driver)?.deleteNetwork(n.id);
      this.d.store.delete(KIND.engineNetwork, n.id);
      const pools = new Set(n.pools.map((p) => p.pool));
      for (const l of this.leases().filter((x) => pools.has(x.pool))) await this.releasePool(l.poolId);
      this.d.log.warn({ network: n.id, owner: 'engine' }, `engine network ${why}`);
    });
  }

  /** An endpoint the engine no longer holds: its ports, veth and record (the caller holds the network's lock). */
  private async dropEndpoint(n: NetworkRecord, ep: EndpointRecord): Promise<void> {
    const driver = this.d.drivers.get(n.driver);
    const nid = driverNetworkId(n);
    if (n.dhcpPool) this.dhcp.left(n, ep);
    if (driver) {
      await driver.revokeExternalConnectivity(nid, ep.id);
      await driver.leave(nid, ep.id);
      await driver.deleteEndpoint(nid, ep.id);
    }
    this.unpublish(n, ep);
    this.d.store.delete(KIND.engineEndpoint, ep.id);
  }

  /**
   * At start, with --engine-host: each engine network is looked up in the
   * engine (answer() is bounded in time by the caller). One the engine does not
   * know goes whole (forceRemove); in one it knows, endpoints it does not list
   * go with their cnmd-ipam addresses. "Cannot tell" (no engine, slow, an
   * error) keeps everything. Runs before the plugin sockets answer, so no
   * engine call races it. Returns what it removed.
   */
  async reconcileWithEngine(
    answer: (networkId: string) => Promise<EngineNetworkAnswer>,
  ): Promise<{ networks: string[]; endpoints: string[]; kept: string[] }> {
    const out = { networks: [] as string[], endpoints: [] as string[], kept: [] as string[] };
    const nets = this.networks();
    const answers = await Promise.all(nets.map((n) => answer(n.id)));
    for (const [i, n] of nets.entries()) {
      const a = answers[i];
      try {
        if (a.known === false) {
          await this.forceRemove(n.id, 'removed: the engine does not know it (--engine-host)');
          out.networks.push(n.id);
        } else if (a.known === true) {
          out.endpoints.push(...(await this.dropUnknownEndpoints(n.id, a.endpoints)));
        } else {
          this.d.log.warn(
            { network: n.id, owner: 'engine', reason: a.reason },
            'cannot tell whether the engine still knows this network: kept',
          );
          out.kept.push(n.id);
        }
      } catch (e) {
        this.d.log.error({ err: e, network: n.id, owner: 'engine' }, 'engine network reconcile failed: kept');
        out.kept.push(n.id);
      }
    }
    return out;
  }

  private async dropUnknownEndpoints(networkId: string, known: Set<string>): Promise<string[]> {
    return this.d.locks.lock([LOCK.engineNet(networkId)], async () => {
      const n = this.d.store.get<NetworkRecord>(KIND.engineNetwork, networkId);
      if (!n) return [];
      const gone = this.d.store
        .list<EndpointRecord>(KIND.engineEndpoint)
        .filter((e) => e.networkId === networkId && !known.has(e.id));
      for (const ep of gone) {
        await this.dropEndpoint(n, ep);
        // Its address, if the engine leased it through cnmd-ipam (the engine's release failed while cnmd was down).
        for (const cidr of [ep.ipv4, ep.ipv6]) {
          const ip = stripPrefix(cidr);
          const l =
            ip &&
            this.leases().find((x) => x.addresses.includes(ip) && n.pools.some((p) => p.pool === x.pool));
          if (l) await this.releaseAddress(l.poolId, ip);
        }
        this.d.log.warn(
          { network: n.id, endpoint: ep.id, owner: 'engine' },
          'engine endpoint removed: the engine does not know it (--engine-host)',
        );
      }
      if (gone.length) this.d.changed();
      return gone.map((e) => e.id);
    });
  }

  // ---- endpoints ----

  private checkAddress(op: string, n: NetworkRecord, cidr: string | undefined, v6: boolean): void {
    if (cidr === undefined || cidr === '') return;
    const a = ipToBig(stripPrefix(cidr)!);
    if (!a || !/\/\d+$/.test(cidr) || (a.family === 6) !== v6)
      throw invalidArgument(
        op,
        cidr,
        `Interface.${v6 ? 'AddressIPv6' : 'Address'} ${JSON.stringify(cidr)} is not an IPv${v6 ? 6 : 4} ` +
          `address with a prefix (like 10.1.0.2/24)`,
      );
    if (!n.pools.some((p) => p.v6 === v6 && contains(parseCidr(p.pool)!, a.family, a.value))) {
      throw invalidArgument(
        op,
        cidr,
        `address ${cidr} is not in any pool of network ${n.id} (${n.pools.map((p) => p.pool).join(', ')})`,
      );
    }
  }

  /** An address (or the gateway's) or a MAC another endpoint of the network has: refused (under the network's lock). */
  private refuseInUse(op: string, n: NetworkRecord, iface: EngineInterface): void {
    const others = this.d.store.list<EndpointRecord>(KIND.engineEndpoint).filter((e) => e.networkId === n.id);
    const conflict = (what: string, value: string, holder: string) =>
      new CnmdError('CONFLICT', `${op}: ${what} ${value} is already in use by ${holder} in network ${n.id}`, {
        op,
        object: value,
      });
    for (const cidr of [iface.address, iface.addressIPv6]) {
      const ip = stripPrefix(cidr);
      if (!ip) continue;
      const gw = n.pools.find((p) => stripPrefix(p.gateway) === ip);
      if (gw) throw conflict('address', ip, 'the gateway');
      const e = others.find((o) => stripPrefix(o.ipv4) === ip || stripPrefix(o.ipv6) === ip);
      if (e) throw conflict('address', ip, `endpoint ${e.id}`);
    }
    const mac = iface.mac?.toLowerCase();
    const e = mac && others.find((o) => o.mac?.toLowerCase() === mac);
    if (e) throw conflict('MAC address', iface.mac!, `endpoint ${e.id}`);
  }

  /** Returns the MAC the driver chose when the engine gave none (the reply may only fill empty fields). */
  async createEndpoint(
    networkId: unknown,
    endpointId: unknown,
    iface: EngineInterface,
  ): Promise<{ mac?: string }> {
    const op = 'plugin create endpoint';
    const n = this.network(op, networkId);
    if (typeof endpointId !== 'string' || !ID_RE.test(endpointId))
      throw invalidArgument(op, String(endpointId), 'EndpointID is missing or not an id');
    this.checkAddress(op, n, iface.address, false);
    this.checkAddress(op, n, iface.addressIPv6, true);
    if (iface.mac && !isMac(iface.mac))
      throw invalidArgument(
        op,
        iface.mac,
        `Interface.MacAddress ${JSON.stringify(iface.mac)} is not a MAC address (like 02:42:0a:01:00:02)`,
      );
    if (n.boundTo) boundNetworkOrThrow(op, this.d.store, n);
    const driver = this.driver(n.driver, op);
    const mac = this.dhcp.endpointMac(op, n, iface.address, iface.mac);
    return this.d.locks.lock([LOCK.engineNet(n.id), LOCK.engineEp(endpointId)], async () => {
      if (this.d.store.get<EndpointRecord>(KIND.engineEndpoint, endpointId)) {
        throw new CnmdError('ALREADY_EXISTS', `${op}: endpoint ${endpointId} already exists`, {
          op,
          object: endpointId,
        });
      }
      this.refuseInUse(op, n, iface);
      const ep: EndpointRecord = {
        id: endpointId,
        name: endpointId.slice(0, 12),
        networkId: n.id,
        sandboxId: '',
        ipv4: iface.address || undefined,
        ipv6: iface.addressIPv6 || undefined,
        mac: mac || undefined,
        ifname: engineSrcName(endpointId),
        aliases: [],
        owner: 'engine',
        state: 'creating',
      };
      this.d.store.put(KIND.engineEndpoint, ep.id, ep);
      try {
        const info = await driver.createEndpoint({ ...endpointSpec(ep), networkId: driverNetworkId(n) });
        ep.mac ??= info.mac;
      } catch (e) {
        this.d.store.delete(KIND.engineEndpoint, ep.id);
        throw e;
      }
      ep.state = 'ready';
      this.d.store.put(KIND.engineEndpoint, ep.id, ep);
      this.d.changed();
      return { mac: iface.mac ? undefined : ep.mac };
    });
  }

  async deleteEndpoint(networkId: unknown, endpointId: unknown): Promise<void> {
    const op = 'plugin delete endpoint';
    await this.withEndpoint(op, networkId, endpointId, async (n, ep) => {
      ep.state = 'deleting';
      this.d.store.put(KIND.engineEndpoint, ep.id, ep);
      const driver = this.d.drivers.get(n.driver);
      if (driver) {
        // The engine leaves before it deletes; an endpoint still joined (engine crash) is left here.
        const nid = driverNetworkId(n);
        if (ep.ports?.length) await driver.revokeExternalConnectivity(nid, ep.id);
        if (ep.sandboxKey && n.dhcpPool) this.dhcp.left(n, ep);
        if (ep.sandboxKey) await driver.leave(nid, ep.id);
        await driver.deleteEndpoint(nid, ep.id);
      }
      if (ep.sandboxKey) this.unpublish(n, ep);
      this.d.store.delete(KIND.engineEndpoint, ep.id);
      this.d.changed();
    });
  }

  async join(
    networkId: unknown,
    endpointId: unknown,
    sandboxKey: unknown,
  ): Promise<JoinInfo & { srcName: string }> {
    const op = 'plugin join';
    checkSandboxKey(op, sandboxKey);
    return this.withEndpoint(op, networkId, endpointId, async (n, ep) => {
      if (ep.sandboxKey)
        throw new CnmdError(
          'CONFLICT',
          `${op}: endpoint ${ep.id} is already joined to sandbox ${ep.sandboxKey}; leave it first`,
          { op, object: ep.id },
        );
      const driver = this.driver(n.driver, op);
      const info = await driver.join(
        driverNetworkId(n),
        ep.id,
        { id: '', key: sandboxKey, ifname: engineSrcName(ep.id) },
        {},
      );
      if (!info.srcName) {
        await bestEffort(this.d.log, 'plugin join rollback', ep.id, () =>
          driver.leave(driverNetworkId(n), ep.id),
        );
        throw new CnmdError('INTERNAL', `${op}: driver ${n.driver} cannot hand an interface to the engine`, {
          op,
          object: ep.id,
        });
      }
      ep.sandboxKey = sandboxKey;
      this.d.store.put(KIND.engineEndpoint, ep.id, ep);
      // Peers learn it once joined (its interface exists), as for cnmd's own endpoints.
      const link = n.boundTo && this.d.cluster?.();
      if (link) link.publish(enginePublication(ep, n.boundTo!, link));
      // A leased endpoint's router is its lease's.
      if (n.dhcpPool) return { ...info, gateway: this.dhcp.joined(n, ep, sandboxKey), srcName: info.srcName };
      return { ...info, srcName: info.srcName };
    });
  }

  async leave(networkId: unknown, endpointId: unknown): Promise<void> {
    const op = 'plugin leave';
    await this.withEndpoint(op, networkId, endpointId, async (n, ep) => {
      if (n.dhcpPool) this.dhcp.left(n, ep);
      await this.d.drivers.get(n.driver)?.leave(driverNetworkId(n), ep.id);
      this.unpublish(n, ep);
      ep.sandboxKey = undefined;
      this.d.store.put(KIND.engineEndpoint, ep.id, ep);
    });
  }

  async programExternalConnectivity(
    networkId: unknown,
    endpointId: unknown,
    bindings: PortBinding[],
  ): Promise<void> {
    const op = 'plugin program external connectivity';
    await this.withEndpoint(op, networkId, endpointId, async (n, ep) => {
      const driver = this.driver(n.driver, op);
      if (ep.ports?.length) await driver.revokeExternalConnectivity(driverNetworkId(n), ep.id);
      ep.ports = undefined;
      if (bindings.length && !n.internal) {
        const published = await driver.programExternalConnectivity(driverNetworkId(n), ep.id, {
          portBindings: bindings,
        });
        ep.ports = published && published.length ? published : undefined;
      }
      this.d.store.put(KIND.engineEndpoint, ep.id, ep);
    });
  }

  async revokeExternalConnectivity(networkId: unknown, endpointId: unknown): Promise<void> {
    const op = 'plugin revoke external connectivity';
    await this.withEndpoint(op, networkId, endpointId, async (n, ep) => {
      await this.d.drivers.get(n.driver)?.revokeExternalConnectivity(driverNetworkId(n), ep.id);
      ep.ports = undefined;
      this.d.store.put(KIND.engineEndpoint, ep.id, ep);
    });
  }

  private unpublish(n: NetworkRecord, ep: EndpointRecord): void {
    if (n.boundTo) this.d.cluster?.()?.unpublish(n.boundTo, ep.id);
  }

  /** Joined endpoints of bound cnmd-overlay networks, as the cluster publishes them (again after a restart). */
  publications(self: { hostId: string; vtep: string }): EndpointPublication[] {
    const bound = new Map(this.networks().map((n) => [n.id, n.boundTo]));
    return this.endpoints()
      .filter((e) => e.sandboxKey && bound.get(e.networkId))
      .map((e) => enginePublication(e, bound.get(e.networkId)!, self));
  }

  /**
   * The endpoint's network and record for an operation: looked up at once (a
   * clear error without waiting), then read again under the endpoint's locks.
   */
  private async withEndpoint<T>(
    op: string,
    networkId: unknown,
    endpointId: unknown,
    fn: (n: NetworkRecord, ep: EndpointRecord) => Promise<T>,
  ): Promise<T> {
    const n = this.network(op, networkId);
    const id = this.endpoint(op, n.id, endpointId).id;
    return this.d.locks.lock([LOCK.engineNet(n.id), LOCK.engineEp(id)], () =>
      fn(n, this.endpoint(op, n.id, id)),
    );
  }

  endpointInfo(networkId: unknown, endpointId: unknown): EndpointRecord {
    const op = 'plugin endpoint info';
    const n = this.network(op, networkId);
    return this.endpoint(op, n.id, endpointId);
  }

  // ---- IPAM leases (cnmd-ipam) ----

  private ipam(): Ipam {
    const i = this.d.ipams.get('default');
    if (!i)
      throw new CnmdError('INTERNAL', 'cnmd-ipam: the default IPAM is not loaded', { op: 'plugin ipam' });
    return i;
  }

  private lease(op: string, poolId: unknown): IpamLeaseRecord {
    if (typeof poolId !== 'string' || poolId === '')
      throw invalidArgument(op, String(poolId), 'PoolID is missing: give the PoolID RequestPool returned');
    const l = this.d.store.get<IpamLeaseRecord>(KIND.ipamLease, poolId);
    if (!l)
      throw new CnmdError(
        'NOT_FOUND',
        `${op}: pool ${poolId} is not held through cnmd-ipam (released, or never requested)`,
        { op, object: poolId },
      );
    return l;
  }

  leases(): IpamLeaseRecord[] {
    return this.d.store.list<IpamLeaseRecord>(KIND.ipamLease);
  }

  async requestPool(req: {
    pool?: string;
    subPool?: string;
    v6?: boolean;
    options?: Record<string, string>;
  }): Promise<{ poolId: string; pool: string; data?: Record<string, string> }> {
    const op = 'plugin request pool';
    if (EngineDhcp.asked(op, req.options ?? {})) {
      const { rec, data } = this.dhcp.poolRecord(op, { ...req, options: req.options ?? {} });
      this.d.store.put<IpamLeaseRecord>(KIND.ipamLease, rec.poolId, rec);
      this.d.log.info({ pool: rec.pool, poolId: rec.poolId, owner: 'engine' }, 'ipam dhcp pool leased');
      return { poolId: rec.poolId, pool: rec.pool, data };
    }
    // A cnmd overlay network's subnet: its cluster-wide pool, for an engine network bound to it (cnmd-overlay).
    const global = req.pool && !req.subPool ? this.ipam().globalPool?.(req.pool) : undefined;
    if (global) {
      if (this.d.store.get<IpamLeaseRecord>(KIND.ipamLease, global.poolId))
        throw new CnmdError(
          'CONFLICT',
          `${op}: pool ${global.pool} of a cnmd overlay network is already leased to an engine network of this ` +
            `host; one engine network per cnmd overlay network and host`,
          { op, object: global.pool },
        );
      this.d.store.put<IpamLeaseRecord>(KIND.ipamLease, global.poolId, {
        poolId: global.poolId,
        pool: global.pool,
        v6: !!req.v6,
        addresses: [],
        global: true,
      });
      this.d.log.info({ pool: global.pool, poolId: global.poolId, owner: 'engine' }, 'ipam pool leased');
      return { poolId: global.poolId, pool: global.pool };
    }
    const info = await this.ipam().requestPool({
      pool: req.pool || undefined,
      subPool: req.subPool || undefined,
      v6: !!req.v6,
      options: req.options ?? {},
    });
    this.d.store.put<IpamLeaseRecord>(KIND.ipamLease, info.poolId, {
      poolId: info.poolId,
      pool: info.pool,
      v6: !!req.v6,
      addresses: [],
    });
    this.d.log.info({ pool: info.pool, poolId: info.poolId, owner: 'engine' }, 'ipam pool leased');
    return { poolId: info.poolId, pool: info.pool };
  }

  async releasePool(poolId: unknown): Promise<void> {
    const op = 'plugin release pool';
    const l0 = this.lease(op, poolId);
    await this.d.locks.lock([LOCK.lease(l0.poolId)], async () => {
      const l = this.lease(op, l0.poolId);
      if (l.dhcp) {
        await this.dhcp.releasePool(op, l);
        this.d.store.delete(KIND.ipamLease, l.poolId);
        return;
      }
      // The cnmd overlay network went (and its pool with it): nothing of the lease is left to release.
      if (l.global && !this.ipam().globalPool?.(l.pool)) {
        this.d.store.delete(KIND.ipamLease, l.poolId);
        return;
      }
      // Every address is tried (failures logged, reported together); a pool still held keeps its lease for a retry.
      const errs = new TeardownErrors(op, l.poolId, this.d.log);
      for (const ip of l.addresses)
        await errs.step(`release address ${ip}`, () => this.ipam().releaseAddress(l.poolId, ip));
      // A cnmd overlay network's pool stays with that network.
      if (!l.global) await this.ipam().releasePool(l.poolId);
      this.d.store.delete(KIND.ipamLease, l.poolId);
      errs.throwIfFailed();
    });
  }

  async requestAddress(
    poolId: unknown,
    address: string | undefined,
    opts: { gateway?: boolean; serial?: boolean },
  ): Promise<string> {
    const op = 'plugin request address';
    const l0 = this.lease(op, poolId);
    return this.d.locks.lock([LOCK.lease(l0.poolId)], async () => {
      const l = this.lease(op, l0.poolId);
      if (l.global && !this.ipam().globalPool?.(l.pool))
        throw new CnmdError(
          'NOT_FOUND',
          `${op}: pool ${l.pool} was a cnmd overlay network's, and that network is gone from this host; remove ` +
            `the engine network bound to it and bind a new one`,
          { op, object: l.pool },
        );
      if (l.dhcp) return this.dhcp.requestAddress(op, l, address || undefined, !!opts.gateway);
      const cidr = await this.ipam().requestAddress(l.poolId, address || undefined, opts);
      l.addresses.push(stripPrefix(cidr)!);
      this.d.store.put(KIND.ipamLease, l.poolId, l);
      return cidr;
    });
  }

  async releaseAddress(poolId: unknown, address: unknown): Promise<void> {
    const op = 'plugin release address';
    const l0 = this.lease(op, poolId);
    if (typeof address !== 'string' || !ipToBig(stripPrefix(address)!))
      throw invalidArgument(op, String(address), 'Address is missing or not an IP address');
    await this.d.locks.lock([LOCK.lease(l0.poolId)], async () => {
      const l = this.lease(op, l0.poolId);
      const ip = stripPrefix(address)!;
      // The gateway's too, which a dhcp pool never allocated (the user's word, or the stand-in).
      if (l.dhcp) return this.dhcp.releaseAddress(op, l, ip);
      if (!l.addresses.includes(ip))
        throw new CnmdError('NOT_FOUND', `${op}: address ${ip} is not allocated in pool ${l.pool}`, {
          op,
          object: ip,
        });
      await this.ipam().releaseAddress(l.poolId, ip);
      l.addresses = l.addresses.filter((a) => a !== ip);
      this.d.store.put(KIND.ipamLease, l.poolId, l);
    });
  }

  // ---- start-up ----

  /** Undoes what a killed daemon left half-done; returns what the drivers must restore. */
  async recover(): Promise<void> {
    const store = this.d.store;
    for (const ep of store.list<EndpointRecord>(KIND.engineEndpoint).filter((e) => e.state !== 'ready')) {
      // The engine saw the call fail (the connection dropped): it holds nothing for it; the veth, if any, is
      // swept by alias.
      this.d.log.warn(
        { endpoint: ep.id, state: ep.state, owner: 'engine' },
        'recovering interrupted engine endpoint operation: removing it',
      );
      store.delete(KIND.engineEndpoint, ep.id);
    }
    const nets = new Set(store.list<NetworkRecord>(KIND.engineNetwork).map((n) => n.id));
    for (const n of store.list<NetworkRecord>(KIND.engineNetwork).filter((x) => x.state !== 'ready')) {
      this.d.log.warn(
        { network: n.id, state: n.state, owner: 'engine' },
        'recovering interrupted engine network operation: removing it',
      );
      const driver = n.boundTo ? undefined : this.d.drivers.get(n.driver);
      if (driver?.cleanupNetwork)
        await driver
          .cleanupNetwork(networkSpec(n))
          .catch((e) => this.d.log.error({ err: e, network: n.id }, 'network cleanup failed'));
      store.delete(KIND.engineNetwork, n.id);
      nets.delete(n.id);
    }
    for (const ep of store.list<EndpointRecord>(KIND.engineEndpoint))
      if (!nets.has(ep.networkId)) store.delete(KIND.engineEndpoint, ep.id);
  }

  /** After a restart: DHCP leases of joined endpoints renewed at once from their containers, then kept. */
  resumeLeases(): void {
    this.dhcp.resume(this.networks(), this.endpoints());
  }

  /** IPAM references the engine holds, for the start-up sweep. */
  ipamRefs(add: (poolId: string, ip?: string) => void): void {
    for (const l of this.leases()) {
      add(l.poolId);
      for (const ip of l.addresses) add(l.poolId, ip);
    }
  }
}
