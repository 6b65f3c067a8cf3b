// Typed errors: every failure names a code, the operation and the object it concerned.

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'CONFLICT'
  /**
   * Refused because another object holds what the request needs: a network's endpoints (rm), a
   * subnet, an address, a sandbox's place on a network. Docker answers these with errdefs.Forbidden (403).
   */
  | 'IN_USE'
  | 'FORBIDDEN'
  | 'KERNEL_FEATURE_MISSING'
  | 'KERNEL_ERROR'
  | 'MALFORMED_REPLY'
  | 'TIMEOUT'
  | 'CLOSED'
  | 'EXHAUSTED'
  /** A remote plugin refused a call or could not be reached (its own errors: details.status, details.pluginMessage). */
  | 'PLUGIN_ERROR'
  /** A store or service the operation needs cannot be reached (the cluster store). */
  | 'UNAVAILABLE'
  | 'INTERNAL';

export interface ErrorDetails {
  op: string;
  object?: string;
  errno?: string;
  cause?: unknown;
  [extra: string]: unknown;
}

export class CnmdError extends Error {
  readonly code: ErrorCode;
  readonly op: string;
  readonly object?: string;
  readonly errno?: string;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CnmdError';
    this.code = code;
    this.op = details.op;
    this.object = details.object;
    this.errno = details.errno;
    this.details = details;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, op: this.op, object: this.object, errno: this.errno };
  }
}

export function invalidArgument(op: string, object: string | undefined, message: string): CnmdError {
  return new CnmdError('INVALID_ARGUMENT', `${op}: ${message}`, { op, object });
}

/** A failure's `op object: reason` message (see docs/errors.md). */
export function opMessage(op: string, object: string | undefined, reason: string): string {
  return object === undefined || object === '' ? `${op}: ${reason}` : `${op} ${object}: ${reason}`;
}

/** A CnmdError whose message reads `op object: reason`. */
export function failure(
  code: ErrorCode,
  details: ErrorDetails & { object?: string },
  reason: string,
): CnmdError {
  return new CnmdError(code, opMessage(details.op, details.object, reason), details);
}

/** True when e is a CnmdError with one of these codes. */
export function hasCode(e: unknown, ...codes: ErrorCode[]): e is CnmdError {
  return e instanceof CnmdError && codes.includes(e.code);
}

export function isNotFound(e: unknown): e is CnmdError {
  return hasCode(e, 'NOT_FOUND');
}

/**
 * For deletes and teardowns: what is already gone is done. Resolves with
 * undefined on NOT_FOUND; every other failure (EPERM, a timeout, a bug) rejects.
 */
export async function ignoreNotFound<T>(work: Promise<T>): Promise<T | undefined> {
  try {
    return await work;
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

/**
 * The errno name (ENOENT, EPERM, ...) a system call failed with: a CnmdError's
 * errno, or the code of a node or native error. undefined for anything else.
 */
export function errnoOf(e: unknown): string | undefined {
  if (e instanceof CnmdError) return e.errno;
  const code = (e as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

/** True when e failed with one of these errno names: for catches that expect one errno by name. */
export function hasErrno(e: unknown, ...names: string[]): boolean {
  const errno = errnoOf(e);
  return errno !== undefined && names.includes(errno);
}

/** The reason of any thrown value, for messages. */
export function reasonOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Anything that takes structured warnings (a pino Logger). */
export interface WarnSink {
  warn(fields: Record<string, unknown>, msg: string): void;
}

/**
 * A teardown's failures (netavark's NetavarkErrorList): every step runs even
 * when an earlier one failed, NOT_FOUND counts as done, and whatever else
 * failed is logged at once and reported together by error()/throwIfFailed().
 */
export class TeardownErrors {
  readonly failures: { step: string; error: unknown }[] = [];

  constructor(
    readonly op: string,
    readonly object: string | undefined,
    private readonly log?: WarnSink,
  ) {}

  /** Runs one step of the teardown; its failure is kept, not thrown. */
  async step(name: string, fn: () => unknown): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.add(name, e);
    }
  }

  /** Records a step's failure (NOT_FOUND: the thing is gone, which is what the teardown wanted). */
  add(step: string, e: unknown): void {
    if (isNotFound(e)) return;
    if (e instanceof CnmdError && e.details.teardown instanceof TeardownErrors) {
      // A nested teardown's failures were logged by it: flatten them into this list.
      for (const f of e.details.teardown.failures) this.failures.push(f);
      return;
    }
    this.failures.push({ step, error: e });
    this.log?.warn({ err: e, op: this.op, object: this.object, step }, 'teardown step failed');
  }

  get failed(): boolean {
    return this.failures.length > 0;
  }

  /** One error naming every failed step, or undefined; its code is the first failure's. */
  error(): CnmdError | undefined {
    if (!this.failed) return undefined;
    const first = this.failures[0].error;
    const reasons = this.failures.map((f) => `${f.step}: ${reasonOf(f.error)}`).join('; ');
    return failure(
      first instanceof CnmdError ? first.code : 'INTERNAL',
      {
        op: this.op,
        object: this.object,
        cause: this.failures.length === 1 ? first : new AggregateError(this.failures.map((f) => f.error)),
        teardown: this,
      },
      reasons,
    );
  }

  throwIfFailed(): void {
    const e = this.error();
    if (e) throw e;
  }
}

/**
 * One clean-up step whose failure must not replace the caller's own error (a
 * rollback inside a failed operation, a background removal): NOT_FOUND is
 * done, anything else is logged.
 */
export async function bestEffort(
  log: WarnSink | undefined,
  op: string,
  object: string | undefined,
  work: () => unknown,
): Promise<void> {
  await new TeardownErrors(op, object, log).step(op, work);
}

/**
 * Resolves once p settles, whatever its outcome: for queueing behind work
 * whose failure its own awaiter already handles (not a way to drop errors).
 */
export async function settled(p: Promise<unknown> | undefined): Promise<void> {
  await Promise.allSettled([p]);
}
