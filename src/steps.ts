// Ordered steps with rollback: run each step; when one fails, undo the
// finished ones in reverse and rethrow. A failed operation leaves nothing
// half-done (libnetwork bridge's setup steps, with their undo beside them).
import { CnmdError, TeardownErrors } from './errors';

export interface Step {
  name: string;
  do(): Promise<void> | void;
  /** Undo what do() did; must tolerate a partial do(). */
  undo?(): Promise<void> | void;
}

/**
 * A step's failure: the original error (in `cause`) with the name of the step
 * that threw it. It keeps the original's code, message and details, so callers
 * and API answers see the same error; nested steps keep the innermost name.
 */
export class StepError extends CnmdError {
  readonly step: string;

  constructor(step: string, e: unknown) {
    const base = e instanceof CnmdError ? e : undefined;
    super(
      base?.code ?? 'INTERNAL',
      e instanceof Error ? e.message : String(e),
      base ? { ...base.details, cause: e } : { op: step, cause: e },
    );
    this.name = 'StepError';
    this.step = step;
  }

  /** e as the failure of `step`, unless an inner step already named itself. */
  static wrap(step: string, e: unknown): StepError {
    return e instanceof StepError ? e : new StepError(step, e);
  }
}

/**
 * Runs steps in order; on a failure undoes the finished ones (and the failed
 * one's partial work) in reverse, then throws the failure as a StepError.
 * An undo that fails is reported to onUndoError (the caller logs it) and the
 * rest are still undone: the step's own error stays the answer.
 */
export async function runSteps(
  steps: Step[],
  onUndoError: (step: string, e: unknown) => void,
): Promise<void> {
  const done: Step[] = [];
  for (const s of steps) {
    try {
      await s.do();
      done.push(s);
    } catch (e) {
      // The failing step may have done part of its work: undo it too.
      for (const u of [s, ...done.reverse()]) {
        if (!u.undo) continue;
        try {
          await u.undo();
        } catch (ue) {
          onUndoError(u.name, ue);
        }
      }
      throw StepError.wrap(s.name, e);
    }
  }
}

/**
 * One step made of lanes that run at the same time, each an ordered list of
 * steps (independent work: netlink requests while an iptables-restore process
 * runs). It fails once every lane has settled, with the first lane's error;
 * its undo undoes each lane's finished steps (and a failed one's partial work)
 * in reverse, carrying on past undo errors and throwing them together.
 */
export function concurrently(name: string, lanes: Step[][]): Step {
  const finished: Step[][] = lanes.map(() => []);
  return {
    name,
    async do() {
      const results = await Promise.allSettled(
        lanes.map(async (lane, i) => {
          for (const s of lane) {
            finished[i].push(s); // before do(): a failing step's partial work is undone too
            try {
              await s.do();
            } catch (e) {
              throw StepError.wrap(s.name, e);
            }
          }
        }),
      );
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    },
    async undo() {
      const errs = new TeardownErrors('undo', name);
      for (const lane of finished) {
        for (const s of lane.splice(0).reverse()) if (s.undo) await errs.step(s.name, () => s.undo!());
      }
      errs.throwIfFailed();
    },
  };
}
