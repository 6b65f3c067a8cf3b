// This host's membership in the cluster: its lease, its host record and its
// endpoint records (all under the lease, so a dead host's records vanish
// within the TTL); the global networks and every host's endpoints, mirrored
// from the store by watches; global network create/remove with
// compare-and-swap on one guard key (names, VNIs and subnets stay unique).
import { CnmdError, bestEffort, invalidArgument } from '../errors';
import type { IpamConfig } from '../controller/records';
import { Cidr, bigToIp, contains, formatCidr, ipToBig, overlaps, parseCidr } from '../net/addr';
import { POOL_OVERLAP } from '../ipam/ipam';
import { predefinedSubnets } from '../ipam/pools';
import type { Logger } from '../log';
import type { ClusterStore, Versioned } from './etcd';
import {
  EndpointPublication,
  GlobalNetworkRecord,
  HostRecord,
  VNI_MAX,
  VNI_MIN,
  VXLANID_OPTION,
  isHostRecord,
  isNetworkRecord,
  key,
  publicationProblem,
} from './records';

/** How often kernel state is reconciled against the store, and failed publications retried. */
export const RECONCILE_MS = 2000;
const CAS_ATTEMPTS = 10;

export interface ClusterEvents {
  /** A global network appeared or changed in the store (also for each one found at start). */
  networkPut(rec: GlobalNetworkRecord): Promise<void>;
  /** A global network left the store. */
  networkDelete(id: string): Promise<void>;
  /**
   * Another host's endpoint on the network changed (endpointId: added, altered
   * or removed; remoteEndpoint says which), or the whole set may have
   * (endpointId undefined: a watch resumed), or the reconcile loop ticked
   * (networkId undefined: every network).
   */
  peersChanged(networkId?: string, endpointId?: string): void;
  /** This host's endpoints as its local store has them: what is published after a restart or a lost lease. */
  localEndpoints(): EndpointPublication[];
}

export interface ClusterOptions {
  store: ClusterStore;
  hostId: string;
  hostName: string;
  vtep: string;
  ttlSeconds: number;
  log: Logger;
}

export interface NetworkCreateSpec {
  id: string;
  name: string;
  driver: string;
  options: Record<string, string>;
  labels: Record<string, string>;
  internal: boolean;
  attachable: boolean;
  enableIPv6: boolean;
  ipamOptions: Record<string, string>;
  ipamConfig: IpamConfig[];
}

export class Cluster {
  readonly store: ClusterStore;
  readonly hostId: string;
  readonly vtep: string;
  private readonly hostName: string;
  private readonly ttl: number;
  private readonly log: Logger;
  private events?: ClusterEvents;
  private leaseId?: string;
  private dropLease?: () => Promise<void>;
  readonly networks = new Map<string, GlobalNetworkRecord>();
  readonly hosts = new Map<string, HostRecord>();
  /** Every host's endpoints, by network then endpoint id. */
  private readonly endpoints = new Map<string, Map<string, EndpointPublication>>();
  /** Publications not yet in the store (put or delete), retried until it takes them. */
  private readonly pending = new Map<string, { net: string; id: string; pub?: EndpointPublication }>();
  private flushing = false;
  private timer?: NodeJS.Timeout;
  private cancels: (() => Promise<void>)[] = [];
  private closed = false;
  /** Runs in the reconcile loop too (IPAM's retried releases). */
  onTick?: () => Promise<void>;

  constructor(o: ClusterOptions) {
    this.store = o.store;
    this.hostId = o.hostId;
    this.hostName = o.hostName;
    this.vtep = o.vtep;
    this.ttl = o.ttlSeconds;
    this.log = o.log;
  }

  /** Joins the cluster: lease and host record, then the networks and endpoints as the store has them, then watches. */
  async start(events: ClusterEvents): Promise<void> {
    try {
      await this.startWatching(events);
    } catch (e) {
      // Nothing half-started stays behind: the caller retries from scratch.
      // The start's own error is the answer; a watch that fails to cancel is logged.
      for (const c of this.cancels.splice(0))
        await bestEffort(this.log, 'cluster watch cancel', this.hostId, c);
      await this.dropLease?.();
      this.leaseId = undefined;
      throw e;
    }
  }

  private async startWatching(events: ClusterEvents): Promise<void> {
    this.events = events;
    await this.join();
    const nets = await this.store.list<GlobalNetworkRecord>('cluster start', key.networks);
    for (const n of nets.items)
      if (this.checkedRecord(n.key, n.value, isNetworkRecord)) this.networks.set(n.value.id, n.value);
    this.cancels.push(
      await this.store.watch<GlobalNetworkRecord>(key.networks, nets.revision, {
        put: (k, v) => {
          if (!this.checkedRecord(k, v, isNetworkRecord)) return;
          this.networks.set(v.id, v);
          void events
            .networkPut(v)
            .catch((e) => this.log.error({ err: e, network: v.id }, 'network mirror failed'));
        },
        delete: (k) => {
          const id = k.slice(key.networks.length);
          this.networks.delete(id);
          void events
            .networkDelete(id)
            .catch((e) => this.log.error({ err: e, network: id }, 'network mirror removal failed'));
        },
      }),
    );
    const hosts = await this.store.list<HostRecord>('cluster start', key.hosts);
    for (const h of hosts.items)
      if (this.checkedRecord(h.key, h.value, isHostRecord)) this.hosts.set(h.value.id, h.value);
    this.cancels.push(
      await this.store.watch<HostRecord>(key.hosts, hosts.revision, {
        put: (k, v) => void (this.checkedRecord(k, v, isHostRecord) && this.hosts.set(v.id, v)),
        delete: (k) => void this.hosts.delete(k.slice(key.hosts.length)),
      }),
    );
    const eps = await this.store.list<EndpointPublication>('cluster start', key.endpoints);
    eps.items = eps.items.filter((e) => this.checked(e.key, e.value));
    for (const e of eps.items) this.remember(e.value);
    this.cancels.push(
      await this.store.watch<EndpointPublication>(key.endpoints, eps.revision, {
        put: (k, v) => {
          if (!this.checked(k, v)) {
            // A record overwritten with a bad one: the endpoint it was is gone.
            const [net, id] = k.slice(key.endpoints.length).split('/');
            if (this.endpoints.get(net)?.delete(id)) events.peersChanged(net, id);
            return;
          }
          this.remember(v);
          if (v.host !== this.hostId) events.peersChanged(v.networkId, v.id);
        },
        delete: (k, prev) => {
          const [net, id] = k.slice(key.endpoints.length).split('/');
          const was = this.endpoints.get(net)?.get(id);
          this.endpoints.get(net)?.delete(id);
          if ((was ?? prev)?.host !== this.hostId) events.peersChanged(net, id);
          // Our own record gone while we still have the endpoint (a lease lost): published again.
          else if (was && !this.closed) this.republishIfLocal(net, id);
        },
        resumed: () => events.peersChanged(),
      }),
    );
    // One network that cannot be mirrored does not keep the others (or the cluster) from starting.
    for (const n of this.networks.values())
      await events
        .networkPut(n)
        .catch((e) => this.log.error({ err: e, network: n.id }, 'network mirror failed'));
    await this.republish(eps.items);
    this.timer = setInterval(() => this.tick(), RECONCILE_MS);
    this.timer.unref();
  }

  /** Whether a record under endpoints/ is a publication; a bad one is logged and left out (the others still count). */
  private checked(k: string, v: unknown): v is EndpointPublication {
    const why = publicationProblem(k, v, this.vtep);
    if (why) this.log.error({ key: k, reason: why }, `cluster store: endpoint record ${k} refused: ${why}`);
    return !why;
  }

  /** Whether a network or host record is one (with its key's id); a bad one is logged and left out. */
  private checkedRecord<T>(k: string, v: unknown, is: (k: string, v: unknown) => v is T): v is T {
    const ok = is(k, v);
    if (!ok) this.log.error({ key: k }, `cluster store: record ${k} refused: it is not what its key says`);
    return ok;
  }

  private remember(e: EndpointPublication): void {
    let m = this.endpoints.get(e.networkId);
    if (!m) this.endpoints.set(e.networkId, (m = new Map()));
    m.set(e.id, e);
  }

  /** A lease and the host record under it. */
  private async join(): Promise<void> {
    const lease = await this.store.lease(this.ttl, (e) => this.leaseLost(lease.id, e));
    this.leaseId = lease.id;
    this.dropLease = lease.revoke;
    const rec: HostRecord = {
      id: this.hostId,
      name: this.hostName,
      vtep: this.vtep,
      started: new Date().toISOString(),
    };
    await this.store.put('cluster join', key.host(this.hostId), rec, lease.id);
    this.hosts.set(rec.id, rec);
    this.log.info(
      { store: this.store.url, host: this.hostId, vtep: this.vtep, lease: lease.id },
      'joined the cluster',
    );
  }

  /** The store was away longer than the TTL: every record of ours is gone; join again and publish again. */
  private leaseLost(id: string, e: unknown): void {
    // One rejoin at a time, and only for the lease in use.
    if (this.closed || id !== this.leaseId) return;
    this.log.warn({ err: e, store: this.store.url }, 'cluster lease lost: joining again');
    this.leaseId = undefined;
    const retry = async (): Promise<void> => {
      if (this.closed) return;
      try {
        await this.join();
        await this.republish([]);
      } catch (err) {
        this.log.warn({ err, store: this.store.url }, 'cluster join failed: retrying');
        setTimeout(() => void retry(), 1000).unref();
      }
    };
    void retry();
  }

  /**
   * Publishes every local endpoint under the current lease and removes the
   * records of ours (from a previous run) that the local store no longer has.
   */
  private async republish(seen: Versioned<EndpointPublication>[]): Promise<void> {
    const local = this.events!.localEndpoints();
    const ids = new Set(local.map((e) => e.id));
    for (const e of local) this.pending.set(e.id, { net: e.networkId, id: e.id, pub: e });
    const stale = [
      ...seen.map((s) => s.value),
      ...[...this.endpoints.values()].flatMap((m) => [...m.values()]),
    ].filter((e) => e.host === this.hostId && !ids.has(e.id));
    for (const e of stale) this.pending.set(e.id, { net: e.networkId, id: e.id });
    if (stale.length)
      this.log.info(
        { endpoints: stale.map((e) => e.id) },
        'sweeping endpoint records this host no longer has',
      );
    await this.flush();
  }

  private republishIfLocal(net: string, id: string): void {
    const e = this.events!.localEndpoints().find((x) => x.id === id && x.networkId === net);
    if (e) this.publish(e);
  }

  /** Publishes an endpoint (after the API answered); retried until the store takes it. */
  publish(e: EndpointPublication): void {
    this.remember(e);
    this.pending.set(e.id, { net: e.networkId, id: e.id, pub: e });
    void this.flush();
  }

  unpublish(networkId: string, id: string): void {
    this.endpoints.get(networkId)?.delete(id);
    this.pending.set(id, { net: networkId, id });
    void this.flush();
  }

  private async flush(): Promise<void> {
    if (this.flushing || !this.leaseId) return;
    this.flushing = true;
    try {
      while (this.pending.size && this.leaseId && !this.closed) {
        const [id, p] = this.pending.entries().next().value!;
        if (p.pub) await this.store.put('endpoint publish', key.endpoint(p.net, id), p.pub, this.leaseId);
        else await this.store.delete('endpoint unpublish', key.endpoint(p.net, id));
        // A newer change for the same endpoint may have come meanwhile: only what was sent is done.
        if (this.pending.get(id) === p) this.pending.delete(id);
      }
    } catch (e) {
      this.log.warn(
        { err: e, pending: this.pending.size },
        'endpoint publication waits for the cluster store',
      );
    } finally {
      this.flushing = false;
    }
  }

  private tick(): void {
    if (this.pending.size) void this.flush();
    this.events?.peersChanged();
    if (this.onTick) void this.onTick().catch((e) => this.log.debug({ err: e }, 'cluster tick'));
  }

  /** Other hosts' endpoints on a network. */
  remoteEndpoints(networkId: string): EndpointPublication[] {
    return [...(this.endpoints.get(networkId)?.values() ?? [])].filter((e) => e.host !== this.hostId);
  }

  /** Another host's endpoint on a network, as the store has it now (undefined: gone, or this host's). */
  remoteEndpoint(networkId: string, id: string): EndpointPublication | undefined {
    const e = this.endpoints.get(networkId)?.get(id);
    return e && e.host !== this.hostId ? e : undefined;
  }

  /** Hosts with endpoints on the network (Docker's inspect "Peers"). */
  peers(networkId: string): { Name: string; IP: string }[] {
    const out = new Map<string, { Name: string; IP: string }>();
    for (const e of this.endpoints.get(networkId)?.values() ?? []) {
      const h = this.hosts.get(e.host);
      out.set(e.host, {
        Name: h?.name ? `${h.name}-${e.host.slice(0, 12)}` : e.host.slice(0, 12),
        IP: e.vtep,
      });
    }
    return [...out.values()];
  }

  private describeHost(id: string): string {
    const h = this.hosts.get(id);
    return h ? `${h.name} (${h.vtep})` : `${id.slice(0, 12)} (down)`;
  }

  /** Creates a global network in the store: name, VNI and subnet checked against every other one. */
  async createNetwork(spec: NetworkCreateSpec): Promise<GlobalNetworkRecord> {
    const op = 'network create';
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const guard = await this.store.get<number>(op, key.networksRev);
      const { items } = await this.store.list<GlobalNetworkRecord>(op, key.networks);
      const others = items.filter((i) => isNetworkRecord(i.key, i.value)).map((i) => i.value);
      if (others.some((n) => n.name === spec.name))
        throw new CnmdError('ALREADY_EXISTS', `network with name ${spec.name} already exists`, {
          op,
          object: spec.name,
        });
      const vni = this.pickVni(spec, others);
      const ipamConfig = this.pickSubnets(spec, others);
      const rec: GlobalNetworkRecord = {
        id: spec.id,
        name: spec.name,
        driver: spec.driver,
        created: new Date().toISOString(),
        enableIPv6: spec.enableIPv6,
        internal: spec.internal,
        attachable: spec.attachable,
        labels: spec.labels,
        options: { ...spec.options, [VXLANID_OPTION]: String(vni) },
        ipamOptions: spec.ipamOptions,
        ipamConfig,
        vni,
        creator: this.hostId,
      };
      const ok = await this.store.txn(
        op,
        spec.name,
        [{ key: key.networksRev, rev: guard?.rev }],
        [
          { put: { key: key.networksRev, value: (guard?.value ?? 0) + 1 } },
          { put: { key: key.network(rec.id), value: rec } },
        ],
      );
      if (ok) {
        this.networks.set(rec.id, rec);
        return rec;
      }
    }
    throw new CnmdError('CONFLICT', `${op}: networks kept changing in the cluster store; try again`, {
      op,
      object: spec.name,
    });
  }

  private pickVni(spec: NetworkCreateSpec, others: GlobalNetworkRecord[]): number {
    const op = 'network create';
    const taken = new Map(others.map((n) => [n.vni, n.name]));
    const given = spec.options[VXLANID_OPTION];
    if (given !== undefined && given !== '') {
      if (!/^\d+$/.test(given) || Number(given) < 1 || Number(given) > VNI_MAX)
        throw invalidArgument(
          op,
          given,
          `${VXLANID_OPTION} "${given}" is not one VXLAN id from 1 to ${VNI_MAX} (one subnet, one id)`,
        );
      const vni = Number(given);
      if (taken.has(vni))
        throw new CnmdError('IN_USE', `${op}: VXLAN id ${vni} is already used by network ${taken.get(vni)}`, {
          op,
          object: given,
        });
      return vni;
    }
    for (let v = VNI_MIN; v <= VNI_MAX; v++) if (!taken.has(v)) return v;
    throw new CnmdError('EXHAUSTED', `${op}: no VXLAN id left`, { op, object: spec.name });
  }

  private pickSubnets(spec: NetworkCreateSpec, others: GlobalNetworkRecord[]): IpamConfig[] {
    const op = 'network create';
    const used = others.flatMap((n) =>
      n.ipamConfig.filter((c) => c.subnet).map((c) => ({ c: parseCidr(c.subnet!)!, name: n.name })),
    );
    const out: IpamConfig[] = [];
    for (const v6 of spec.enableIPv6 ? [false, true] : [false]) {
      const cfgs = spec.ipamConfig.filter((c) => !!c.subnet?.includes(':') === v6);
      if (cfgs.length > 1)
        throw invalidArgument(
          op,
          spec.name,
          `an overlay network takes one IPv${v6 ? 6 : 4} subnet (got ${cfgs.length})`,
        );
      const cfg = cfgs[0] ?? {};
      if (cfg.ipRange)
        throw invalidArgument(op, cfg.ipRange, '--ip-range is not supported on overlay networks');
      let subnet: Cidr | undefined;
      if (cfg.subnet) {
        subnet = parseCidr(cfg.subnet, true);
        if (!subnet)
          throw invalidArgument(
            op,
            cfg.subnet,
            `subnet "${cfg.subnet}" is not a CIDR without host bits (e.g. 10.10.0.0/16)`,
          );
        const clash = used.find((u) => overlaps(u.c, subnet!));
        if (clash)
          throw new CnmdError(
            'IN_USE',
            `${op}: ${POOL_OVERLAP}: subnet ${cfg.subnet} overlaps with ${formatCidr(clash.c)} of overlay ` +
              `network ${clash.name}`,
            { op, object: cfg.subnet },
          );
      } else {
        for (const c of predefinedSubnets(v6 ? 'local' : 'global', v6)) {
          if (!used.some((u) => overlaps(u.c, c))) {
            subnet = c;
            break;
          }
        }
        if (!subnet)
          throw new CnmdError(
            'EXHAUSTED',
            `${op}: no free subnet left among the defaults: give one with --subnet`,
            {
              op,
              object: spec.name,
            },
          );
      }
      let gateway = cfg.gateway;
      if (gateway) {
        const g = ipToBig(gateway);
        if (!g || !contains(subnet, g.family, g.value) || g.value === subnet.base)
          throw invalidArgument(
            op,
            gateway,
            `gateway ${gateway} is not a host address of subnet ${formatCidr(subnet)}`,
          );
      } else gateway = bigToIp(subnet.base + 1n, subnet.family);
      out.push({ subnet: formatCidr(subnet), gateway, auxAddresses: cfg.auxAddresses });
    }
    return out;
  }

  /** Removes a global network from the store, unless a host still has endpoints on it (then IN_USE naming them). */
  async removeNetwork(id: string, name: string): Promise<void> {
    const op = 'network rm';
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const guard = await this.store.get<number>(op, key.networksRev);
      const rec = await this.store.get<GlobalNetworkRecord>(op, key.network(id));
      if (!rec) return;
      const { items } = await this.store.list<EndpointPublication>(op, key.endpointsOf(id));
      const pending = [...this.pending.values()].some((p) => p.net === id && p.pub);
      // A record that is no publication holds no endpoint (the removal deletes it with the rest).
      const held = items
        .filter((i) => !publicationProblem(i.key, i.value, this.vtep))
        .map((i) => i.value.host);
      const hosts = [...new Set([...held, ...(pending ? [this.hostId] : [])])];
      if (hosts.length)
        throw new CnmdError(
          'IN_USE',
          `error while removing network: network ${name} id ${id} has active endpoints on ` +
            `${hosts.length === 1 ? 'host' : 'hosts'} ${hosts.map((h) => this.describeHost(h)).join(', ')}`,
          { op, object: name, hosts },
        );
      const ok = await this.store.txn(
        op,
        name,
        [
          { key: key.networksRev, rev: guard?.rev },
          { key: key.network(id), rev: rec.rev },
        ],
        [
          { put: { key: key.networksRev, value: (guard?.value ?? 0) + 1 } },
          { delete: { key: key.network(id) } },
          { delete: { key: key.endpointsOf(id), prefix: true } },
          ...rec.value.ipamConfig
            .filter((c) => c.subnet)
            .map((c) => ({ delete: { key: key.blocks(c.subnet!), prefix: true } })),
        ],
      );
      if (ok) {
        this.networks.delete(id);
        return;
      }
    }
    throw new CnmdError('CONFLICT', `${op}: networks kept changing in the cluster store; try again`, {
      op,
      object: name,
    });
  }

  /**
   * Stops watching. The lease is not revoked: this host's sandboxes keep
   * working while the daemon is down, and peers keep their entries for them
   * until the lease expires (a restart within the TTL publishes under a new one).
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const c of this.cancels) await bestEffort(this.log, 'cluster watch cancel', this.hostId, c);
    this.store.close();
  }
}
