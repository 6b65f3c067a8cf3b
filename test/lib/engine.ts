// The engine lane's Docker engine: Debian's dockerd started by the test in a
// "host" netns the test owns (the one its cnmd daemon runs in, so the plugin's
// veths are where the engine looks for them), in a private mount namespace
// where the cnmd daemon's plugin dir is /run/docker/plugins, with a busybox
// image imported locally (no registry). Launch details and why:
// test/lib/dockerd-launch.ts. Everything goes with the lab, pass or fail.
//
//   const l = await lab(t);
//   const d = await startDaemon(t, l);                       // cnmd, in its host netns
//   const e = await startEngine(t, l, { hostNs: d.host, pluginDir: d.pluginDir });
//   await e.docker(['network', 'create', '-d', 'cnmd-bridge', '--ipam-driver', 'cnmd-ipam', '--subnet', '10.90.0.0/24', 'n1']);
//   await e.runDetached('c1', { network: 'n1' });
//   await e.exec('c1', ['ping', '-c1', '-W2', 'c2']);
//
// Start cnmd before the engine: lab cleanup runs in reverse order, so the
// engine stops (and releases its endpoints through the plugin) while cnmd still
// answers. busybox's `wget -T` crashes (busybox-static 1.35): wrap wget in
// `timeout` instead.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import type { Lab, Ns } from './fixture';
import type { RunningDaemon } from './daemon';
import {
  DockerResult,
  DockerdPaths,
  DockerdProcess,
  DockerdSpec,
  cgroupDirs,
  cgroupPids,
  dockerAsync,
  dockerdPaths,
  dockerCliPath,
  enginePids,
  ensureEtcDocker,
  missingEngineTools,
  pidAlive,
  readLog,
  reapEngine,
  writeBusyboxTar,
  unshareNetnsDir,
} from './dockerd-launch';

export type { DockerResult } from './dockerd-launch';

export interface EngineOptions {
  /** The netns dockerd runs in: the cnmd daemon's host netns when the test uses cnmd's plugins. */
  hostNs: Ns;
  /** cnmd's --plugin-dir (RunningDaemon.pluginDir): the engine sees it as /run/docker/plugins. Default: an empty private dir. */
  pluginDir?: string;
  /** Names the engine's directory and cgroup (for reading logs and ps). */
  tag?: string;
  /** docker0's address (--bip), e.g. "172.30.0.1/16". Default: dockerd picks a free pool. */
  bip?: string;
  /** daemon.json contents. */
  config?: Record<string, unknown>;
  /** More dockerd flags. */
  args?: string[];
  /** dockerd --log-level (info). */
  logLevel?: string;
  /** Containers' netns files (SandboxKey) visible to cnmd, as beside a dockerd in the machine's mount namespace. */
  shareNetns?: boolean;
  /** How long to wait for the API to answer, per start (60 s). */
  startTimeoutMs?: number;
  /** containerd started before dockerd, not by it (DockerdSpec.ownContainerd: the kernel lane's VM). */
  ownContainerd?: boolean;
}

export interface DockerOpts {
  /** Resolve with the result instead of throwing on a non-zero exit. */
  allowFail?: boolean;
  /** Kill the CLI after this long (120 s). */
  timeoutMs?: number;
  /** The CLI's stdin. */
  input?: string;
}

export interface RunOpts {
  /** --network */
  network?: string;
  /** More `docker run` flags, before the image. */
  args?: string[];
  timeoutMs?: number;
}

/** What an engine leaves behind if cleanup fails: see engineLeftovers(). */
export interface EngineFootprint {
  base: string;
  cgroupParent: string;
  /** Inodes of every mount namespace a dockerd of this engine ran in. */
  mntNs: number[];
  /** Every engine process seen (dockerd, containerd, shims, container inits). */
  pids: number[];
}

export interface Engine {
  hostNs: Ns;
  /** The directory holding the engine's roots, socket, config and image tar. */
  base: string;
  /** The plugin dir bound onto /run/docker/plugins. */
  pluginDir: string;
  paths: DockerdPaths;
  /** unix://<socket> */
  host: string;
  cli: string;
  cgroupParent: string;
  /** The busybox image (imported), with BUSYBOX_APPLETS linked. */
  image: string;
  /** Server version (e.g. 20.10.24+dfsg1). */
  version: string;
  /** dockerd's pid (changes with restart). */
  readonly pid: number;
  /** The docker CLI against this engine; throws with stderr (and dockerd's log tail) on failure unless allowFail. */
  docker(args: string[], opts?: DockerOpts): Promise<DockerResult>;
  /** `docker run --rm [--network N] [args] IMAGE cmd...`; returns stdout, throws on failure. */
  run(cmd: string[], opts?: RunOpts): Promise<string>;
  /** `docker run -d --name NAME ...`: a container that idles (and stops at once on SIGTERM) unless cmd is given; returns its id. */
  runDetached(name: string, opts?: RunOpts & { cmd?: string[] }): Promise<string>;
  /** `docker exec C cmd...`; returns stdout, throws on failure (allowFail: the result). */
  exec(container: string, cmd: string[], opts?: DockerOpts): Promise<DockerResult>;
  /** `docker inspect` of one object, parsed. */
  inspect<T = any>(what: string): Promise<T>;
  /** The container's IPv4 address on a network. */
  ip(container: string, network: string): Promise<string>;
  /** The container's init pid on this machine (its netns: /proc/<pid>/ns/net). */
  containerPid(container: string): Promise<number>;
  /** Runs a command in the engine's mount namespace and host netns (see /run/docker/plugins as dockerd does). */
  nsexec(cmd: string, args: string[]): string;
  /** Stop dockerd (it stops the containers) and start it again on the same roots, socket and plugin dir. */
  restart(): Promise<void>;
  /** Stop dockerd (SIGTERM; SIGKILL after graceMs) and kill whatever of the engine is left. */
  stop(graceMs?: number): Promise<void>;
  /** dockerd's (and its containerd's) output since the first start (the file: paths.log). */
  logs(): string;
  /** The engine's live processes right now. */
  processes(): number[];
  footprint(): EngineFootprint;
}

let seq = 0;

/** What is left of an engine after its cleanup: empty when everything went. */
export function engineLeftovers(fp: EngineFootprint): string[] {
  const out: string[] = [];
  const live = enginePids(fp.mntNs, fp.cgroupParent);
  if (live.length) out.push(`processes in the engine's mount namespace or cgroup: ${live.join(' ')}`);
  const seen = fp.pids.filter(pidAlive);
  if (seen.length) out.push(`engine pids still alive: ${seen.join(' ')}`);
  const cg = cgroupDirs(fp.cgroupParent);
  if (cg.length) out.push(`cgroup directories: ${cg.join(' ')}`);
  if (fs.existsSync(fp.base)) out.push(`directory ${fp.base}`);
  const mounts = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((mp) => mp && (mp === fp.base || mp.startsWith(fp.base + '/')));
  if (mounts.length) out.push(`mounts: ${mounts.join(' ')}`);
  return out;
}

export async function startEngine(t: TestContext, l: Lab, opts: EngineOptions): Promise<Engine> {
  const missing = missingEngineTools();
  if (missing.length) {
    throw new Error(
      `engine lane: missing ${missing.join(', ')}. Install them with "node scripts/host-packages.js engine" (as root), or run the lane with "node scripts/test.js engine".`,
    );
  }
  if (process.getuid?.() !== 0) throw new Error('engine lane: needs root (namespaces, mounts, cgroups)');
  const tag = (opts.tag ?? 'engine').replace(/[^a-zA-Z0-9_.-]/g, '-').slice(0, 16);
  const base = fs.mkdtempSync(path.join(l.root, `engine-${tag}-`));
  const pluginDir = opts.pluginDir ?? path.join(base, 'plugins');
  const cgroupParent = `/cnmd-engine-${process.pid}-${++seq}-${tag}`;
  const spec: DockerdSpec = {
    disk: base,
    run: base,
    hostNs: opts.hostNs.path,
    cgroupParent,
    pluginDir,
    logLevel: opts.logLevel ?? 'info',
    config: opts.config,
    args: [...(opts.bip ? ['--bip', opts.bip] : []), ...(opts.args ?? [])],
    shareNetns: opts.shareNetns,
    ownContainerd: opts.ownContainerd,
  };
  const cli = dockerCliPath()!;
  const etc = ensureEtcDocker();
  const mntNs: number[] = [];
  const seenPids = new Set<number>();
  let d: DockerdProcess | undefined;
  let destroyed = false;
  const note = () => {
    if (!d) return;
    if (d.mntNs !== undefined && !mntNs.includes(d.mntNs)) mntNs.push(d.mntNs);
    for (const p of enginePids(mntNs, cgroupParent)) seenPids.add(p);
  };
  const logFile = dockerdPaths(spec).log;
  const allLogs = () => readLog(logFile);

  const launch = async () => {
    d = DockerdProcess.spawn(spec);
    seenPids.add(d.pid);
    try {
      await d.waitReady(opts.startTimeoutMs ?? 60_000);
    } catch (e) {
      d.reap();
      throw new Error(`engine ${tag}: ${(e as Error).message}`);
    }
    note();
  };

  /**
   * Stops the current dockerd, gives its containerd and shims a moment to
   * follow, then kills whatever of it is left (its namespace goes with it).
   * Returns notes on what had to be killed.
   */
  const halt = async (graceMs: number): Promise<string[]> => {
    if (!d) return [];
    note();
    await d.stop(graceMs);
    for (let i = 0; i < 100 && enginePids(mntNs, cgroupParent).length > 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    const notes = d.reap();
    for (const n of notes)
      fs.appendFileSync(logFile, `[engine lib] after dockerd ${d.pid} exited (${d.exitStatus()}): ${n}\n`);
    d = undefined;
    return notes;
  };

  // Never throws: the lab's own cleanup (namespaces, the root) runs after it.
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    try {
      await teardown();
    } catch (e) {
      console.error(`engine ${tag} cleanup failed: ${(e as Error).stack ?? e}`);
      for (const n of reapEngine(mntNs, cgroupParent, 10_000)) console.error(`engine ${tag} cleanup: ${n}`);
      d?.unpin();
    }
  };
  const teardown = async () => {
    // Containers are killed outright (a pid 1 without a SIGTERM handler would hold
    // dockerd's shutdown for 10 s); dockerd still sees them exit and releases their
    // endpoints through the plugin. Its own stop is graceful but short: with a
    // plugin that died first, every plugin call retries.
    for (const p of cgroupPids(cgroupParent)) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    const notes = await halt(10_000);
    notes.push(...reapEngine(mntNs, cgroupParent, 10_000));
    if (opts.shareNetns) unshareNetnsDir(spec);
    if (etc.created) fs.rmSync('/etc/docker', { recursive: true, force: true });
    for (const n of notes) console.error(`engine ${tag} cleanup: ${n}`);
  };
  // Registered before the first start: a dockerd that came up halfway is removed too.
  l.beforeCleanup(destroy);
  void t;

  await launch();

  // A failed CLI call rarely has its reason in dockerd's info chatter (grpc, cgroup notes): warnings and errors only.
  const tail = () => {
    const lines = allLogs()
      .trim()
      .split('\n')
      .filter((x) => !/level=(debug|info)/.test(x));
    return lines.slice(-10).join('\n') || '(nothing above level info)';
  };
  const docker = async (args: string[], o: DockerOpts = {}): Promise<DockerResult> => {
    if (!d) throw new Error(`engine ${tag}: dockerd is not running (docker ${args.join(' ')})`);
    const r = await dockerAsync(cli, d.paths.host, d.paths.cliConfig, args, {
      timeoutMs: o.timeoutMs,
      input: o.input,
    });
    if (r.status !== 0 && !o.allowFail) {
      throw new Error(
        `docker ${args.join(' ')}: exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout).trim().slice(-1500)}\n--- dockerd log ends:\n${tail()}`,
      );
    }
    return r;
  };

  const version = (await docker(['version', '--format', '{{.Server.Version}}'])).stdout.trim();
  const image = 'cnmd-test-busybox:1';
  const tar = writeBusyboxTar(path.join(base, 'image'));
  await docker(['import', tar, image]);
  note();

  const netArgs = (o: RunOpts) => [...(o.network ? ['--network', o.network] : []), ...(o.args ?? [])];
  const e: Engine = {
    hostNs: opts.hostNs,
    base,
    pluginDir,
    paths: d!.paths,
    host: d!.paths.host,
    cli,
    cgroupParent,
    image,
    version,
    get pid() {
      return d ? d.pid : 0;
    },
    docker,
    async run(cmd, o = {}) {
      const r = await docker(['run', '--rm', ...netArgs(o), image, ...cmd], { timeoutMs: o.timeoutMs });
      return r.stdout;
    },
    async runDetached(name, o = {}) {
      // pid 1 ignores SIGTERM without a handler: the trap makes `docker stop` and a dockerd shutdown immediate.
      const cmd = o.cmd ?? ['sh', '-c', "trap 'exit 0' TERM; sleep 3600 & wait"];
      const r = await docker(['run', '-d', '--name', name, ...netArgs(o), image, ...cmd], {
        timeoutMs: o.timeoutMs,
      });
      note();
      return r.stdout.trim();
    },
    exec(container, cmd, o = {}) {
      return docker(['exec', container, ...cmd], o);
    },
    async inspect(what) {
      const r = await docker(['inspect', what]);
      const arr = JSON.parse(r.stdout) as unknown[];
      return arr[0] as any;
    },
    async ip(container, network) {
      const j = await e.inspect(container);
      const ip = j?.NetworkSettings?.Networks?.[network]?.IPAddress;
      if (!ip)
        throw new Error(
          `container ${container} has no address on network ${network}: ${JSON.stringify(j?.NetworkSettings?.Networks ?? {})}`,
        );
      return ip as string;
    },
    async containerPid(container) {
      const j = await e.inspect(container);
      const pid = Number(j?.State?.Pid);
      if (!(pid > 0))
        throw new Error(`container ${container} is not running (State ${JSON.stringify(j?.State ?? {})})`);
      seenPids.add(pid);
      return pid;
    },
    nsexec(cmd, args) {
      if (!d) throw new Error(`engine ${tag}: dockerd is not running`);
      const r = spawnSync(
        'nsenter',
        [`--mount=/proc/${d.pid}/ns/mnt`, `--net=${opts.hostNs.path}`, cmd, ...args],
        { encoding: 'utf8' },
      );
      if (r.status !== 0)
        throw new Error(
          `${cmd} ${args.join(' ')} in the engine's namespaces: exit ${r.status ?? r.signal}: ${(r.stderr || String(r.error)).trim()}`,
        );
      return r.stdout;
    },
    async restart() {
      if (destroyed) throw new Error(`engine ${tag}: already stopped for good`);
      for (const n of await halt(60_000)) console.error(`engine ${tag} restart: ${n}`);
      await launch();
    },
    async stop(graceMs = 30_000) {
      await halt(graceMs);
    },
    logs: allLogs,
    processes: () => enginePids(mntNs, cgroupParent),
    footprint: () => {
      note();
      return { base, cgroupParent, mntNs: [...mntNs], pids: [...seenPids] };
    },
  };
  return e;
}

/** After a walkthrough cleaned up: cnmd holds only its default networks and the engine no container. */
export async function assertNothingLeft(d: RunningDaemon, e: Engine): Promise<void> {
  const names = (await d.request('GET', '/networks')).body.map((n: { Name: string }) => n.Name).sort();
  assert.deepEqual(names, ['bridge', 'host', 'none'], 'cnmd holds only its default networks');
  assert.equal((await e.docker(['ps', '-aq'])).stdout.trim(), '', 'the engine has no container');
}
