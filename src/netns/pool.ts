// Network namespaces made ahead of time: a sandbox takes a ready one and gives
// it its own path. Pooled namespaces live under <exec-root>/pool/netns; a
// restart removes leftovers. The pool refills only when the daemon is idle
// (IDLE_MS after the last take), since making or unmounting a netns slows the
// attaches under way; one run dry makes one netns after each attach. A pooled
// netns can come with sockets opened in it (PooledSockets), which its creation
// pays for anyway. Costs measured: docs/design-notes.md ("The netns pool").
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { SocketSpec } from '../../native';
import { CnmdError, bestEffort, isNotFound } from '../errors';
import type { Logger } from '../log';
import { CreatedNetns, NetnsManager, closeFds } from './netns';

/** Quiet time after the last take before the pool sweeps and refills. */
export const IDLE_MS = 50;

/** Sockets every pooled netns is made with, and how to make them ready once its loopback is up. */
export interface PooledSockets {
  specs: SocketSpec[];
  /** Binds / listens the fds (in specs' order); a throw leaves the netns pooled without them. */
  arm(fds: number[]): void;
}

export interface NetnsPoolOptions {
  /** Namespaces kept ready (0: none, every sandbox makes its own). */
  size: number;
  log: Logger;
  sockets?: PooledSockets;
  /** Quiet time before a refill (default IDLE_MS). */
  idleMs?: number;
}

export class NetnsPool {
  private readonly pool: NetnsManager;
  private readonly target: NetnsManager;
  private readonly size: number;
  private readonly log: Logger;
  private readonly sockets?: PooledSockets;
  private readonly idleMs: number;
  private ready: CreatedNetns[] = [];
  /** Pooled namespaces handed out whose pool path is still mounted. */
  private readonly spent: string[] = [];
  /** Takers whose kernel work is under way (ids given to take()). */
  private readonly takers = new Set<string>();
  private lastTake = 0;
  private idleTimer?: NodeJS.Timeout;
  private filling = false;
  private closed = false;

  constructor(target: NetnsManager, execRoot: string, o: NetnsPoolOptions) {
    this.target = target;
    this.pool = new NetnsManager(path.join(execRoot, 'pool'), { sysctls: target.sysctls });
    this.size = Math.max(0, o.size);
    this.log = o.log;
    this.sockets = o.sockets;
    this.idleMs = o.idleMs ?? IDLE_MS;
  }

  /** Namespaces ready to be taken now. */
  get readyCount(): number {
    return this.ready.length;
  }

  /** Removes pooled namespaces (and stub files) a previous run left, then fills the pool in the background. */
  start(): void {
    for (const id of this.pool.entries()) {
      try {
        this.pool.delete(id);
      } catch (e) {
        if (!(e instanceof CnmdError && e.code === 'NOT_FOUND'))
          this.log.warn({ err: e, netns: id }, 'netns pool: could not remove a leftover');
      }
    }
    // Full already, with nothing to hold: said once, as a filled pool says it.
    if (this.size <= 0) this.log.debug({ ready: 0 }, 'netns pool full');
    this.fill();
  }

  /**
   * A netns with loopback up at the path of `id`: a pooled one if ready (with
   * its PooledSockets, when they could be armed), else made now (no sockets).
   * Call done(id) after.
   */
  async take(id: string): Promise<CreatedNetns> {
    this.takers.add(id);
    this.lastTake = performance.now();
    const pooled = this.ready.shift();
    if (!pooled) return this.target.create(id);
    try {
      const p = this.target.share(id, pooled.path);
      // Its pool path goes when the daemon is idle: the unmount is the slow half of an adoption.
      this.spent.push(pooled.id);
      pooled.handle.relocate(p);
      return { ...pooled, id, path: p };
    } catch (e) {
      pooled.handle.close();
      closeFds(pooled.sockets);
      this.spent.push(pooled.id);
      throw e;
    }
  }

  /**
   * The kernel work of the taker of `id` is done (or failed): the pool sweeps
   * and refills once the daemon is idle. A burst longer than the pool ran it
   * dry: then one netns is made now, for the next taker (alongside its work,
   * ~0.75 ms, beats making it on its path, ~1 ms and more).
   */
  done(id: string): void {
    this.takers.delete(id);
    if (this.ready.length === 0 && this.takers.size === 0) this.fill(1);
    this.whenIdle();
  }

  private whenIdle(): void {
    if (this.closed) return;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (!this.idle()) return this.whenIdle();
      this.sweep();
      this.fill();
    }, this.idleMs);
    this.idleTimer.unref();
  }

  private idle(): boolean {
    return this.takers.size === 0 && performance.now() - this.lastTake >= this.idleMs;
  }

  /** Unmounts the pool paths of namespaces handed out, off the event loop. */
  private sweep(): void {
    for (const id of this.spent.splice(0)) {
      // Gone already is done; any other failure is logged (a restart sweeps leftovers anyway).
      void bestEffort(this.log, 'netns pool sweep', id, () => this.pool.remove(id));
    }
  }

  /** Makes namespaces until the pool is full or a sandbox is taken (at most `max`). */
  private fill(max = Infinity): void {
    if (this.filling || this.closed || this.size <= 0) return;
    this.filling = true;
    const startedIdle = this.lastTake;
    void (async () => {
      try {
        // A take stops the filling (lastTake moves): the next idle period resumes it.
        for (
          let made = 0;
          made < max && !this.closed && this.lastTake === startedIdle && this.ready.length < this.size;
          made++
        ) {
          const created = await this.pool.create(randomBytes(8).toString('hex'), this.sockets?.specs);
          if (this.closed) {
            created.handle.close();
            closeFds(created.sockets);
            this.pool.delete(created.id);
            break;
          }
          this.arm(created);
          this.openNetnsFd(created);
          await this.noteFreeIndex(created);
          this.ready.push(created);
          if (this.ready.length === this.size)
            this.log.debug({ ready: this.ready.length }, 'netns pool full');
        }
      } catch (e) {
        this.log.warn(
          { err: e },
          'netns pool refill failed; sandboxes will create their namespaces directly',
        );
      } finally {
        this.filling = false;
      }
    })();
  }

  /** Nothing but its taker makes devices in a pooled netns: the index after its last device stays free. */
  private async noteFreeIndex(created: CreatedNetns): Promise<void> {
    try {
      const links = await created.handle.linkList();
      created.freeIndex = Math.max(0, ...links.map((l) => l.index)) + 1;
    } catch (e) {
      this.log.debug(
        { err: e, netns: created.path },
        "netns pool: could not list its devices; its taker takes the kernel's index",
      );
    }
  }

  /**
   * Opens the fd its taker's interface is placed in the netns by (IFLA_NET_NS_FD; the
   * handle keeps it until it closes): three syscalls off the attach, each slow there
   * after an idle pause (docs/design-notes.md, "Where a macvlan attach's time goes").
   */
  private openNetnsFd(created: CreatedNetns): void {
    try {
      created.handle.ownNetnsFd();
    } catch (e) {
      this.log.debug(
        { err: e, netns: created.path },
        'netns pool: could not open its netns fd; its taker opens it',
      );
    }
  }

  private arm(created: CreatedNetns): void {
    if (!this.sockets || created.sockets.length === 0) return;
    try {
      this.sockets.arm(created.sockets);
    } catch (e) {
      this.log.warn(
        { err: e, netns: created.path },
        'netns pool: could not ready its sockets; a sandbox taking it opens its own',
      );
      closeFds(created.sockets);
    }
  }

  /** Removes the idle pooled namespaces (synchronously: the daemon is stopping). */
  close(): void {
    this.closed = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    for (const n of this.ready.splice(0)) {
      n.handle.close();
      closeFds(n.sockets);
      this.spent.push(n.id);
    }
    for (const id of this.spent.splice(0)) {
      try {
        this.pool.delete(id);
      } catch (e) {
        // Gone already is done; anything else leaves it for the next start's sweep.
        if (!isNotFound(e)) this.log.warn({ err: e, netns: id }, 'netns pool: removal at close failed');
      }
    }
  }
}
