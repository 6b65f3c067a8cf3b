// A few network namespaces made ahead of time. Creating a netns costs the
// kernel ~2 ms (unshare, sysctl tables, loopback); a sandbox takes a ready one
// and gives it its own path, and the pool refills in the background. Pooled
// namespaces live under <exec-root>/pool/netns; a restart removes leftovers.
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

  /** A netns with loopback up at the path of `id`: a pooled one if ready, else made now. */
  async take(id: string): Promise<CreatedNetns> {
    const pooled = this.ready.shift();
    this.fill();
    if (!pooled) return this.target.create(id);
    try {
      const p = this.target.adopt(id, pooled.path);
      pooled.handle.relocate(p);
      return { id, path: p, handle: pooled.handle };
    } catch (e) {
      pooled.handle.close();
      try {
        this.pool.delete(pooled.id);
      } catch {
        /* best effort */
      }
      throw e;
    }
  }

  private fill(): void {
    if (this.filling || this.closed || this.size <= 0) return;
    this.filling = true;
    void (async () => {
      try {
        while (!this.closed && this.ready.length < this.size) {
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
    for (const n of this.ready.splice(0)) {
      n.handle.close();
      try {
        this.pool.delete(n.id);
      } catch {
        /* best effort */
      }
    }
  }
}
