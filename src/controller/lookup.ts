// Finding things: networks and sandboxes by the references users give (id,
// name, id prefix, as the docker CLI resolves them), endpoint records
// (including those mid-join), and drivers and IPAMs by name (remote plugins
// found on first use). Reads only, apart from its caches.
import type { Driver } from '../../drivers/driver';
import { CnmdError } from '../errors';
import type { Ipam } from '../ipam/ipam';
import type { Store } from '../store/store';
import type { PendingEndpoint } from './endpoints';
import type { EngineObjects } from './engine';
import { EndpointRecord, KIND, NetworkRecord, SandboxRecord } from './records';

export interface PluginLoader {
  driver(name: string): Promise<Driver | undefined>;
  ipam(name: string): Promise<Ipam | undefined>;
}

export interface LookupDeps {
  store: Store;
  engine: EngineObjects;
  drivers: Map<string, Driver>;
  ipams: Map<string, Ipam>;
  plugins?: PluginLoader;
}

export class Lookup {
  private readonly store: Store;
  private readonly engine: EngineObjects;
  /** Drivers by name: cnmd's own, and remote plugins once found (never removed). */
  readonly drivers: Map<string, Driver>;
  /** IPAMs by name, as drivers. */
  readonly ipams: Map<string, Ipam>;
  private readonly plugins?: PluginLoader;
  /**
   * Endpoints being joined, by id, with their current record (the store holds the 'creating' copy); guarded
   * by their sandbox's `sb:` lock.
   */
  readonly joining = new Map<string, PendingEndpoint>();
  /** Cache: ids of cnmd's own networks by name, as the last full look-up saw them; a hint, checked on use (no lock). */
  private networkIdsByName = new Map<string, string>();
  /**
   * Cache: sandbox name -> id for records of every state, so a create need not scan the store; changed under
   * `sb-name:`.
   */
  private sandboxNames?: Map<string, string>;

  constructor(d: LookupDeps) {
    this.store = d.store;
    this.engine = d.engine;
    this.drivers = d.drivers;
    this.ipams = d.ipams;
    this.plugins = d.plugins;
  }

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
  refuseEngineNetwork(n: NetworkRecord, op: string, what: string): void {
    if (n.owner !== 'engine') return;
    throw new CnmdError(
      'FORBIDDEN',
      `network ${n.name} was created by the Docker engine through cnmd's plugin: ${what}`,
      { op, object: n.name },
    );
  }

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
    const byPrefix = uniqueIdPrefix('network', ref, all, op);
    if (byPrefix) return byPrefix;
    throw new CnmdError('NOT_FOUND', `network ${ref} not found`, { op, object: ref });
  }

  /** Sandbox names in use (records of every state) -> ids. */
  namesInUse(): Map<string, string> {
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
    const byPrefix = uniqueIdPrefix('sandbox', ref, this.sandboxes(), op);
    if (byPrefix) return byPrefix;
    throw new CnmdError('NOT_FOUND', `No such sandbox: ${ref}`, { op, object: ref });
  }

  /** An endpoint record: the one being joined if it is, else the stored one. */
  endpointRecord(id: string): EndpointRecord | undefined {
    return this.joining.get(id)?.ep ?? this.store.get<EndpointRecord>(KIND.endpoint, id);
  }

  /** An endpoint's network: the record read when its join began, if it is being joined (under the sandbox's lock). */
  networkOf(e: EndpointRecord): NetworkRecord | undefined {
    return this.joining.get(e.id)?.n ?? this.store.get<NetworkRecord>(KIND.network, e.networkId);
  }

  /** The driver of a network record, if it is loaded. */
  driverOf(n: NetworkRecord): Driver | undefined {
    return this.drivers.get(n.driver);
  }

  driver(name: string, op: string): Driver {
    const d = this.drivers.get(name);
    if (!d)
      throw new CnmdError(
        'NOT_FOUND',
        `plugin "${name}" not found: cnmd has the drivers ${[...this.drivers.keys()].join(', ')}`,
        { op, object: name },
      );
    return d;
  }

  /** Loads a driver by name: cnmd's own, else a remote plugin found by discovery (kept for later calls). */
  async loadDriver(name: string, op: string): Promise<Driver> {
    if (!this.drivers.has(name) && this.plugins) {
      const d = await this.plugins.driver(name);
      if (d) this.drivers.set(name, d);
    }
    return this.driver(name, op);
  }

  /** Loads an IPAM by name, as loadDriver. */
  async loadIpam(name: string, op: string): Promise<Ipam> {
    if (!this.ipams.has(name) && this.plugins) {
      const i = await this.plugins.ipam(name);
      if (i) this.ipams.set(name, i);
    }
    return this.ipam(name, op);
  }

  ipam(name: string, op: string): Ipam {
    const i = this.ipams.get(name);
    if (!i)
      throw new CnmdError(
        'NOT_FOUND',
        `IPAM driver "${name}" not found: cnmd has ${[...this.ipams.keys()].join(', ')}`,
        { op, object: name },
      );
    return i;
  }
}

/** The one record whose id starts with ref; undefined when none does, INVALID_ARGUMENT (Docker's 400) when several do. */
function uniqueIdPrefix<T extends { id: string }>(
  what: string,
  ref: string,
  all: T[],
  op: string,
): T | undefined {
  const matches = ref.length > 0 ? all.filter((r) => r.id.startsWith(ref)) : [];
  if (matches.length > 1)
    throw new CnmdError('INVALID_ARGUMENT', `${what} ${ref} is ambiguous (${matches.length} matches)`, {
      op,
      object: ref,
    });
  return matches[0];
}
