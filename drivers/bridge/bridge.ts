// The bridge driver: one Linux bridge per network, one veth per endpoint with
// the container side created directly inside the sandbox's netns, cnmd's
// iptables layout through firewall/.
import { TeardownErrors, bestEffort, failure, ignoreNotFound } from '../../src/errors';
import type { Handle } from '../../src/netlink/handle';
import type { Logger } from '../../src/log';
import { writeSysctl } from '../../src/netns/sysctl';
import { runSteps } from '../../src/steps';
import type { PortPublisher } from '../../src/portmap/publisher';
import type { PortBinding } from '../../src/portmap/spec';
import type {
  Capabilities,
  Driver,
  IpamPolicy,
  EndpointInfo,
  EndpointSpec,
  ExternalConnectivityOptions,
  JoinInfo,
  LeaveOptions,
  NetworkSpec,
  SandboxRef,
} from '../driver';
import { BridgeFirewall, firewallSpec } from './firewall';
import { BridgeConfig, OPT, parseBridgeConfig, unknownBridgeOptions } from './options';
import { hostVethName, VethEndpoint as EndpointState, VethEndpoints } from '../veth-endpoint';

export { hostVethName } from '../veth-endpoint';
import { ALIAS_PREFIX, BridgeState, bridgeSetupSteps, endpointAlias, networkAlias } from './setup';
import { stripPrefix } from '../../src/net/addr';

/**
 * Queues per veth end, each way: the kernel would otherwise allocate one per
 * possible CPU at every creation, which cnmd's veths (no XDP) never use
 * (docs/design-notes.md, "Veth queues").
 */
export const VETH_QUEUES = 1;

/**
 * Host-side veths make no IPv6 link-local (as NetworkManager does for bridge
 * ports): a bridge port's own IP configuration is never used, and the address
 * would cost its up and then DAD, MLD and solicitations flooded to every sandbox
 * (docs/design-notes.md, "Bridge ports without link-local"). Sent in a request
 * of its own before the one bringing the link up: the kernel applies
 * IFLA_AF_SPEC after the flags of the same request, once the address exists.
 */
const HOST_SIDE_NO_LINK_LOCAL = { addrGenMode: 'none' } as const;

/**
 * Whether a network's bridge is cnmd's to remove: it carries the network's
 * alias, or it has cnmd's own name for the network and no alias at all (a
 * daemon killed between the bridge's creation and its alias, which the kernel
 * only takes in a second message). A user's bridge named by option is never
 * taken without the alias.
 */
function ownBridge(link: { alias?: string; kind?: string }, networkId: string, name: string): boolean {
  if (link.alias === networkAlias(networkId)) return true;
  return link.alias === undefined && link.kind === 'bridge' && name === `br-${networkId.slice(0, 12)}`;
}

export class BridgeDriver implements Driver {
  readonly name = 'bridge';
  private readonly host: Handle;
  private readonly fw: BridgeFirewall;
  private readonly ports?: PortPublisher;
  private readonly log: Logger;
  private readonly networks = new Map<string, BridgeState>();
  private readonly endpoints = new VethEndpoints();
  private baseReady = false;

  constructor(deps: { host: Handle; firewall: BridgeFirewall; ports?: PortPublisher; log: Logger }) {
    this.host = deps.host;
    this.fw = deps.firewall;
    this.ports = deps.ports;
    this.log = deps.log;
  }

  /**
   * Docker's GetSkipGwAlloc (moby bridge_linux.go): no gateway address is taken from IPAM for a
   * family in gateway mode isolated (the bridge holds none); a --gateway given is still reserved,
   * as Docker does. (Docker skips it for inhibit_ipv4 on an internal network too; cnmd does not.)
   */
  ipamPolicy(req: { id: string; options: Record<string, string>; internal: boolean }): IpamPolicy {
    const o = req.options;
    return {
      gateway: o[OPT.gatewayModeIPv4] === 'isolated' ? 'explicit' : 'ipam',
      gatewayIPv6: o[OPT.gatewayModeIPv6] === 'isolated' ? 'explicit' : 'ipam',
    };
  }

  capabilities(): Capabilities {
    return { scope: 'local', connectivityScope: 'local', portMapping: !!this.ports };
  }

  private async ensureBase(): Promise<void> {
    if (this.baseReady) return;
    await this.fw.setupBase();
    this.baseReady = true;
  }

  private networkOrThrow(op: string, networkId: string): BridgeState {
    const st = this.networks.get(networkId);
    if (!st) throw failure('NOT_FOUND', { op, object: networkId }, 'no such bridge network');
    return st;
  }

  private checkConflicts(c: BridgeConfig): void {
    for (const other of this.networks.values()) {
      if (other.config.networkId === c.networkId) continue;
      if (other.config.bridgeName === c.bridgeName) {
        const other12 = other.config.networkId.slice(0, 12);
        throw failure(
          'CONFLICT',
          { op: 'network create', object: c.bridgeName },
          `the bridge name is already used by network ${other12}`,
        );
      }
    }
  }

  async createNetwork(spec: NetworkSpec): Promise<void> {
    const config = parseBridgeConfig(spec);
    this.checkConflicts(config);
    await this.ensureBase();
    const st: BridgeState = { config, index: 0, created: false };
    await runSteps(bridgeSetupSteps(this.host, this.fw, st), (step, e) =>
      this.log.error({ err: e, network: spec.id, step }, 'bridge rollback step failed'),
    );
    this.networks.set(spec.id, st);
    this.log.debug({ network: spec.id, bridge: config.bridgeName, index: st.index }, 'bridge ready');
  }

  /** The rules, then the bridge (if cnmd made it): both tried; the network is forgotten once both are gone. */
  async deleteNetwork(networkId: string): Promise<void> {
    const st = this.networks.get(networkId);
    if (!st) return;
    const errs = new TeardownErrors('network rm', st.config.bridgeName, this.log);
    await errs.step('remove rules', () => this.fw.removeNetwork(firewallSpec(st.config)));
    if (st.created) await errs.step('delete bridge', () => this.host.linkDel(st.config.bridgeName));
    errs.throwIfFailed();
    this.networks.delete(networkId);
  }

  async createEndpoint(spec: EndpointSpec): Promise<EndpointInfo> {
    this.networkOrThrow('endpoint create', spec.networkId);
    return { mac: this.endpoints.add(spec).mac };
  }

  async deleteEndpoint(_networkId: string, endpointId: string): Promise<void> {
    this.endpoints.delete(endpointId);
  }

  async join(networkId: string, endpointId: string, sb: SandboxRef): Promise<JoinInfo> {
    const op = 'endpoint join';
    const st = this.networkOrThrow(op, networkId);
    const ep = this.endpoints.need(op, endpointId);
    const c = st.config;
    const info: JoinInfo = {
      gateway: c.internal ? undefined : stripPrefix(c.gatewayV4),
      gatewayIPv6: c.internal ? undefined : stripPrefix(c.gatewayV6),
      staticRoutes: [],
      disableGatewayService: c.internal,
    };
    if (!sb.handle) return { ...info, srcName: await this.joinForEngine(st, ep, sb.ifname) };
    const handle = sb.handle;
    // An IPv6 endpoint needs its link-local mode set before its link comes up: the round-trip way.
    if (sb.freeIndex !== undefined && !ep.addressIPv6) {
      await this.addVethAtFreeIndex(st, ep, handle, sb.ifname, sb.freeIndex);
      return info;
    }
    // One message: host side enslaved and up, container side born in the sandbox with its final name and MAC.
    await this.addVeth(st, ep, { name: sb.ifname, netns: sb.key }, (veth) =>
      this.configurePeer(handle, sb.ifname, veth.parentIndex, ep, c),
    );
    return info;
  }

  /**
   * The veth made from the sandbox's side with an ifindex known to be free
   * there: the container side is born up with its final name, MAC and index,
   * the host side in the daemon's netns. Its address (and the default route
   * the controller sends behind it), and the host side's bridge, alias and
   * hairpin (by name), go out in the same burst: the kernel handles them after
   * the creation (one I/O thread, in order), so no request waits for the
   * answer to another. A failure removes the pair.
   */
  private async addVethAtFreeIndex(
    st: BridgeState,
    ep: EndpointState,
    handle: Handle,
    ifname: string,
    index: number,
  ): Promise<void> {
    const c = st.config;
    const made = handle.linkAdd({
      kind: 'veth',
      name: ifname,
      index,
      mtu: c.mtu,
      mac: ep.mac,
      up: true,
      queues: VETH_QUEUES,
      peer: { name: ep.hostVeth, mtu: c.mtu, netns: this.host, queues: VETH_QUEUES },
      echo: false,
    });
    // Each call sends at once (indexes and names need no look-up), so they reach the kernel in this
    // order: hairpin is a bridge-port option, applied once the enslaving before it is done.
    const rest = [
      ep.address && !c.inhibitIPv4 ? handle.addrAdd(index, ep.address) : Promise.resolve(),
      this.host.linkSet(ep.hostVeth, HOST_SIDE_NO_LINK_LOCAL),
      this.host.linkSet(ep.hostVeth, {
        master: st.index,
        up: true,
        alias: endpointAlias(c.networkId, ep.id),
      }),
      this.host.linkSet(ep.hostVeth, { bridgePort: { hairpin: true } }),
    ];
    // The creation's error first: the others fail because of it.
    const failed = (await Promise.allSettled([made, ...rest])).find(
      (r): r is PromiseRejectedResult => r.status === 'rejected',
    );
    if (failed) {
      await this.removeVethAfterFailure(ep.hostVeth);
      throw failed.reason;
    }
  }

  /**
   * The endpoint's veth: host side enslaved (and up once finished), the peer as
   * asked (in the sandbox, or left in the daemon's netns for the engine); the host
   * side's finishing and the peer's configuration run together, and a failure removes the pair.
   */
  private async addVeth(
    st: BridgeState,
    ep: EndpointState,
    peer: { name: string; netns?: string },
    configurePeer: (veth: { parentIndex?: number }) => Promise<unknown>,
  ): Promise<void> {
    const c = st.config;
    const veth = (await this.host.linkAdd({
      kind: 'veth',
      name: ep.hostVeth,
      mtu: c.mtu,
      master: st.index,
      queues: VETH_QUEUES,
      peer: { ...peer, mtu: c.mtu, mac: ep.mac, queues: VETH_QUEUES },
    }))!;
    try {
      // Each socket's requests pipelined: the sandbox side does not wait for the host side's ACKs.
      await Promise.all([this.finishHostSide(veth.index, c.networkId, ep.id), configurePeer(veth)]);
    } catch (e) {
      await this.removeVethAfterFailure(ep.hostVeth);
      throw e;
    }
  }

  /**
   * A join's rollback: the pair goes (gone already is fine; anything else is logged, the join's error is the
   * answer).
   */
  private removeVethAfterFailure(hostVeth: string): Promise<void> {
    return bestEffort(this.log, 'endpoint join rollback', hostVeth, () => this.host.linkDel(hostVeth));
  }

  /**
   * No IPv6 link-local (HOST_SIDE_NO_LINK_LOCAL), then up with the alias (the
   * kernel applies IFLA_IFALIAS only to an existing link) and hairpin, so a
   * sandbox reaching its own published port through the host address comes back
   * out this port (hairpin as bridge-port slave data). Pipelined: one round trip.
   */
  private async finishHostSide(index: number, networkId: string, endpointId: string): Promise<void> {
    await Promise.all([
      this.host.linkSet(index, HOST_SIDE_NO_LINK_LOCAL),
      this.host.linkSet(index, {
        up: true,
        alias: endpointAlias(networkId, endpointId),
        bridgePort: { hairpin: true },
      }),
    ]);
  }

  /**
   * Up, then the addresses, in one burst on the sandbox's socket (the kernel
   * handles them in order). The host side's echo names the peer's ifindex
   * (IFLA_LINK), which spares a look-up by name.
   */
  private async configurePeer(
    handle: Handle,
    ifname: string,
    peerIndex: number | undefined,
    ep: EndpointState,
    c: BridgeConfig,
  ): Promise<void> {
    const index = peerIndex ?? (await handle.linkIndex(ifname));
    await Promise.all([
      // cnmd's sandboxes make interfaces without IPv6 link-local (netns SANDBOX_SYSCTLS);
      // one with IPv6 gets it back, set before the link comes up, where it is made.
      ep.addressIPv6 ? handle.linkSet(index, { addrGenMode: 'eui64' }) : undefined,
      handle.linkSet(index, { up: true }),
      ep.address && !c.inhibitIPv4 ? handle.addrAdd(index, ep.address) : undefined,
      ep.addressIPv6 ? handle.addrAdd(index, ep.addressIPv6, { nodad: true }) : undefined,
    ]);
  }

  /**
   * The Docker engine's join: both ends stay in the daemon's netns; the engine
   * moves `peerName` into its sandbox, renames it and sets its addresses and routes.
   */
  private async joinForEngine(st: BridgeState, ep: EndpointState, peerName: string): Promise<string> {
    await this.addVeth(st, ep, { name: peerName }, async () => undefined);
    return peerName;
  }

  async leave(_networkId: string, endpointId: string, opts: LeaveOptions = {}): Promise<void> {
    const ep = this.endpoints.get(endpointId);
    const name = ep?.hostVeth ?? hostVethName(endpointId);
    // A dead sandbox's veth goes in the background, apart from the requests
    // that follow (the next attach's veth must not wait behind its RCU grace period); a
    // daemon killed before it completes sweeps the veth at start (its alias).
    const removal = ignoreNotFound(this.host.linkDel(name, { onOwnSocket: !!opts.sandboxDestroyed })).then(
      () => undefined,
    );
    if (!opts.sandboxDestroyed) return removal;
    removal.catch((e) => this.log.warn({ err: e, veth: name }, 'background veth removal failed'));
  }

  private publishRequest(networkId: string, endpointId: string, bindings: PortBinding[]) {
    const st = this.networkOrThrow('port publish', networkId);
    const ep = this.endpoints.get(endpointId);
    if (!ep) throw failure('NOT_FOUND', { op: 'port publish', object: endpointId }, 'no such endpoint');
    return {
      owner: endpointId,
      bridge: st.config.bridgeName,
      containerIPv4: stripPrefix(ep.address),
      containerIPv6: stripPrefix(ep.addressIPv6),
      bindings,
      hostBindingIPv4: st.config.hostBindingIPv4 === '0.0.0.0' ? undefined : st.config.hostBindingIPv4,
      gatewayModes: { ipv4: st.config.gatewayModeIPv4, ipv6: st.config.gatewayModeIPv6 },
      trustedHostInterfaces: st.config.trustedHostInterfaces,
      // Docker 28.2 (moby iptabler/endpoint.go): nothing reaches a nat network's sandbox at its own
      // address from outside its bridge, published ports included (they are at the host's addresses).
      directAccessFilter: 'always' as const,
    };
  }

  async programExternalConnectivity(
    networkId: string,
    endpointId: string,
    options: ExternalConnectivityOptions,
  ): Promise<PortBinding[] | void> {
    const bindings = options.portBindings ?? [];
    if (bindings.length === 0) return [];
    if (!this.ports)
      throw failure(
        'INVALID_ARGUMENT',
        { op: 'port publish', object: endpointId },
        'port publishing is not enabled in this daemon',
      );
    if (this.networkOrThrow('port publish', networkId).config.internal) {
      throw failure(
        'INVALID_ARGUMENT',
        { op: 'port publish', object: networkId },
        'an internal network has no external connectivity to publish ports on',
      );
    }
    return this.ports.publish(this.publishRequest(networkId, endpointId, bindings));
  }

  async revokeExternalConnectivity(_networkId: string, endpointId: string): Promise<void> {
    await this.ports?.unpublish(endpointId);
  }

  async cleanupNetwork(spec: NetworkSpec): Promise<void> {
    const config = parseBridgeConfig(spec, { refuseUnknown: false });
    await this.ensureBase();
    const errs = new TeardownErrors('network cleanup', config.bridgeName, this.log);
    await errs.step('remove rules', () => this.fw.removeNetwork(firewallSpec(config)));
    await errs.step('delete bridge', async () => {
      const link = await ignoreNotFound(this.host.linkGet(config.bridgeName));
      if (link && ownBridge(link, spec.id, config.bridgeName)) await this.host.linkDel(link.index);
    });
    this.networks.delete(spec.id);
    errs.throwIfFailed();
  }

  /** Rebuilds in-memory state from the store and recreates what the kernel lost. */
  async restore(networks: NetworkSpec[], endpoints: EndpointSpec[]): Promise<void> {
    for (const spec of networks) {
      // Accepted by an earlier version that ignored them: kept, and said.
      const unknown = unknownBridgeOptions(spec.options);
      if (unknown.length)
        this.log.warn(
          { network: spec.id, options: unknown },
          'bridge options not supported by cnmd: ignored',
        );
      const config = parseBridgeConfig(spec, { refuseUnknown: false });
      const st: BridgeState = { config, index: 0, created: false };
      await this.ensureBase();
      await runSteps(bridgeSetupSteps(this.host, this.fw, st), (step, e) =>
        this.log.error({ err: e, network: spec.id, step }, 'bridge rollback step failed'),
      );
      // The bridge is ours if it carries our alias (a restart loses the in-memory flag).
      const link = await this.host.linkGet(st.index);
      st.created = link.alias === networkAlias(spec.id);
      // With the proxy, loopback never needs routing to the bridge: undo what a run without it set.
      if (st.created && this.ports?.userlandProxy)
        writeSysctl(['net', 'ipv4', 'conf', config.bridgeName, 'route_localnet'], '0');
      this.networks.set(spec.id, st);
    }
    const list = await this.host.linkList();
    const links = new Map(list.map((l) => [l.name, l]));
    // By alias first: a veth made under another naming (7 hex before) is still the endpoint's.
    const byAlias = new Map(list.filter((l) => l.alias?.startsWith(ALIAS_PREFIX)).map((l) => [l.alias!, l]));
    for (const e of endpoints) {
      const st = this.networks.get(e.networkId);
      if (!st) continue;
      // A bridge recreated above lost its ports: put surviving veths back.
      const veth =
        byAlias.get(endpointAlias(e.networkId, e.endpointId)) ?? links.get(hostVethName(e.endpointId));
      if (veth && veth.masterIndex !== st.index)
        await this.host.linkSet(veth.index, { master: st.index, up: true });
      this.endpoints.add(e, veth?.name);
      if (e.ports?.length && this.ports)
        await this.ports.restore(this.publishRequest(e.networkId, e.endpointId, e.ports));
    }
  }

  /**
   * Removes links in the host netns that carry a cnmd alias but belong to no
   * known network or endpoint, and port rules that no restored binding has.
   * A link that cannot be removed is logged and left for the next start (the
   * daemon starts anyway).
   */
  async sweepLeaks(): Promise<string[]> {
    const rules = await this.ports?.sweep(
      [...this.networks.values()].map(({ config: c }) => ({
        bridge: c.bridgeName,
        subnets: [c.subnetV4, c.subnetV6].filter((x): x is string => !!x),
      })),
    );
    if (rules?.length) this.log.warn({ rules }, 'removed port rules of no live binding');
    const removed: string[] = [];
    const errs = new TeardownErrors('leak sweep', undefined, this.log);
    const bridges = new Set([...this.networks.values()].map((st) => st.index));
    const vethsKnown = new Set([...this.endpoints.values()].map((e) => e.hostVeth));
    for (const l of await this.host.linkList()) {
      // A daemon killed between a veth and its alias (the kernel takes it in a second message) leaves
      // one with cnmd's name and no alias: on one of its bridges or on none, for no endpoint it knows.
      const unaliased =
        l.alias === undefined &&
        l.kind === 'veth' &&
        /^veth[0-9a-f]{11}$/.test(l.name) &&
        !vethsKnown.has(l.name) &&
        (l.masterIndex === undefined || bridges.has(l.masterIndex));
      if (unaliased) {
        await errs.step(`delete ${l.name}`, async () => {
          await this.host.linkDel(l.index);
          removed.push(l.name);
        });
        continue;
      }
      if (!l.alias?.startsWith(ALIAS_PREFIX)) continue;
      const parts = l.alias.slice(ALIAS_PREFIX.length).split(':');
      const known =
        parts[0] === 'net'
          ? this.networks.has(parts[1])
          : parts[0] === 'ep'
            ? this.endpoints.has(parts[2])
            : true;
      if (known) continue;
      await errs.step(`delete ${l.name}`, async () => {
        await this.host.linkDel(l.index);
        removed.push(l.name);
      });
    }
    return removed;
  }
}
