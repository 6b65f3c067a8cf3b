// How the firewall runs its commands: defaultExec (a process per call, started
// with native.spawnPiped) and SpareProcesses (a process started ahead for the
// next call with the same command line). Plain programs (sh, cat) stand in for
// iptables-restore here; test/integration/firewall-exec.test.ts runs the real one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { native } from '../../../native';
import { defaultExec, SpareProcesses } from '../../../src/firewall/exec';
import { childPids } from '../../lib/procs';
import { eventually } from '../../lib/fixture';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    // A zombie still answers kill(0): look at its state too.
    return !/^\S+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const children = () => childPids();

function commOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Every child of this process gone and reaped (the next step counts only its own). */
const noChildren = (what: string) => eventually(() => assert.deepEqual(children(), [], what), 5000);
/** The kernel and the thread pool take longer when the machine is loaded: wait for the count, not a fixed time. */
const childCount = (n: number, what: string) =>
  eventually(() => assert.equal(children().length, n, what), 5000);

test('defaultExec: input on stdin, stdout, stderr, exit code; the child is reaped', async () => {
  const exec = defaultExec(5000);
  assert.deepEqual(await exec('cat', [], 'line one\nline two\n'), {
    code: 0,
    signal: null,
    stdout: 'line one\nline two\n',
    stderr: '',
  });
  assert.deepEqual(await exec('sh', ['-c', 'read x; echo "got $x"; echo oops >&2; exit 3'], 'it\n'), {
    code: 3,
    signal: null,
    stdout: 'got it\n',
    stderr: 'oops\n',
  });
  // No input: stdin is closed at once (EOF), as iptables-save expects.
  assert.equal((await exec('sh', ['-c', 'cat; echo done'])).stdout, 'done\n');
  assert.deepEqual(children(), []);
});

test('native.spawnPiped resolves the pid of a child of this process and three new fds; one that cannot start rejects, never a pid', async () => {
  const [pid, inFd, outFd, errFd] = await native.spawnPiped('sleep', ['sleep', '5']);
  let status: number[] | undefined;
  try {
    // A pid of 0 or -1 handed to kill() signals a process group or every process.
    assert.ok(pid > 1, `pid ${pid}`);
    // By pid, not by command line: the parent resumes once the child's exec has
    // released the old memory, a moment before the kernel sets its cmdline.
    assert.deepEqual(children(), [pid]);
    await eventually(() =>
      assert.match(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /^sleep\0/, 'the child runs sleep'),
    );
    assert.equal(new Set([inFd, outFd, errFd]).size, 3);
    for (const fd of [inFd, outFd, errFd]) assert.ok(fd > 2, `fd ${fd}`);
  } finally {
    if (pid > 1) {
      process.kill(pid, 'SIGKILL');
      // Reaped whatever failed above: a zombie left here would be counted by every later test.
      status = await native.waitPid(pid);
    }
    for (const fd of [inFd, outFd, errFd]) if (fd > 2) native.close(fd);
  }
  assert.deepEqual(status, [-1, 9]);
  await assert.rejects(
    native.spawnPiped('cnmd-no-such-program', ['cnmd-no-such-program']),
    (e: NodeJS.ErrnoException) => e.code === 'ENOENT',
  );
  assert.deepEqual(children(), []);
});

test('defaultExec: a child that ignores SIGPIPE in node is back to defaults (signals and mask)', async () => {
  // node ignores SIGPIPE; a child inheriting that would not die on a closed pipe.
  const r = await defaultExec(5000)('sh', ['-c', 'grep -E "^(SigIgn|SigBlk)" /proc/self/status']);
  assert.match(r.stdout, /SigBlk:\s+0+\n/);
  const ignored = BigInt('0x' + /SigIgn:\s+([0-9a-f]+)/.exec(r.stdout)![1]);
  const SIGPIPE = 13n;
  assert.equal(
    (ignored >> (SIGPIPE - 1n)) & 1n,
    0n,
    `SIGPIPE ignored in the child: SigIgn ${ignored.toString(16)}`,
  );
});

test('defaultExec: a missing program rejects with ENOENT naming it; a hung one is killed at the timeout', async () => {
  await assert.rejects(
    defaultExec(5000)('cnmd-no-such-program', [], ''),
    (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && /cnmd-no-such-program/.test(e.message),
  );
  const t0 = performance.now();
  const r = await defaultExec(300)('sh', ['-c', 'cat >/dev/null; exec sleep 30'], 'x');
  assert.equal(r.signal, 'SIGKILL');
  assert.equal(r.code, null);
  assert.ok(performance.now() - t0 < 10_000);
  assert.deepEqual(children(), []);
});

test('defaultExec: a child that exits without reading a large input: its status, no EPIPE thrown', async () => {
  const r = await defaultExec(5000)('sh', ['-c', 'exit 4'], 'x'.repeat(1 << 20));
  assert.equal(r.code, 4);
});

test('SpareProcesses: the second call with a command line is served by a process started before it', async () => {
  const sp = new SpareProcesses({ timeoutMs: 5000 });
  try {
    // The program prints when it started (ms since the epoch), then echoes its input.
    const cmd: [string, string[]] = ['sh', ['-c', 'date +%s%3N; exec cat']];
    const first = await sp.exec(...cmd, 'one');
    assert.match(first.stdout, /^\d+\none$/);
    assert.deepEqual(sp.stats, { spare: 0, cold: 1 });
    // The spare starts once the event loop is free; it has printed its start once sh became cat
    // (a child that exists may not have run `date` yet on a loaded machine).
    await childCount(1, 'a spare waits');
    await eventually(() => assert.equal(commOf(children()[0]), 'cat', 'the spare ran date'), 5000);
    const calledAt = Date.now();
    const second = await sp.exec(...cmd, 'two');
    const [startedAt, echoed] = second.stdout.split('\n');
    assert.equal(echoed, 'two');
    assert.ok(
      Number(startedAt) < calledAt,
      `the process started at ${startedAt}, before the call at ${calledAt}`,
    );
    assert.deepEqual(sp.stats, { spare: 1, cold: 1 });
    // Another command line runs in a process of its own (and gets a spare of its own).
    assert.equal((await sp.exec('cat', [], 'three')).stdout, 'three');
    assert.deepEqual(sp.stats, { spare: 1, cold: 2 });
    // Without input (iptables-save): a process of its own, never a spare (and not counted).
    assert.equal((await sp.exec('sh', ['-c', 'echo save'])).stdout, 'save\n');
    assert.deepEqual(sp.stats, { spare: 1, cold: 2 });
  } finally {
    sp.close();
    await noChildren('close() ends the spares');
  }
});

test('SpareProcesses: a spare that died while waiting is not used; the call runs in a new process', async () => {
  const sp = new SpareProcesses({ timeoutMs: 5000 });
  try {
    const cmd: [string, string[]] = ['sh', ['-c', 'echo $$; exec cat']];
    await sp.exec(...cmd, 'a');
    await childCount(1, 'one spare waiting');
    const spare = children();
    process.kill(spare[0], 'SIGKILL');
    // Reaped, then a moment for the reap to reach the event loop.
    await noChildren('the killed spare');
    await sleep(100);
    const r = await sp.exec(...cmd, 'b');
    assert.equal(r.code, 0);
    assert.notEqual(Number(r.stdout.split('\n')[0]), spare[0]);
    assert.equal(r.stdout.split('\n')[1], 'b');
    assert.deepEqual(sp.stats, { spare: 0, cold: 2 });
  } finally {
    sp.close();
    await noChildren('close() ends the spares');
  }
});

test("SpareProcesses: the timeout counts from the call, not from the spare's start; close() ends the spares", async () => {
  const sp = new SpareProcesses({ timeoutMs: 400 });
  const cmd: [string, string[]] = ['sh', ['-c', 'read x; sleep 0.1; echo "$x"']];
  // (sleep runs as a child of sh: it exits before sh does)
  assert.equal((await sp.exec(...cmd, 'a\n')).stdout, 'a\n');
  await sleep(600); // longer than the timeout: a spare timed from its start would be dead
  const r = await sp.exec(...cmd, 'b\n');
  assert.deepEqual([r.code, r.stdout], [0, 'b\n']);
  assert.equal(sp.stats.spare, 1);
  await childCount(1, 'a spare waits');
  const waiting = children();
  sp.close();
  await eventually(() => assert.equal(alive(waiting[0]), false, 'the spare exits at EOF'), 5000);
  await noChildren('the spare is reaped');
  // After close: calls still run, in processes of their own, and leave no spare.
  assert.equal((await sp.exec(...cmd, 'c\n')).stdout, 'c\n');
  await sleep(200);
  assert.deepEqual(children(), []);
});

test('doneLine: the call resolves when the process prints the line; its exit is reaped later and reported by `exiting`', async () => {
  const sp = new SpareProcesses({ timeoutMs: 5000 });
  try {
    for (const exec of [defaultExec(5000), sp.exec]) {
      // Prints its pid and the line after reading its input, then runs on until it is signalled
      // (a spare closed without input exits).
      const script = 'read -r x || exit 0; cat >/dev/null; echo $$; echo "# done"; exec sleep 30';
      const r = await exec('sh', ['-c', script], 'x\n', {
        doneLine: '# done',
      });
      const pid = Number(r.stdout.split('\n')[0]);
      assert.equal(r.stdout, `${pid}\n# done\n`);
      assert.deepEqual([r.code, r.signal], [null, null]);
      assert.ok(r.exiting, 'resolved on the line, not at the exit');
      assert.ok(alive(pid), 'the process is still running');
      process.kill(pid, 'SIGTERM');
      const end = await r.exiting;
      assert.deepEqual([end.code, end.signal, end.stdout], [null, 'SIGTERM', `${pid}\n# done\n`]);
      assert.ok(!children().includes(pid), 'reaped');
    }
  } finally {
    sp.close();
    await noChildren('the spare ends at close()');
  }
});

test('doneLine: a process that exits without printing it is judged by its exit; a part of the line is not the line', async () => {
  const exec = defaultExec(5000);
  const failed = await exec('sh', ['-c', 'cat >/dev/null; printf "# done but\\n# don"; exit 3'], 'x', {
    doneLine: '# done',
  });
  assert.deepEqual([failed.code, failed.exiting, failed.stdout], [3, undefined, '# done but\n# don']);
  const ok = await exec('sh', ['-c', 'cat >/dev/null'], 'x', { doneLine: '# done' });
  assert.deepEqual([ok.code, ok.exiting], [0, undefined]);
  await noChildren('both reaped');
});

test('gate: the input after the gate line is written once the process printed it and the gate opens; a closed gate is EOF there', async () => {
  const exec = defaultExec(5000);
  const script = 'read -r a; read -r g; echo "$g"; read -r b || { echo eof; exit 5; }; echo "got $a $b"';
  const run = async (open: boolean) => {
    let reached = 0;
    const r = await exec('sh', ['-c', script], 'x\n# gate\ny\n', {
      gate: { line: '# gate', reached: () => reached++, open: Promise.resolve(open) },
    });
    return { r, reached };
  };
  const opened = await run(true);
  assert.deepEqual([opened.r.code, opened.r.stdout, opened.reached], [0, '# gate\ngot x y\n', 1]);
  const closed = await run(false);
  assert.deepEqual([closed.r.code, closed.r.stdout, closed.reached], [5, '# gate\neof\n', 1]);
  // A process that exits before printing the gate line: its result; the gate is never reached.
  let reached = 0;
  const early = await exec('sh', ['-c', 'exit 3'], 'x\n# gate\ny\n', {
    gate: { line: '# gate', reached: () => reached++, open: new Promise<boolean>(() => undefined) },
  });
  assert.deepEqual([early.code, reached], [3, 0]);
  await noChildren('all reaped');
});
