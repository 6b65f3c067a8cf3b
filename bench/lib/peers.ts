// What every bench case runs the same way, written once: namespaces of our own
// (loopback up, processes left inside killed at cleanup), a cnmd daemon in a
// host netns of its own (Cnmd), and dockerd through the engine test lane's
// launcher (startDockerd). Case-specific peers and probes live beside it:
// peers-ports.ts (TCP servers, sweeps, strace, netavark with ports, iperf3,
// docker-proxy) and peers-dns.ts (aardvark-dns, dnsperf, V8 profiles).
//
// Everything made here lives under a Scratch (bench/lib/host.ts): netns files
// on its tmpfs, processes tracked or naming its root, removed pass or fail.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { native } from '../../native';
import { apiRequest } from '../../src/cli/cnmctl-client';
import { CNMD_NODE_FLAGS } from '../../src/cli/node-flags';
import {
  DockerdProcess,
  dockerCliEnv,
  dockerCliPath,
  ensureEtcDocker,
  missingEngineTools,
  writeBusyboxTar,
} from '../../test/lib/dockerd-launch';
import { Scratch, alive, run as exec, sleep, sleepSync } from './host';
import { KeepAliveClient } from './http-client';

/** This checkout's daemon (dist/src/cli/cnmd.js). */
export const CNMD_JS = path.resolve(__dirname, '..', '..', 'src', 'cli', 'cnmd.js');
export const NETAVARK = '/usr/lib/podman/netavark';
export const CNI_DIR = '/usr/lib/cni';

// ---- namespaces ----

/** Every netns file made through makeNetns: at cleanup, processes still inside one are killed. */
const ourNetns = new Set<string>();

export function netnsInode(p: string): number | undefined {
  try {
    return fs.statSync(p).ino;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Pids (not ours) whose network namespace is one of the given inodes. */
export function pidsInNetns(inodes: Set<number>): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      const m = /^net:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${d}/ns/net`));
      if (m && inodes.has(Number(m[1]))) out.push(Number(d));
    } catch {
      /* exited, or a kernel thread */
    }
  }
  return out;
}

const guarded = new WeakSet<Scratch>();

/** Registers (once per Scratch) the hook that kills every process left in one of our namespaces. */
export function guardNetns(s: Scratch): void {
  if (guarded.has(s)) return;
  guarded.add(s);
  s.onCleanup(() => {
    const inodes = new Set([...ourNetns].map(netnsInode).filter((x): x is number => x !== undefined));
    if (inodes.size === 0) return;
    for (let round = 0; round < 50; round++) {
      const left = pidsInNetns(inodes).filter(alive);
      if (left.length === 0) return;
      for (const p of left) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      sleepSync(50);
    }
  });
}

/** A new netns file (bind mount under the Scratch tmpfs) with loopback up. */
export async function makeNetns(p: string): Promise<string> {
  await native.netnsCreate(p);
  ourNetns.add(p);
  exec(`lo up in ${p}`, 'nsenter', [`--net=${p}`, 'ip', 'link', 'set', 'lo', 'up']);
  return p;
}

/** Counts a netns made elsewhere (a peer's container netns) as ours for the cleanup hook. */
export function ownNetns(p: string): void {
  ourNetns.add(p);
}

export function inNs(
  nsPath: string,
  what: string,
  cmd: string,
  args: string[],
  o: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
) {
  return exec(what, 'nsenter', [`--net=${nsPath}`, cmd, ...args], o);
}

export function commOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

// ---- cnmd ----

export interface CnmdOptions {
  /** The daemon's script: this checkout's build unless given (attach-ab runs a baseline's too). */
  script?: string;
  /** The netns to run in; a new one (loopback up) under the tag's run directory unless given. */
  hostNs?: string;
  /** Runs in the new host netns before the daemon starts (an uplink, a LAN parent). */
  prepare?: (hostNs: string) => Promise<void>;
  /** --log-level: debug (default) logs each API request's server-side time, which serverMs reads. */
  logLevel?: 'debug' | 'info' | 'warn';
  /** Node flags before the script (e.g. --cpu-prof), after cnmd's own (CNMD_NODE_FLAGS). */
  nodeArgs?: string[];
  /** Daemon flags after the standard ones (--data-root, --exec-root, -H, --plugin-dir, --log-level). */
  args?: string[];
  /** The text of a private --resolv-conf (else the daemon reads the host's). */
  resolvConf?: string;
  /**
   * The API client of request()/ok(): 'bench' is one kept-alive connection
   * (bench/lib/http-client.ts, as the docker CLI keeps one), 'cnmctl' node's
   * http client (cnmctl's: 0.4-0.8 ms more per request here, bench/README.md).
   */
  client: 'bench' | 'cnmctl';
  /** Resolve once the netns pool is full (needs logLevel debug): measured as a daemon runs on a host. */
  waitPoolFull?: boolean;
  /** The data-root on the tmpfs too (a cluster of daemons); by default on disk, as on a host. */
  dataOnTmpfs?: boolean;
  /** How long the daemon has to answer /_ping (20 s). */
  readyMs?: number;
  /** Where its log goes (default <s.root>/<tag>/cnmd.log, removed with the Scratch). */
  logFile?: string;
}

/**
 * A cnmd daemon run as the tests run it: `nsenter --net=<host netns> node
 * CNMD_NODE_FLAGS cnmd.js --data-root D --exec-root E -H unix://S --plugin-dir P
 * --log-level L`, its exec-root and socket on the Scratch tmpfs (a production
 * /run is a tmpfs). Its log (stdout and stderr) goes to a file, as a daemon's
 * log does on a host: piped into the bench instead, every line (three per
 * attach at debug) woke the very process measuring, mid-request (attach
 * medians 0.2-0.6 ms higher).
 */
export class Cnmd {
  readonly proc: ChildProcess;
  readonly hostUri: string;
  readonly hostNs: string;
  readonly execRoot: string;
  readonly pluginDir: string;
  readonly logFile: string;
  private readonly exited: Promise<number | null>;
  private readonly client?: KeepAliveClient;

  private constructor(
    proc: ChildProcess,
    paths: { sock: string; hostNs: string; execRoot: string; pluginDir: string; logFile: string },
    client: CnmdOptions['client'],
  ) {
    this.proc = proc;
    this.hostUri = `unix://${paths.sock}`;
    this.hostNs = paths.hostNs;
    this.execRoot = paths.execRoot;
    this.pluginDir = paths.pluginDir;
    this.logFile = paths.logFile;
    if (client === 'bench') this.client = new KeepAliveClient(paths.sock);
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  /** Starts a daemon; its disk files under <s.root>/<tag>, its run files under <s.run>/<tag>. */
  static async start(s: Scratch, tag: string, o: CnmdOptions): Promise<Cnmd> {
    const script = o.script ?? CNMD_JS;
    if (!fs.existsSync(script)) throw new Error(`${script} is missing: build first (npm run build)`);
    const logLevel = o.logLevel ?? 'debug';
    if (o.waitPoolFull && logLevel !== 'debug')
      throw new Error('Cnmd.start: waitPoolFull needs logLevel debug');
    guardNetns(s);
    const disk = path.join(s.root, tag);
    const rt = path.join(s.run, tag);
    fs.mkdirSync(disk, { recursive: true });
    fs.mkdirSync(rt, { recursive: true });
    const hostNs = o.hostNs ?? (await makeNetns(path.join(rt, 'host-netns')));
    if (o.prepare) await o.prepare(hostNs);
    const sock = path.join(rt, 'cnmd.sock');
    const execRoot = path.join(rt, 'exec');
    const pluginDir = path.join(rt, 'plugins');
    const resolv: string[] = [];
    if (o.resolvConf !== undefined) {
      fs.writeFileSync(path.join(disk, 'resolv.conf'), o.resolvConf);
      resolv.push('--resolv-conf', path.join(disk, 'resolv.conf'));
    }
    const args = [
      `--net=${hostNs}`,
      process.execPath,
      ...CNMD_NODE_FLAGS,
      ...(o.nodeArgs ?? []),
      script,
      '--data-root',
      path.join(o.dataOnTmpfs ? rt : disk, 'data'),
      '--exec-root',
      execRoot,
      '-H',
      `unix://${sock}`,
      '--plugin-dir',
      pluginDir,
      ...resolv,
      '--log-level',
      logLevel,
      ...(o.args ?? []),
    ];
    const logFile = o.logFile ?? path.join(disk, 'cnmd.log');
    const logFd = fs.openSync(logFile, 'a');
    let proc: ChildProcess;
    try {
      // nsenter setns()es and execs node: the child's pid is the daemon's.
      proc = spawn('nsenter', args, { stdio: ['ignore', logFd, logFd] });
    } finally {
      fs.closeSync(logFd);
    }
    s.trackPid(proc.pid);
    const d = new Cnmd(proc, { sock, hostNs, execRoot, pluginDir, logFile }, o.client);
    const readyMs = o.readyMs ?? 20_000;
    const deadline = Date.now() + readyMs;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new Error(
          `cnmd exited (${proc.exitCode ?? proc.signalCode}) before answering:\n${d.logs().slice(-3000)}`,
        );
      try {
        if ((await apiRequest(d.hostUri, 'GET', '/_ping')).status === 200) break;
      } catch {
        /* not up yet */
      }
      if (Date.now() > deadline)
        throw new Error(`cnmd did not answer /_ping within ${readyMs / 1000} s:\n${d.logs().slice(-3000)}`);
      await sleep(50);
    }
    const comm = commOf(proc.pid!);
    if (!/node|MainThread/i.test(comm))
      throw new Error(`cnmd pid ${proc.pid} is "${comm}", not node: would measure the wrong process`);
    if (o.waitPoolFull) await d.waitPoolFull(0, Math.max(1000, deadline - Date.now()));
    return d;
  }

  get pid(): number {
    return this.proc.pid!;
  }

  request(method: string, p: string, body?: unknown): Promise<{ status: number; body: any }> {
    return this.client ? this.client.request(method, p, body) : this.requestNodeHttp(method, p, body);
  }

  /** The same request through node's http client (cnmctl's), whichever client the daemon was started with. */
  requestNodeHttp(method: string, p: string, body?: unknown): Promise<{ status: number; body: any }> {
    return apiRequest(this.hostUri, method, p, body);
  }

  async ok(method: string, p: string, want: number, body?: unknown): Promise<any> {
    const r = await this.request(method, p, body);
    if (r.status !== want)
      throw new Error(`cnmd ${method} ${p}: status ${r.status}, want ${want}: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** The log from byte `from` (to `to`, else its end): only that part is read. */
  private read(from = 0, to?: number): string {
    const fd = fs.openSync(this.logFile, 'r');
    try {
      const b = Buffer.alloc(Math.max(0, (to ?? fs.fstatSync(fd).size) - from));
      const n = fs.readSync(fd, b, 0, b.length, from);
      return b.subarray(0, n).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  }

  /** The whole log. */
  logs(): string {
    return this.read();
  }

  /** Length of the log so far (bytes): pass to the readers below to read only later lines. */
  mark(): number {
    return fs.statSync(this.logFile).size;
  }

  /** The JSON log lines between two marks. */
  lines(since: number, until?: number): Record<string, any>[] {
    const out: Record<string, any>[] = [];
    for (const l of this.read(since, until).split('\n')) {
      if (!l.startsWith('{')) continue;
      try {
        out.push(JSON.parse(l));
      } catch {
        /* a line still being written */
      }
    }
    return out;
  }

  /** Server-side duration of the API requests logged since mark (debug "api" lines), in order. */
  async serverMs(
    since: number,
    method: string,
    match: (url: string) => boolean,
    want: number,
  ): Promise<number[]> {
    let got: number[] = [];
    for (let i = 0; i < 40; i++) {
      got = this.lines(since)
        .filter(
          (j) =>
            j.msg === 'api' &&
            j.method === method &&
            typeof j.url === 'string' &&
            match(j.url) &&
            typeof j.ms === 'number',
        )
        .map((j) => j.ms as number);
      if (got.length >= want) break;
      await sleep(25); // the line is written after the response went out
    }
    return got;
  }

  /** iptables-restore batches logged between two marks (ms each). */
  firewallMs(since: number, until = this.mark()): number[] {
    return this.lines(since, until)
      .filter((j) => j.msg === 'firewall batch applied' && typeof j.ms === 'number')
      .map((j) => j.ms as number);
  }

  /** Waits until the daemon logged (after mark `since`) that its netns pool is full: it fills when idle. */
  async waitPoolFull(since: number, ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.read(since).includes('"netns pool full"')) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null)
        throw new Error(`cnmd exited while filling its netns pool:\n${this.logs().slice(-3000)}`);
      if (Date.now() > deadline)
        throw new Error(
          `cnmd did not fill its netns pool within ${ms / 1000} s:\n${this.logs().slice(-3000)}`,
        );
      await sleep(50);
    }
  }

  /** SIGTERM (the daemon exits cleanly: a --cpu-prof profile is written), SIGKILL after 15 s. */
  async stop(): Promise<void> {
    this.client?.close();
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(t);
  }
}

// ---- docker (the engine test lane's launcher, test/lib/dockerd-launch.ts) ----

export interface Capped {
  ms: number;
  status: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  /** Why it was killed (timeout, watchdog), if it was. */
  aborted?: string;
}

export interface Dockerd {
  version: string;
  pid: number;
  hostNs: string;
  cli(what: string, args: string[], timeoutMs?: number): { ms: number; stdout: string; stderr: string };
  /**
   * The CLI without throwing, capped by a timeout, with a watchdog polled every
   * 500 ms (returns a reason to abort: the CLI is killed): status, time, output.
   */
  cliCapped(args: string[], timeoutMs: number, watchdog?: () => string | undefined): Promise<Capped>;
  image: string;
  tail(): string;
  stop(): Promise<void>;
}

/** docker-proxy's path, or undefined. */
export function dockerProxyPath(): string | undefined {
  for (const p of [
    '/usr/bin/docker-proxy',
    '/usr/sbin/docker-proxy',
    '/usr/libexec/docker/docker-proxy',
    '/usr/libexec/docker/cli-plugins/docker-proxy',
  ]) {
    if (fs.existsSync(p)) return p;
  }
  const r = spawnSync('sh', ['-c', 'command -v docker-proxy'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() || undefined : undefined;
}

/**
 * dockerd (starting its own containerd) through the launcher the engine test
 * lane uses (test/lib/dockerd-launch.ts): a private mount namespace with a
 * tmpfs over /run and a private /etc/docker, private roots and cgroup parent;
 * a busybox image imported from busybox-static. The host netns is a new one
 * (prepare() runs there first) unless opts.hostNs names one, e.g. a cnmd
 * daemon's; opts.pluginDir is bind-mounted onto /run/docker/plugins in the
 * engine's mount namespace. Returns a reason when docker cannot run here.
 */
export async function startDockerd(
  s: Scratch,
  tag: string,
  prepare?: (hostNs: string) => Promise<void>,
  opts: {
    hostNs?: string;
    pluginDir?: string;
    config?: Record<string, unknown>;
    privateSysfs?: boolean;
  } = {},
): Promise<{ ok: true; d: Dockerd } | { ok: false; reason: string }> {
  const missing = missingEngineTools();
  if (missing.length) return { ok: false, reason: `not installed: ${missing.join(', ')}` };
  guardNetns(s);
  const cli = dockerCliPath()!;
  const disk = path.join(s.root, tag);
  const rt = path.join(s.run, tag);
  fs.mkdirSync(disk);
  fs.mkdirSync(rt);
  const hostNs = opts.hostNs ?? (await makeNetns(path.join(rt, 'host-netns')));
  if (prepare) await prepare(hostNs);
  const cgroup = `/cnmdbench-${process.pid}-${tag}`;
  s.trackCgroup(cgroup);
  if (ensureEtcDocker().created)
    s.onCleanup(() => fs.rmSync('/etc/docker', { recursive: true, force: true }));
  const dp = DockerdProcess.spawn({
    disk,
    run: rt,
    hostNs,
    cgroupParent: cgroup,
    pluginDir: opts.pluginDir,
    logLevel: 'warn',
    config: opts.config,
    privateSysfs: opts.privateSysfs,
  });
  s.trackPid(dp.pid);
  // Registered after the /etc/docker hook: hooks run in reverse, so the engine is gone before its mount point is.
  s.onCleanup(() => {
    for (const n of dp.reap()) console.log(`  ${tag} cleanup: ${n}`);
  });
  const tail = () => dp.tail(6, ' | ');
  const env = dockerCliEnv(dp.paths.cliConfig);
  const run1 = (what: string, args: string[], timeoutMs = 60_000) =>
    exec(`docker ${what}`, cli, ['-H', dp.paths.host, ...args], { timeoutMs, env });
  const stop = () => dp.stop(60_000);
  try {
    await dp.waitReady(40_000);
  } catch (e) {
    return { ok: false, reason: (e as Error).message.replace(/\n/g, ' | ') };
  }
  let version = '';
  try {
    version = run1('version', ['version', '--format', '{{.Server.Version}}'], 10_000).stdout.trim();
  } catch (e) {
    await stop();
    return {
      ok: false,
      reason: `the docker CLI cannot talk to dockerd: ${(e as Error).message.slice(0, 600)}; dockerd: ${tail()}`,
    };
  }
  const image = 'cnmdbench-busybox:1';
  try {
    run1('import', ['import', writeBusyboxTar(path.join(disk, 'image')), image]);
  } catch (e) {
    await stop();
    return {
      ok: false,
      reason: `docker could not import the busybox image: ${(e as Error).message.slice(0, 600)}; dockerd: ${tail()}`,
    };
  }
  return {
    ok: true,
    d: {
      version,
      pid: dp.pid,
      hostNs,
      image,
      cli: run1,
      cliCapped(args, timeoutMs, watchdog) {
        return new Promise((resolve) => {
          const t0 = performance.now();
          const child = spawn(cli, ['-H', dp.paths.host, ...args], {
            stdio: ['ignore', 'pipe', 'pipe'],
            env,
          });
          s.trackPid(child.pid);
          let out = '';
          let why: string | undefined;
          child.stdout!.on('data', (d) => (out += d));
          child.stderr!.on('data', (d) => (out += d));
          const timer = setTimeout(() => {
            why = `timed out after ${timeoutMs / 1000} s`;
            child.kill('SIGKILL');
          }, timeoutMs);
          const dog = setInterval(() => {
            const w = watchdog?.();
            if (w && !why) {
              why = w;
              child.kill('SIGKILL');
            }
          }, 500);
          child.once('exit', (status, signal) => {
            clearTimeout(timer);
            clearInterval(dog);
            resolve({ ms: performance.now() - t0, status, signal, out: out.trim(), aborted: why });
          });
        });
      },
      tail,
      stop,
    },
  };
}

/** Pids of the docker-proxy processes running in a netns (by its inode). */
export function dockerProxies(hostNs: string): number[] {
  const ino = netnsInode(hostNs);
  if (ino === undefined) return [];
  return pidsInNetns(new Set([ino])).filter((p) => commOf(p) === 'docker-proxy');
}
