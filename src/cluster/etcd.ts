// The cluster store: etcd v3 through the etcd3 client. Not the Store seam:
// that one is synchronous (SQLite, transactions of plain functions), while
// the cluster needs what only a distributed store gives: compare-and-swap
// transactions, leases that expire with a dead host, and ordered watches.
// Every key lives under one prefix (/cnmd/v1/); values are JSON.
import * as fs from 'node:fs';
import { ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleWhen, retry } from 'cockatiel';
import { Etcd3, IKeyValue, Namespace, isRecoverableError } from 'etcd3';
import { CnmdError } from '../errors';
import type { Logger } from '../log';

export const KEY_PREFIX = '/cnmd/v1/';

export interface ClusterStoreOptions {
  /** etcd://h1:2379,h2:2379 (or with https:// per member). */
  url: string;
  cacert?: string;
  cert?: string;
  key?: string;
  log: Logger;
  /** Deadline of one call (default 3 s): an unreachable store fails the operation with a clear error. */
  callTimeoutMs?: number;
}

/** The client endpoints of `etcd://h1:2379,h2:2379`; a bad one is refused with what to write instead. */
export function parseClusterStore(url: string, tls: boolean): string[] {
  const m = /^etcd:\/\/(.+)$/.exec(url.trim());
  const bad = () =>
    new Error(`--cluster-store "${url}" is not etcd://HOST:PORT[,HOST:PORT...] (e.g. etcd://10.0.0.1:2379)`);
  if (!m) throw bad();
  return m[1].split(',').map((h) => {
    const hp = h.replace(/^https?:\/\//, '').replace(/\/$/, '');
    if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(hp)) throw bad();
    const port = Number(hp.slice(hp.lastIndexOf(':') + 1));
    if (port < 1 || port > 65535) throw bad();
    return `${tls ? 'https' : 'http'}://${hp}`;
  });
}

export interface Versioned<T> {
  key: string;
  value: T;
  /** mod_revision: what a compare-and-swap compares. */
  rev: string;
}

export interface WatchHandlers<T> {
  put(key: string, value: T): void;
  delete(key: string, prev?: T): void;
  /** The watch is back after the store was unreachable. */
  resumed?(): void;
}

export interface TxnOp {
  put?: { key: string; value: unknown; lease?: string };
  delete?: { key: string; prefix?: boolean };
}

export interface TxnCompare {
  key: string;
  /** mod_revision equals this ('0' or absent: the key does not exist). */
  rev?: string;
}

export class ClusterStore {
  readonly url: string;
  private readonly client: Etcd3;
  private readonly ns: Namespace;
  private readonly log: Logger;
  private readonly timeoutMs: number;

  constructor(o: ClusterStoreOptions) {
    this.url = o.url;
    this.log = o.log;
    this.timeoutMs = o.callTimeoutMs ?? 3000;
    const tls = !!(o.cacert || o.cert || o.key);
    if (!!o.cert !== !!o.key)
      throw new Error('--cluster-store-cert and --cluster-store-key go together: give both or neither');
    const read = (flag: string, p?: string) => {
      if (!p) return undefined;
      try {
        return fs.readFileSync(p);
      } catch (e) {
        throw new Error(`${flag} ${p}: ${(e as Error).message}`);
      }
    };
    const hosts = parseClusterStore(o.url, tls);
    const timeout = this.timeoutMs;
    this.client = new Etcd3({
      hosts,
      credentials: tls
        ? {
            rootCertificate: read('--cluster-store-cacert', o.cacert) ?? Buffer.alloc(0),
            certChain: read('--cluster-store-cert', o.cert),
            privateKey: read('--cluster-store-key', o.key),
          }
        : undefined,
      dialTimeout: timeout,
      // gRPC's reconnect backoff grows to 120 s: a daemon that started while the store was down
      // could wait minutes after the store's return (a cluster-lane flake). Capped at 2 s.
      grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 200, 'grpc.max_reconnect_backoff_ms': 2000 },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
      faultHandling: {
        // A member that failed twice is skipped for a second, not the default five: the
        // store's return is noticed quickly.
        host: () =>
          circuitBreaker(handleWhen(isRecoverableError), {
            halfOpenAfter: 1000,
            breaker: new ConsecutiveBreaker(2),
          }),
        // Several members: retried on the others for ~1.5 s, which covers the election after a
        // leader is lost (its followers answer "no leader" meanwhile). One member: no retry,
        // so an unreachable store is said at once.
        global: retry(handleWhen(isRecoverableError), {
          maxAttempts: hosts.length > 1 ? 5 : 0,
          backoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 800 }),
        }),
        // Watches come back within a second of the store (the default backs off to 30 s).
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }).next(),
      },
    });
    this.ns = this.client.namespace(KEY_PREFIX);
  }

  /** A failure of the store as cnmd's error: it names the store and says it is unreachable. */
  unavailable(op: string, object: string | undefined, e: unknown): CnmdError {
    if (e instanceof CnmdError) return e;
    const why = (e as Error)?.message ?? String(e);
    return new CnmdError('UNAVAILABLE', `${op}: cluster store ${this.url} is unreachable (${why})`, {
      op,
      object,
      cause: e,
    });
  }

  private async call<T>(op: string, object: string | undefined, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw this.unavailable(op, object, e);
    }
  }

  async get<T>(op: string, key: string): Promise<Versioned<T> | undefined> {
    const r = await this.call(op, key, () => this.ns.get(key).exec());
    const kv = r.kvs[0];
    return kv ? decode<T>(kv) : undefined;
  }

  /** Every key under prefix, and the store's revision they were read at (where a watch starts). */
  async list<T>(
    op: string,
    prefix: string,
  ): Promise<{ items: Versioned<T>[]; revision: string; undecodable: string[] }> {
    const r = await this.call(op, prefix, () => this.ns.getAll().prefix(prefix).exec());
    const items: Versioned<T>[] = [];
    const undecodable: string[] = [];
    for (const kv of r.kvs) {
      // A value that is not JSON (anyone who reaches etcd can write one) is left out, not the whole list.
      try {
        items.push(decode<T>(kv));
      } catch (e) {
        const k = kv.key.toString();
        undecodable.push(k.startsWith(KEY_PREFIX) ? k.slice(KEY_PREFIX.length) : k);
        this.log.error({ err: e, key: k }, 'cluster store: a record that is not JSON ignored');
      }
    }
    return { items, revision: r.header.revision, undecodable };
  }

  /** Applies ops if every compare holds; false when one did not (someone else changed a key). */
  async txn(op: string, object: string, compares: TxnCompare[], ops: TxnOp[]): Promise<boolean> {
    return this.call(op, object, async () => {
      let t = this.ns.if(compares[0].key, 'Mod', '==', Number(compares[0].rev ?? 0));
      for (const c of compares.slice(1)) t = t.and(c.key, 'Mod', '==', Number(c.rev ?? 0));
      const clauses = ops.map((o) => {
        if (o.put) {
          const p = this.ns.put(o.put.key).value(JSON.stringify(o.put.value));
          return o.put.lease ? p.lease(o.put.lease) : p;
        }
        const d = this.ns.delete();
        return o.delete!.prefix ? d.prefix(o.delete!.key) : d.key(o.delete!.key);
      });
      const r = await t.then(...clauses).commit();
      return r.succeeded;
    });
  }

  async put(op: string, key: string, value: unknown, lease?: string): Promise<void> {
    await this.call(op, key, () => {
      const p = this.ns.put(key).value(JSON.stringify(value));
      return (lease ? p.lease(lease) : p).exec();
    });
  }

  async delete(op: string, key: string, prefix = false): Promise<void> {
    await this.call(op, key, () =>
      (prefix ? this.ns.delete().prefix(key) : this.ns.delete().key(key)).exec(),
    );
  }

  /**
   * Watches every key under prefix from revision `after` + 1 on (what a list
   * returned): no change between the list and the watch is missed, and the
   * client resumes from the last revision seen after the store comes back.
   */
  async watch<T>(prefix: string, after: string, h: WatchHandlers<T>): Promise<() => Promise<void>> {
    const w = await this.ns
      .watch()
      .prefix(prefix)
      .withPreviousKV()
      .startRevision(String(BigInt(after) + 1n))
      .create();
    let down = false;
    w.on('put', (kv) => {
      try {
        h.put(kv.key.toString(), JSON.parse(kv.value.toString()) as T);
      } catch (e) {
        this.log.error({ err: e, key: kv.key.toString() }, 'cluster watch: bad record ignored');
      }
    });
    w.on('delete', (kv, prev) => {
      let old: T | undefined;
      try {
        old = prev?.value?.length ? (JSON.parse(prev.value.toString()) as T) : undefined;
      } catch {
        old = undefined;
      }
      h.delete(kv.key.toString(), old);
    });
    w.on('disconnected', (e) => {
      if (!down) this.log.warn({ err: e, store: this.url, prefix }, 'cluster store watch lost: resuming');
      down = true;
    });
    w.on('connected', () => {
      if (!down) return;
      down = false;
      this.log.info({ store: this.url, prefix }, 'cluster store watch resumed');
      h.resumed?.();
    });
    w.on('error', (e) => this.log.error({ err: e, prefix }, 'cluster store watch failed'));
    return () => w.cancel();
  }

  /** A lease of ttl seconds kept alive by the client; onLost runs when it expired (the store was away too long). */
  async lease(
    ttlSeconds: number,
    onLost: (e: unknown) => void,
  ): Promise<{ id: string; revoke(): Promise<void> }> {
    const l = this.ns.lease(ttlSeconds, { autoKeepAlive: true });
    // A grant that fails also ends in 'lost': only a lease that was granted can be lost.
    l.on('lost', () => undefined);
    const id = await this.call('cluster lease', undefined, () => l.grant());
    l.on('lost', onLost);
    return {
      id,
      revoke: async () => {
        l.removeAllListeners('lost');
        await l.revoke().catch((e) => this.log.warn({ err: e }, 'cluster lease revoke failed'));
      },
    };
  }

  close(): void {
    this.client.close();
  }
}

function decode<T>(kv: IKeyValue): Versioned<T> {
  const key = kv.key.toString();
  return {
    key: key.startsWith(KEY_PREFIX) ? key.slice(KEY_PREFIX.length) : key,
    value: JSON.parse(kv.value.toString()) as T,
    rev: kv.mod_revision,
  };
}
