// runSteps and concurrently: what runs, in what order, and what is undone when
// a step fails (the rollback every multi-step operation relies on).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { concurrently, runSteps, Step, StepError } from '../../src/steps';

const noUndoError = (step: string, e: unknown) => assert.fail(`undo of ${step} failed: ${String(e)}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function recorder() {
  const log: string[] = [];
  const step = (name: string, o: { fail?: boolean; ms?: number; undoFails?: boolean } = {}): Step => ({
    name,
    async do() {
      log.push(`+${name}`);
      if (o.ms) await sleep(o.ms);
      if (o.fail) throw new Error(`${name} failed`);
      log.push(`=${name}`);
    },
    async undo() {
      log.push(`-${name}`);
      if (o.undoFails) throw new Error(`${name} undo failed`);
    },
  });
  return { log, step };
}

test('concurrently: lanes run at the same time, each in order; the step is done when every lane is', async () => {
  const { log, step } = recorder();
  await runSteps(
    [
      concurrently('both', [[step('a1', { ms: 40 }), step('a2', { ms: 40 })], [step('b1', { ms: 60 })]]),
      step('after'),
    ],
    noUndoError,
  );
  // Overlap shown by order, not by time (a loaded machine's timers run late).
  assert.deepEqual(log.indexOf('+b1') < log.indexOf('=a1'), true, 'b1 started before a1 finished');
  assert.ok(log.indexOf('=a1') < log.indexOf('+a2'), 'a lane keeps its order');
  assert.equal(log.at(-2), '+after');
  assert.ok(log.indexOf('=a2') < log.indexOf('+after') && log.indexOf('=b1') < log.indexOf('+after'));
});

test('concurrently: a failing lane waits for the others, then every finished step and the partial one are undone in reverse', async () => {
  const { log, step } = recorder();
  await assert.rejects(
    runSteps(
      [
        step('before'),
        concurrently('both', [
          [step('a1'), step('a2', { ms: 10, fail: true }), step('a3')],
          [step('b1', { ms: 50 }), step('b2')],
        ]),
        step('after'),
      ],
      noUndoError,
    ),
    (e: unknown) =>
      e instanceof StepError &&
      e.message === 'a2 failed' &&
      e.step === 'a2' &&
      (e.cause as Error).message === 'a2 failed',
  );
  assert.ok(!log.includes('+a3'), 'nothing after the failed step in its lane');
  assert.ok(!log.includes('+after'));
  assert.ok(log.indexOf('=b2') < log.indexOf('-a2'), 'the other lane finished before any undo');
  const undone = log.filter((x) => x.startsWith('-'));
  assert.deepEqual(undone, ['-a2', '-a1', '-b2', '-b1', '-before']);
});

test('concurrently: undone as a whole when a later step fails; an undo error is reported and the rest still undone', async () => {
  const { log, step } = recorder();
  const undoErrors: string[] = [];
  await assert.rejects(
    runSteps(
      [
        concurrently('both', [[step('a1', { undoFails: true })], [step('b1')]]),
        step('after', { fail: true }),
      ],
      (name) => undoErrors.push(name),
    ),
    /after failed/,
  );
  assert.deepEqual(
    log.filter((x) => x.startsWith('-')),
    ['-after', '-a1', '-b1'],
  );
  assert.deepEqual(undoErrors, ['both']);
});
