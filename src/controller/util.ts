// Small helpers shared by the controller's modules.
import * as crypto from 'node:crypto';

/** Random bytes for ids, drawn 2 KiB at a time: one call into the CSPRNG per 64 ids rather than per id. */
const idBytes = { buf: Buffer.alloc(0), used: 0 };

/** A new 64-hex object id. */
export function newId(): string {
  if (idBytes.used + 32 > idBytes.buf.length) {
    idBytes.buf = crypto.randomBytes(2048);
    idBytes.used = 0;
  }
  idBytes.used += 32;
  return idBytes.buf.toString('hex', idBytes.used - 32, idBytes.used);
}

/** Waits for every promise, then throws the first failure: nothing is left running behind an error. */
export async function settleAll(ps: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(ps)).find(
    (r): r is PromiseRejectedResult => r.status === 'rejected',
  );
  if (failed) throw failed.reason;
}

export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Runs fn once the current API call has answered: a log line or a pool refill need not delay the caller. */
export function afterReply(fn: () => void): void {
  setImmediate(fn);
}
