// Endpoints: a sandbox's attachment to a network. Prepared (checked,
// addressed by IPAM, recorded as 'creating'), then wired (the driver's
// endpoint and join, the default route, published ports), and disconnected
// in reverse. Published ports live on one endpoint per sandbox and move when
// it leaves.
import type { Capabilities, Driver, JoinInfo } from '../../drivers/driver';
import { CnmdError, TeardownErrors, bestEffort, hasCode, invalidArgument } from '../errors';
import { SERIAL_OPTION, type Ipam } from '../ipam/ipam';
import { contains, ipToBig, parseCidr } from '../net/addr';
import type { Handle } from '../netlink/handle';
import { runSteps, Step } from '../steps';
import type { Core } from './core';
import type { DnsView } from './dns-view';
import type { DefaultRoutes } from './gateway';
import { LinkLeases } from './leases';
import { LOCK } from './locks';
import { EndpointRecord, KIND, NetworkRecord, SandboxRecord } from './records';
import { endpointSpec } from './specs';
import { afterReply, newId } from './util';
import { invalidHostMix, invalidNone } from './validate';

export interface ConnectOptions {
  aliases?: string[];
  ipv4?: string;
  ipv6?: string;
}

/** An endpoint on its way into a sandbox, and how far it got. */
export interface PendingEndpoint {
  ep: EndpointRecord;
  n: NetworkRecord;
  driver: Driver;
  caps: Capabilities;
  ipam?: Ipam;
  /**
   * prepared: checked, counted among the sandbox's endpoints, addressed; wiring, then wired: in the kernel;
   * released: undone.
   */
  stage: 'prepared' | 'wiring' | 'wired' | 'released';
}

export interface EndpointsDeps extends Core {
  view: DnsView;
  routes: DefaultRoutes;
}

export class Endpoints {
  private readonly d: EndpointsDeps;
  /** Endpoints addressed by DHCP (a link-bound IPAM): their leases. */
  readonly leases: LinkLeases;

  constructor(d: EndpointsDeps) {
    this.d = d;
    this.leases = new LinkLeases(d);
  }

  async connect(networkRef: string, sandboxRef: string, opts: ConnectOptions = {}): Promise<EndpointRecord> {
    const { lookup } = this.d;
    const n = lookup.network(networkRef);
    lookup.refuseEngineNetwork(n, 'network connect', 'connect containers to it with docker network connect');
    const sb0 = lookup.sandbox(sandboxRef);
    return this.d.locks.lock([LOCK.net(n.id), LOCK.sb(sb0.id)], async () =>
      this.connectLocked(n.id, this.relocked(sb0, 'network connect'), opts),
    );
  }

  /** The sandbox read again under its lock: a delete that took the lock first leaves a 404, not a TypeError. */
  private relocked(sb0: SandboxRecord, op: string): SandboxRecord {
    const sb = this.d.store.get<SandboxRecord>(KIND.sandbox, sb0.id);
    if (!sb || sb.state !== 'ready')
      throw new CnmdError('NOT_FOUND', `No such container: ${sb0.name} (removed meanwhile)`, {
        op,
        object: sb0.name,
      });
    return sb;
  }

  /** Joins an existing sandbox to a network (the sandbox's lock is held). */
  private async connectLocked(
    networkId: string,
    sb: SandboxRecord,
    opts: ConnectOptions,
  ): Promise<EndpointRecord> {
    const { store, lookup, files, view } = this.d;
    const p = await this.prepare(networkId, sb, opts);
    const ep = p.ep;
    try {
      store.put(KIND.endpoint, ep.id, ep);
      await this.wire(p, sb, sb.hostNetns ? undefined : this.d.live.of(sb).handle());
    } catch (e) {
      if (p.stage === 'prepared') await this.release(p, sb);
      throw e;
    } finally {
      lookup.joining.delete(ep.id);
    }
    ep.state = 'ready';
    view.changed();
    store.tx(() => {
      store.put(KIND.endpoint, ep.id, ep);
      store.put(KIND.sandbox, sb.id, sb);
    });
    if (files.exists(sb.id)) {
      const hadDns = view.running(sb.id);
      await view
        .ensureDns(sb)
        .catch((e) => this.d.log.warn({ err: e, sandbox: sb.id }, 'embedded DNS start failed'));
      if (!hadDns && view.running(sb.id)) files.write(sb.id, view.filesOf(sb));
      else files.writeHosts(sb.id, view.hostsOf(sb));
    }
    afterReply(() => this.logJoined(p, sb));
    return ep;
  }

  logJoined({ ep, n }: PendingEndpoint, sb: SandboxRecord): void {
    // After the reply: an endpoint of a global network is published to the cluster now.
    this.d.cluster?.joined(ep, n, sb);
    this.d.log.info(
      { endpoint: ep.id, network: n.name, sandbox: sb.name, ipv4: ep.ipv4, ipv6: ep.ipv6, ifname: ep.ifname },
      'endpoint joined',
    );
  }

  /**
   * A new endpoint of sb on the network, with its addresses, not yet in the kernel (the caller persists it
   * before wiring it).
   */
  private async prepare(
    networkId: string,
    sb: SandboxRecord,
    opts: ConnectOptions,
  ): Promise<PendingEndpoint> {
    const p = this.newEndpoint(networkId, sb, opts);
    try {
      await this.allocate(p);
    } catch (e) {
      await this.release(p, sb);
      throw e;
    }
    return p;
  }

  /** A new endpoint of sb on the network, checked and counted among sb's endpoints, without addresses yet. */
  newEndpoint(networkId: string, sb: SandboxRecord, opts: ConnectOptions): PendingEndpoint {
    const op = 'network connect';
    const { store, lookup } = this.d;
    const n = store.get<NetworkRecord>(KIND.network, networkId);
    if (!n || n.state !== 'ready')
      throw new CnmdError('NOT_FOUND', `network ${networkId} not found`, { op, object: networkId });
    const driver = lookup.driver(n.driver, op);
    const caps = driver.capabilities();
    if (sb.endpoints.some((id) => lookup.endpointRecord(id)?.networkId === n.id)) {
      // Docker's types.ForbiddenErrorf (403), not a name conflict (409).
      throw new CnmdError('IN_USE', `endpoint with name ${sb.name} already exists in network ${n.name}`, {
        op,
        object: sb.name,
      });
    }
    const others = sb.endpoints.map((id) => lookup.endpointRecord(id)).filter((e) => e !== undefined);
    if (
      others.length > 0 &&
      (caps.noInterface ||
        others.some((e) => {
          const on = lookup.networkOf(e);
          return on !== undefined && lookup.driverOf(on)?.capabilities().noInterface;
        }))
    )
      throw invalidNone(op, sb.name);
    if (!!caps.usesHostNetns !== sb.hostNetns) throw invalidHostMix(op, sb.name, sb.hostNetns);
    const ep: EndpointRecord = {
      id: newId(),
      name: sb.name,
      networkId: n.id,
      sandboxId: sb.id,
      ifname: this.nextIfname(sb),
      aliases: opts.aliases ?? [],
      staticIPv4: opts.ipv4 || undefined,
      staticIPv6: opts.ipv6 || undefined,
      state: 'creating',
    };
    if (ep.staticIPv4 && !n.ipamConfig.some((c) => c.subnet && !c.subnet.includes(':'))) {
      throw invalidArgument(
        op,
        ep.staticIPv4,
        'user specified IP address is supported only when connecting to networks with user configured subnets',
      );
    }
    if (ep.staticIPv6 && !n.enableIPv6)
      throw invalidArgument(op, ep.staticIPv6, `network ${n.name} has no IPv6`);
    const p: PendingEndpoint = {
      ep,
      n,
      driver,
      caps,
      ipam: lookup.ipams.get(n.ipamDriver),
      stage: 'prepared',
    };
    lookup.joining.set(ep.id, p);
    sb.endpoints.push(ep.id);
    return p;
  }

  private nextIfname(sb: SandboxRecord): string {
    const used = new Set(sb.endpoints.map((id) => this.d.lookup.endpointRecord(id)?.ifname));
    for (let i = 0; ; i++) if (!used.has(`eth${i}`)) return `eth${i}`;
  }

  /** The endpoint's addresses from its network's IPAM; a failure leaves what was allocated for release(). */
  async allocate({ ep, n, ipam }: PendingEndpoint): Promise<void> {
    if (!ipam || !n.pools.length) return;
    ep.ipv4 = await this.allocateAddress(ipam, n, false, ep.staticIPv4, ep);
    if (n.enableIPv6) ep.ipv6 = await this.allocateAddress(ipam, n, true, ep.staticIPv6, ep);
  }

  private async allocateAddress(
    ipam: Ipam,
    n: NetworkRecord,
    v6: boolean,
    wanted: string | undefined,
    ep: EndpointRecord,
  ): Promise<string | undefined> {
    const pools = n.pools.filter((p) => p.v6 === v6);
    if (pools.length === 0) return undefined;
    const pick = wanted
      ? pools.find((p) => {
          const a = ipToBig(wanted);
          const c = parseCidr(p.pool);
          return a && c && contains(c, a.family, a.value);
        })
      : undefined;
    if (wanted && !pick) {
      throw invalidArgument(
        'network connect',
        wanted,
        `address ${wanted} is not in any subnet of network ${n.name} (${pools.map((p) => p.pool).join(', ')})`,
      );
    }
    let lastErr: unknown;
    for (const p of pick ? [pick] : pools) {
      try {
        const ip = await ipam.requestAddress(p.poolId, wanted, {
          serial: n.ipamOptions[SERIAL_OPTION] === 'true',
        });
        if (v6) ep.poolV6 = p.poolId;
        else ep.poolV4 = p.poolId;
        return ip;
      } catch (e) {
        lastErr = e;
        if (!hasCode(e, 'EXHAUSTED')) throw e;
      }
    }
    throw lastErr;
  }

  /**
   * Undoes prepare(): the addresses go back to the IPAM, the record goes. A
   * rollback: its failures are logged, the caller rethrows its own error.
   */
  async release(p: PendingEndpoint, sb: SandboxRecord): Promise<void> {
    const { ep, ipam } = p;
    const errs = new TeardownErrors('endpoint release', ep.id, this.d.log);
    if (ipam) {
      if (ep.ipv6 && ep.poolV6)
        await errs.step('release ipv6', () => ipam.releaseAddress(ep.poolV6!, ep.ipv6!));
      if (ep.ipv4 && ep.poolV4)
        await errs.step('release ipv4', () => ipam.releaseAddress(ep.poolV4!, ep.ipv4!));
    }
    sb.endpoints = sb.endpoints.filter((id) => id !== ep.id);
    this.d.lookup.joining.delete(ep.id);
    this.d.store.delete(KIND.endpoint, ep.id);
    p.stage = 'released';
  }

  /** Wires a new sandbox's endpoints one after another. */
  async wireAll(sb: SandboxRecord, eps: PendingEndpoint[]): Promise<void> {
    const handle = sb.hostNetns ? undefined : this.d.live.of(sb).handle();
    for (const p of eps) await this.wire(p, sb, handle);
  }

  /**
   * The endpoint's kernel side: the driver's endpoint and join, the default
   * route, published ports. A failure undoes it and releases the endpoint.
   */
  private async wire(p: PendingEndpoint, sb: SandboxRecord, handle: Handle | undefined): Promise<void> {
    const { ep, n, driver, caps } = p;
    const { routes, log } = this.d;
    p.stage = 'wiring';
    const steps: Step[] = [
      {
        name: 'create endpoint',
        do: async () => {
          const info = await driver.createEndpoint(endpointSpec(ep));
          if (info.mac) ep.mac = info.mac;
        },
        undo: () => driver.deleteEndpoint(n.id, ep.id),
      },
      {
        name: 'join',
        do: async () => {
          if (!handle) {
            await driver.join(n.id, ep.id, { id: sb.id, key: sb.key, ifname: ep.ifname }, {});
            return;
          }
          const routed = routes.pipeline(sb, ep, handle);
          let info: JoinInfo;
          // Used once: the interface made with it takes it.
          const freeIndex = this.d.live.get(sb.id)?.takeFreeIndex();
          try {
            info = await driver.join(
              n.id,
              ep.id,
              { id: sb.id, key: sb.key, handle, ifname: ep.ifname, freeIndex },
              {},
            );
          } finally {
            await routed();
          }
          if (info.gateway && info.gatewayInterface)
            ep.gatewayVia = { gw: info.gateway, dev: info.gatewayInterface };
          for (const r of info.staticRoutes) {
            await handle.routeAdd(
              r.routeType === 1
                ? { dst: r.destination, dev: ep.ifname }
                : { dst: r.destination, gateway: r.nextHop },
            );
          }
        },
        undo: () => driver.leave(n.id, ep.id),
      },
      {
        // A link-bound IPAM (DHCP) addresses the endpoint now, from its interface (up, no address yet).
        name: 'lease',
        do: async () => {
          const link = this.leases.of(n);
          if (link && handle) await this.leases.attach(link, ep, n, sb, handle);
        },
        undo: async () => {
          const link = this.leases.of(n);
          if (link) await this.leases.detach(link, ep, n, sb);
        },
      },
      { name: 'gateway', do: () => routes.update(sb, handle) },
      {
        name: 'external connectivity',
        do: async () => {
          const portBindings = this.portHolderWanted(sb, n, caps) ? sb.ports : undefined;
          const published = await driver.programExternalConnectivity(n.id, ep.id, { portBindings });
          if (portBindings && published && published.length) ep.ports = published;
        },
        undo: () => driver.revokeExternalConnectivity(n.id, ep.id),
      },
    ];
    try {
      await runSteps(steps, (step, e) =>
        log.error({ err: e, endpoint: ep.id, step }, 'rollback step failed'),
      );
    } catch (e) {
      await this.release(p, sb);
      // The route may have moved to this endpoint: back to what the others offer (logged, the join's error wins).
      await bestEffort(log, 'gateway update', sb.name, () => routes.update(sb, handle));
      throw e;
    }
    p.stage = 'wired';
  }

  /**
   * A sandbox's ports are published on one endpoint, as Docker publishes them on the
   * gateway endpoint: the first, in join order, on a non-internal network whose
   * driver maps ports.
   */
  private portHolderWanted(sb: SandboxRecord, n: NetworkRecord, caps: Capabilities): boolean {
    if (!sb.ports?.length || !caps.portMapping || n.internal) return false;
    return !sb.endpoints.some((id) => this.d.lookup.endpointRecord(id)?.ports?.length);
  }

  /** After the holder left: publish on the next eligible endpoint, if any. */
  private async movePorts(sb: SandboxRecord): Promise<void> {
    const { lookup, store } = this.d;
    if (!sb.ports?.length || sb.endpoints.some((id) => lookup.endpointRecord(id)?.ports?.length)) return;
    for (const id of sb.endpoints) {
      const e = lookup.endpointRecord(id);
      const n = e && store.get<NetworkRecord>(KIND.network, e.networkId);
      const driver = n && lookup.driverOf(n);
      if (!e || !n || !driver || n.internal || !driver.capabilities().portMapping) continue;
      const published = await driver.programExternalConnectivity(n.id, e.id, { portBindings: sb.ports });
      if (published && published.length) {
        e.ports = published;
        store.put(KIND.endpoint, e.id, e);
      }
      return;
    }
  }

  async disconnect(networkRef: string, sandboxRef: string): Promise<void> {
    const op = 'network disconnect';
    const { lookup, store, files, view } = this.d;
    const n = lookup.network(networkRef);
    const sb0 = lookup.sandbox(sandboxRef);
    await this.d.locks.lock([LOCK.net(n.id), LOCK.sb(sb0.id)], async () => {
      const sb = this.relocked(sb0, op);
      const epId = sb.endpoints.find((id) => lookup.endpointRecord(id)?.networkId === n.id);
      if (!epId)
        throw new CnmdError('NOT_FOUND', `sandbox ${sb.name} is not connected to network ${n.name}`, {
          op,
          object: sb.name,
        });
      const errs = new TeardownErrors(op, sb.name, this.d.log);
      await this.disconnectEndpoint(epId, sb, errs);
      store.put(KIND.sandbox, sb.id, sb);
      if (files.exists(sb.id)) files.writeHosts(sb.id, view.hostsOf(sb));
      errs.throwIfFailed();
    });
  }

  /**
   * Takes an endpoint out of its sandbox and network: every step runs, its
   * failures go to errs, and the records go whatever failed (a restart's
   * sweeps remove kernel leftovers). With sandboxDestroyed the sandbox is
   * going too: no ports move, no route changes.
   */
  async disconnectEndpoint(
    epId: string,
    sb: SandboxRecord,
    errs: TeardownErrors,
    sandboxDestroyed = false,
  ): Promise<void> {
    const { store, lookup } = this.d;
    const ep = lookup.endpointRecord(epId);
    if (!ep) {
      sb.endpoints = sb.endpoints.filter((id) => id !== epId);
      return;
    }
    ep.state = 'deleting';
    store.put(KIND.endpoint, ep.id, ep);
    const n = store.get<NetworkRecord>(KIND.network, ep.networkId);
    const driver = n && lookup.driverOf(n);
    const link = n && this.leases.of(n);
    // The lease goes back while the interface can still send; a destroyed sandbox's went before its netns.
    if (link && n && !sandboxDestroyed) await this.leases.detach(link, ep, n, sb);
    else link?.forget(ep.id);
    if (driver && n) {
      await errs.step('revoke external connectivity', () => driver.revokeExternalConnectivity(n.id, ep.id));
      await errs.step('leave', () => driver.leave(n.id, ep.id, { sandboxDestroyed }));
      await errs.step('delete endpoint', () => driver.deleteEndpoint(n.id, ep.id));
    }
    const ipam = n && lookup.ipams.get(n.ipamDriver);
    if (ipam) {
      if (ep.ipv4 && ep.poolV4)
        await errs.step('release ipv4', () => ipam.releaseAddress(ep.poolV4!, ep.ipv4!));
      if (ep.ipv6 && ep.poolV6)
        await errs.step('release ipv6', () => ipam.releaseAddress(ep.poolV6!, ep.ipv6!));
    }
    sb.endpoints = sb.endpoints.filter((id) => id !== epId);
    this.d.view.changed();
    this.d.cluster?.left(ep, n);
    store.tx(() => {
      store.delete(KIND.endpoint, ep.id);
      store.put(KIND.sandbox, sb.id, sb);
    });
    if (sandboxDestroyed || sb.state === 'deleting') return;
    if (ep.ports?.length) await errs.step('move published ports', () => this.movePorts(sb));
    if (!sb.hostNetns)
      await errs.step('update gateway', () => this.d.routes.update(sb, this.d.live.of(sb).handle()));
  }

  /** Leaves and joins again an endpoint whose interface a restart found missing. */
  async rejoin(
    sb: SandboxRecord,
    ep: EndpointRecord,
    n: NetworkRecord,
    driver: Driver,
    handle: Handle,
  ): Promise<void> {
    // Whatever the driver still holds for the lost interface: gone is fine, anything else is logged.
    await bestEffort(this.d.log, 'endpoint leave', ep.id, () => driver.leave(n.id, ep.id));
    await driver.join(n.id, ep.id, { id: sb.id, key: sb.key, handle, ifname: ep.ifname }, {});
  }
}
