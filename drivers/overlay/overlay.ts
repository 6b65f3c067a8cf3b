// The overlay driver's data plane: per network and host, a netns holding a
// bridge and a vxlan device; endpoints are veths from the sandbox into that
// bridge; remote endpoints are static neighbour + FDB entries that setPeers
// keeps equal to what the control plane (src/cluster/) says. See README.md here.
import * as path from 'node:path';
import { CnmdError, bestEffort, invalidArgument, settled } from '../../src/errors';
import type { Handle } from '../../src/netlink/handle';
import type { Logger } from '../../src/log';
import { NetnsManager, sandboxSysctls } from '../../src/netns/netns';
import type { PortPublisher } from '../../src/portmap/publisher';
import type { PortBinding } from '../../src/portmap/spec';
import { runSteps } from '../../src/steps';
import { VETH_QUEUES } from '../bridge/bridge';
import { hostVethName, VethEndpoints } from '../veth-endpoint';
import type { BridgeFirewall } from '../bridge/firewall';
import type {
  Capabilities,
  Driver,
  EndpointInfo,
  EndpointSpec,
  ExternalConnectivityOptions,
  JoinInfo,
  LeaveOptions,
  NetworkSpec,
  SandboxRef,
} from '../driver';
import { GatewayBridge, GWBRIDGE, GW_IFNAME } from './gwbridge';
import {
  DEFAULT_VXLAN_PORT,
  OV_ALIAS_PREFIX,
  OverlayConfig,
  overlayMtu,
  ovEndpointAlias,
  parseEncrypted,
  parseOverlayConfig,
  parseOvEndpointAlias,
} from './options';
import { EncryptionProbe } from './kernel-probe';
import type { ClusterSecret } from '../../src/cluster/keys';
import type { FirewallBackend } from '../../src/firewall/firewall';
import { encryptedMtu, RingKeys, XfrmChanges } from './encryption';
import { NetworkEncryption, OverlayEncryption } from './encrypted';
import { applyDelta, OverlayPeer, PeerChange, PeerSet, reconcilePeers, ReconcileResult } from './peers';
import { OverlayNetworkState, overlaySetupSteps } from './setup';
import { stripPrefix } from '../../src/net/addr';

export type { OverlayPeer } from './peers';

export interface OverlayDriverConfig {
  /** A handle in the daemon's (host) netns: the underlay. */
  host: Handle;
  /**
   * The local VTEP: the daemon's cluster advertise address. undefined: no cluster store, overlay networks are
   * refused.
   */
  vtep: () => string | undefined;
  /** UDP port of VXLAN (--vxlan-port), default 4789. */
  vxlanPort?: number;
  /** --cluster-secret-file: encrypted networks need it (their keys are sealed under it in the cluster store). */
  clusterSecret?: ClusterSecret;
  /** The host netns's firewall: encrypted networks' drop and mark rules (without it they are refused). */
  firewall?: FirewallBackend;
  /** A send SA vanished and was made again with its sequence restarted: a key rotation is needed (encrypted.ts). */
  onSendStateLost?: (peers: string[]) => void;
  /** Network namespaces of overlay networks go under <execRoot>/overlay/netns. */
  execRoot: string;
  /** Egress and published ports through cnmd_gwbridge; absent: overlay sandboxes reach only their networks. */
  gateway?: { firewall: BridgeFirewall; ports?: PortPublisher; subnet?: string };
  log: Logger;
}

const notFound = (e: unknown): undefined => {
  if (e instanceof CnmdError && e.code === 'NOT_FOUND') return undefined;
  throw e;
};

export class OverlayDriver implements Driver {
  readonly name = 'overlay';
  private readonly host: Handle;
  private readonly vtep: () => string | undefined;
  private readonly port: number;
  private readonly log: Logger;
  /** Overlay networks' namespaces, apart from sandboxes' (the controller sweeps those it does not know). */
  readonly netns: NetnsManager;
  private readonly gw?: GatewayBridge;
  private readonly ports?: PortPublisher;
  private readonly networks = new Map<string, OverlayNetworkState>();
  private readonly endpoints = new VethEndpoints();
  /** The last peer set per network (kept for a network not made here yet). */
  private readonly wanted = new Map<string, PeerSet>();
  /** One reconcile at a time per network. */
  private readonly reconciling = new Map<string, Promise<unknown>>();
  /** Networks the store holds that could not be set up at restore (kept from the sweep). */
  private readonly deferred = new Set<string>();
  /** Their VNIs, when encrypted: their rules are kept too. */
  private readonly deferredEncrypted = new Set<number>();
  private readonly enc: OverlayEncryption;

  constructor(cfg: OverlayDriverConfig) {
    this.host = cfg.host;
    this.vtep = cfg.vtep;
    this.port = cfg.vxlanPort ?? DEFAULT_VXLAN_PORT;
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535)
      throw invalidArgument(
        'overlay driver',
        String(cfg.vxlanPort),
        `VXLAN port ${cfg.vxlanPort} is outside 1..65535`,
      );
    this.log = cfg.log;
    this.netns = new NetnsManager(path.join(cfg.execRoot, 'overlay'), { sysctls: sandboxSysctls() });
    this.enc = new OverlayEncryption({
      host: cfg.host,
      firewall: cfg.firewall,
      secret: cfg.clusterSecret,
      probe: new EncryptionProbe(this.netns),
      port: this.port,
      log: cfg.log,
      onSendStateLost: cfg.onSendStateLost,
    });
    if (cfg.gateway) {
      this.gw = new GatewayBridge({
        host: cfg.host,
        log: cfg.log,
        firewall: cfg.gateway.firewall,
        subnet: cfg.gateway.subnet,
      });
      this.ports = cfg.gateway.ports;
    }
  }

  capabilities(): Capabilities {
    return { scope: 'global', connectivityScope: 'global', portMapping: !!this.ports };
  }

  private networkOrThrow(op: string, networkId: string): OverlayNetworkState {
    const st = this.networks.get(networkId);
    if (!st)
      throw new CnmdError('NOT_FOUND', `${op}: overlay network ${networkId} not found`, {
        op,
        object: networkId,
      });
    return st;
  }

  private localVtep(op: string, object: string): string {
    const vtep = this.vtep();
    if (!vtep)
      throw new CnmdError(
        'FORBIDDEN',
        `${op} ${object}: overlay networks need a cluster store; start cnmd with --cluster-store (and ` +
          `--cluster-advertise)`,
        { op, object },
      );
    return vtep;
  }

  /** The MTU of the host interface holding the VTEP address: the underlay's. */
  private async underlayMtu(op: string, vtep: string): Promise<number> {
    const addr = (await this.host.addrList()).find((a) => stripPrefix(a.cidr) === vtep);
    if (!addr)
      throw invalidArgument(
        op,
        vtep,
        `VTEP address ${vtep} (--cluster-advertise) is not an address of this host`,
      );
    return (await this.host.linkGet(addr.index)).mtu;
  }

  private async newState(op: string, config: OverlayConfig): Promise<OverlayNetworkState> {
    const vtep = this.localVtep(op, config.networkId);
    const plain = overlayMtu(config.underlayMtu ?? (await this.underlayMtu(op, vtep)), vtep);
    const mtu = config.encrypted ? encryptedMtu(plain) : plain;
    return { config, nsPath: '', bridgeIndex: 0, vxlanIndex: 0, mtu, vtep, port: this.port };
  }

  async checkNetwork(name: string, options: Record<string, string>): Promise<void> {
    const op = 'network create';
    const vtep = this.localVtep(op, name);
    if (!parseEncrypted(op, options)) return;
    await this.enc.check(op, name, vtep);
  }

  /** The steps that make a network here: an encrypted one's guard and rules come before its vxlan device. */
  private setupSteps(st: OverlayNetworkState) {
    const steps = overlaySetupSteps(this.host, this.netns, st);
    if (!st.config.encrypted) return steps;
    return [
      this.enc.guardStep(st.config.vni, st.vtep, () => this.encryptedCount(st.config.networkId)),
      ...steps,
    ];
  }

  /** Encrypted networks here, other than `except`. */
  private encryptedCount(except?: string): number {
    return [...this.networks.values()].filter((n) => n.config.encrypted && n.config.networkId !== except)
      .length;
  }

  /**
   * The peer VTEPs of every encrypted network here: who gets SAs and a policy.
   * `known`: every one of them has had its peers from the control plane (after
   * a restart they have not yet: the kernel's SAs are then kept, not removed).
   */
  private encryptedPeers(): { any: boolean; known: boolean; vteps: string[] } {
    const vteps = new Set<string>();
    let known = true;
    // A network kept from the sweep (not set up at restore) still counts: the guard stays.
    let any = this.deferredEncrypted.size > 0;
    for (const [id, st] of this.networks) {
      if (!st.config.encrypted) continue;
      any = true;
      const want = this.wanted.get(id);
      if (!want) known = false;
      for (const v of want?.want.fdb.values() ?? []) vteps.add(v);
    }
    return { any, known, vteps: [...vteps] };
  }

  /** SAs and policies made equal to the encrypted networks' peers (host-wide, one run at a time). */
  reconcileEncryption(): Promise<XfrmChanges | undefined> {
    const vtep = this.vtep();
    if (!vtep) return Promise.resolve(undefined);
    return this.enc.reconcile(vtep, () => this.encryptedPeers());
  }

  /**
   * The cluster's key ring, opened (or why this host cannot open it: then
   * encrypted networks are refused here and the kernel's SAs stay as they are).
   * Resolves true once the SAs for it are installed (the host may then say
   * so), false when they could not be yet (a network's peers not heard since
   * a restart: asked again later).
   */
  async setKeyRing(ring: RingKeys | undefined, error?: CnmdError): Promise<boolean> {
    this.enc.setRing(ring, error);
    if (!ring) return false;
    return (await this.reconcileEncryption()) !== undefined;
  }

  /** Inspect's "Encryption" of an encrypted network. */
  inspect(networkId: string): Record<string, unknown> | undefined {
    const e = this.encryptionStatus(networkId);
    return e && { Encryption: e };
  }

  /** For inspect: an encrypted network's key tags and peers (never a key). */
  encryptionStatus(networkId: string): NetworkEncryption | undefined {
    const st = this.networks.get(networkId);
    if (!st?.config.encrypted) return undefined;
    return this.enc.status([...(this.wanted.get(networkId)?.want.fdb.values() ?? [])]);
  }

  async createNetwork(spec: NetworkSpec): Promise<void> {
    const op = 'network create';
    await this.checkNetwork(spec.name, spec.options);
    const config = parseOverlayConfig(spec);
    if (this.networks.has(spec.id)) return;
    for (const other of this.networks.values())
      if (other.config.vni === config.vni)
        throw new CnmdError(
          'CONFLICT',
          `${op}: VNI ${config.vni} is already used by overlay network ${other.config.networkId.slice(0, 12)}`,
          { op, object: String(config.vni) },
        );
    const st = await this.newState(op, config);
    await runSteps(this.setupSteps(st), (step, e) =>
      this.log.error({ err: e, network: spec.id, step }, 'overlay rollback step failed'),
    );
    this.networks.set(spec.id, st);
    this.log.debug(
      { network: spec.id, vni: config.vni, mtu: st.mtu, vtep: st.vtep },
      'overlay network ready',
    );
    if (this.wanted.has(spec.id)) await this.reconcile(spec.id);
  }

  async deleteNetwork(networkId: string): Promise<void> {
    const st = this.networks.get(networkId);
    this.wanted.delete(networkId);
    if (!st) return;
    // Behind a reconcile in flight (its caller sees its outcome).
    await settled(this.reconciling.get(networkId));
    this.networks.delete(networkId);
    await this.teardown(st.config, st.ns);
  }

  /**
   * The network's vxlan device (wherever it is) and its netns; for an
   * encrypted one then its rules, and the SAs and policies of peers no other
   * encrypted network has (the guard with the last one).
   */
  private async teardown(c: OverlayConfig, ns?: Handle): Promise<void> {
    if (ns && !ns.closed) {
      // Explicitly: the netns may outlive its path while a process is still inside.
      await ns.linkDel(c.vxlanName).catch(notFound);
      ns.close();
    }
    const stray = await this.host.linkGet(c.vxlanName).catch(notFound);
    if (stray?.alias?.startsWith(OV_ALIAS_PREFIX)) await this.host.linkDel(stray.index).catch(notFound);
    await this.netns.remove(c.netnsId).catch(notFound);
    if (c.encrypted) {
      const vtep = this.vtep();
      if (vtep) await this.enc.removeRules(c.vni, this.encryptedCount(c.networkId) === 0, vtep);
      await this.reconcileEncryption();
    }
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
    const ns = st.ns!;
    const h = sb.handle;
    // A fresh sandbox's free ifindex: the container side is made with it, and needs no look-up.
    const peerIndex = h ? sb.freeIndex : undefined;
    // Host side born up in the network's netns on its bridge (no link-local: the netns's default);
    // the container side in the sandbox (or the daemon's netns for the engine).
    await ns.linkAdd({
      kind: 'veth',
      name: ep.hostVeth,
      mtu: st.mtu,
      master: st.bridgeIndex,
      up: true,
      queues: VETH_QUEUES,
      alias: ovEndpointAlias(networkId, endpointId, sb.id),
      peer: {
        name: sb.ifname,
        netns: h ?? this.host,
        mac: ep.mac,
        mtu: st.mtu,
        queues: VETH_QUEUES,
        index: peerIndex,
      },
      echo: false,
    });
    const info: JoinInfo = { staticRoutes: [], disableGatewayService: true };
    if (!h) return { ...info, srcName: sb.ifname };
    const wantGw = !!this.gw && !st.config.internal;
    // The gateway bridge's interface is made alongside the container side's configuration.
    const [configured, gw] = await Promise.allSettled([
      (async () => {
        const index = peerIndex ?? (await h.linkIndex(sb.ifname));
        await Promise.all([
          ep.addressIPv6 ? h.linkSet(index, { addrGenMode: 'eui64' }) : undefined,
          h.linkSet(index, { up: true }),
          ep.address ? h.addrAdd(index, ep.address) : undefined,
          ep.addressIPv6 ? h.addrAdd(index, ep.addressIPv6, { nodad: true }) : undefined,
        ]);
      })(),
      wantGw ? this.gw!.attach(endpointId, { ...sb, handle: h }) : Promise.resolve(undefined),
    ]);
    if (configured.status === 'rejected' || gw.status === 'rejected') {
      // The join's error is the answer; a failed removal of what it made is logged.
      await bestEffort(this.log, 'endpoint join rollback', ep.hostVeth, () => ns.linkDel(ep.hostVeth));
      if (gw.status === 'fulfilled' && wantGw)
        await bestEffort(this.log, 'gateway detach', endpointId, () => this.gw!.detach(endpointId));
      throw configured.status === 'rejected' ? configured.reason : (gw as PromiseRejectedResult).reason;
    }
    if (!wantGw) return info;
    return { ...info, gateway: gw.value, gatewayInterface: GW_IFNAME, disableGatewayService: false };
  }

  async leave(networkId: string, endpointId: string, opts: LeaveOptions = {}): Promise<void> {
    const st = this.networks.get(networkId);
    const name = this.endpoints.get(endpointId)?.hostVeth ?? hostVethName(endpointId);
    const onOwnSocket = !!opts.sandboxDestroyed;
    await Promise.all([
      st?.ns && !st.ns.closed ? st.ns.linkDel(name, { onOwnSocket }).catch(notFound) : undefined,
      this.gw?.detach(endpointId, { onOwnSocket }),
    ]);
  }

  async programExternalConnectivity(
    networkId: string,
    endpointId: string,
    options: ExternalConnectivityOptions,
  ): Promise<PortBinding[] | void> {
    const op = 'port publish';
    const bindings = options.portBindings ?? [];
    if (bindings.length === 0) return [];
    const st = this.networkOrThrow(op, networkId);
    const sandboxId = this.gw?.sandboxOf(endpointId);
    const cidr = sandboxId === undefined ? undefined : this.gw!.addressOf(sandboxId);
    if (!this.ports || st.config.internal || !cidr)
      throw new CnmdError(
        'INVALID_ARGUMENT',
        `${op}: overlay network ${networkId.slice(0, 12)} has no way out to publish ports on`,
        {
          op,
          object: endpointId,
        },
      );
    return this.ports.publish({
      owner: endpointId,
      bridge: GWBRIDGE,
      containerIPv4: stripPrefix(cidr),
      bindings,
    });
  }

  async revokeExternalConnectivity(_networkId: string, endpointId: string): Promise<void> {
    await this.ports?.unpublish(endpointId);
  }

  /**
   * Desired state from the control plane: the network's remote endpoints.
   * The vxlan device's neighbour and FDB entries become exactly these (entries
   * of peers on this host's VTEP are left out: they are on the bridge).
   * Idempotent and cheap when nothing changed (two dumps in the netns).
   */
  async setPeers(networkId: string, peers: OverlayPeer[]): Promise<void> {
    this.peerSet(networkId).replaceAll(peers);
    if (this.networks.has(networkId)) await this.reconcile(networkId);
  }

  /**
   * Some of the network's remote endpoints changed (after a setPeers): only
   * their entries are written, one request each, no dump (the periodic
   * setPeers reads the kernel back and heals drift). A write that fails
   * makes it reconcile in full at once.
   */
  async updatePeers(networkId: string, change: PeerChange): Promise<void> {
    const set = this.wanted.get(networkId);
    if (!set)
      throw new CnmdError('NOT_FOUND', `overlay peers ${networkId}: no peer set yet (setPeers first)`, {
        op: 'overlay peers',
        object: networkId,
      });
    const delta = set.apply(change);
    if (!this.networks.has(networkId) || (delta.neigh.size === 0 && delta.fdb.size === 0)) return;
    await this.queued(networkId, async (st) => {
      try {
        if (st.config.encrypted) await this.reconcileEncryption();
        const r = await applyDelta(st.ns!, st.vxlanIndex, delta);
        this.log.debug({ network: networkId, ...r }, 'overlay peers updated');
        return r;
      } catch (e) {
        this.log.warn({ err: e, network: networkId }, 'overlay peer update failed: reconciling in full');
        return reconcilePeers(st.ns!, st.vxlanIndex, set.want);
      }
    });
  }

  private peerSet(networkId: string): PeerSet {
    let set = this.wanted.get(networkId);
    if (!set) {
      set = new PeerSet(this.vtep, (what, kept, dropped) =>
        this.log.warn(
          { network: networkId, entry: what, kept: kept.endpointId, dropped: dropped.endpointId },
          'overlay peers: two endpoints claim one address or MAC; keeping one',
        ),
      );
      this.wanted.set(networkId, set);
    }
    return set;
  }

  /** Reconciles the network's entries with the last peer set; resolves with what changed. */
  async reconcile(networkId: string): Promise<ReconcileResult | undefined> {
    return this.queued(networkId, async (st) => {
      const want = this.wanted.get(networkId)?.want;
      if (!want) return undefined;
      // A new peer's SAs and policy before its FDB entry (the guard blocks it meanwhile anyway).
      if (st.config.encrypted) await this.reconcileEncryption();
      const r = await reconcilePeers(st.ns!, st.vxlanIndex, want);
      if (r.neighAdded + r.neighRemoved + r.fdbAdded + r.fdbRemoved > 0)
        this.log.debug({ network: networkId, ...r }, 'overlay peers reconciled');
      return r;
    });
  }

  /** Runs fn on the network's kernel state behind the previous run (one at a time per network). */
  private async queued(
    networkId: string,
    fn: (st: OverlayNetworkState) => Promise<ReconcileResult | undefined>,
  ): Promise<ReconcileResult | undefined> {
    const prev = this.reconciling.get(networkId) ?? Promise.resolve();
    // Queued behind the previous run, whatever its outcome (its caller sees that).
    const run = settled(prev).then(async () => {
      const st = this.networks.get(networkId);
      if (!st?.ns || st.ns.closed) return undefined;
      return fn(st);
    });
    this.reconciling.set(networkId, run);
    try {
      return await run;
    } finally {
      if (this.reconciling.get(networkId) === run) this.reconciling.delete(networkId);
    }
  }

  async cleanupNetwork(spec: NetworkSpec): Promise<void> {
    const st = this.networks.get(spec.id);
    this.networks.delete(spec.id);
    this.wanted.delete(spec.id);
    let c: OverlayConfig;
    try {
      c = parseOverlayConfig(spec);
    } catch (e) {
      // A record too broken to name its objects: its netns is swept as unknown.
      this.log.warn(
        { err: e, network: spec.id },
        'overlay cleanup: options unreadable, leaving it to the sweep',
      );
      return;
    }
    await this.teardown(c, st?.ns);
  }

  /**
   * After a restart: adopts each network's netns, bridge and vxlan device when
   * they are intact (their static entries kept traffic flowing meanwhile), and
   * makes them again when not; endpoints' veths are found by their alias.
   */
  async restore(networks: NetworkSpec[], endpoints: EndpointSpec[]): Promise<void> {
    for (const spec of networks) {
      try {
        await this.restoreNetwork(spec);
      } catch (e) {
        // Kept from the sweep: the kernel state stays as it is until the network can be set up.
        this.deferred.add(spec.id);
        try {
          const c = parseOverlayConfig(spec);
          if (c.encrypted) this.deferredEncrypted.add(c.vni);
        } catch {
          // Unreadable options: nothing to keep by VNI.
        }
        this.log.error({ err: e, network: spec.id }, 'overlay network restore failed');
      }
    }
    const byId = new Map(endpoints.map((e) => [e.endpointId, e]));
    const gwUsers = new Map<string, string[]>();
    for (const st of this.networks.values()) {
      for (const l of await st.ns!.linkList()) {
        const a = parseOvEndpointAlias(l.alias);
        if (!a) continue;
        const e = byId.get(a.endpointId);
        if (!e || a.networkId !== st.config.networkId) {
          await st.ns!.linkDel(l.index).catch(notFound);
          continue;
        }
        if (l.masterIndex !== st.bridgeIndex)
          await st.ns!.linkSet(l.index, { master: st.bridgeIndex, up: true });
        if (!st.config.internal)
          gwUsers.set(a.sandboxId, [...(gwUsers.get(a.sandboxId) ?? []), e.endpointId]);
      }
    }
    for (const e of endpoints) {
      if (!this.networks.has(e.networkId)) continue;
      this.endpoints.add(e);
    }
    if (this.gw) {
      const removed = await this.gw.restore(gwUsers);
      if (removed.length) this.log.warn({ links: removed }, 'removed gateway bridge ports of gone sandboxes');
      for (const e of endpoints) {
        const sandboxId = this.gw.sandboxOf(e.endpointId);
        if (sandboxId && e.ports?.length && this.ports)
          await this.ports.restore({
            owner: e.endpointId,
            bridge: GWBRIDGE,
            containerIPv4: stripPrefix(this.gw.addressOf(sandboxId)!),
            bindings: e.ports,
          });
      }
    }
  }

  private async restoreNetwork(spec: NetworkSpec): Promise<void> {
    const config = parseOverlayConfig(spec);
    const st = await this.newState('network restore', config);
    // Guard and rules first, whatever is found: a kill mid-setup may have left the device without them.
    if (config.encrypted) await this.enc.guardStep(config.vni, st.vtep, () => 1).do();
    if (this.netns.exists(config.netnsId)) {
      const ns = this.netns.handle(config.netnsId);
      const [br, vx] = await Promise.all([
        ns.linkGet(config.bridgeName).catch(notFound),
        ns.linkGet(config.vxlanName).catch(notFound),
      ]);
      const intact =
        br?.kind === 'bridge' &&
        vx?.kind === 'vxlan' &&
        vx.vxlan?.vni === config.vni &&
        vx.vxlan.port === this.port &&
        vx.vxlan.local === st.vtep &&
        vx.masterIndex === br.index;
      if (intact) {
        Object.assign(st, {
          ns,
          nsPath: this.netns.pathOf(config.netnsId),
          bridgeIndex: br.index,
          vxlanIndex: vx.index,
        });
        if (!br.up || !vx.up)
          await Promise.all([ns.linkSet(br.index, { up: true }), ns.linkSet(vx.index, { up: true })]);
        this.networks.set(spec.id, st);
        return;
      }
      // Made anew (the advertise address or port changed, or a part is missing): endpoints are joined again.
      this.log.warn(
        { network: spec.id },
        'overlay network kernel state incomplete or changed: making it again',
      );
      await this.teardown(config, ns);
    }
    await runSteps(overlaySetupSteps(this.host, this.netns, st), (step, e) =>
      this.log.error({ err: e, network: spec.id, step }, 'overlay rollback step failed'),
    );
    this.networks.set(spec.id, st);
  }

  /** Whether a network the store has is encrypted (a deferred one counts: its rules are kept). */
  private encryptedVnis(): Set<number> {
    const out = new Set<number>();
    for (const st of this.networks.values()) if (st.config.encrypted) out.add(st.config.vni);
    for (const v of this.deferredEncrypted) out.add(v);
    return out;
  }

  /** Namespaces of unknown overlay networks, and vxlan devices left in the host netns by an interrupted create. */
  async sweepLeaks(): Promise<string[]> {
    const removed: string[] = [];
    const known = new Set([...this.networks.values()].map((s) => s.config.netnsId));
    for (const id of this.deferred) known.add(`ov-${id}`);
    for (const id of this.netns.list()) {
      if (known.has(id)) continue;
      await this.netns.remove(id).catch(notFound);
      removed.push(`netns ${id}`);
    }
    for (const l of await this.host.linkList()) {
      if (l.kind !== 'vxlan' || !l.alias?.startsWith(`${OV_ALIAS_PREFIX}net:`)) continue;
      // A vxlan device is in the host netns only between its creation and its move.
      await this.host.linkDel(l.index).catch(notFound);
      removed.push(l.name);
    }
    // Encrypted networks removed while the daemon was down (or a kill mid-removal): their rules, and
    // SAs/policies of peers no encrypted network has (all of cnmd's, with reqid/mark, when none is left).
    removed.push(...(await this.enc.sweepRules(this.encryptedVnis())));
    if (this.deferredEncrypted.size === 0) {
      const x = await this.reconcileEncryption();
      if (x)
        removed.push(
          ...x.policiesRemoved.map((p) => `xfrm policy ${p}`),
          ...x.statesRemoved.map((k) => `xfrm state ${k}`),
        );
    }
    return removed;
  }

  /** For inspect and tests: a network's netns path, device names and MTU. */
  describe(
    networkId: string,
  ): { netns: string; bridge: string; vxlan: string; mtu: number; vni: number } | undefined {
    const st = this.networks.get(networkId);
    if (!st) return undefined;
    const c = st.config;
    return { netns: st.nsPath, bridge: c.bridgeName, vxlan: c.vxlanName, mtu: st.mtu, vni: c.vni };
  }

  /** The gateway bridge's subnet, once made. */
  gatewaySubnet(): string | undefined {
    return this.gw?.subnetText();
  }

  close(): void {
    for (const st of this.networks.values()) st.ns?.close();
  }
}
