// Start-up reconciliation: brings kernel and store back in line after a stop
// or a SIGKILL at any instant. Operations in flight are finished or undone,
// drivers recreate what the kernel lost, and whatever cnmd made that no record
// claims is removed (namespaces, sandbox files, links, IPAM allocations).
import { ignoreNotFound } from '../errors';
import type { Handle } from '../netlink/handle';
import type { DnsView } from './dns-view';
import type { Core } from './core';
import type { Endpoints } from './endpoints';
import type { EngineObjects } from './engine';
import type { DefaultRoutes } from './gateway';
import { EndpointRecord, KIND, NetworkRecord, SandboxRecord } from './records';
import type { Sandboxes } from './sandboxes';
import { endpointSpec, networkSpec } from './specs';
import { stripPrefix } from '../net/addr';

export interface RecoveryDeps extends Core {
  view: DnsView;
  routes: DefaultRoutes;
  endpoints: Endpoints;
  sandboxes: Sandboxes;
  engine: EngineObjects;
}

export class Recovery {
  private readonly d: RecoveryDeps;

  constructor(d: RecoveryDeps) {
    this.d = d;
  }

  async start(): Promise<void> {
    await this.loadPlugins();
    await this.finishInterrupted();
    await this.sweepIpam();
    await this.restoreDrivers();
    // Sandboxes: a namespace lost (reboot: /run is tmpfs) is made again and its endpoints rejoined.
    for (const sb of this.d.lookup.sandboxes())
      await this.restoreSandbox(sb).catch((e) =>
        this.d.log.error({ err: e, sandbox: sb.id }, 'sandbox restore failed'),
      );
    await this.sweepLeaks();
  }

  /** Remote plugins the stored networks use: loaded before anything asks their drivers. */
  private async loadPlugins(): Promise<void> {
    const { store, lookup, log } = this.d;
    for (const n of store.list<NetworkRecord>(KIND.network)) {
      await lookup
        .loadDriver(n.driver, 'daemon start')
        .catch((e) => log.error({ err: e, network: n.id, driver: n.driver }, 'network driver not available'));
      await lookup
        .loadIpam(n.ipamDriver, 'daemon start')
        .catch((e) => log.error({ err: e, network: n.id, ipam: n.ipamDriver }, 'IPAM driver not available'));
    }
  }

  /** Undoes or finishes what was in flight: sandboxes and endpoints not ready go, networks not ready are cleaned up. */
  private async finishInterrupted(): Promise<void> {
    const { store, lookup, log } = this.d;
    for (const sb of store.list<SandboxRecord>(KIND.sandbox).filter((x) => x.state !== 'ready')) {
      log.warn({ sandbox: sb.id, state: sb.state }, 'recovering interrupted sandbox operation: removing it');
      sb.state = 'deleting';
      await this.d.sandboxes
        .finishDelete(sb)
        .catch((e) => log.error({ err: e, sandbox: sb.id }, 'sandbox recovery failed'));
    }
    const netsById = new Map(store.list<NetworkRecord>(KIND.network).map((n) => [n.id, n]));
    for (const ep of store.list<EndpointRecord>(KIND.endpoint).filter((e) => e.state !== 'ready')) {
      log.warn(
        { endpoint: ep.id, state: ep.state },
        'recovering interrupted endpoint operation: removing it',
      );
      const sb = store.get<SandboxRecord>(KIND.sandbox, ep.sandboxId);
      const n = netsById.get(ep.networkId);
      // A DHCP lease recorded before the kill goes back while the interface may still speak for it.
      const link = n && this.d.endpoints.leases.of(n);
      if (sb && n && link && ep.dhcp) await this.d.endpoints.leases.detach(link, ep, n, sb);
      if (sb) {
        sb.endpoints = sb.endpoints.filter((id) => id !== ep.id);
        store.put(KIND.sandbox, sb.id, sb);
      }
      store.delete(KIND.endpoint, ep.id); // its addresses are freed by the IPAM sweep
    }
    for (const n of [...netsById.values()].filter((x) => x.state !== 'ready')) {
      log.warn({ network: n.id, state: n.state }, 'recovering interrupted network operation: removing it');
      const driver = lookup.driverOf(n);
      if (driver?.cleanupNetwork)
        await driver
          .cleanupNetwork(networkSpec(n))
          .catch((e) => log.error({ err: e, network: n.id }, 'network cleanup failed'));
      store.delete(KIND.network, n.id);
      netsById.delete(n.id);
    }
    await this.d.engine.recover();
    // Endpoints whose network or sandbox is gone are orphans.
    for (const ep of store.list<EndpointRecord>(KIND.endpoint)) {
      const sb = store.get<SandboxRecord>(KIND.sandbox, ep.sandboxId);
      if (!netsById.has(ep.networkId) || !sb || !sb.endpoints.includes(ep.id))
        store.delete(KIND.endpoint, ep.id);
    }
  }

  /** IPAM: frees what no record references (Ipam.sweep). */
  private async sweepIpam(): Promise<void> {
    const { store, lookup, log } = this.d;
    const refs = new Map<string, Set<string>>();
    const add = (poolId: string | undefined, ip: string | undefined) => {
      if (!poolId) return;
      if (!refs.has(poolId)) refs.set(poolId, new Set());
      if (ip) refs.get(poolId)!.add(stripPrefix(ip)!);
    };
    for (const n of store.list<NetworkRecord>(KIND.network)) {
      for (const p of n.pools) {
        add(p.poolId, undefined);
        if (p.gatewayAllocated) add(p.poolId, p.gateway);
        for (const ip of Object.values(p.auxAddresses)) add(p.poolId, ip);
      }
    }
    for (const e of store.list<EndpointRecord>(KIND.endpoint)) {
      add(e.poolV4, e.ipv4);
      add(e.poolV6, e.ipv6);
    }
    this.d.engine.ipamRefs(add);
    for (const ipam of lookup.ipams.values()) {
      const freed = ipam.sweep?.(refs) ?? [];
      if (freed.length) log.warn({ ipam: ipam.name, freed }, 'freed leaked IPAM allocations');
    }
  }

  /** Drivers rebuild their state and the kernel objects they lost (the engine's objects too). */
  private async restoreDrivers(): Promise<void> {
    const { store, lookup, engine } = this.d;
    const nets = store.list<NetworkRecord>(KIND.network).filter((n) => n.state === 'ready');
    const eps = store.list<EndpointRecord>(KIND.endpoint).filter((e) => e.state === 'ready');
    const engineNets = engine.networks();
    const engineEps = engine.endpoints();
    for (const [name, driver] of lookup.drivers) {
      if (!driver.restore) continue;
      const mine = nets.filter((n) => n.driver === name);
      const ids = new Set(mine.map((n) => n.id));
      // A bound cnmd-overlay network has no driver state of its own: its endpoints are its cnmd network's.
      const engineMine = engineNets.filter((n) => n.driver === name && !n.boundTo);
      const engineIds = new Set(engineMine.map((n) => n.id));
      const bound = new Map(
        engineNets.filter((n) => n.driver === name && n.boundTo).map((n) => [n.id, n.boundTo!]),
      );
      // Where each joined endpoint's interface lives: a driver with no host side (macvlan) removes it there.
      const joined = (e: EndpointRecord) => {
        const key = store.get<SandboxRecord>(KIND.sandbox, e.sandboxId)?.key;
        return { ...endpointSpec(e), sandbox: key ? { key, ifname: e.ifname } : undefined };
      };
      await driver.restore([...mine, ...engineMine].map(networkSpec), [
        ...eps.filter((e) => ids.has(e.networkId)).map(joined),
        // A joined engine endpoint's link is the engine's to move: back in the host netns once its container goes.
        ...engineEps
          .filter((e) => engineIds.has(e.networkId))
          .map((e) => ({
            ...endpointSpec(e),
            sandbox: e.sandboxKey ? { key: e.sandboxKey, ifname: e.ifname, engine: true } : undefined,
          })),
        ...engineEps
          .filter((e) => ids.has(bound.get(e.networkId) ?? ''))
          .map((e) => ({ ...endpointSpec(e), networkId: bound.get(e.networkId)! })),
      ]);
    }
    engine.resumeLeases();
  }

  /** A sandbox's netns, files, resolver and interfaces, made again where missing. */
  private async restoreSandbox(sb: SandboxRecord): Promise<void> {
    const { netns, files, store, lookup, log, view } = this.d;
    if (sb.hostNetns) {
      sb.key = await this.d.sandboxes.hostNetnsKey();
      return;
    }
    const live = this.d.live.of(sb);
    let remade = false;
    if (!netns.exists(sb.id)) {
      log.warn({ sandbox: sb.id }, 'sandbox namespace missing: recreating it');
      live.adopt(await netns.create(sb.id));
      remade = true;
    }
    if (!files.exists(sb.id)) files.write(sb.id, view.filesOf(sb));
    await view.ensureDns(sb);
    const h = live.handle();
    if (!remade) await this.removeStrayInterfaces(sb, h);
    for (const epId of sb.endpoints) {
      const ep = store.get<EndpointRecord>(KIND.endpoint, epId);
      const n = ep && store.get<NetworkRecord>(KIND.network, ep.networkId);
      const driver = n && lookup.driverOf(n);
      if (!ep || !n || !driver || driver.capabilities().noInterface) continue;
      if (remade || !(await ignoreNotFound(h.linkGet(ep.ifname)))) {
        log.warn(
          { sandbox: sb.id, endpoint: ep.id, ifname: ep.ifname },
          'endpoint interface missing: rejoining',
        );
        await this.d.endpoints.rejoin(sb, ep, n, driver, h);
      }
      // The recorded DHCP lease is asked for again (the driver's join put its address back on a rejoin).
      this.d.endpoints.leases.resume(ep, n, sb);
    }
    await this.d.routes.update(sb, h);
  }

  /**
   * Endpoint interfaces in a sandbox that none of its endpoints names: an attach killed
   * after the driver made the interface and before the endpoint was recorded
   * as ready (its record is gone by now). A veth goes with its host side; a
   * macvlan/ipvlan child has none and would stay, holding the name.
   */
  private async removeStrayInterfaces(sb: SandboxRecord, h: Handle): Promise<void> {
    const { store, log } = this.d;
    const names = new Set(sb.endpoints.map((id) => store.get<EndpointRecord>(KIND.endpoint, id)?.ifname));
    for (const l of await h.linkList()) {
      // Only the names the controller gives endpoints (eth<N>): drivers add interfaces of their own (overlay's gwbridge).
      if (!/^eth\d+$/.test(l.name) || names.has(l.name)) continue;
      log.warn({ sandbox: sb.id, ifname: l.name }, 'removing an interface no endpoint of the sandbox names');
      await ignoreNotFound(h.linkDel(l.index));
    }
  }

  /**
   * Leaks: namespaces and files of sandboxes nobody knows, and kernel objects drivers do not claim
   * (Driver.sweepLeaks).
   */
  private async sweepLeaks(): Promise<void> {
    const { netns, files, lookup, log } = this.d;
    const known = new Set(lookup.sandboxes().map((s) => s.id));
    for (const id of netns.entries()) {
      if (id === 'default' || known.has(id)) continue;
      log.warn({ netns: id }, 'removing leaked network namespace');
      try {
        netns.delete(id);
      } catch (e) {
        log.error({ err: e, netns: id }, 'leaked namespace removal failed');
      }
    }
    for (const id of files.list()) if (!known.has(id)) files.remove(id);
    this.d.pool?.start();
    for (const driver of lookup.drivers.values()) {
      const removed = (await driver.sweepLeaks?.()) ?? [];
      if (removed.length) log.warn({ driver: driver.name, links: removed }, 'removed leaked links');
    }
  }
}
