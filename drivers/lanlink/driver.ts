// What the macvlan and ipvlan drivers share: a network is a parent link (and
// maybe a host-access shim), an endpoint is a child of the parent born inside
// the sandbox's netns with its final name, up with its addresses. No bridge,
// no NAT, no port publishing: the sandbox sits on the parent's LAN.
import { CnmdError, bestEffort, ignoreNotFound } from '../../src/errors';
import type { Link } from '../../src/netlink/rtnl/link';
import { Handle } from '../../src/netlink/handle';
import type { LinkAddSpec } from '../../src/netlink/handle';
import type { Logger } from '../../src/log';
import { runSteps } from '../../src/steps';
import type {
  Capabilities,
  Driver,
  EndpointInfo,
  EndpointSpec,
  IpamPolicy,
  JoinInfo,
  LeaveOptions,
  NetworkSpec,
  SandboxRef,
  StaticRoute,
} from '../driver';
import { parseBool } from '../bridge/options';
import { randomMac } from '../../src/net/addr';
import { LAN_OPT, LanConfig, LanKind, LanMode, parseLanConfig } from './config';
import { ParentTable } from './parents';
import {
  isolatedAlias,
  LAN_ALIAS,
  LanState,
  lanEndpointAlias,
  lanSetupSteps,
  linkOrNone,
  removeLink,
  shimName,
  TEMP_PREFIX,
  vlanAlias,
} from './setup';

interface EndpointState {
  networkId: string;
  id: string;
  address?: string;
  addressIPv6?: string;
  mac?: string;
  /** Where the child lives once joined: the sandbox (its handle while open, its path) or the host netns for the engine. */
  joined?: { key: string; handle?: Handle; ifname: string; inHost: boolean };
}

/** Waits for every promise (none left running behind an error), then throws the first failure. */
async function settled(ps: (Promise<unknown> | undefined)[]): Promise<void> {
  const failed = (await Promise.allSettled(ps)).find(
    (x): x is PromiseRejectedResult => x.status === 'rejected',
  );
  if (failed) throw failed.reason;
}

const plain = (cidr: string | undefined) => cidr?.replace(/\/\d+$/, '');

export abstract class LanLinkDriver implements Driver {
  abstract readonly name: LanKind;
  protected readonly host: Handle;
  protected readonly log: Logger;
  private readonly parents: ParentTable;
  private readonly networks = new Map<string, LanState>();
  private readonly endpoints = new Map<string, EndpointState>();
  private kernelHasKind = false;
  /** This kernel looks an ifindex asked for up in the host netns (before 6.3): joins do not ask for one. */
  private indexLookedUpInHost = false;

  constructor(deps: { host: Handle; log: Logger; parents: ParentTable }) {
    this.host = deps.host;
    this.log = deps.log;
    this.parents = deps.parents;
  }

  /** The children's mode from the network's options; bad values refused naming the option. */
  protected abstract readonly parseMode: (options: Record<string, string>) => LanMode;

  /** The child link's kind-specific creation fields. */
  protected abstract childSpec(c: LanConfig, mac: string | undefined): Partial<LinkAddSpec>;

  capabilities(): Capabilities {
    return { scope: 'local', connectivityScope: 'local' };
  }

  /**
   * Docker 29's gateways (moby#50929): an l2 network has one only when
   * --gateway is given (or cnmd.network.ipam_gateway asks IPAM for one), a
   * routed or isolated one has none. Pools are partitioned by parent: the
   * same subnet may sit on two LANs, never twice on one (moby#46438).
   */
  ipamPolicy(req: { id: string; options: Record<string, string>; internal: boolean }): IpamPolicy {
    const mode = this.parseMode(req.options);
    const parent = req.options[LAN_OPT.parent] ?? '';
    const isolated = parent === '' || req.internal;
    const partition = isolated ? undefined : `parent=${parent}`;
    if (mode.routed)
      return {
        gateway: 'none',
        why: `ipvlan_mode ${mode.mode} routes through the device without a gateway`,
        partition,
        noLanLeases: `ipvlan_mode ${mode.mode} routes, and no LAN broadcast reaches its endpoints: use ipvlan_mode l2`,
      };
    // A DHCP server answers endpoints on its L2; ipvlan's share their parent's MAC, told apart by their client ids.
    const lan = isolated
      ? {
          noLanLeases: `a ${this.name} network without -o parent= (or --internal) is on no LAN: give -o parent=`,
        }
      : { lanLeases: true };
    const ipamGateway = parseBool(
      'network create',
      LAN_OPT.ipamGateway,
      req.options[LAN_OPT.ipamGateway],
      false,
    );
    return { gateway: ipamGateway ? 'ipam' : 'explicit', partition, ...lan };
  }

  config(spec: NetworkSpec): LanConfig {
    return parseLanConfig(this.name, spec, this.parseMode(spec.options));
  }

  private state(op: string, networkId: string): LanState {
    const st = this.networks.get(networkId);
    if (!st)
      throw new CnmdError('NOT_FOUND', `${op}: ${this.name} network ${networkId} not found`, {
        op,
        object: networkId,
      });
    return st;
  }

  private claim(st: LanState): void {
    const c = st.config;
    this.parents.add({
      networkId: c.networkId,
      kind: c.kind,
      parent: c.parent,
      mode: c.mode.mode,
      exclusive: c.mode.exclusive,
    });
    this.networks.set(c.networkId, st);
  }

  /**
   * Whether the kernel has this link type, asked once without making
   * anything: a child of the loopback device is refused by the type itself
   * (EINVAL: not an Ethernet device) when the type exists, and as an unknown
   * type (KERNEL_FEATURE_MISSING, naming the CONFIG_ option) when it does not.
   */
  private async probeKernel(): Promise<void> {
    if (this.kernelHasKind) return;
    try {
      await this.host.linkAdd({
        kind: this.name,
        name: 'cnmd-probe',
        parent: 'lo',
        echo: false,
      } as LinkAddSpec);
      await removeLink(this.host, 'cnmd-probe');
    } catch (e) {
      if (e instanceof CnmdError && e.code === 'KERNEL_FEATURE_MISSING')
        throw new CnmdError('KERNEL_FEATURE_MISSING', `network create: ${e.message}`, {
          ...e.details,
          op: 'network create',
        });
    }
    this.kernelHasKind = true;
  }

  private undoFailed(networkId: string) {
    return (step: string, e: unknown) =>
      this.log.error({ err: e, network: networkId, step }, `${this.name} rollback step failed`);
  }

  async createNetwork(spec: NetworkSpec): Promise<void> {
    const st: LanState = { config: this.config(spec), parentIndex: 0, parentMtu: 0, made: {} };
    const [parent, ...rest] = lanSetupSteps(this.host, st, this.parents);
    // After the parent: a parent that cannot carry the network is the first thing to fix.
    const probe = { name: 'check kernel', do: () => this.probeKernel() };
    await runSteps([parent, probe, ...rest], this.undoFailed(spec.id));
    this.claim(st);
    this.log.debug(
      { network: spec.id, parent: st.config.parent, made: st.made },
      `${this.name} network ready`,
    );
  }

  /** Removes what the network made: its shim, its isolated parent, a sub-interface no other network uses. */
  private async teardown(c: LanConfig, vlanOurs: boolean): Promise<void> {
    await removeLink(this.host, shimName(c.networkId));
    if (c.isolated) {
      const link = await linkOrNone(this.host, c.parent);
      if (link?.alias === isolatedAlias(c.networkId)) await removeLink(this.host, c.parent);
    }
    if (c.vlan && vlanOurs && this.parents.on(c.parent, c.networkId).length === 0) {
      const link = await linkOrNone(this.host, c.parent);
      // Only a sub-interface cnmd made (its mark), never one the user made (docker/docs#12735).
      if (link?.alias === vlanAlias) await removeLink(this.host, c.parent);
    }
  }

  async deleteNetwork(networkId: string): Promise<void> {
    const st = this.networks.get(networkId);
    if (!st) return;
    this.parents.remove(networkId);
    this.networks.delete(networkId);
    await this.teardown(st.config, true);
  }

  async createEndpoint(spec: EndpointSpec): Promise<EndpointInfo> {
    const op = 'endpoint create';
    const st = this.state(op, spec.networkId);
    if (st.config.mode.exclusive) {
      const other = [...this.endpoints.values()].find((e) => e.networkId === spec.networkId);
      if (other)
        throw new CnmdError(
          'CONFLICT',
          `${op}: network ${spec.networkId.slice(0, 12)} is in ${st.config.mode.mode} mode, which gives its parent ${st.config.parent} to one endpoint, and endpoint ${other.id.slice(0, 12)} has it`,
          { op, object: spec.networkId },
        );
    }
    const mac = this.macFor(st.config, spec.mac);
    this.endpoints.set(spec.endpointId, {
      networkId: spec.networkId,
      id: spec.endpointId,
      address: spec.address,
      addressIPv6: spec.addressIPv6,
      mac,
    });
    return mac ? { mac } : {};
  }

  /** The child's MAC: the one asked for, else a random one (Docker 28's); undefined where the kind takes the parent's. */
  protected macFor(c: LanConfig, asked: string | undefined): string | undefined {
    return asked ?? randomMac();
  }

  async deleteEndpoint(_networkId: string, endpointId: string): Promise<void> {
    const ep = this.endpoints.get(endpointId);
    // An engine endpoint's link moved back to the host netns by the engine goes here at the latest.
    if (ep?.joined?.inHost) await removeLink(this.host, ep.joined.ifname);
    this.endpoints.delete(endpointId);
  }

  private joinInfo(c: LanConfig): JoinInfo {
    if (c.internal || c.isolated) return { staticRoutes: [], disableGatewayService: true };
    if (c.mode.routed) {
      // ipvlan l3/l3s: the parent routes; the sandbox's default route is the device itself.
      const staticRoutes: StaticRoute[] = [];
      if (c.subnetV4) staticRoutes.push({ destination: '0.0.0.0/0', routeType: 1 });
      if (c.subnetV6) staticRoutes.push({ destination: '::/0', routeType: 1 });
      return { staticRoutes, disableGatewayService: true };
    }
    // The LAN's gateway or none: the engine is never to add its docker_gwbridge for these.
    return {
      gateway: plain(c.gatewayV4),
      gatewayIPv6: plain(c.gatewayV6),
      staticRoutes: [],
      disableGatewayService: true,
    };
  }

  async join(networkId: string, endpointId: string, sb: SandboxRef): Promise<JoinInfo> {
    const op = 'endpoint join';
    const st = this.state(op, networkId);
    const ep = this.endpoints.get(endpointId);
    if (!ep)
      throw new CnmdError('NOT_FOUND', `${op}: endpoint ${endpointId} not found`, { op, object: endpointId });
    const info = this.joinInfo(st.config);
    if (!sb.handle) {
      // The engine moves, names and addresses the link itself.
      await this.addChild(op, st, ep, { name: sb.ifname, alias: lanEndpointAlias(networkId, endpointId) });
      ep.joined = { key: sb.key, ifname: sb.ifname, inHost: true };
      return { ...info, srcName: sb.ifname };
    }
    const handle = sb.handle;
    ep.joined = { key: sb.key, handle, ifname: sb.ifname, inHost: false };
    try {
      if (sb.freeIndex !== undefined && !this.indexLookedUpInHost) {
        if (await this.joinAhead(op, st, ep, handle, sb.ifname, sb.freeIndex)) return info;
      }
      // Made from the host's socket (the parent is there), then found by name in the sandbox.
      await this.addChild(op, st, ep, { name: sb.ifname, netns: handle });
      await this.configure(handle, await handle.linkIndex(sb.ifname), ep);
    } catch (e) {
      await bestEffort(this.log, 'endpoint join rollback', sb.ifname, () => handle.linkDel(sb.ifname));
      ep.joined = undefined;
      throw e;
    }
    return info;
  }

  /**
   * The child made with the sandbox's known-free ifindex and configured in
   * the same burst: the creation goes out on the host's socket, then up and
   * addresses on the sandbox's, and netlink sends leave on one I/O thread in
   * call order, so the kernel has the link before they arrive (as the bridge
   * driver's veth). Kernels before 6.3 look an index given in RTM_NEWLINK up
   * in the requesting socket's netns (EEXIST when the host has one): then
   * false, and this driver stops asking for indexes.
   */
  private async joinAhead(
    op: string,
    st: LanState,
    ep: EndpointState,
    handle: Handle,
    ifname: string,
    index: number,
  ): Promise<boolean> {
    const made = this.addChild(op, st, ep, { name: ifname, netns: handle, index });
    const rest = this.configure(handle, index, ep);
    const [m, r] = await Promise.allSettled([made, rest]);
    if (m.status === 'rejected') {
      if (!(m.reason instanceof CnmdError && m.reason.code === 'ALREADY_EXISTS')) throw m.reason;
      this.indexLookedUpInHost = true;
      return false;
    }
    if (r.status === 'rejected') throw r.reason;
    return true;
  }

  /** Up and addresses, in one burst on the sandbox's socket. */
  private async configure(handle: Handle, index: number, ep: EndpointState): Promise<void> {
    await settled([
      // Sandboxes make links without IPv6 link-local (netns SANDBOX_SYSCTLS): one with IPv6 gets it back.
      ep.addressIPv6 ? handle.linkSet(index, { addrGenMode: 'eui64' }) : undefined,
      handle.linkSet(index, { up: true }),
      ep.address ? handle.addrAdd(index, ep.address) : undefined,
      ep.addressIPv6 ? handle.addrAdd(index, ep.addressIPv6, { nodad: true }) : undefined,
    ]);
  }

  /** Makes the endpoint's child of the network's parent; a refusal is explained in terms of the parent. */
  private async addChild(
    op: string,
    st: LanState,
    ep: EndpointState,
    where: { name: string; netns?: Handle; index?: number; alias?: string },
  ): Promise<void> {
    const c = st.config;
    try {
      await this.host.linkAdd({
        ...(this.childSpec(c, ep.mac) as object),
        name: where.name,
        parent: st.parentIndex,
        mtu: c.mtu,
        netns: where.netns,
        index: where.index,
        alias: where.alias,
        echo: false,
      } as LinkAddSpec);
    } catch (e) {
      throw await this.explain(op, st, e);
    }
  }

  /** A child the kernel refused: the parent gone or renamed says so, and what to do. */
  private async explain(op: string, st: LanState, e: unknown): Promise<unknown> {
    if (!(e instanceof CnmdError)) return e;
    const c = st.config;
    if (e.code === 'NOT_FOUND') {
      // A look-up that fails here must not hide the kernel's refusal: logged, and taken as absent.
      const look = async (ref: string | number) => {
        let link: Link | undefined;
        await bestEffort(this.log, 'endpoint join diagnosis', c.parent, async () => {
          link = await linkOrNone(this.host, ref);
        });
        return link;
      };
      const byIndex = await look(st.parentIndex);
      if (byIndex && byIndex.name !== c.parent)
        return new CnmdError(
          'CONFLICT',
          `${op}: parent ${c.parent} of network ${c.networkId.slice(0, 12)} was renamed to ${byIndex.name}: rename it back (ip link set ${byIndex.name} name ${c.parent})`,
          { op, object: c.parent, cause: e },
        );
      const byName = await look(c.parent);
      if (byName) {
        // Removed and made again under the same name: follow it.
        st.parentIndex = byName.index;
        return new CnmdError(
          'CONFLICT',
          `${op}: parent ${c.parent} of network ${c.networkId.slice(0, 12)} was removed and made again; try again`,
          { op, object: c.parent, cause: e },
        );
      }
      return new CnmdError(
        'NOT_FOUND',
        `${op}: parent ${c.parent} of network ${c.networkId.slice(0, 12)} no longer exists: make it again, or remove the network`,
        { op, object: c.parent, cause: e },
      );
    }
    if (e.errno === 'EBUSY')
      return new CnmdError(
        'CONFLICT',
        `${op}: the kernel refused another ${c.kind} link on parent ${c.parent} (EBUSY): another kind of link or a passthru macvlan holds it`,
        { op, object: c.parent, cause: e },
      );
    return e;
  }

  async leave(_networkId: string, endpointId: string, opts: LeaveOptions = {}): Promise<void> {
    const ep = this.endpoints.get(endpointId);
    const j = ep?.joined;
    if (!ep || !j) return;
    const del = async (h: Handle) => void (await ignoreNotFound(h.linkDel(j.ifname)));
    // The engine may move its link back to the host netns after it leaves: deleteEndpoint looks again.
    if (j.inHost) return del(this.host);
    ep.joined = undefined;
    // A destroyed sandbox's netns took the link with it.
    if (opts.sandboxDestroyed) return;
    if (j.handle && !j.handle.closed) return del(j.handle);
    // A sandbox whose netns is gone took the link with it.
    await ignoreNotFound(Handle.inNetns(j.key, del));
  }

  async programExternalConnectivity(): Promise<void> {}
  async revokeExternalConnectivity(): Promise<void> {}

  async cleanupNetwork(spec: NetworkSpec): Promise<void> {
    let c: LanConfig;
    try {
      c = this.config(spec);
    } catch (e) {
      this.log.warn(
        { err: e, network: spec.id },
        `${this.name} cleanup: options unreadable; the sweep removes what is marked`,
      );
      return;
    }
    this.parents.remove(spec.id);
    this.networks.delete(spec.id);
    // A sub-interface other networks may use is left to sweepLeaks, which runs once all are restored.
    await this.teardown(c, false);
  }

  /** Rebuilds state from the store; remakes a lost isolated parent, sub-interface or shim. */
  async restore(networks: NetworkSpec[], endpoints: EndpointSpec[]): Promise<void> {
    for (const spec of networks) {
      let st: LanState;
      try {
        st = { config: this.config(spec), parentIndex: 0, parentMtu: 0, made: {} };
      } catch (e) {
        this.log.error({ err: e, network: spec.id }, `${this.name} network options unreadable: not restored`);
        continue;
      }
      const c = st.config;
      const link = await linkOrNone(this.host, c.parent);
      if (link) {
        st.parentIndex = link.index;
        st.parentMtu = link.mtu;
        if (c.hostAccess && !(await linkOrNone(this.host, shimName(c.networkId))))
          await runSteps(lanSetupSteps(this.host, st, this.parents).slice(2), this.undoFailed(spec.id)).catch(
            (e) => this.log.error({ err: e, network: spec.id }, 'host-access shim could not be made again'),
          );
      } else if (c.isolated || c.vlan) {
        this.log.warn({ network: spec.id, parent: c.parent }, `${this.name} parent missing: making it again`);
        await runSteps(lanSetupSteps(this.host, st, this.parents), this.undoFailed(spec.id)).catch((e) =>
          this.log.error({ err: e, network: spec.id }, `${this.name} parent could not be made again`),
        );
      } else {
        this.log.error(
          { network: spec.id, parent: c.parent },
          `${this.name} parent missing: endpoints cannot join until it is back`,
        );
      }
      this.claim(st);
    }
    for (const e of endpoints) {
      if (!this.networks.has(e.networkId)) continue;
      this.endpoints.set(e.endpointId, {
        networkId: e.networkId,
        id: e.endpointId,
        address: e.address,
        addressIPv6: e.addressIPv6,
        mac: e.mac,
        joined: e.sandbox
          ? { key: e.sandbox.key, ifname: e.sandbox.ifname, inHost: !!e.sandbox.engine }
          : undefined,
      });
    }
  }

  /**
   * A link killed before its mark: still under its temporary name (a parent,
   * sub-interface or shim being made), or an engine endpoint's child of this
   * kind under cnmd's name for it, unaliased, of no known endpoint.
   */
  private unmarkedLeak(l: Link): boolean {
    if (l.name.startsWith(TEMP_PREFIX)) return true;
    if (l.alias !== undefined || l.kind !== this.name) return false;
    const m = /^cnmd([0-9a-f]{11})$/.exec(l.name);
    return !!m && ![...this.endpoints.keys()].some((id) => id.startsWith(m[1]));
  }

  /**
   * Links in the host netns marked as cnmd's macvlan/ipvlan objects that
   * nothing claims: isolated parents and shims of unknown networks and
   * sub-interfaces no network uses (the parent table is shared, so either
   * driver judges them alike), and engine endpoints' links of this kind.
   */
  async sweepLeaks(): Promise<string[]> {
    const removed: string[] = [];
    for (const l of await this.host.linkList()) {
      if (this.unmarkedLeak(l)) {
        await removeLink(this.host, l.name);
        removed.push(l.name);
        continue;
      }
      if (!l.alias?.startsWith(LAN_ALIAS)) continue;
      const [what, netId, epId] = l.alias.slice(LAN_ALIAS.length).split(':');
      const leaked =
        what === 'vlan'
          ? this.parents.on(l.name).length === 0
          : what === 'iso' || what === 'shim'
            ? !this.parents.get(netId)
            : what === 'ep'
              ? l.kind === this.name && !this.endpoints.has(epId)
              : false;
      if (!leaked) continue;
      await removeLink(this.host, l.name);
      removed.push(l.name);
    }
    return removed;
  }
}
