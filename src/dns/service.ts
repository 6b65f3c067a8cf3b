// The embedded DNS of every sandbox: starts and stops per-sandbox resolvers,
// shares one forwarder.
import type { Logger } from '../log';
import { Forwarder, ForwarderOptions } from './forwarder';
import type { RecordSource } from './records';
import { SandboxResolver } from './resolver';
import { closeFds } from '../netns/netns';

export class EmbeddedDns {
  private readonly records: RecordSource;
  private readonly log: Logger;
  readonly forwarder: Forwarder;
  private readonly running = new Map<string, SandboxResolver>();

  constructor(o: { records: RecordSource; log: Logger; forwarder?: Omit<ForwarderOptions, 'log'> }) {
    this.records = o.records;
    this.log = o.log;
    this.forwarder = new Forwarder({ ...o.forwarder, log: o.log });
  }

  has(sandboxId: string): boolean {
    return this.running.has(sandboxId);
  }

  /**
   * Starts the sandbox's resolver unless it runs already; `armed`: its sockets, ready (armResolverSockets),
   * now owned here.
   */
  async ensure(
    sandboxId: string,
    nsPath: string,
    upstreams: () => string[],
    armed?: number[],
  ): Promise<void> {
    if (this.running.has(sandboxId)) {
      if (armed) closeFds(armed);
      return;
    }
    const r = await SandboxResolver.start(
      nsPath,
      { sandboxId, records: this.records, forwarder: this.forwarder, upstreams, log: this.log },
      armed,
    );
    this.running.set(sandboxId, r);
  }

  /**
   * A new sandbox's resolver on its armed sockets, served by serve() once the
   * caller has answered: queries that come first wait in the kernel's queues.
   */
  adopt(sandboxId: string, upstreams: () => string[], armed: number[]): void {
    if (this.running.has(sandboxId)) {
      closeFds(armed);
      return;
    }
    this.running.set(
      sandboxId,
      SandboxResolver.adopt(
        { sandboxId, records: this.records, forwarder: this.forwarder, upstreams, log: this.log },
        armed,
      ),
    );
  }

  /** Serves an adopted resolver; a failure is logged (the sandbox is answered already) and leaves it stopped. */
  serve(sandboxId: string): void {
    const r = this.running.get(sandboxId);
    if (!r) return;
    r.serve().catch((e) => {
      this.log.error({ err: e, sandbox: sandboxId }, 'embedded DNS could not start');
      if (this.running.get(sandboxId) === r) this.stop(sandboxId);
    });
  }

  stop(sandboxId: string): void {
    this.running.get(sandboxId)?.close();
    this.running.delete(sandboxId);
  }

  close(): void {
    for (const id of [...this.running.keys()]) this.stop(id);
    this.forwarder.close();
  }
}
