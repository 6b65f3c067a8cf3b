// What the overlay convergence measures, the same for cnmd and for Docker
// swarm (bench/lib/overlay-convergence.ts, bench/lib/swarm-peer.ts):
//  - NeighMonitor: `ip -ts monitor neigh` in host A's overlay netns. The
//    kernel sends each neighbour change to the monitor's socket; ip stamps it
//    (gettimeofday, microseconds) when it reads it. Event-driven: the monitor
//    sleeps in recv between changes, so 20 daemons on 2 cores are not
//    competing with an observer polling every millisecond.
//  - readyPinger: A's prober pings the new address (`ping -D`, stamped
//    replies) once the entry is there, so ARP is answered from A's static
//    entry; nsenter and a shell are forked ahead, only ping's exec is left.
//  - cpuMs: a process's CPU time (utime + stime) from /proc/<pid>/stat.
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { ChildProcess, spawn } from 'node:child_process';

export const now = (): number => performance.timeOrigin + performance.now();

/** One neighbour change as `ip -ts monitor neigh` printed it. */
export interface NeighEvent {
  /** Epoch ms (ip's own stamp). */
  t: number;
  ip: string;
  dev: string;
  deleted: boolean;
  lladdr?: string;
}

// [2026-12-06T15:10:00.123456]Deleted 10.200.0.5 dev vx-001000 lladdr 02:42:0a:c8:00:05 PERMANENT
const LINE = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{6})\]\s*(Deleted )?(\S+) dev (\S+)(?: lladdr (\S+))?/;

export function parseNeighLine(line: string): NeighEvent | undefined {
  const m = LINE.exec(line);
  if (!m) return undefined;
  // The monitor runs with TZ=UTC: the stamp is UTC.
  const t = Date.parse(`${m[1]}Z`) + Number(m[2]) / 1000;
  return { t, ip: m[4], dev: m[5], deleted: !!m[3], lladdr: m[6] };
}

/**
 * `ip -4 -ts monitor neigh` in a netns (entered with `nsenterArgs`, e.g.
 * `['--net=/path']`), keeping every event for the device; waiters resolve on
 * the first add/delete of an address seen after they were registered (or
 * already recorded since `since`).
 */
export class NeighMonitor {
  private readonly proc: ChildProcess;
  private readonly events: NeighEvent[] = [];
  private readonly waiters: { ip: string; deleted: boolean; since: number; done(e: NeighEvent): void }[] = [];
  readonly ready: Promise<void>;
  private readyFired = false;
  private onReady?: () => void;
  private stderr = '';

  constructor(
    private readonly nsenterArgs: string[],
    private readonly dev: string | RegExp,
    track: (pid: number | undefined) => void,
  ) {
    this.proc = spawn('nsenter', [...nsenterArgs, 'ip', '-4', '-ts', 'monitor', 'neigh'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TZ: 'UTC' },
    });
    track(this.proc.pid);
    this.ready = new Promise((r) => (this.onReady = r));
    this.proc.stderr!.on('data', (d) => (this.stderr += d));
    const rl = readline.createInterface({ input: this.proc.stdout! });
    rl.on('line', (l) => this.line(l));
  }

  /**
   * Resolves once the monitor is listening: a marker neighbour entry on a
   * veth pair made for the purpose in the same netns (removed afterwards)
   * shows up. The pair is named cvmk0/cvmk1 and never touches the overlay's
   * own devices.
   */
  async start(): Promise<void> {
    const sh = (script: string) =>
      new Promise<void>((resolve) => {
        const p = spawn('nsenter', [...this.nsenterArgs, 'sh', '-c', script], { stdio: 'ignore' });
        p.once('close', () => resolve());
        p.once('error', () => resolve());
      });
    await sh('ip link add cvmk0 type veth peer name cvmk1 && ip link set cvmk0 up');
    try {
      for (let i = 1; i <= 50 && !this.readyFired; i++) {
        if (this.proc.exitCode !== null) break;
        await sh(`ip neigh replace 169.254.77.${i} lladdr 02:00:00:00:4d:01 dev cvmk0 nud permanent`);
        await Promise.race([this.ready, new Promise((r) => setTimeout(r, 100))]);
      }
    } finally {
      await sh('ip link del cvmk0');
    }
    if (!this.readyFired)
      throw new Error(
        `ip monitor neigh did not start listening${this.stderr ? `: ${this.stderr.trim()}` : ''}`,
      );
  }

  private line(l: string): void {
    const e = parseNeighLine(l);
    if (!e) return;
    if (!this.readyFired) {
      this.readyFired = true;
      this.onReady?.();
    }
    if (typeof this.dev === 'string' ? e.dev !== this.dev : !this.dev.test(e.dev)) return;
    this.events.push(e);
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i];
      if (w.ip === e.ip && w.deleted === e.deleted && e.t >= w.since) {
        this.waiters.splice(i, 1);
        w.done(e);
      }
    }
  }

  /** The first change of `ip` (an add, or with deleted a removal) stamped at or after `since` (epoch ms). */
  wait(ip: string, deleted: boolean, since: number, timeoutMs: number): Promise<NeighEvent> {
    const had = this.events.find((e) => e.ip === ip && e.deleted === deleted && e.t >= since);
    if (had) return Promise.resolve(had);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const i = this.waiters.findIndex((w) => w.done === done);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(
          new Error(
            `neighbour ${deleted ? 'removal' : 'entry'} for ${ip} on ${this.dev} not seen within ${timeoutMs} ms` +
              (this.stderr ? ` (monitor: ${this.stderr.trim()})` : ''),
          ),
        );
      }, timeoutMs);
      const done = (e: NeighEvent) => {
        clearTimeout(t);
        resolve(e);
      };
      this.waiters.push({ ip, deleted, since, done });
    });
  }

  /** Forgets recorded events (they only grow otherwise). */
  trim(): void {
    this.events.length = 0;
  }

  stop(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/**
 * A pinger made ready in the netns (nsenter args) ahead of time: nsenter and
 * a shell are forked and waiting, so fire(ip) costs only the exec of ping.
 * fire resolves with the epoch ms of the first echo reply `ping -D` got, or
 * rejects. One fire per pinger.
 */
export function readyPinger(
  nsenterArgs: string[],
  track: (pid?: number) => void,
): { fire(ip: string): Promise<number>; cancel(): void } {
  const p = spawn(
    'nsenter',
    [...nsenterArgs, 'sh', '-c', 'read ip && exec ping -D -n -c1 -w2 -i0.002 "$ip"'],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  track(p.pid);
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  p.stdin!.on('error', () => undefined);
  const done = new Promise<string>((resolve, reject) => {
    p.once('error', reject);
    p.once('close', () => resolve(out));
  });
  return {
    fire(ip: string) {
      p.stdin!.end(`${ip}\n`);
      return done.then((o) => {
        const m = /^\[(\d+\.\d+)\] \d+ bytes from/m.exec(o);
        if (m) return Number(m[1]) * 1000;
        throw new Error(`no echo reply from ${ip}:\n${o}`);
      });
    },
    cancel() {
      if (p.exitCode === null) p.kill('SIGKILL');
    },
  };
}

/** CPU time (user + system) of a process so far, in ms; 0 once it is gone. */
export function cpuMs(pid: number): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return 0;
  }
}

const CLK_TCK = 100;

/** VmRSS of a process in MB. */
export function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`/proc/${pid}/status has no VmRSS`);
  return Number(m[1]) / 1024;
}

export const round2 = (x: number): number => Number(x.toFixed(2));
