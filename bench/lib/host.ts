// Helpers for bench cases that run daemons and plugins in namespaces of their
// own: a scratch root with a tmpfs, processes timed, `ip -j` checks inside a
// netns, and a synchronous cleanup that also works from a signal handler.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { native } from '../../native';
import { cgroupHierarchies } from '../../test/lib/dockerd-launch';

export function intEnv(key: string, def: number, min: number, max: number): number {
  const raw = process.env[key];
  if (raw === undefined || raw === '') return def;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max)
    throw new Error(`${key}=${raw}: want an integer in ${min}..${max}`);
  return v;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Blocks the thread (for cleanup from a signal handler, where nothing async runs). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * A fixed single-thread CPU workload (JSON, Map, Buffer) timed in this process:
 * the median of 5 rounds, in ms; lower is a faster machine. On a shared VM the
 * same work takes up to ~1.8x longer from one minute to the next; cases record
 * it next to their timings as one indication of the machine's state (it does
 * not exercise the kernel or cross-CPU wake-ups, which move an attach too).
 */
export function cpuProbeMs(): number {
  const rounds: number[] = [];
  let sink = 0;
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < 20_000; i++) {
      const o = JSON.parse(JSON.stringify({ a: i, b: 'abcdefghijklmnopqrst', c: [1, 2, 3] })) as {
        a: number;
      };
      const m = new Map([[i, o]]);
      sink += m.get(i)!.a + Buffer.from('abcdef').readUInt16LE(i % 4);
    }
    rounds.push(performance.now() - t0);
  }
  // The sum is used, so the loop cannot be optimized away.
  if (sink < 0) throw new Error('unreachable');
  return median(rounds);
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export function commandExists(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

export function debInstalled(pkg: string): boolean {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && /install ok installed/.test(r.stdout);
}

/**
 * apt-get installs the Debian packages that are missing. Packages whose
 * maintainer scripts would start a service (docker.io, containerd) are
 * installed with a policy-rc.d that forbids it (written only when the host has
 * none, removed afterwards): a bench must never start a daemon in the machine's
 * own netns. Returns an error message, or undefined when all is installed.
 */
export function ensureDebPackages(pkgs: string[]): string | undefined {
  const missing = pkgs.filter((p) => !debInstalled(p));
  if (missing.length === 0) return undefined;
  if (process.env.BENCH_NO_INSTALL === '1')
    return `missing Debian packages ${missing.join(' ')} (BENCH_NO_INSTALL=1)`;
  const policy = '/usr/sbin/policy-rc.d';
  let wrotePolicy = false;
  try {
    if (!fs.existsSync(policy)) {
      fs.writeFileSync(
        policy,
        '#!/bin/sh\n# written by cnmd bench while installing packages; removed right after\nexit 101\n',
        { mode: 0o755 },
      );
      wrotePolicy = true;
    }
    console.log(`  installing Debian packages: ${missing.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    for (const args of [
      ['update', '-qq'],
      ['install', '-y', '-qq', '--no-install-recommends', ...missing],
    ]) {
      const r = spawnSync('apt-get', args, { env, encoding: 'utf8', timeout: 600_000 });
      if (r.status !== 0)
        return `apt-get ${args[0]} failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout || String(r.error)).trim().split('\n').slice(-3).join(' | ')}`;
    }
  } finally {
    if (wrotePolicy) fs.rmSync(policy, { force: true });
  }
  const still = missing.filter((p) => !debInstalled(p));
  return still.length ? `still missing after apt-get install: ${still.join(' ')}` : undefined;
}

export interface Ran {
  ms: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion; ms is spawn to exit. Non-zero exit throws with the tail of its output. */
export function run(
  what: string,
  cmd: string,
  args: string[],
  o: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Ran {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, {
    input: o.input,
    env: o.env,
    encoding: 'utf8',
    timeout: o.timeoutMs ?? 60_000,
    killSignal: 'SIGKILL',
    maxBuffer: 32 << 20,
  });
  const ms = performance.now() - t0;
  if (r.error) throw new Error(`${what}: ${r.error.message}`);
  if (r.status !== 0)
    throw new Error(
      `${what}: exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout || '').trim().slice(-1200)}`,
    );
  return { ms, stdout: r.stdout, stderr: r.stderr };
}

// ---- inside a netns ----

export interface IpLink {
  ifname: string;
  flags?: string[];
  operstate?: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
  linkinfo?: { info_kind?: string };
}

export function ipj<T = IpLink[]>(nsPath: string, ...args: string[]): T {
  const out = execFileSync('nsenter', [`--net=${nsPath}`, 'ip', '-j', ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return JSON.parse(out.trim() === '' ? '[]' : out) as T;
}

export function vethCount(nsPath: string): number {
  return ipj(nsPath, 'link', 'show', 'type', 'veth').length;
}

/** Throws unless the netns has an UP interface (named ifname, when given) holding cidr, and returns its name. */
export function checkAddress(where: string, nsPath: string, cidr: string, ifname?: string): string {
  const [ip, len] = cidr.split('/');
  const links = ipj(nsPath, 'addr', 'show');
  const l = links.find((x) =>
    x.addr_info?.some((a) => a.family === 'inet' && a.local === ip && a.prefixlen === Number(len)),
  );
  if (!l)
    throw new Error(
      `verify ${where}: no interface holds ${cidr} (have ${links.map((x) => `${x.ifname}:${(x.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`).join(',')}`).join(' ')})`,
    );
  if (ifname && l.ifname !== ifname)
    throw new Error(`verify ${where}: ${cidr} is on ${l.ifname}, want ${ifname}`);
  if (!l.flags?.includes('UP'))
    throw new Error(`verify ${where}: ${l.ifname} is not UP (flags ${l.flags?.join(',')})`);
  return l.ifname;
}

export function checkNoAddressIn(where: string, nsPath: string, prefix: string): void {
  const links = ipj(nsPath, 'addr', 'show');
  const hit = links.find((x) => x.addr_info?.some((a) => a.family === 'inet' && a.local.startsWith(prefix)));
  if (hit) throw new Error(`verify ${where}: ${hit.ifname} still holds an address in ${prefix}*`);
}

/** One ping from inside the netns (2 s timeout); throws when it is not answered. */
export function checkPing(where: string, nsPath: string, ip: string): void {
  const r = spawnSync('nsenter', [`--net=${nsPath}`, 'ping', '-c', '1', '-W', '2', ip], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (r.status !== 0)
    throw new Error(
      `verify ${where}: ping ${ip} from the container netns failed: ${(r.stdout + r.stderr).trim().split('\n').slice(-2).join(' | ')}`,
    );
}

export async function eventually<T>(fn: () => T | Promise<T>, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(50);
    }
  }
}

// ---- memory ----

/** VmRSS and VmHWM of a process, in kB. */
export function memKb(pid: number): { rss: number; hwm: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string) => {
    const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s);
    if (!m) throw new Error(`/proc/${pid}/status has no ${k}`);
    return Number(m[1]);
  };
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

// ---- the scratch root ----

const TMPFS_MAGIC = 0x01021994;

export function isTmpfs(dir: string): boolean {
  try {
    return fs.statfsSync(dir).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}

/** Mount points at or under dir, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp && (mp === dir || mp.startsWith(dir + '/'))) out.push(mp.replace(/\\040/g, ' '));
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Pids (not ours) whose command line mentions s. */
export function pidsMentioning(s: string): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(s)) out.push(Number(d));
    } catch {
      /* exited */
    }
  }
  return out;
}

/** True while pid runs (a zombie, killed but not yet reaped by its parent, counts as gone). */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /s.test(stat);
  } catch {
    return false;
  }
}

/**
 * A scratch directory on disk (os.tmpdir()) with a tmpfs mounted at <root>/run,
 * as /run is on a production host. Everything it made is removed by cleanup():
 * processes that mention the root on their command line (and extra pids and
 * cgroups registered), netns mounts and the tmpfs, then the directory.
 */
/**
 * Runs fn on SIGINT/SIGTERM, then dies of the same signal (a bench interrupted
 * by hand still removes its namespaces, mounts and processes). Returns the undo.
 */
export function cleanupOnSignals(fn: () => void): () => void {
  const onSignal = (sig: NodeJS.Signals) => {
    try {
      fn();
    } finally {
      process.kill(process.pid, sig);
    }
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return () => {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  };
}

export class Scratch {
  readonly root: string;
  readonly run: string;
  private readonly pids = new Set<number>();
  private readonly cgroups = new Set<string>();
  private readonly hooks: (() => void)[] = [];
  private cleaned = false;

  constructor(prefix: string) {
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    this.run = path.join(this.root, 'run');
    fs.mkdirSync(this.run);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'mode=0755,size=1g', 'cnmdbench', this.run], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      fs.rmSync(this.root, { recursive: true, force: true });
      throw new Error(`mount a tmpfs at ${this.run}: ${(e as Error).message}`);
    }
  }

  trackPid(pid: number | undefined): void {
    if (pid) this.pids.add(pid);
  }

  /** A cgroup (v1) name under every hierarchy of /sys/fs/cgroup, removed (and its processes killed) at cleanup. */
  trackCgroup(name: string): void {
    this.cgroups.add(name);
  }

  /** Runs (synchronously) before the generic cleanup. */
  onCleanup(fn: () => void): void {
    this.hooks.push(fn);
  }

  /** Idempotent, synchronous; returns what it had to clean up by force (for the log). */
  cleanup(): string[] {
    if (this.cleaned) return [];
    this.cleaned = true;
    const notes: string[] = [];
    for (const fn of this.hooks.reverse()) {
      try {
        fn();
      } catch (e) {
        notes.push(`cleanup hook: ${(e as Error).message}`);
      }
    }
    // Processes: the tracked ones, those in our cgroups, anything naming our root.
    const cgroupPids = () => {
      const out: number[] = [];
      for (const cg of this.cgroups) {
        const walk = (d: string) => {
          let ents: fs.Dirent[] = [];
          try {
            ents = fs.readdirSync(d, { withFileTypes: true });
          } catch {
            return;
          }
          try {
            for (const l of fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n'))
              if (l) out.push(Number(l));
          } catch {
            /* none */
          }
          for (const e of ents) if (e.isDirectory()) walk(path.join(d, e.name));
        };
        for (const h of cgroupHierarchies()) walk(path.join(h, cg));
      }
      return out;
    };
    const victims = () =>
      [...new Set([...this.pids, ...pidsMentioning(this.root), ...cgroupPids()])].filter(
        (p) => p !== process.pid && alive(p),
      );
    let left = victims();
    if (left.length) notes.push(`killed leftover processes ${left.join(' ')}`);
    for (let round = 0; left.length && round < 100; round++) {
      for (const p of left) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      sleepSync(50);
      left = victims();
    }
    if (left.length) notes.push(`processes still alive: ${left.join(' ')}`);
    for (const cg of this.cgroups) {
      for (const h of cgroupHierarchies()) {
        const top = path.join(h, cg);
        if (!fs.existsSync(top)) continue;
        const dirs: string[] = [];
        const walk = (d: string) => {
          dirs.push(d);
          for (const e of fs.readdirSync(d, { withFileTypes: true }))
            if (e.isDirectory()) walk(path.join(d, e.name));
        };
        try {
          walk(top);
          for (const d of dirs.reverse()) fs.rmdirSync(d);
        } catch (e) {
          notes.push(`cgroup ${top}: ${(e as Error).message}`);
        }
      }
    }
    // Mounts: netns bind mounts first (deepest first), then the tmpfs.
    for (const mp of mountsUnder(this.root)) {
      try {
        if (native.isNetns(mp)) native.netnsDelete(mp);
        else execFileSync('umount', ['-l', mp], { stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (e) {
        notes.push(`unmount ${mp}: ${(e as Error).message}`);
      }
    }
    const still = mountsUnder(this.root);
    if (still.length) notes.push(`mounts left: ${still.join(' ')}`);
    else fs.rmSync(this.root, { recursive: true, force: true });
    return notes;
  }
}
