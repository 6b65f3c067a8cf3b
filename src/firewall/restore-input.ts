// How the iptables backend drives one iptables-restore (ip6tables-restore) process: the
// comments it adds to a batch's input, which the restore echoes with --verbose as it reads
// them, and the pairing of the two families' restores of one batch. Why: firewall/README.md
// ("Removing rules without waiting for the grace period").
import type { ExecOptions, ExecResult } from './exec';

/** Echoed after the last COMMIT: every table before it was committed. */
export const DONE = '# cnmd: batch committed';

/** Echoed by each restore of a two-family batch once it has parsed its first table. */
export const PARSED = '# cnmd: first table parsed';

/**
 * One of the restores of a batch run side by side: it parses its first table, then waits at
 * PARSED until every other has too (or has exited: then it reads EOF there and commits nothing);
 * none gets EOF before all said DONE (`held`).
 */
export interface Together {
  held: Promise<void>;
  opened: Promise<boolean>;
  /** This restore reached PARSED (true) or ended without (false); only the first call counts. */
  arrive(passed: boolean): void;
  /** It reached PARSED and was then stopped there because another failed. */
  stopped(): boolean;
}

/** n restores run together; release() once all have settled (they then read EOF and exit). */
export function together(n: number): { members: Together[]; release: () => void } {
  let left = n;
  let ok = true;
  let open!: (go: boolean) => void;
  const opened = new Promise<boolean>((resolve) => (open = resolve));
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const members = Array.from({ length: n }, (): Together => {
    let passed: boolean | undefined;
    return {
      held,
      opened,
      arrive(p) {
        if (passed !== undefined) return;
        passed = p;
        ok &&= p;
        if (--left === 0) open(ok);
      },
      stopped: () => passed === true && !ok,
    };
  });
  return { members, release };
}

/**
 * The input of one restore (`lines` with the comments) and how to run it. `renumber` maps the
 * line numbers of the restore's error text back to those of `lines`.
 */
export function restoreInput(
  lines: string[],
  pair?: Together,
): { input: string; opts: ExecOptions; renumber: (stderr: string) => string } {
  const opts: ExecOptions = { doneLine: DONE, endInput: pair?.held };
  const first = lines.indexOf('COMMIT');
  if (!pair || first < 0) {
    // Nothing to parse before a commit (cannot be: a batch's blocks end with COMMIT).
    pair?.arrive(true);
    return { input: [...lines, DONE, ''].join('\n'), opts, renumber: (s) => s };
  }
  opts.gate = { line: PARSED, reached: () => pair.arrive(true), open: pair.opened };
  const at = first + 1; // PARSED's line number
  return {
    input: [...lines.slice(0, first), PARSED, ...lines.slice(first), DONE, ''].join('\n'),
    opts,
    renumber: (s) =>
      s.replace(/(line:?\s*)(\d+)/g, (_m, pre: string, n: string) =>
        Number(n) > at ? `${pre}${Number(n) - 1}` : `${pre}${n}`,
      ),
  };
}

/** A restore succeeded: it echoed DONE, or exited 0. */
export function restored(r: ExecResult): boolean {
  return r.exiting !== undefined || r.code === 0;
}
