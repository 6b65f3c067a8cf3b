// A few network namespaces made ahead of time. Creating a netns costs the
// kernel ~2 ms (unshare, sysctl tables, loopback); a sandbox takes a ready one
// and gives it its own path, and the pool refills in the background. Pooled
// namespaces live under <exec-root>/pool/netns; a restart removes leftovers.
//
// The pool stays out of a taker's way: making a netns while the taker creates
// its veth contends with it in the kernel (rtnl_lock, the mount lock), and
// unmounting a pool path blocks this thread for an RCU grace period; together
// they slowed every attach by ~0.5 ms. So take() only bind-mounts, and the
// taker calls refill(id) once its kernel work is done, which unmounts the pool
// path and makes a new netns; no netns is made while a taker is at work. A
// pool path left mounted by a crash is removed at the next start, like any
// pool leftover.
import * as path from 'node:path';
import type { Logger } from '../log';
import { CreatedNetns, NetnsManager } from './netns';
import { randomBytes } from 'node:crypto';

export class NetnsPool {
  private readonly pool: NetnsManager;
  private readonly target: NetnsManager;
  private readonly size: number;
  private readonly log: Logger;
  private ready: CreatedNetns[] = [];
  /** Pooled namespaces handed out whose pool path is still mounted. */
  private readonly spent: string[] = [];
  /** Takers whose kernel work is under way (ids given to take()): no refill meanwhile. */
  private readonly takers = new Set<string>();
  private filling = false;
  private closed = false;

  constructor(target: NetnsManager, execRoot: string, size: number, log: Logger) {
    this.target = target;
    this.pool = new NetnsManager(path.join(execRoot, 'pool'));
    this.size = size;
    this.log = log;
  }

  /** Removes pooled namespaces a previous run left, then fills the pool in the background. */
  start(): void {
    for (const id of this.pool.list()) {
      try {
        this.pool.delete(id);
      } catch {
        /* gone already */
      }
    }
    this.fill();
  }

  /** A netns with loopback up at the path of `id`: a pooled one if ready, else made now. Call refill(id) after. */
  async take(id: string): Promise<CreatedNetns> {
    this.takers.add(id);
    const pooled = this.ready.shift();
    if (!pooled) return this.target.create(id);
    try {
      const p = this.target.share(id, pooled.path);
      // Its pool path goes at refill(): the unmount is the slow half of an adoption.
      this.spent.push(pooled.id);
      pooled.handle.relocate(p);
      return { id, path: p, handle: pooled.handle };
    } catch (e) {
      pooled.handle.close();
      this.remove(pooled.id);
      throw e;
    }
  }

  /** Unmounts the pool paths of namespaces handed out. */
  sweep(): void {
    for (const id of this.spent.splice(0)) this.remove(id);
  }

  /** The kernel work of the taker of `id` is done (or failed): make up for what was taken, in the background. */
  refill(id: string): void {
    this.takers.delete(id);
    this.sweep();
    this.fill();
  }

  private remove(id: string): void {
    try {
      this.pool.delete(id);
    } catch {
      /* gone already; a restart sweeps leftovers anyway */
    }
  }

  private fill(): void {
    if (this.filling || this.closed || this.size <= 0 || this.takers.size > 0) return;
    this.filling = true;
    void (async () => {
      try {
        while (!this.closed && this.takers.size === 0 && this.ready.length < this.size) {
          const created = await this.pool.create(randomBytes(8).toString('hex'));
          if (this.closed) {
            created.handle.close();
            this.pool.delete(created.id);
            break;
          }
          this.ready.push(created);
        }
      } catch (e) {
        this.log.warn({ err: e }, 'netns pool refill failed; sandboxes will create their namespaces directly');
      } finally {
        this.filling = false;
      }
    })();
  }

  /** Removes the idle pooled namespaces. */
  close(): void {
    this.closed = true;
    this.sweep();
    for (const n of this.ready.splice(0)) {
      n.handle.close();
      this.remove(n.id);
    }
  }
}
