// The CNM controller: networks, endpoints and sandboxes with libnetwork's
// lifecycle. Network: IPAM pool + gateway -> driver.createNetwork. Endpoint:
// IPAM address -> driver.createEndpoint -> join -> external connectivity.
// Teardown in reverse. Every multi-step operation rolls back on failure; a
// record's `state` lets a restart after SIGKILL finish or undo what was in
// flight.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import type {
  Capabilities,
  Driver,
  EndpointSpec,
  IpamData,
  JoinInfo,
  NetworkSpec,
} from '../../drivers/driver';
import { CnmdError, invalidArgument } from '../errors';
import type { Ipam } from '../ipam/ipam';
import { parseCidr, ipToBig, contains } from '../ipam/ip';
import type { Logger } from '../log';
import { Handle } from '../netlink/handle';
import { NetnsManager, closeFds } from '../netns/netns';
import type { NetnsPool } from '../netns/pool';
import type { Store } from '../store/store';
import type { PortBinding } from '../portmap/spec';
import { EmbeddedDns } from '../dns/service';
import type { DnsNetwork, RecordSource } from '../dns/records';
import { RESOLVER_IP } from '../dns/resolver';
import { runSteps, Step } from '../steps';
import { EngineObjects } from './engine';
import { KeyedMutex } from './mutex';
import {
  DnsConfig,
  EndpointRecord,
  IpamConfig,
  KIND,
  NetworkRecord,
  PoolAllocation,
  SandboxRecord,
} from './records';
import { SandboxFiles, hostsFile, parseResolvConf, resolvConf } from './sandbox-files';

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

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
}

export interface ConnectOptions {
  aliases?: string[];
  ipv4?: string;
  ipv6?: string;
}

export interface SandboxCreateRequest {
  name?: string;
  hostname?: string;
  networks?: ({ network: string } & ConnectOptions)[];
  dns?: Partial<DnsConfig>;
  labels?: Record<string, string>;
  /** Ports to publish (parsed -p specs). */
  ports?: PortBinding[];
}

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
  /** Finds remote plugins (drivers/remote, ipam/remote) for names cnmd has no driver or IPAM of its own for. */
  plugins?: PluginLoader;
}

export interface PluginLoader {
  driver(name: string): Promise<Driver | undefined>;
  ipam(name: string): Promise<Ipam | undefined>;
}

/** Network option that turns the embedded DNS off for a network (libnetwork#1085). */
export const EMBEDDED_DNS_OPTION = 'cnmd.network.embedded_dns';

/** An endpoint on its way into a sandbox, and how far it got. */
interface PendingEndpoint {
  ep: EndpointRecord;
  n: NetworkRecord;
  driver: Driver;
  caps: Capabilities;
  ipam?: Ipam;
  /** prepared: checked, counted among the sandbox's endpoints, addressed; wiring, then wired: in the kernel; released: undone. */
  stage: 'prepared' | 'wiring' | 'wired' | 'released';
}

/** Waits for every promise, then throws the first failure: nothing is left running behind an error. */
async function settleAll(ps: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(ps)).find(
    (r): r is PromiseRejectedResult => r.status === 'rejected',
  );
  if (failed) throw failed.reason;
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Random bytes for ids, drawn 2 KiB at a time: one call into the CSPRNG per 64 ids rather than per id. */
const idBytes = { buf: Buffer.alloc(0), used: 0 };

function newId(): string {
  if (idBytes.used + 32 > idBytes.buf.length) {
    idBytes.buf = crypto.randomBytes(2048);
    idBytes.used = 0;
  }
  idBytes.used += 32;
  return idBytes.buf.toString('hex', idBytes.used - 32, idBytes.used);
}

function plainIp(cidr: string | undefined): string | undefined {
  return cidr?.replace(/\/\d+$/, '');
}

export class Controller implements RecordSource {
  private readonly store: Store;
  private readonly netns: NetnsManager;
  private readonly pool?: NetnsPool;
  private readonly files: SandboxFiles;
  private readonly drivers: Map<string, Driver>;
  private readonly ipams: Map<string, Ipam>;
  private readonly log: Logger;
  private readonly plugins?: PluginLoader;
  private readonly hostResolvConf: string;
  private readonly locks = new KeyedMutex();
  /** Open netlink handles of sandboxes, by sandbox id. */
  private readonly handles = new Map<string, Handle>();
  /**
   * What a new sandbox's pooled netns came with, each taken once while the
   * sandbox is made: its resolver sockets (bound and listening) and a free
   * ifindex for its first interface (SandboxRef.freeIndex).
   */
  private readonly fresh = new Map<string, { sockets: number[]; freeIndex?: number }>();
  readonly dns: EmbeddedDns;
  /** The embedded DNS's view per sandbox, rebuilt after any change to endpoints. */
  private dnsView = new Map<string, DnsNetwork[]>();
  /** Endpoints being joined, by id: their current record (the store holds the 'creating' copy). */
  private readonly joining = new Map<string, PendingEndpoint>();
  /** The default gateways installed in each sandbox (by family), as cnmd last set them. */
  private readonly gateways = new Map<string, { 4?: string; 6?: string }>();
  /** Networks, endpoints and IPAM pools the Docker engine made through cnmd's plugin sockets. */
  readonly engine: EngineObjects;

  constructor(d: ControllerDeps) {
    this.store = d.store;
    this.netns = d.netns;
    this.pool = d.pool;
    this.files = d.files;
    this.drivers = d.drivers;
    this.ipams = d.ipams;
    this.log = d.log;
    this.plugins = d.plugins;
    this.hostResolvConf = d.hostResolvConf ?? '/etc/resolv.conf';
    this.dns = new EmbeddedDns({ records: this, log: d.log, forwarder: { timeoutMs: d.dnsTimeoutMs } });
    this.engine = new EngineObjects({
      store: d.store,
      drivers: d.drivers,
      ipams: d.ipams,
      locks: this.locks,
      log: d.log,
      changed: () => this.dnsView.clear(),
    });
  }

  // ---- embedded DNS ----

  /** Docker: user-defined networks have the embedded DNS; the default bridge, host and none do not. */
  dnsEnabled(n: NetworkRecord): boolean {
    if (n.isDefault || n.driver === 'host' || n.driver === 'null') return false;
    return n.options[EMBEDDED_DNS_OPTION] !== 'false';
  }

  private sandboxUsesDns(sb: SandboxRecord): boolean {
    return sb.endpoints.some((id) => {
      const e = this.endpointRecord(id);
      const n = e && this.networkOf(e);
      return !!n && this.dnsEnabled(n);
    });
  }

  /** RecordSource: the networks (with embedded DNS) sandboxId is on, with every endpoint on them. */
  networksOf(sandboxId: string): DnsNetwork[] {
    const hit = this.dnsView.get(sandboxId);
    if (hit) return hit;
    const sandboxes = new Map(this.store.list<SandboxRecord>(KIND.sandbox).map((s) => [s.id, s]));
    const eps = this.store.list<EndpointRecord>(KIND.endpoint).filter((e) => e.state === 'ready');
    const mine = new Set(eps.filter((e) => e.sandboxId === sandboxId).map((e) => e.networkId));
    const out: DnsNetwork[] = [];
    for (const netId of mine) {
      const n = this.store.get<NetworkRecord>(KIND.network, netId);
      if (!n || !this.dnsEnabled(n)) continue;
      out.push({
        id: n.id,
        name: n.name,
        endpoints: eps
          .filter((e) => e.networkId === netId && sandboxes.has(e.sandboxId))
          .map((e) => {
            const sb = sandboxes.get(e.sandboxId)!;
            return {
              sandboxId: sb.id,
              names: [...new Set([sb.name, sb.hostname])],
              aliases: e.aliases,
              ipv4: plainIp(e.ipv4),
              ipv6: plainIp(e.ipv6),
            };
          }),
      });
    }
    this.dnsView.set(sandboxId, out);
    return out;
  }

  /** Where a sandbox's unknown names go: its --dns servers, else the host's (loopback ones included: queried from the host netns). */
  private upstreamsOf(sb: SandboxRecord): () => string[] {
    return () => {
      if (sb.dns.servers.length) return sb.dns.servers.slice(0, 3);
      let host = this.readHostResolvConf().nameservers;
      if (host.length === 1 && host[0] === '127.0.0.53') {
        // systemd-resolved's stub: its real upstreams are listed here.
        try {
          host = parseResolvConf(fs.readFileSync('/run/systemd/resolve/resolv.conf', 'utf8')).nameservers;
        } catch {
          /* keep the stub */
        }
      }
      return host.slice(0, 3);
    };
  }

  /**
   * Starts the sandbox's resolver if it needs one. serveLater: sockets from the
   * pool (bound and listening already) are only adopted, and served once the
   * API has answered (createSandbox).
   */
  private async ensureDns(sb: SandboxRecord, serveLater = false): Promise<void> {
    const armed = this.fresh.get(sb.id)?.sockets.splice(0);
    if (sb.hostNetns || !this.sandboxUsesDns(sb)) {
      if (armed) closeFds(armed);
      return;
    }
    if (serveLater && armed?.length) this.dns.adopt(sb.id, this.upstreamsOf(sb), armed);
    else await this.dns.ensure(sb.id, sb.key, this.upstreamsOf(sb), armed?.length ? armed : undefined);
  }

  /** Forgets what a new sandbox's netns came with, closing resolver sockets no resolver took. */
  private dropFresh(id: string): void {
    const f = this.fresh.get(id);
    this.fresh.delete(id);
    if (f) closeFds(f.sockets);
  }

  // ---- lookups ----

  /** cnmd's own networks and, after them, the engine's (made through the plugin). */
  networks(): NetworkRecord[] {
    return [
      ...this.store.list<NetworkRecord>(KIND.network).filter((n) => n.state !== 'creating'),
      ...this.engine.networks(),
    ];
  }

  sandboxes(): SandboxRecord[] {
    return this.store.list<SandboxRecord>(KIND.sandbox).filter((s) => s.state !== 'creating');
  }

  endpoints(networkId?: string): EndpointRecord[] {
    const all = [
      ...this.store.list<EndpointRecord>(KIND.endpoint).filter((e) => e.state !== 'creating'),
      ...this.engine.endpoints(),
    ];
    return networkId ? all.filter((e) => e.networkId === networkId) : all;
  }

  /** cnmd's own API may look at the engine's networks but not change them: the engine would not know. */
  private refuseEngineNetwork(n: NetworkRecord, op: string, what: string): void {
    if (n.owner !== 'engine') return;
    throw new CnmdError(
      'FORBIDDEN',
      `network ${n.name} was created by the Docker engine through cnmd's plugin: ${what}`,
      { op, object: n.name },
    );
  }

  /** Ids of cnmd's own networks by name, as the last full look-up saw them: a hint, checked on use. */
  private networkIdsByName = new Map<string, string>();

  /** By full id, then exact name, then unique id prefix (as the docker CLI resolves). */
  network(ref: string): NetworkRecord {
    return this.ownNetworkNamed(ref) ?? this.resolveNetwork(ref);
  }

  /**
   * The common case without parsing every network: ref names one of cnmd's
   * own networks, is no network's id, and names no engine network.
   */
  private ownNetworkNamed(ref: string): NetworkRecord | undefined {
    const id = this.networkIdsByName.get(ref);
    if (!id || this.store.get(KIND.network, ref)) return undefined;
    const n = this.store.get<NetworkRecord>(KIND.network, id);
    if (!n || n.name !== ref || n.state === 'creating') return undefined;
    return this.engine.networks().some((e) => e.id === ref || e.name === ref) ? undefined : n;
  }

  private resolveNetwork(ref: string): NetworkRecord {
    const op = 'network inspect';
    const all = this.networks();
    this.networkIdsByName = new Map(all.filter((n) => n.owner !== 'engine').map((n) => [n.name, n.id]));
    const byId = all.find((n) => n.id === ref);
    if (byId) return byId;
    const byName = all.filter((n) => n.name === ref);
    if (byName.length === 1) return byName[0];
    const byPrefix = ref.length > 0 ? all.filter((n) => n.id.startsWith(ref)) : [];
    if (byPrefix.length === 1) return byPrefix[0];
    if (byPrefix.length > 1)
      throw new CnmdError('CONFLICT', `network ${ref} is ambiguous (${byPrefix.length} matches)`, {
        op,
        object: ref,
      });
    throw new CnmdError('NOT_FOUND', `network ${ref} not found`, { op, object: ref });
  }

  /** Sandbox names in use (records of every state), so a create need not scan the store. */
  private sandboxNames?: Map<string, string>;

  private namesInUse(): Map<string, string> {
    this.sandboxNames ??= new Map(this.store.list<SandboxRecord>(KIND.sandbox).map((s) => [s.name, s.id]));
    return this.sandboxNames;
  }

  sandbox(ref: string): SandboxRecord {
    const op = 'sandbox inspect';
    // Exact id, then name: direct look-ups; a prefix needs the list.
    const direct =
      this.store.get<SandboxRecord>(KIND.sandbox, ref) ??
      this.store.get<SandboxRecord>(KIND.sandbox, this.namesInUse().get(ref) ?? '');
    if (direct && direct.state !== 'creating') return direct;
    const all = this.sandboxes();
    const byPrefix = ref.length > 0 ? all.filter((s) => s.id.startsWith(ref)) : [];
    if (byPrefix.length === 1) return byPrefix[0];
    if (byPrefix.length > 1)
      throw new CnmdError('CONFLICT', `sandbox ${ref} is ambiguous (${byPrefix.length} matches)`, {
        op,
        object: ref,
      });
    throw new CnmdError('NOT_FOUND', `No such sandbox: ${ref}`, { op, object: ref });
  }

  private driver(name: string, op: string): Driver {
    const d = this.drivers.get(name);
    if (!d)
      throw new CnmdError(
        'NOT_FOUND',
        `plugin "${name}" not found: cnmd has the drivers ${[...this.drivers.keys()].join(', ')}`,
        { op, object: name },
      );
    return d;
  }

  /** A driver by name: cnmd's own, else a remote plugin found by discovery (kept for later calls). */
  private async loadDriver(name: string, op: string): Promise<Driver> {
    if (!this.drivers.has(name) && this.plugins) {
      const d = await this.plugins.driver(name);
      if (d) this.drivers.set(name, d);
    }
    return this.driver(name, op);
  }

  private async loadIpam(name: string, op: string): Promise<Ipam> {
    if (!this.ipams.has(name) && this.plugins) {
      const i = await this.plugins.ipam(name);
      if (i) this.ipams.set(name, i);
    }
    return this.ipam(name, op);
  }

  private ipam(name: string, op: string): Ipam {
    const i = this.ipams.get(name);
    if (!i)
      throw new CnmdError(
        'NOT_FOUND',
        `IPAM driver "${name}" not found: cnmd has ${[...this.ipams.keys()].join(', ')}`,
        { op, object: name },
      );
    return i;
  }

  /** The spec a driver sees for a network record. */
  networkSpec(n: NetworkRecord): NetworkSpec {
    const data = (v6: boolean): IpamData[] =>
      n.pools
        .filter((p) => p.v6 === v6)
        .map((p) => ({
          pool: p.pool,
          gateway: p.gateway,
          auxAddresses: Object.fromEntries(
            Object.entries(p.auxAddresses).map(([k, ip]) => [k, `${ip}/${p.pool.split('/')[1]}`]),
          ),
        }));
    return {
      id: n.id,
      name: n.name,
      options: n.options,
      ipv4: data(false),
      ipv6: data(true),
      enableIPv6: n.enableIPv6,
      internal: n.internal,
      isDefault: n.isDefault,
    };
  }

  // ---- networks ----

  async createNetwork(req: NetworkCreateRequest): Promise<NetworkRecord> {
    const op = 'network create';
    if (typeof req.name !== 'string' || !NAME_RE.test(req.name)) {
      throw invalidArgument(
        op,
        String(req.name),
        `network name "${req.name}" is invalid: use letters, digits, '_', '.', '-', starting with a letter or digit`,
      );
    }
    const driverName = req.driver || 'bridge';
    const driver = await this.loadDriver(driverName, op);
    const caps = driver.capabilities();
    const id = req.id ?? newId();
    return this.locks.lock(
      [`net-name:${req.name}`, `net:${id}`, caps.singleton ? `driver:${driverName}` : `net:${id}`],
      async () => {
        if (this.store.list<NetworkRecord>(KIND.network).some((n) => n.name === req.name)) {
          throw new CnmdError('ALREADY_EXISTS', `network with name ${req.name} already exists`, {
            op,
            object: req.name,
          });
        }
        if (
          caps.singleton &&
          this.store.list<NetworkRecord>(KIND.network).some((n) => n.driver === driverName)
        ) {
          throw new CnmdError('FORBIDDEN', `only one instance of "${driverName}" network is allowed`, {
            op,
            object: req.name,
          });
        }
        const ipamDriver = req.ipam?.driver || 'default';
        const ipam = await this.loadIpam(ipamDriver, op);
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
        this.store.put(KIND.network, id, rec);
        const needsIpam = !caps.usesHostNetns && driverName !== 'null';
        const steps: Step[] = [];
        if (needsIpam) {
          const v4 = config.filter((c) => !c.subnet || !c.subnet.includes(':'));
          const v6 = config.filter((c) => c.subnet?.includes(':'));
          const wanted: { cfg: IpamConfig; v6: boolean }[] = [
            ...(v4.length ? v4 : [{}]).map((cfg) => ({ cfg, v6: false })),
            ...(rec.enableIPv6 ? (v6.length ? v6 : [{}]) : []).map((cfg) => ({ cfg, v6: true })),
          ];
          steps.push({
            name: 'ipam',
            do: async () => {
              for (const w of wanted) rec.pools.push(await this.allocatePool(ipam, rec, w.cfg, w.v6));
            },
            undo: async () => {
              for (const p of rec.pools.reverse()) await this.releasePool(ipam, p);
              rec.pools = [];
            },
          });
        }
        steps.push({
          name: 'driver',
          do: () => driver.createNetwork(this.networkSpec(rec)),
          undo: () => driver.deleteNetwork(id),
        });
        try {
          await runSteps(steps, (step, e) =>
            this.log.error({ err: e, network: id, step }, 'rollback step failed'),
          );
        } catch (e) {
          this.store.delete(KIND.network, id);
          throw e;
        }
        rec.state = 'ready';
        this.store.put(KIND.network, id, rec);
        this.log.info(
          { network: id, name: rec.name, driver: driverName, pools: rec.pools.map((p) => p.pool) },
          'network created',
        );
        return rec;
      },
    );
  }

  private async allocatePool(
    ipam: Ipam,
    rec: NetworkRecord,
    cfg: IpamConfig,
    v6: boolean,
  ): Promise<PoolAllocation> {
    const op = 'network create';
    const pool = await ipam.requestPool({
      pool: cfg.subnet,
      subPool: cfg.ipRange,
      v6,
      options: rec.ipamOptions,
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
    this.store.put(KIND.network, rec.id, rec);
    rec.pools.pop();
    try {
      const prefix = pool.pool.split('/')[1];
      if (cfg.gateway !== undefined && cfg.gateway !== '') {
        const g = ipToBig(cfg.gateway);
        const c = parseCidr(pool.pool)!;
        if (!g || !contains(c, g.family, g.value))
          throw invalidArgument(op, cfg.gateway, `gateway ${cfg.gateway} is not inside subnet ${pool.pool}`);
        const isBroadcast = c.family === 4 && c.size > 2n && g.value === c.base + c.size - 1n;
        if ((g.value === c.base && c.size > 2n) || isBroadcast) {
          throw invalidArgument(
            op,
            cfg.gateway,
            `gateway ${cfg.gateway} is the ${isBroadcast ? 'broadcast' : 'network'} address of ${pool.pool}; pick a host address`,
          );
        }
      }
      for (const [name, ip] of Object.entries(cfg.auxAddresses ?? {})) {
        if (cfg.gateway && ip === cfg.gateway)
          throw invalidArgument(op, ip, `auxiliary address ${name}=${ip} is the gateway`);
      }
      if (rec.driver !== 'null') {
        alloc.gateway = await ipam.requestAddress(pool.poolId, cfg.gateway || undefined, { gateway: true });
        alloc.gatewayAllocated = true;
      }
      for (const [name, ip] of Object.entries(cfg.auxAddresses ?? {})) {
        await ipam.requestAddress(pool.poolId, ip);
        alloc.auxAddresses[name] = ip;
      }
      void prefix;
      return alloc;
    } catch (e) {
      await this.releasePool(ipam, alloc).catch(() => undefined);
      throw e;
    }
  }

  private async releasePool(ipam: Ipam, p: PoolAllocation): Promise<void> {
    for (const ip of Object.values(p.auxAddresses))
      await ipam.releaseAddress(p.poolId, ip).catch(() => undefined);
    if (p.gatewayAllocated && p.gateway)
      await ipam.releaseAddress(p.poolId, p.gateway).catch(() => undefined);
    await ipam.releasePool(p.poolId);
  }

  async deleteNetwork(ref: string): Promise<void> {
    const op = 'network rm';
    const n0 = this.network(ref);
    this.refuseEngineNetwork(n0, op, 'remove it with docker network rm');
    await this.locks.lock([`net:${n0.id}`, `net-name:${n0.name}`], async () => {
      const n = this.store.get<NetworkRecord>(KIND.network, n0.id);
      if (!n) throw new CnmdError('NOT_FOUND', `network ${ref} not found`, { op, object: ref });
      if (n.isDefault)
        throw new CnmdError('FORBIDDEN', `${n.name} is a pre-defined network and cannot be removed`, {
          op,
          object: n.name,
        });
      const eps = this.store.list<EndpointRecord>(KIND.endpoint).filter((e) => e.networkId === n.id);
      if (eps.length) {
        throw new CnmdError(
          'CONFLICT',
          `error while removing network: network ${n.name} id ${n.id} has active endpoints`,
          { op, object: n.name },
        );
      }
      n.state = 'deleting';
      this.store.put(KIND.network, n.id, n);
      await this.finishNetworkDelete(n);
      this.log.info({ network: n.id, name: n.name }, 'network removed');
    });
  }

  private async finishNetworkDelete(n: NetworkRecord): Promise<void> {
    const driver = this.drivers.get(n.driver);
    if (driver) await driver.deleteNetwork(n.id);
    const ipam = this.ipams.get(n.ipamDriver);
    if (ipam)
      for (const p of n.pools)
        await this.releasePool(ipam, p).catch((e) =>
          this.log.warn({ err: e, pool: p.poolId }, 'pool release failed'),
        );
    this.store.delete(KIND.network, n.id);
  }

  /** Removes every network no sandbox uses (not the defaults). */
  async pruneNetworks(match: (n: NetworkRecord) => boolean = () => true): Promise<string[]> {
    const used = new Set(this.endpoints().map((e) => e.networkId));
    const removed: string[] = [];
    for (const n of this.networks()) {
      if (n.isDefault || n.owner === 'engine' || used.has(n.id) || !match(n)) continue;
      try {
        await this.deleteNetwork(n.id);
        removed.push(n.name);
      } catch (e) {
        if (!(e instanceof CnmdError && (e.code === 'CONFLICT' || e.code === 'NOT_FOUND'))) throw e;
      }
    }
    return removed;
  }

  // ---- sandboxes ----

  async createSandbox(req: SandboxCreateRequest): Promise<SandboxRecord> {
    const op = 'sandbox create';
    const id = newId();
    const name = req.name ?? id.slice(0, 12);
    if (!NAME_RE.test(name))
      throw invalidArgument(
        op,
        name,
        `sandbox name "${name}" is invalid: use letters, digits, '_', '.', '-', starting with a letter or digit`,
      );
    const hostname = req.hostname ?? id.slice(0, 12);
    if (!/^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})$/.test(hostname))
      throw invalidArgument(
        op,
        hostname,
        `hostname "${hostname}" is not a valid host name (letters, digits, '.', '-', up to 63)`,
      );
    const nets = (req.networks ?? []).map((c) => ({ ...c, rec: this.network(c.network) }));
    for (const c of nets)
      this.refuseEngineNetwork(c.rec, op, 'connect containers to it with docker run --network');
    const hostNet = nets.find((c) => this.drivers.get(c.rec.driver)?.capabilities().usesHostNetns);
    if (hostNet && nets.length > 1)
      throw new CnmdError('FORBIDDEN', `a sandbox on the host network cannot join other networks`, {
        op,
        object: name,
      });
    return this.locks.lock([`sb-name:${name}`, `sb:${id}`], async () => {
      if (this.namesInUse().has(name)) {
        throw new CnmdError('ALREADY_EXISTS', `sandbox name "${name}" is already in use`, {
          op,
          object: name,
        });
      }
      const dns: DnsConfig = {
        servers: req.dns?.servers ?? [],
        search: req.dns?.search ?? [],
        options: req.dns?.options ?? [],
      };
      const sb: SandboxRecord = {
        id,
        name,
        hostname,
        key: this.netns.pathOf(id),
        created: new Date().toISOString(),
        endpoints: [],
        dns,
        hostNetns: !!hostNet,
        labels: req.labels ?? {},
        ports: req.ports ?? [],
        state: 'creating',
      };
      this.namesInUse().set(name, id);
      const eps: PendingEndpoint[] = [];
      try {
        await runSteps(
          [this.endpointsStep(sb, nets, eps), this.netnsStep(sb), this.wiringStep(sb, eps)],
          (step, e) => this.log.error({ err: e, sandbox: id, step }, 'rollback step failed'),
        );
      } catch (e) {
        this.store.delete(KIND.sandbox, id);
        this.namesInUse().delete(name);
        throw e;
      } finally {
        for (const p of eps) this.joining.delete(p.ep.id);
        this.dropFresh(id);
        // This sandbox's kernel work is over: the pool may make up for what it took.
        this.afterReply(() => this.pool?.done(id));
      }
      this.commitReady(sb, eps);
      this.afterReply(() => {
        this.dns.serve(id);
        for (const p of eps) this.logJoined(p, sb);
        this.log.info({ sandbox: id, name, networks: nets.map((n) => n.rec.name) }, 'sandbox created');
      });
      return sb;
    });
  }

  /**
   * The sandbox's endpoints, with their addresses, and the 'creating' records
   * that let a restart undo them: one commit, before any kernel work.
   */
  private endpointsStep(
    sb: SandboxRecord,
    nets: ({ rec: NetworkRecord } & ConnectOptions)[],
    eps: PendingEndpoint[],
  ): Step {
    return {
      name: 'endpoints',
      do: async () => {
        // Every check first: nothing is allocated for a request that names a bad network.
        for (const c of nets) eps.push(this.newEndpoint(c.rec.id, sb, c));
        let allocating: Promise<void>[] = [];
        let failed: unknown;
        try {
          // The default IPAM allocates synchronously: its writes join this commit too.
          this.store.tx(() => {
            allocating = eps.map((p) => this.allocate(p));
            this.store.put(KIND.sandbox, sb.id, sb);
            for (const p of eps) this.store.put(KIND.endpoint, p.ep.id, p.ep);
          });
        } catch (e) {
          failed = e;
        }
        // Nothing left running behind an error: the undo releases what was allocated.
        await settleAll(allocating);
        if (failed) throw failed;
      },
      undo: async () => {
        for (const p of [...eps].reverse()) if (p.stage === 'prepared') await this.releaseEndpoint(p, sb);
      },
    };
  }

  private netnsStep(sb: SandboxRecord): Step {
    const id = sb.id;
    return {
      name: 'netns',
      do: async () => {
        if (sb.hostNetns) {
          sb.key = await this.hostNetnsKey();
          return;
        }
        const created = this.pool ? await this.pool.take(id) : await this.netns.create(id);
        this.handles.set(id, created.handle);
        this.fresh.set(id, { sockets: created.sockets, freeIndex: created.freeIndex });
        // A new namespace has no default route: nothing to read back from the kernel.
        this.gateways.set(id, {});
      },
      undo: () => {
        if (sb.hostNetns) return;
        this.dropFresh(id);
        this.handles.get(id)?.close();
        this.handles.delete(id);
        this.gateways.delete(id);
        try {
          this.netns.delete(id);
        } catch {
          /* not created */
        }
      },
    };
  }

  /**
   * The endpoints' interfaces, and meanwhile the embedded DNS and the files:
   * the kernel makes a veth on the netlink I/O thread while this thread would
   * otherwise sit idle waiting for it.
   */
  private wiringStep(sb: SandboxRecord, eps: PendingEndpoint[]): Step {
    return {
      name: 'networks',
      do: () => settleAll([this.wireEndpoints(sb, eps), this.startServices(sb)]),
      undo: async () => {
        this.dns.stop(sb.id);
        this.files.remove(sb.id);
        for (const p of [...eps].reverse())
          if (p.stage === 'wired') await this.disconnectEndpoint(p.ep.id, sb).catch(() => undefined);
      },
    };
  }

  private async wireEndpoints(sb: SandboxRecord, eps: PendingEndpoint[]): Promise<void> {
    const handle = sb.hostNetns ? undefined : this.handleFor(sb);
    for (const p of eps) await this.wireEndpoint(p, sb, handle);
  }

  /**
   * DNS and files need only the records (addresses are allocated), not the
   * interfaces. They wait for the event loop once: the wiring sends its
   * netlink requests first, then both are done while the kernel works on them
   * (a second wait let the replies' handling go first, and the files then
   * came after the kernel's work instead of beside it).
   */
  private async startServices(sb: SandboxRecord): Promise<void> {
    await yieldToEventLoop();
    // Written once: hosts already holds the sandbox's addresses.
    this.files.create(sb.id, this.filesOf(sb));
    await this.ensureDns(sb, true);
  }

  /** Endpoints and sandbox become ready in one commit. */
  private commitReady(sb: SandboxRecord, eps: PendingEndpoint[]): void {
    sb.state = 'ready';
    for (const p of eps) p.ep.state = 'ready';
    this.dnsView.clear();
    this.store.tx(() => {
      for (const p of eps) this.store.put(KIND.endpoint, p.ep.id, p.ep);
      this.store.put(KIND.sandbox, sb.id, sb);
    });
  }

  /** Runs fn once the current API call has answered: a log line or a pool refill need not delay the caller. */
  private afterReply(fn: () => void): void {
    setImmediate(fn);
  }

  private hostNetnsPinned?: string;

  /** A stable path for the daemon's own netns: <exec-root>/netns/default. */
  private async hostNetnsKey(): Promise<string> {
    if (this.hostNetnsPinned) return this.hostNetnsPinned;
    const p = this.netns.pathOf('default');
    if (!this.netns.exists('default')) await this.netns.pin('default');
    this.hostNetnsPinned = p;
    return p;
  }

  private readHostResolvConf() {
    try {
      return parseResolvConf(fs.readFileSync(this.hostResolvConf, 'utf8'));
    } catch {
      return { nameservers: [], search: [], options: [] };
    }
  }

  private hostsEntries(sb: SandboxRecord) {
    const eps = sb.endpoints.map((id) => this.endpointRecord(id)).filter((e): e is EndpointRecord => !!e);
    const out: { ip: string; names: string[] }[] = [];
    for (const e of eps) {
      for (const ip of [e.ipv4, e.ipv6]) if (ip) out.push({ ip: plainIp(ip)!, names: [sb.hostname] });
    }
    return out;
  }

  private sandboxResolvConf(sb: SandboxRecord): string {
    const host = this.readHostResolvConf();
    if (!this.sandboxUsesDns(sb)) return resolvConf(host, sb.dns);
    // The embedded DNS: 127.0.0.11, the search domains kept, ndots:0 unless the user set ndots.
    const options = sb.dns.options.length ? sb.dns.options : host.options;
    const withNdots = options.some((o) => o.startsWith('ndots:')) ? options : [...options, 'ndots:0'];
    return resolvConf(
      { nameservers: [], search: host.search, options: [] },
      { servers: [RESOLVER_IP], search: sb.dns.search, options: withNdots },
    );
  }

  private filesOf(sb: SandboxRecord) {
    return {
      hostname: sb.hostname,
      hosts: hostsFile(this.hostsEntries(sb)),
      resolvConf: this.sandboxResolvConf(sb),
    };
  }

  private writeFiles(sb: SandboxRecord): void {
    this.files.write(sb.id, this.filesOf(sb));
  }

  handleFor(sb: SandboxRecord): Handle {
    let h = this.handles.get(sb.id);
    if (!h || h.closed) {
      h = Handle.at(sb.key);
      this.handles.set(sb.id, h);
    }
    return h;
  }

  async deleteSandbox(ref: string): Promise<void> {
    const sb0 = this.sandbox(ref);
    const netIds = sb0.endpoints
      .map((e) => this.store.get<EndpointRecord>(KIND.endpoint, e)?.networkId)
      .filter((x): x is string => !!x);
    await this.locks.lock(
      [`sb:${sb0.id}`, `sb-name:${sb0.name}`, ...netIds.map((n) => `net:${n}`)],
      async () => {
        const sb = this.store.get<SandboxRecord>(KIND.sandbox, sb0.id);
        if (!sb)
          throw new CnmdError('NOT_FOUND', `No such sandbox: ${ref}`, { op: 'sandbox rm', object: ref });
        sb.state = 'deleting';
        this.store.put(KIND.sandbox, sb.id, sb);
        await this.finishSandboxDelete(sb);
        this.log.info({ sandbox: sb.id, name: sb.name }, 'sandbox removed');
      },
    );
  }

  private async finishSandboxDelete(sb: SandboxRecord): Promise<void> {
    this.dns.stop(sb.id);
    // The namespace goes first: its interfaces die with it, in the kernel's own
    // batched cleanup, instead of one RCU-synchronised delete per veth.
    this.handles.get(sb.id)?.close();
    this.handles.delete(sb.id);
    this.gateways.delete(sb.id);
    if (!sb.hostNetns) {
      // On the thread pool: the unmount waits for an RCU grace period, which other calls need not.
      await this.netns.remove(sb.id).catch((e) => {
        if (!(e instanceof CnmdError && e.code === 'NOT_FOUND')) throw e;
      });
    }
    for (const epId of [...sb.endpoints].reverse()) {
      await this.disconnectEndpoint(epId, sb, !sb.hostNetns).catch((e) =>
        this.log.warn({ err: e, endpoint: epId }, 'endpoint teardown failed'),
      );
    }
    this.files.remove(sb.id);
    this.store.delete(KIND.sandbox, sb.id);
    if (this.namesInUse().get(sb.name) === sb.id) this.namesInUse().delete(sb.name);
  }

  // ---- endpoints: connect / disconnect ----

  async connect(networkRef: string, sandboxRef: string, opts: ConnectOptions = {}): Promise<EndpointRecord> {
    const n = this.network(networkRef);
    this.refuseEngineNetwork(n, 'network connect', 'connect containers to it with docker network connect');
    const sb0 = this.sandbox(sandboxRef);
    return this.locks.lock([`net:${n.id}`, `sb:${sb0.id}`], async () => {
      const sb = this.store.get<SandboxRecord>(KIND.sandbox, sb0.id)!;
      return this.connectLocked(n.id, sb, opts);
    });
  }

  /** An endpoint record: the one being joined if it is, else the stored one. */
  private endpointRecord(id: string): EndpointRecord | undefined {
    return this.joining.get(id)?.ep ?? this.store.get<EndpointRecord>(KIND.endpoint, id);
  }

  /** An endpoint's network: the record read when its join began, if it is being joined (under the sandbox's lock). */
  private networkOf(e: EndpointRecord): NetworkRecord | undefined {
    return this.joining.get(e.id)?.n ?? this.store.get<NetworkRecord>(KIND.network, e.networkId);
  }

  private nextIfname(sb: SandboxRecord): string {
    const used = new Set(sb.endpoints.map((id) => this.endpointRecord(id)?.ifname));
    for (let i = 0; ; i++) if (!used.has(`eth${i}`)) return `eth${i}`;
  }

  /** Joins an existing sandbox to a network (the sandbox's lock is held). */
  private async connectLocked(
    networkId: string,
    sb: SandboxRecord,
    opts: ConnectOptions,
  ): Promise<EndpointRecord> {
    const p = await this.prepareEndpoint(networkId, sb, opts);
    const ep = p.ep;
    try {
      this.store.put(KIND.endpoint, ep.id, ep);
      await this.wireEndpoint(p, sb, sb.hostNetns ? undefined : this.handleFor(sb));
    } catch (e) {
      if (p.stage === 'prepared') await this.releaseEndpoint(p, sb);
      throw e;
    } finally {
      this.joining.delete(ep.id);
    }
    ep.state = 'ready';
    this.dnsView.clear();
    this.store.tx(() => {
      this.store.put(KIND.endpoint, ep.id, ep);
      this.store.put(KIND.sandbox, sb.id, sb);
    });
    if (this.files.exists(sb.id)) {
      const hadDns = this.dns.has(sb.id);
      await this.ensureDns(sb).catch((e) =>
        this.log.warn({ err: e, sandbox: sb.id }, 'embedded DNS start failed'),
      );
      if (!hadDns && this.dns.has(sb.id)) this.writeFiles(sb);
      else this.files.writeHosts(sb.id, hostsFile(this.hostsEntries(sb)));
    }
    this.afterReply(() => this.logJoined(p, sb));
    return ep;
  }

  private logJoined({ ep, n }: PendingEndpoint, sb: SandboxRecord): void {
    this.log.info(
      { endpoint: ep.id, network: n.name, sandbox: sb.name, ipv4: ep.ipv4, ipv6: ep.ipv6, ifname: ep.ifname },
      'endpoint joined',
    );
  }

  /** A new endpoint of sb on the network, with its addresses, not yet in the kernel (the caller persists it before wiring it). */
  private async prepareEndpoint(
    networkId: string,
    sb: SandboxRecord,
    opts: ConnectOptions,
  ): Promise<PendingEndpoint> {
    const p = this.newEndpoint(networkId, sb, opts);
    try {
      await this.allocate(p);
    } catch (e) {
      await this.releaseEndpoint(p, sb);
      throw e;
    }
    return p;
  }

  /** A new endpoint of sb on the network, checked and counted among sb's endpoints, without addresses yet. */
  private newEndpoint(networkId: string, sb: SandboxRecord, opts: ConnectOptions): PendingEndpoint {
    const op = 'network connect';
    const n = this.store.get<NetworkRecord>(KIND.network, networkId);
    if (!n || n.state !== 'ready')
      throw new CnmdError('NOT_FOUND', `network ${networkId} not found`, { op, object: networkId });
    const driver = this.driver(n.driver, op);
    const caps = driver.capabilities();
    if (sb.endpoints.some((id) => this.endpointRecord(id)?.networkId === n.id)) {
      throw new CnmdError(
        'ALREADY_EXISTS',
        `endpoint with name ${sb.name} already exists in network ${n.name}`,
        { op, object: sb.name },
      );
    }
    if (!!caps.usesHostNetns !== sb.hostNetns) {
      throw new CnmdError(
        'FORBIDDEN',
        `sandbox ${sb.name} cannot be connected to network ${n.name}: ${sb.hostNetns ? 'it uses the host network' : 'the host network needs a sandbox created on it'}`,
        { op, object: sb.name },
      );
    }
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
    const p: PendingEndpoint = { ep, n, driver, caps, ipam: this.ipams.get(n.ipamDriver), stage: 'prepared' };
    this.joining.set(ep.id, p);
    sb.endpoints.push(ep.id);
    return p;
  }

  /** The endpoint's addresses from its network's IPAM; a failure leaves what was allocated for releaseEndpoint. */
  private async allocate({ ep, n, ipam }: PendingEndpoint): Promise<void> {
    if (!ipam || !n.pools.length) return;
    ep.ipv4 = await this.allocateAddress(ipam, n, false, ep.staticIPv4, ep);
    if (n.enableIPv6) ep.ipv6 = await this.allocateAddress(ipam, n, true, ep.staticIPv6, ep);
  }

  /** Undoes prepareEndpoint: the addresses go back to the IPAM, the record goes. */
  private async releaseEndpoint(p: PendingEndpoint, sb: SandboxRecord): Promise<void> {
    const { ep, ipam } = p;
    if (ipam) {
      if (ep.ipv6 && ep.poolV6) await ipam.releaseAddress(ep.poolV6, ep.ipv6).catch(() => undefined);
      if (ep.ipv4 && ep.poolV4) await ipam.releaseAddress(ep.poolV4, ep.ipv4).catch(() => undefined);
    }
    sb.endpoints = sb.endpoints.filter((id) => id !== ep.id);
    this.joining.delete(ep.id);
    this.store.delete(KIND.endpoint, ep.id);
    p.stage = 'released';
  }

  /**
   * The endpoint's kernel side: the driver's endpoint and join, the default
   * route, published ports. A failure undoes it and releases the endpoint.
   */
  private async wireEndpoint(
    p: PendingEndpoint,
    sb: SandboxRecord,
    handle: Handle | undefined,
  ): Promise<void> {
    const { ep, n, driver, caps } = p;
    p.stage = 'wiring';
    const steps: Step[] = [
      {
        name: 'create endpoint',
        do: async () => {
          const info = await driver.createEndpoint(this.endpointSpec(ep));
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
          const routed = this.routeBehindAddress(sb, ep, handle);
          let info: JoinInfo;
          // Used once: the interface made with it takes it.
          const f = this.fresh.get(sb.id);
          const freeIndex = f?.freeIndex;
          if (f) f.freeIndex = undefined;
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
      { name: 'gateway', do: () => this.updateGateway(sb, handle) },
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
        this.log.error({ err: e, endpoint: ep.id, step }, 'rollback step failed'),
      );
    } catch (e) {
      await this.releaseEndpoint(p, sb);
      await this.updateGateway(sb, handle).catch(() => undefined);
      throw e;
    }
    p.stage = 'wired';
  }

  private endpointSpec(ep: EndpointRecord): EndpointSpec {
    return {
      networkId: ep.networkId,
      endpointId: ep.id,
      address: ep.ipv4,
      addressIPv6: ep.ipv6,
      mac: ep.mac,
      options: {},
      ports: ep.ports,
    };
  }

  /**
   * A sandbox's ports are published on one endpoint, as Docker publishes them on the
   * gateway endpoint: the first, in join order, on a non-internal network whose
   * driver maps ports.
   */
  private portHolderWanted(sb: SandboxRecord, n: NetworkRecord, caps: { portMapping?: boolean }): boolean {
    if (!sb.ports?.length || !caps.portMapping || n.internal) return false;
    return !sb.endpoints.some((id) => this.endpointRecord(id)?.ports?.length);
  }

  /** After the holder left: publish on the next eligible endpoint, if any. */
  private async movePorts(sb: SandboxRecord): Promise<void> {
    if (!sb.ports?.length || sb.endpoints.some((id) => this.endpointRecord(id)?.ports?.length)) return;
    for (const id of sb.endpoints) {
      const e = this.endpointRecord(id);
      const n = e && this.store.get<NetworkRecord>(KIND.network, e.networkId);
      const driver = n && this.drivers.get(n.driver);
      if (!e || !n || !driver || n.internal || !driver.capabilities().portMapping) continue;
      const published = await driver.programExternalConnectivity(n.id, e.id, { portBindings: sb.ports });
      if (published && published.length) {
        e.ports = published;
        this.store.put(KIND.endpoint, e.id, e);
      }
      return;
    }
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
          serial: n.ipamOptions['com.docker.network.ipam.serial'] === 'true',
        });
        if (v6) ep.poolV6 = p.poolId;
        else ep.poolV4 = p.poolId;
        return ip;
      } catch (e) {
        lastErr = e;
        if (!(e instanceof CnmdError && e.code === 'EXHAUSTED')) throw e;
      }
    }
    throw lastErr;
  }

  /**
   * Sends the default route through ep's interface right behind the address
   * that makes its gateway reachable, when ep is the one to carry it: the
   * route needs no look-up of the interface's index (the address request
   * names it) and no round trip of its own after the join. A route that fails
   * here is left to updateGateway, which follows the join as always. Resolves
   * (the returned function) once what was sent is answered.
   */
  private routeBehindAddress(sb: SandboxRecord, ep: EndpointRecord, handle: Handle): () => Promise<void> {
    const known = this.gateways.get(sb.id);
    const sent: Promise<void>[] = [];
    // Unknown after a restart: updateGateway reads the kernel's routes first.
    if (known) {
      handle.onAddressSent = (index, family) => {
        const via = this.gatewayOf(sb, family);
        if (!via || via.dev !== ep.ifname || known[family] === via.gw) return;
        const route = handle.routeReplace({ gateway: via.gw, dev: index, family });
        sent.push(
          route.then(
            () => void (known[family] = via.gw),
            () => undefined,
          ),
        );
      };
    }
    return async () => {
      handle.onAddressSent = undefined;
      await Promise.all(sent);
    };
  }

  /**
   * One default route per sandbox (per family): through the first endpoint,
   * in join order, whose network offers a gateway (not internal).
   */
  private async updateGateway(sb: SandboxRecord, handle: Handle | undefined): Promise<void> {
    if (!handle) return;
    // What we installed last, per sandbox; read from the kernel only when unknown (after a restart).
    let known = this.gateways.get(sb.id);
    if (!known) {
      const routes = await handle.routeList();
      known = {
        4: routes.find((r) => r.family === 4 && r.dst === 'default')?.gateway,
        6: routes.find((r) => r.family === 6 && r.dst === 'default')?.gateway,
      };
      this.gateways.set(sb.id, known);
    }
    for (const family of [4, 6] as const) {
      const via = this.gatewayOf(sb, family);
      if (via) {
        if (known[family] === via.gw) continue;
        await handle.routeReplace({ gateway: via.gw, dev: via.dev, family });
        known[family] = via.gw;
      } else if (known[family]) {
        await handle.routeDel({ family }).catch(() => undefined);
        known[family] = undefined;
      }
    }
  }

  /** The gateway a sandbox's default route goes through, and the interface that reaches it. */
  private gatewayOf(sb: SandboxRecord, family: 4 | 6): { gw: string; dev: string } | undefined {
    const v6 = family === 6;
    for (const id of sb.endpoints) {
      // An endpoint of the same call not wired yet has no interface to carry a route.
      if (this.joining.get(id)?.stage === 'prepared') continue;
      const e = this.endpointRecord(id);
      const n = e && this.networkOf(e);
      if (!e || !n || n.internal || !(v6 ? e.ipv6 : e.ipv4)) continue;
      const pool = n.pools.find((p) => p.poolId === (v6 ? e.poolV6 : e.poolV4));
      if (!pool?.gateway) continue;
      return { gw: plainIp(pool.gateway)!, dev: e.ifname };
    }
    return undefined;
  }

  async disconnect(networkRef: string, sandboxRef: string): Promise<void> {
    const op = 'network disconnect';
    const n = this.network(networkRef);
    const sb0 = this.sandbox(sandboxRef);
    await this.locks.lock([`net:${n.id}`, `sb:${sb0.id}`], async () => {
      const sb = this.store.get<SandboxRecord>(KIND.sandbox, sb0.id)!;
      const epId = sb.endpoints.find((id) => this.endpointRecord(id)?.networkId === n.id);
      if (!epId)
        throw new CnmdError('NOT_FOUND', `sandbox ${sb.name} is not connected to network ${n.name}`, {
          op,
          object: sb.name,
        });
      await this.disconnectEndpoint(epId, sb);
      this.store.put(KIND.sandbox, sb.id, sb);
      if (this.files.exists(sb.id)) this.files.writeHosts(sb.id, hostsFile(this.hostsEntries(sb)));
    });
  }

  private async disconnectEndpoint(epId: string, sb: SandboxRecord, sandboxDestroyed = false): Promise<void> {
    const ep = this.endpointRecord(epId);
    if (!ep) {
      sb.endpoints = sb.endpoints.filter((id) => id !== epId);
      return;
    }
    ep.state = 'deleting';
    this.store.put(KIND.endpoint, ep.id, ep);
    const n = this.store.get<NetworkRecord>(KIND.network, ep.networkId);
    const driver = n && this.drivers.get(n.driver);
    if (driver && n) {
      await driver.revokeExternalConnectivity(n.id, ep.id);
      await driver.leave(n.id, ep.id, { sandboxDestroyed });
      await driver.deleteEndpoint(n.id, ep.id);
    }
    const ipam = n && this.ipams.get(n.ipamDriver);
    if (ipam) {
      if (ep.ipv4 && ep.poolV4)
        await ipam
          .releaseAddress(ep.poolV4, ep.ipv4)
          .catch((e) => this.log.warn({ err: e }, 'address release failed'));
      if (ep.ipv6 && ep.poolV6)
        await ipam
          .releaseAddress(ep.poolV6, ep.ipv6)
          .catch((e) => this.log.warn({ err: e }, 'address release failed'));
    }
    sb.endpoints = sb.endpoints.filter((id) => id !== epId);
    this.dnsView.clear();
    this.store.tx(() => {
      this.store.delete(KIND.endpoint, ep.id);
      this.store.put(KIND.sandbox, sb.id, sb);
    });
    if (ep.ports?.length && !sandboxDestroyed && sb.state !== 'deleting')
      await this.movePorts(sb).catch((e) =>
        this.log.warn({ err: e, sandbox: sb.id }, 'moving published ports failed'),
      );
    if (!sb.hostNetns && !sandboxDestroyed && sb.state !== 'deleting')
      await this.updateGateway(sb, this.handleFor(sb)).catch((e) =>
        this.log.warn({ err: e }, 'gateway update failed'),
      );
  }

  // ---- start-up ----

  /**
   * Brings kernel and store back in line after a stop or a SIGKILL at any
   * instant: operations in flight are finished or undone, drivers recreate
   * what the kernel lost, and whatever cnmd made that no record claims is
   * removed (namespaces, sandbox files, links, IPAM allocations).
   */
  async start(): Promise<void> {
    const store = this.store;
    // 0. Remote plugins the stored networks use: loaded before anything asks their drivers.
    for (const n of store.list<NetworkRecord>(KIND.network)) {
      await this.loadDriver(n.driver, 'daemon start').catch((e) =>
        this.log.error({ err: e, network: n.id, driver: n.driver }, 'network driver not available'),
      );
      await this.loadIpam(n.ipamDriver, 'daemon start').catch((e) =>
        this.log.error({ err: e, network: n.id, ipam: n.ipamDriver }, 'IPAM driver not available'),
      );
    }
    // 1. Undo or finish what was in flight.
    for (const sb of store.list<SandboxRecord>(KIND.sandbox).filter((x) => x.state !== 'ready')) {
      this.log.warn(
        { sandbox: sb.id, state: sb.state },
        'recovering interrupted sandbox operation: removing it',
      );
      sb.state = 'deleting';
      await this.finishSandboxDelete(sb).catch((e) =>
        this.log.error({ err: e, sandbox: sb.id }, 'sandbox recovery failed'),
      );
    }
    const netsById = new Map(store.list<NetworkRecord>(KIND.network).map((n) => [n.id, n]));
    for (const ep of store.list<EndpointRecord>(KIND.endpoint).filter((e) => e.state !== 'ready')) {
      this.log.warn(
        { endpoint: ep.id, state: ep.state },
        'recovering interrupted endpoint operation: removing it',
      );
      const sb = store.get<SandboxRecord>(KIND.sandbox, ep.sandboxId);
      if (sb) {
        sb.endpoints = sb.endpoints.filter((id) => id !== ep.id);
        store.put(KIND.sandbox, sb.id, sb);
      }
      store.delete(KIND.endpoint, ep.id); // its addresses are freed by the IPAM sweep below
    }
    for (const n of [...netsById.values()].filter((x) => x.state !== 'ready')) {
      this.log.warn(
        { network: n.id, state: n.state },
        'recovering interrupted network operation: removing it',
      );
      const driver = this.drivers.get(n.driver);
      if (driver?.cleanupNetwork)
        await driver
          .cleanupNetwork(this.networkSpec(n))
          .catch((e) => this.log.error({ err: e, network: n.id }, 'network cleanup failed'));
      store.delete(KIND.network, n.id);
      netsById.delete(n.id);
    }
    await this.engine.recover();
    // Endpoints whose network or sandbox is gone are orphans.
    for (const ep of store.list<EndpointRecord>(KIND.endpoint)) {
      const sb = store.get<SandboxRecord>(KIND.sandbox, ep.sandboxId);
      if (!netsById.has(ep.networkId) || !sb || !sb.endpoints.includes(ep.id))
        store.delete(KIND.endpoint, ep.id);
    }
    // 2. IPAM: free what no record references.
    await this.sweepIpam();
    // 3. Drivers rebuild their state and the kernel objects they lost (the engine's objects too).
    const nets = this.store.list<NetworkRecord>(KIND.network).filter((n) => n.state === 'ready');
    const eps = this.store.list<EndpointRecord>(KIND.endpoint).filter((e) => e.state === 'ready');
    const engineNets = this.engine.networks();
    const engineEps = this.engine.endpoints();
    for (const [name, driver] of this.drivers) {
      if (!driver.restore) continue;
      const mine = nets.filter((n) => n.driver === name);
      const ids = new Set(mine.map((n) => n.id));
      const engineMine = engineNets.filter((n) => n.driver === name);
      const engineIds = new Set(engineMine.map((n) => n.id));
      await driver.restore(
        [...mine.map((n) => this.networkSpec(n)), ...engineMine.map((n) => EngineObjects.spec(n))],
        [
          ...eps.filter((e) => ids.has(e.networkId)).map((e) => this.endpointSpec(e)),
          ...engineEps.filter((e) => engineIds.has(e.networkId)).map((e) => EngineObjects.endpointSpec(e)),
        ],
      );
    }
    // 4. Sandboxes: a namespace lost (reboot: /run is tmpfs) is made again and its endpoints rejoined.
    for (const sb of this.sandboxes())
      await this.restoreSandbox(sb).catch((e) =>
        this.log.error({ err: e, sandbox: sb.id }, 'sandbox restore failed'),
      );
    // 5. Leaks: namespaces and files of sandboxes nobody knows.
    const known = new Set(this.sandboxes().map((s) => s.id));
    for (const id of this.netns.entries()) {
      if (id === 'default' || known.has(id)) continue;
      this.log.warn({ netns: id }, 'removing leaked network namespace');
      try {
        this.netns.delete(id);
      } catch (e) {
        this.log.error({ err: e, netns: id }, 'leaked namespace removal failed');
      }
    }
    for (const id of this.files.list()) if (!known.has(id)) this.files.remove(id);
    this.pool?.start();
    for (const driver of this.drivers.values()) {
      const sweep = (driver as { sweepLeaks?: () => Promise<string[]> }).sweepLeaks;
      if (sweep) {
        const removed = await sweep.call(driver);
        if (removed.length) this.log.warn({ driver: driver.name, links: removed }, 'removed leaked links');
      }
    }
  }

  private async sweepIpam(): Promise<void> {
    const refs = new Map<string, Set<string>>();
    const add = (poolId: string | undefined, ip: string | undefined) => {
      if (!poolId) return;
      if (!refs.has(poolId)) refs.set(poolId, new Set());
      if (ip) refs.get(poolId)!.add(plainIp(ip)!);
    };
    for (const n of this.store.list<NetworkRecord>(KIND.network)) {
      for (const p of n.pools) {
        add(p.poolId, undefined);
        if (p.gatewayAllocated) add(p.poolId, p.gateway);
        for (const ip of Object.values(p.auxAddresses)) add(p.poolId, ip);
      }
    }
    for (const e of this.store.list<EndpointRecord>(KIND.endpoint)) {
      add(e.poolV4, e.ipv4);
      add(e.poolV6, e.ipv6);
    }
    this.engine.ipamRefs(add);
    for (const ipam of this.ipams.values()) {
      const gc = (ipam as { sweep?: (r: Map<string, Set<string>>) => string[] }).sweep;
      if (gc) {
        const freed = gc.call(ipam, refs);
        if (freed.length) this.log.warn({ ipam: ipam.name, freed }, 'freed leaked IPAM allocations');
      }
    }
  }

  private async restoreSandbox(sb: SandboxRecord): Promise<void> {
    if (sb.hostNetns) {
      sb.key = await this.hostNetnsKey();
      return;
    }
    let fresh = false;
    if (!this.netns.exists(sb.id)) {
      this.log.warn({ sandbox: sb.id }, 'sandbox namespace missing: recreating it');
      const created = await this.netns.create(sb.id);
      this.handles.set(sb.id, created.handle);
      fresh = true;
    }
    if (!this.files.exists(sb.id)) this.writeFiles(sb);
    await this.ensureDns(sb);
    const h = this.handleFor(sb);
    for (const epId of sb.endpoints) {
      const ep = this.store.get<EndpointRecord>(KIND.endpoint, epId);
      const n = ep && this.store.get<NetworkRecord>(KIND.network, ep.networkId);
      const driver = n && this.drivers.get(n.driver);
      if (!ep || !n || !driver) continue;
      const present =
        !fresh &&
        (await h.linkGet(ep.ifname).then(
          () => true,
          () => false,
        ));
      if (present) continue;
      this.log.warn(
        { sandbox: sb.id, endpoint: ep.id, ifname: ep.ifname },
        'endpoint interface missing: rejoining',
      );
      await driver.leave(n.id, ep.id).catch(() => undefined);
      await driver.join(n.id, ep.id, { id: sb.id, key: sb.key, handle: h, ifname: ep.ifname }, {});
    }
    await this.updateGateway(sb, h);
  }

  /** The daemon's default networks (bridge on cnm0, host, none), made on first start. */
  async ensureDefaultNetworks(): Promise<void> {
    const have = new Set(this.networks().map((n) => n.name));
    const defaults: NetworkCreateRequest[] = [
      {
        name: 'bridge',
        driver: 'bridge',
        isDefault: true,
        options: {
          'com.docker.network.bridge.default_bridge': 'true',
          'com.docker.network.bridge.name': 'cnm0',
        },
      },
      { name: 'host', driver: 'host', isDefault: true },
      { name: 'none', driver: 'null', isDefault: true },
    ];
    for (const d of defaults) {
      if (have.has(d.name) || !this.drivers.has(d.driver!)) continue;
      await this.createNetwork(d);
    }
  }

  /** Closes sandbox handles; kernel objects and records stay for the next start. */
  close(): void {
    this.dns.close();
    this.pool?.close();
    for (const h of this.handles.values()) h.close();
    this.handles.clear();
  }
}
