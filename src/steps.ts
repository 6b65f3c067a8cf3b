// Ordered steps with rollback: run each step; when one fails, undo the
// finished ones in reverse and rethrow. A failed operation leaves nothing
// half-done (libnetwork bridge's setup steps, with their undo beside them).

export interface Step {
  name: string;
  do(): Promise<void> | void;
  /** Undo what do() did; must tolerate a partial do(). */
  undo?(): Promise<void> | void;
}

export interface StepFailure {
  step: string;
  undoErrors: { step: string; error: unknown }[];
}

export async function runSteps(steps: Step[], onUndoError?: (step: string, e: unknown) => void): Promise<void> {
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
          onUndoError?.(u.name, ue);
        }
      }
      if (e && typeof e === 'object') (e as { failedStep?: string }).failedStep ??= s.name;
      throw e;
    }
  }
}
