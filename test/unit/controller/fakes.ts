// Root-free stand-ins for what the controller drives: a Driver and an Ipam
// that record every call and fail where a test says, a NetnsManager without
// namespaces, and a netlink Handle that records routes. The store and the
// sandbox files are the real ones, in a temporary directory.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TestContext } from 'node:test';
import pino from 'pino';
import type { Capabilities, Driver, EndpointInfo, JoinInfo } from '../../../drivers/driver';
import { Controller } from '../../../src/controller/controller';
import { SandboxFiles } from '../../../src/controller/sandbox-files';
import { CnmdError, ErrorCode } from '../../../src/errors';
import type { AddressOptions, Ipam, PoolInfo, PoolRequest } from '../../../src/ipam/ipam';
import type { Logger } from '../../../src/log';
import type { Handle } from '../../../src/netlink/handle';
import type { CreatedNetns, NetnsManager } from '../../../src/netns/netns';
import { SqliteStore } from '../../../src/store/sqlite';
import { stripPrefix } from '../../../src/net/addr';

/** Which calls fail, by method name, and with what code. */
export type Failures = Partial<Record<string, ErrorCode>>;

function fail(method: string, code: ErrorCode): CnmdError {
  return new CnmdError(code, `${method}: injected ${code}`, { op: method });
}

export class FakeDriver implements Driver {
  readonly calls: string[] = [];
  failures: Failures = {};

  constructor(
    readonly name: string,
    private readonly caps: Capabilities = { scope: 'local', portMapping: true },
  ) {}

  capabilities(): Capabilities {
    return this.caps;
  }

  private call(method: string, ...args: unknown[]): void {
    this.calls.push(`${method} ${args.join(' ')}`.trim());
    const code = this.failures[method];
    if (code) throw fail(method, code);
  }

  /** The calls of one method, in order. */
  of(method: string): string[] {
    return this.calls.filter((c) => c === method || c.startsWith(`${method} `));
  }

  async createNetwork(spec: { id: string }): Promise<void> {
    this.call('createNetwork', spec.id);
  }
  async deleteNetwork(networkId: string): Promise<void> {
    this.call('deleteNetwork', networkId);
  }
  async createEndpoint(spec: { endpointId: string }): Promise<EndpointInfo> {
    this.call('createEndpoint', spec.endpointId);
    return { mac: '02:42:00:00:00:01' };
  }
  async deleteEndpoint(_n: string, endpointId: string): Promise<void> {
    this.call('deleteEndpoint', endpointId);
  }
  async join(_n: string, endpointId: string, sb: { ifname: string }): Promise<JoinInfo> {
    this.call('join', endpointId, sb.ifname);
    return { staticRoutes: [] };
  }
  async leave(_n: string, endpointId: string): Promise<void> {
    this.call('leave', endpointId);
  }
  async programExternalConnectivity(_n: string, endpointId: string): Promise<void> {
    this.call('programExternalConnectivity', endpointId);
  }
  async revokeExternalConnectivity(_n: string, endpointId: string): Promise<void> {
    this.call('revokeExternalConnectivity', endpointId);
  }
}

/** Hands out 10.<n>.0.0/24 pools and their addresses in order; remembers what is held. */
export class FakeIpam implements Ipam {
  readonly name = 'default';
  readonly calls: string[] = [];
  failures: Failures = {};
  /** pool id -> held addresses (plain IPs). */
  readonly held = new Map<string, Set<string>>();
  private next = 1;

  private call(method: string, ...args: unknown[]): void {
    this.calls.push(`${method} ${args.join(' ')}`.trim());
    const code = this.failures[method];
    if (code) throw fail(method, code);
  }

  async defaultAddressSpaces() {
    return { local: 'LocalDefault', global: 'GlobalDefault' };
  }
  async requestPool(req: PoolRequest): Promise<PoolInfo> {
    this.call('requestPool', req.pool ?? '');
    const pool = req.pool ?? `10.${this.next++}.0.0/24`;
    const poolId = `pool-${pool}`;
    this.held.set(poolId, new Set());
    return { poolId, pool };
  }
  async releasePool(poolId: string): Promise<void> {
    this.call('releasePool', poolId);
    if (!this.held.delete(poolId)) throw fail('releasePool', 'NOT_FOUND');
  }
  async requestAddress(poolId: string, ip?: string, _o?: AddressOptions): Promise<string> {
    this.call('requestAddress', poolId, ip ?? '');
    const held = this.held.get(poolId)!;
    const base = poolId.replace(/^pool-/, '').replace(/\.0\/24$/, '');
    let addr = ip;
    for (let i = 1; !addr; i++) if (!held.has(`${base}.${i}`)) addr = `${base}.${i}`;
    held.add(addr);
    return `${addr}/24`;
  }
  async releaseAddress(poolId: string, ip: string): Promise<void> {
    this.call('releaseAddress', poolId, ip);
    if (!this.held.get(poolId)?.delete(stripPrefix(ip))) throw fail('releaseAddress', 'NOT_FOUND');
  }
  /** Every address and pool still held. */
  holding(): string[] {
    return [...this.held].flatMap(([id, ips]) => [id, ...[...ips].map((ip) => `${id} ${ip}`)]);
  }
}

/** A netlink handle inside a sandbox: records route calls, answers an empty route list. */
export function fakeHandle(): Handle & { calls: string[] } {
  const calls: string[] = [];
  const h = {
    calls,
    closed: false,
    onAddressSent: undefined,
    async routeList() {
      calls.push('routeList');
      return [];
    },
    async routeReplace(r: { gateway: string; dev: unknown }) {
      calls.push(`routeReplace ${r.gateway} ${String(r.dev)}`);
    },
    async routeDel(r: { family: number }) {
      calls.push(`routeDel ${r.family}`);
    },
    async routeAdd() {
      calls.push('routeAdd');
    },
    close() {
      h.closed = true;
    },
  };
  return h as unknown as Handle & { calls: string[] };
}

/** Namespaces as names only: create, remove and delete are recorded. */
export class FakeNetns {
  readonly dir = '/fake/netns';
  readonly sysctls: [string, string][] = [];
  readonly live = new Set<string>();
  readonly handles: ReturnType<typeof fakeHandle>[] = [];
  readonly calls: string[] = [];
  failures: Failures = {};

  pathOf(id: string): string {
    return `${this.dir}/${id}`;
  }
  async create(id: string): Promise<CreatedNetns> {
    this.calls.push(`create ${id}`);
    this.live.add(id);
    const handle = fakeHandle();
    this.handles.push(handle);
    return { id, path: this.pathOf(id), handle, sockets: [] };
  }
  async pin(id: string): Promise<string> {
    this.calls.push(`pin ${id}`);
    this.live.add(id);
    return this.pathOf(id);
  }
  async remove(id: string): Promise<void> {
    this.calls.push(`remove ${id}`);
    const code = this.failures.remove;
    if (code) throw fail('netns remove', code);
    if (!this.live.delete(id)) throw fail('netns remove', 'NOT_FOUND');
  }
  delete(id: string): void {
    this.calls.push(`delete ${id}`);
    if (!this.live.delete(id)) throw fail('netns delete', 'NOT_FOUND');
  }
  exists(id: string): boolean {
    return this.live.has(id);
  }
  list(): string[] {
    return [...this.live].sort();
  }
  entries(): string[] {
    return this.list();
  }
}

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** A controller over the fakes, a real SQLite store and real sandbox files in a temporary directory. */
export function controllerWith(t: TestContext, drivers: Driver[]) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-controller-'));
  const store = new SqliteStore(dir);
  const files = new SandboxFiles(dir);
  const netns = new FakeNetns();
  const ipam = new FakeIpam();
  const logs: LogLine[] = [];
  const log: Logger = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s)) });
  const resolv = path.join(dir, 'resolv.conf');
  fs.writeFileSync(resolv, 'nameserver 192.0.2.53\n');
  const controller = new Controller({
    store,
    netns: netns as unknown as NetnsManager,
    files,
    drivers: new Map(drivers.map((d) => [d.name, d])),
    ipams: new Map([['default', ipam]]),
    log,
    hostResolvConf: resolv,
  });
  t.after(() => {
    controller.close();
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { controller, store, files, netns, ipam, logs };
}
