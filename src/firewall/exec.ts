// Running the firewall's commands: one process per call (defaultExec), or with a
// process started ahead for each command line fed on stdin (SpareProcesses).
//
// Processes are started with native.spawnPiped (posix_spawn on the thread pool):
// node's spawn() forks the whole daemon and holds the event loop ~1.1 ms here
// until the child has exec'ed. Spares, because a new iptables-restore then spends
// most of a small batch's cost loading before it reads a line: four rules take
// ~3.5 ms in a new process and ~1.6 ms in one already waiting on its stdin. A
// spare is started after each use, once the caller's continuation has run.
//
// Safe for iptables-restore because a waiting process holds nothing: the nft
// variant reads the ruleset when it processes its input (a ruleset changed while
// it waited is seen; test/integration/firewall-exec.test.ts), and the legacy one
// takes the xtables lock at each `*table` line, not at start. A spare left when
// the daemon dies reads EOF on its stdin and exits without a change.
import * as net from 'node:net';
import * as os from 'node:os';
import { native } from '../../native';
import type { Logger } from '../log';
import { hasErrno, settled } from '../errors';

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /**
   * Set when the call resolved on ExecOptions.doneLine: the process printed it and is still exiting
   * (code and signal are null). Resolves with the final result once it has exited and been reaped;
   * the timeout still applies.
   */
  exiting?: Promise<ExecResult>;
}

export interface ExecOptions {
  /**
   * A stdout line by which the process says its work is done: the call resolves when it is printed
   * instead of at the exit. For iptables-restore, whose exit after deleting rules waits for an RCU
   * grace period (firewall/README.md).
   */
  doneLine?: string;
  /**
   * With doneLine: stdin stays open after the input until this settles (or the process exits), so
   * the process does not exit before then.
   */
  endInput?: Promise<unknown>;
  /**
   * The input is written in two parts: up to and including the line `line`; then, once the
   * process has printed it (`reached()` is called) and `open` resolved true, the rest. When `open`
   * resolves false, stdin is ended there: the process reads EOF in the middle of its input.
   */
  gate?: { line: string; reached: () => void; open: Promise<boolean> };
}

/** Runs `file args`, feeding `input` on stdin. Tests wrap it to count processes. */
export type Exec = (file: string, args: string[], input?: string, opts?: ExecOptions) => Promise<ExecResult>;

/** One process per call. */
export function defaultExec(timeoutMs = 60_000): Exec {
  return (file, args, input, opts) => finish(start(file, args), input ?? '', timeoutMs, opts);
}

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>();
for (const [k, v] of Object.entries(os.constants.signals))
  if (!SIGNAL_NAMES.has(v)) SIGNAL_NAMES.set(v, k as NodeJS.Signals);

/** A process started with native.spawnPiped (see there for why not child_process). */
interface Started {
  /** Resolves once the process runs (pid and pipes set); rejects when it could not start (ENOENT...). */
  ready: Promise<void>;
  pid?: number;
  stdin?: net.Socket;
  pipes: net.Socket[];
  stdout: string;
  stderr: string;
  /** Resolves when its pipes closed and it was reaped (code, signal set). */
  closed: Promise<void>;
  code: number | null;
  signal: NodeJS.Signals | null;
}

function start(file: string, args: string[]): Started {
  const p: Started = {
    ready: Promise.resolve(),
    pipes: [],
    stdout: '',
    stderr: '',
    closed: Promise.resolve(),
    code: null,
    signal: null,
  };
  let spawned!: () => void;
  const running = new Promise<void>((resolve) => (spawned = resolve));
  p.ready = native.spawnPiped(file, [file, ...args]).then(([pid, inFd, outFd, errFd]) => {
    p.pid = pid;
    p.stdin = new net.Socket({ fd: inFd, readable: false, writable: true });
    // EPIPE: the process exited before reading all input; its exit status tells why.
    p.stdin.on('error', () => undefined);
    const out = new net.Socket({ fd: outFd, readable: true, writable: false });
    const err = new net.Socket({ fd: errFd, readable: true, writable: false });
    // Output is collected from the start: a spare may print before its input comes.
    out.setEncoding('utf8').on('data', (c: string) => (p.stdout += c));
    err.setEncoding('utf8').on('data', (c: string) => (p.stderr += c));
    p.pipes = [p.stdin, out, err];
    spawned();
  });
  // Whoever awaits p.ready sees its failure; this only keeps an early one from being unhandled meanwhile.
  void settled(p.ready);
  p.closed = running.then(async () => {
    await Promise.all([out(p, 1), out(p, 2)]);
    const [code, sig] = await native.waitPid(p.pid!);
    p.code = code >= 0 ? code : null;
    p.signal = sig ? (SIGNAL_NAMES.get(sig) ?? null) : null;
    p.stdin!.destroy();
  });
  return p;
}

/** Resolves when pipe i (1 stdout, 2 stderr) has closed. */
function out(p: Started, i: number): Promise<void> {
  return new Promise((resolve) => {
    const s = p.pipes[i];
    if (s.closed) return resolve();
    s.on('close', () => resolve());
    s.on('error', () => undefined);
  });
}

/**
 * Feeds the input (through opts.gate), waits for the exit (killing the process after timeoutMs), or
 * until the process prints opts.doneLine, whichever comes first.
 */
async function finish(
  p: Started,
  input: string,
  timeoutMs: number,
  opts: ExecOptions = {},
): Promise<ExecResult> {
  const { doneLine, endInput, gate } = opts;
  await p.ready;
  const timer = setTimeout(() => kill(p), timeoutMs);
  const exited = p.closed.then((): ExecResult => {
    clearTimeout(timer);
    return { code: p.code, signal: p.signal, stdout: p.stdout, stderr: p.stderr };
  });
  // Whoever awaits `exiting` sees a failure to reap; this only keeps it from being unhandled meanwhile.
  void settled(exited);
  const stdin = p.stdin!;
  const stdout = p.pipes[1];
  const listeners: (() => void)[] = [];
  /** Resolves true once `line` is a whole line of stdout, false if the process exits first. */
  const printed = (line: string): Promise<boolean> => {
    const said = new Promise<true>((resolve) => {
      const onData = () => {
        if (`\n${p.stdout}`.includes(`\n${line}\n`)) resolve(true);
      };
      listeners.push(onData);
      stdout.on('data', onData);
      onData();
    });
    return Promise.race([said, exited.then(() => false)]);
  };
  const hold = doneLine !== undefined && endInput !== undefined;
  /** The input from `from` on; stdin ended after it unless held. */
  const feed = (from: string) => {
    if (!hold) return void stdin.end(from);
    stdin.write(from);
    // Settled whatever the outcome: the process then reads EOF (an exited one's pipe is already gone).
    void settled(endInput).then(() => stdin.end());
  };
  try {
    let rest = input;
    if (gate) {
      const at = `\n${input}`.indexOf(`\n${gate.line}\n`);
      if (at < 0) {
        stdin.end();
        throw new Error(`exec ${p.pid}: the gate line ${JSON.stringify(gate.line)} is not in the input`);
      }
      stdin.write(input.slice(0, at + gate.line.length + 1));
      rest = input.slice(at + gate.line.length + 1);
      if (!(await printed(gate.line))) return await exited;
      gate.reached();
      // Closed: EOF now (held input would wait for calls that wait for this exit).
      if (!(await gate.open)) {
        stdin.end();
        return await exited;
      }
    }
    feed(rest);
    if (doneLine === undefined || !(await printed(doneLine))) return await exited;
    return { code: null, signal: null, stdout: p.stdout, stderr: p.stderr, exiting: exited };
  } finally {
    for (const l of listeners) stdout.off('data', l);
  }
}

/**
 * SIGKILL, then our ends of its pipes closed a little later: a grandchild holding them does not keep the call
 * waiting.
 */
function kill(p: Started): void {
  try {
    // Never 0 or -1: those would signal the whole process group, or every process.
    if (p.pid !== undefined && p.pid > 0) process.kill(p.pid, 'SIGKILL');
  } catch (e) {
    // ESRCH: it exited meanwhile, which is what the kill wanted.
    if (!hasErrno(e, 'ESRCH')) throw e;
  }
  setTimeout(() => {
    for (const s of p.pipes) s.destroy();
  }, 200).unref();
}

/** A spare must not keep the daemon (or a test) running: its pipes are unreferenced while it waits. */
function setRef(p: Started, on: boolean): void {
  for (const s of p.pipes) on ? s.ref() : s.unref();
}

export interface SpareProcessesOptions {
  timeoutMs?: number;
  log?: Logger;
  /** Command lines kept warm at most (the first ones seen); others run cold. */
  maxLines?: number;
}

/**
 * An Exec that keeps one process waiting per command line it has run with
 * input: the next call with the same line feeds that process. Calls without
 * input (iptables-save) run as defaultExec does. close() ends the spares.
 */
export class SpareProcesses {
  readonly exec: Exec;
  /** Calls with input served by a spare / by a process started for them (for tests and logs). */
  readonly stats = { spare: 0, cold: 0 };
  private readonly spares = new Map<string, Started & { gone?: boolean }>();
  private readonly lines = new Map<string, [string, string[]]>();
  private readonly timeoutMs: number;
  private readonly maxLines: number;
  private readonly log?: Logger;
  private closed = false;

  constructor(opts: SpareProcessesOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.maxLines = opts.maxLines ?? 4;
    this.log = opts.log;
    this.exec = (file, args, input, opts) => this.run(file, args, input, opts);
  }

  /** Ends every spare (EOF on its stdin: it exits having done nothing, and is reaped). */
  close(): void {
    this.closed = true;
    for (const p of this.spares.values())
      void p.ready.then(
        () => p.stdin!.end(),
        () => undefined,
      );
    this.spares.clear();
  }

  private async run(
    file: string,
    args: string[],
    input: string | undefined,
    opts?: ExecOptions,
  ): Promise<ExecResult> {
    if (input === undefined || this.closed) return defaultExec(this.timeoutMs)(file, args, input, opts);
    const key = [file, ...args].join('\0');
    let p = this.take(key);
    if (p) this.stats.spare++;
    else {
      this.stats.cold++;
      p = start(file, args);
      if (!this.lines.has(key) && this.lines.size < this.maxLines) this.lines.set(key, [file, args]);
    }
    try {
      return await finish(p, input, this.timeoutMs, opts);
    } finally {
      // After the caller's continuation has run: spawn() holds the event loop for a while.
      if (this.lines.has(key)) setImmediate(() => this.refill(key));
    }
  }

  /** The waiting process for key, if it is still there to take. */
  private take(key: string): Started | undefined {
    const p = this.spares.get(key);
    if (!p) return undefined;
    this.spares.delete(key);
    if (p.gone) return undefined;
    setRef(p, true);
    return p;
  }

  private refill(key: string): void {
    const line = this.lines.get(key);
    if (this.closed || !line || this.spares.has(key)) return;
    const p: Started & { gone?: boolean } = start(line[0], line[1]);
    this.spares.set(key, p);
    p.ready.then(
      () => setRef(p, this.spares.get(key) !== p),
      // Could not start: the next call runs cold and reports why.
      () => {
        p.gone = true;
        if (this.spares.get(key) === p) this.spares.delete(key);
      },
    );
    // One that goes away while waiting is dropped, and logged.
    void p.closed.then(() => {
      p.gone = true;
      if (this.spares.get(key) !== p) return;
      this.spares.delete(key);
      this.log?.warn(
        { command: line[0], code: p.code, signal: p.signal, stderr: p.stderr.slice(0, 200) },
        'spare firewall process exited while waiting',
      );
    });
  }
}
