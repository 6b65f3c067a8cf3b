// Debian's dockerd (docker.io 20.10, starting its own containerd) run apart
// from the machine: in a netns the caller made, in a private mount namespace
// (`unshare --mount --propagation private`) with a tmpfs over /run and a
// private directory over /etc/docker, with private roots, API socket, pidfile,
// config file and an absolute cgroup parent. Shared by the engine test lane
// (test/lib/engine.ts) and the bench cases (bench/lib/peers-ports.ts), so it
// imports node built-ins only.
//
// Why each piece:
// - the tmpfs over /run: dockerd uses a containerd already listening at
//   /run/containerd/containerd.sock (the machine's, if there is one) instead of
//   starting its own; containerd 1.6 puts its shim sockets in /run/containerd/s;
//   dockerd finds network and IPAM plugins only in /run/docker/plugins. All
//   hardcoded. In the private namespace they are ours and vanish with it.
// - /etc/docker: dockerd 20.10 writes its trust key to /etc/docker/key.json
//   whatever --config-file says, and reads plugin specs from /etc/docker/plugins.
// - the plugin dir is bind-mounted onto /run/docker/plugins. It is bound to a
//   staging directory before the tmpfs goes over /run, so a plugin dir under
//   /run works too. A bind mount follows the directory, not its path: the
//   plugin server must keep its directory across restarts (replace the sockets
//   in it, never remove and recreate the directory itself), or the engine keeps
//   looking into the old, empty one.
// - the cgroup parent is absolute: runc resolves a relative one against its own
//   cgroup, which is not the root in every hierarchy (containers would land in
//   places nobody cleans).
// - the mount namespace is pinned by an open fd while we may still need to
//   reap it: its inode number identifies the engine's processes (dockerd,
//   containerd, shims, docker-proxy), and a namespace that died could hand its
//   number to an unrelated new one.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';

/** Where dockerd looks for plugin sockets (hardcoded in the engine). */
export const ENGINE_PLUGIN_DIR = '/run/docker/plugins';

/** Applets linked in the busybox image (the test lane's needs and the bench's). */
export const BUSYBOX_APPLETS = [
  'sh',
  'sleep',
  'ip',
  'nc',
  'ping',
  'cat',
  'wget',
  'nslookup',
  'httpd',
  'hostname',
  'ls',
  'true',
  'false',
  'echo',
  'grep',
  'sed',
  'head',
  'tr',
  'ps',
  'kill',
  'env',
  'timeout',
  'route',
  'ifconfig',
  'netstat',
  'mkdir',
  'touch',
  'wc',
  'date',
  'id',
];

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** True when the ELF file has no program interpreter (runs in an image without libraries). */
export function isStaticElf(file: string): boolean {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const h = Buffer.alloc(64);
    fs.readSync(fd, h, 0, 64, 0);
    if (h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2) return false; // ELF64 only
    const phoff = Number(h.readBigUInt64LE(0x20));
    const phentsize = h.readUInt16LE(0x36);
    const phnum = h.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    fs.readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) return false;
    return true;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * The docker CLI to use: Debian's (/usr/bin/docker, the engine's own version)
 * when present, else whichever `docker` is on PATH (a newer client negotiates
 * the API version down).
 */
export function dockerCliPath(): string | undefined {
  if (fs.existsSync('/usr/bin/docker')) return '/usr/bin/docker';
  const r = spawnSync('sh', ['-c', 'command -v docker'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() || undefined : undefined;
}

/** What the engine needs that is missing here, each as "<tool> (Debian package <pkg>)". */
export function missingEngineTools(): string[] {
  const out: string[] = [];
  const need: [string, boolean, string][] = [
    ['dockerd', hasCommand('dockerd'), 'docker.io'],
    ['the docker CLI', !!dockerCliPath(), 'docker.io'],
    ['containerd', hasCommand('containerd'), 'containerd'],
    ['containerd-shim-runc-v2', hasCommand('containerd-shim-runc-v2'), 'containerd'],
    ['runc', hasCommand('runc'), 'runc'],
    ['a static /bin/busybox', isStaticElf('/bin/busybox'), 'busybox-static'],
    ['nsenter', hasCommand('nsenter'), 'util-linux'],
    ['unshare', hasCommand('unshare'), 'util-linux'],
    ['setpriv', hasCommand('setpriv'), 'util-linux'],
    ['tar', hasCommand('tar'), 'tar'],
    ['iptables', hasCommand('iptables'), 'iptables'],
  ];
  for (const [what, ok, pkg] of need) if (!ok) out.push(`${what} (Debian package ${pkg})`);
  return out;
}

/**
 * /etc/docker must exist on the machine as a mount point for the private one.
 * docker.io ships it; when it is missing it is made, and `created` says so: the
 * caller removes it when done.
 */
export function ensureEtcDocker(): { created: boolean } {
  if (fs.existsSync('/etc/docker')) return { created: false };
  fs.mkdirSync('/etc/docker');
  return { created: true };
}

export interface DockerdSpec {
  /** On disk: data-root, config file, the private /etc/docker, the plugin staging point. */
  disk: string;
  /** Runtime files (a tmpfs in the bench): exec-root, API socket, pidfile, dockerd.log. */
  run: string;
  /** The netns dockerd (and every container's host-side veth, bridge and rule) lives in. */
  hostNs: string;
  /** Absolute cgroup parent of the containers ("/name"; a bare name gets the slash). */
  cgroupParent: string;
  /** Bind-mounted onto /run/docker/plugins in the engine's mount namespace; made if missing. */
  pluginDir?: string;
  logLevel?: string;
  /** daemon.json (the private --config-file). */
  config?: Record<string, unknown>;
  /** More dockerd flags. */
  args?: string[];
  /**
   * A sysfs of the engine's own netns over /sys (cgroups kept): dockerd then
   * reads /sys/class/net of its host, not the machine's. Swarm's overlay needs it.
   */
  privateSysfs?: boolean;
  /**
   * The containers' netns files (<exec-root>/netns, SandboxKey) visible in the
   * machine's mount namespace, as they are to a plugin beside a dockerd that
   * runs in it: a shared bind mount that the engine's namespace joins (its
   * other mounts become slaves, so nothing else of it leaks out). Removed by
   * unshareNetnsDir.
   */
  shareNetns?: boolean;
  /**
   * Start containerd first (its own config, roots under disk and run) and give dockerd its
   * socket (--containerd). A containerd dockerd starts itself must answer within dockerd's
   * startup timeout ("timeout waiting for containerd to start"), which the kernel lane's VM
   * (TCG, two engines and three cnmd starting together) overran; ours is waited for as long
   * as the caller waits for the API.
   */
  ownContainerd?: boolean;
}

export interface DockerdPaths {
  dataRoot: string;
  execRoot: string;
  sock: string;
  /** unix://<sock> */
  host: string;
  pidfile: string;
  configFile: string;
  etcDocker: string;
  pluginStage: string;
  /** DOCKER_CONFIG for the CLI: nothing lands in ~/.docker. */
  cliConfig: string;
  /** dockerd's and its containerd's output, every start appended. */
  log: string;
  /** With ownContainerd: containerd's config file and socket. */
  containerdConfig: string;
  containerdSock: string;
}

export function dockerdPaths(spec: Pick<DockerdSpec, 'disk' | 'run'>): DockerdPaths {
  const sock = path.join(spec.run, 'docker.sock');
  return {
    dataRoot: path.join(spec.disk, 'data'),
    execRoot: path.join(spec.run, 'exec'),
    sock,
    host: `unix://${sock}`,
    pidfile: path.join(spec.run, 'dockerd.pid'),
    configFile: path.join(spec.disk, 'daemon.json'),
    etcDocker: path.join(spec.disk, 'etc-docker'),
    pluginStage: path.join(spec.disk, 'plugin-stage'),
    cliConfig: path.join(spec.disk, 'cli-config'),
    log: path.join(spec.run, 'dockerd.log'),
    containerdConfig: path.join(spec.disk, 'containerd.toml'),
    containerdSock: path.join(spec.run, 'containerd.sock'),
  };
}

/** Makes <exec-root>/netns a shared mount of the machine's namespace (once); returns its path. */
function shareNetnsDir(p: DockerdPaths): string {
  const dir = path.join(p.execRoot, 'netns');
  fs.mkdirSync(dir, { recursive: true });
  if (spawnSync('mountpoint', ['-q', dir]).status !== 0) {
    for (const args of [
      ['--bind', dir, dir],
      ['--make-shared', dir],
    ]) {
      const r = spawnSync('mount', args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`mount ${args.join(' ')}: ${r.stderr}`);
    }
  }
  return dir;
}

/** Undoes shareNetns (and any netns left mounted under it) in the machine's namespace. */
export function unshareNetnsDir(spec: Pick<DockerdSpec, 'disk' | 'run'>): void {
  const dir = path.join(dockerdPaths(spec).execRoot, 'netns');
  if (fs.existsSync(dir) && spawnSync('mountpoint', ['-q', dir]).status === 0) {
    const r = spawnSync('umount', ['-R', dir], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`umount -R ${dir}: ${r.stderr}`);
  }
}

/** The environment for the docker CLI: no inherited DOCKER_HOST/context/TLS, a private config dir. */
export function dockerCliEnv(cliConfig: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: cliConfig, DOCKER_CLI_HINTS: 'false' };
  for (const k of [
    'DOCKER_HOST',
    'DOCKER_CONTEXT',
    'DOCKER_TLS_VERIFY',
    'DOCKER_CERT_PATH',
    'DOCKER_API_VERSION',
  ])
    delete env[k];
  return env;
}

// Runs as `sh -c SCRIPT sh ETC PLUGINS STAGE SYSFS SHARED CTDCONF CTDSOCK DOCKERD-ARGS...` inside
// the new mount namespace, already in the engine's netns. SHARED (a shared mount, with
// --propagation unchanged): every other mount is made a slave first, one by one
// (a failure on a mount that is still there stops the start). CTDCONF (ownContainerd):
// containerd is started with it and dies with dockerd (its parent, once this shell execs).
const SCRIPT = `set -e
etc="$1"; plugins="$2"; stage="$3"; sysfs="$4"; shared="$5"; ctdconf="$6"; ctdsock="$7"; shift 7
if [ -n "$shared" ]; then
  findmnt -rno TARGET | while read -r m; do
    m=$(printf '%b' "$m")
    # A mount another test removed meanwhile (its path gone) is skipped: nothing here can mount under it.
    if [ "$m" != "$shared" ] && ! mount --make-slave "$m" 2>/dev/null && mountpoint -q "$m"; then exit 1; fi
  done
fi
if [ -n "$plugins" ]; then mount --bind "$plugins" "$stage"; fi
mount -t tmpfs -o mode=0755 cnmd-engine-run /run
if [ -n "$sysfs" ]; then
  mkdir /run/cg; mount --rbind /sys/fs/cgroup /run/cg
  mount -t sysfs sysfs /sys; mount --move /run/cg /sys/fs/cgroup; rmdir /run/cg 2>/dev/null || true
fi
mount --bind "$etc" /etc/docker
if [ -n "$plugins" ]; then mkdir -p ${ENGINE_PLUGIN_DIR}; mount --bind "$stage" ${ENGINE_PLUGIN_DIR}; fi
if [ -n "$ctdconf" ]; then
  setpriv --pdeathsig KILL containerd --config "$ctdconf" &
  while [ ! -S "$ctdsock" ]; do
    kill -0 $! 2>/dev/null || { echo "containerd exited before listening on $ctdsock" >&2; exit 1; }
    sleep 0.2
  done
  set -- --containerd "$ctdsock" "$@"
fi
exec dockerd "$@"`;

/**
 * One dockerd process (one start; a restart is a new DockerdProcess on the
 * same spec). Its output (and its containerd's) goes to a file, never a pipe:
 * a caller that runs the docker CLI synchronously does not read a pipe, dockerd
 * blocks writing to it once it is full, containerd blocks on dockerd, and every
 * container exit then waits for a 30 s timeout.
 */
export class DockerdProcess {
  readonly proc: ChildProcess;
  readonly paths: DockerdPaths;
  readonly exited: Promise<void>;
  /** Where this dockerd's output starts in paths.log (earlier starts come before). */
  private readonly logStart: number;
  private mnt?: { ino: number; fd: number };

  private constructor(readonly spec: DockerdSpec) {
    this.paths = dockerdPaths(spec);
    const p = this.paths;
    // The longest socket path dockerd makes under our roots; sun_path holds 107 bytes.
    const longest = path.join(p.execRoot, 'containerd', 'containerd.sock.ttrpc');
    if (Buffer.byteLength(longest) > 107)
      throw new Error(
        `dockerd's runtime directory ${spec.run} is too deep: ${longest} exceeds a unix socket path's 107 bytes`,
      );
    for (const d of [spec.disk, spec.run, p.etcDocker, p.cliConfig, p.pluginStage])
      fs.mkdirSync(d, { recursive: true });
    if (spec.pluginDir) fs.mkdirSync(spec.pluginDir, { recursive: true });
    fs.writeFileSync(p.configFile, JSON.stringify(spec.config ?? {}, null, 2) + '\n');
    if (spec.ownContainerd) {
      // The CRI plugin is Kubernetes' (slow to start, nothing here uses it); opt's default path is /opt.
      const toml = [
        'version = 2',
        `root = ${JSON.stringify(path.join(spec.disk, 'containerd'))}`,
        `state = ${JSON.stringify(path.join(spec.run, 'containerd-state'))}`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        '[grpc]',
        `  address = ${JSON.stringify(p.containerdSock)}`,
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = ${JSON.stringify(path.join(spec.disk, 'containerd-opt'))}`,
      ];
      fs.writeFileSync(p.containerdConfig, toml.join('\n') + '\n');
    }
    const cgroupParent = spec.cgroupParent.startsWith('/') ? spec.cgroupParent : `/${spec.cgroupParent}`;
    const dockerdArgs = [
      '--data-root',
      p.dataRoot,
      '--exec-root',
      p.execRoot,
      '-H',
      p.host,
      '--pidfile',
      p.pidfile,
      '--config-file',
      p.configFile,
      '--cgroup-parent',
      cgroupParent,
      '--log-level',
      spec.logLevel ?? 'info',
      ...(spec.args ?? []),
    ];
    const logFd = fs.openSync(p.log, 'a');
    this.logStart = fs.fstatSync(logFd).size;
    try {
      // nsenter, setpriv, unshare and sh each exec the next: the child's pid is
      // dockerd's. The parent-death signal outlives the execs: when the test or
      // bench process dies without cleaning up, dockerd (and the containerd it
      // supervises) die with it rather than run on unowned.
      this.proc = spawn(
        'nsenter',
        [
          `--net=${spec.hostNs}`,
          'setpriv',
          '--pdeathsig',
          'KILL',
          'unshare',
          '--mount',
          '--propagation',
          spec.shareNetns ? 'unchanged' : 'private',
          'sh',
          '-c',
          SCRIPT,
          'sh',
          p.etcDocker,
          spec.pluginDir ?? '',
          p.pluginStage,
          spec.privateSysfs ? '1' : '',
          spec.shareNetns ? shareNetnsDir(p) : '',
          spec.ownContainerd ? p.containerdConfig : '',
          p.containerdSock,
          ...dockerdArgs,
        ],
        { stdio: ['ignore', logFd, logFd] },
      );
    } finally {
      fs.closeSync(logFd);
    }
    this.exited = new Promise((resolve) => this.proc.once('exit', () => resolve()));
  }

  static spawn(spec: DockerdSpec): DockerdProcess {
    return new DockerdProcess(spec);
  }

  get pid(): number {
    return this.proc.pid!;
  }

  running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  exitStatus(): string {
    return String(this.proc.exitCode ?? this.proc.signalCode);
  }

  /** This dockerd's output so far (at most the last maxBytes). */
  log(maxBytes = 4 << 20): string {
    return readLog(this.paths.log, this.logStart, maxBytes);
  }

  /** The last n log lines, joined with sep. */
  tail(n = 20, sep = '\n'): string {
    return this.log(64 << 10)
      .trim()
      .split('\n')
      .slice(-n)
      .join(sep);
  }

  /** Inode of the engine's mount namespace (known once waitReady returned). */
  get mntNs(): number | undefined {
    return this.mnt?.ino;
  }

  /**
   * Polls GET /_ping on the API socket until dockerd answers, then pins its
   * mount namespace. Throws with the log tail when dockerd exits or the time
   * runs out (dockerd is then stopped).
   */
  async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running())
        throw new Error(
          `dockerd exited (${this.exitStatus()}) before answering on ${this.paths.sock}; its log ends:\n${this.tail(25)}`,
        );
      if (await ping(this.paths.sock)) break;
      if (Date.now() > deadline) {
        await this.stop(5000);
        throw new Error(
          `dockerd did not answer on ${this.paths.sock} within ${timeoutMs / 1000} s; its log ends:\n${this.tail(25)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const link = fs.readlinkSync(`/proc/${this.pid}/ns/mnt`);
    const own = fs.readlinkSync('/proc/self/ns/mnt');
    if (link === own)
      throw new Error(
        `dockerd (pid ${this.pid}) runs in the machine's mount namespace: unshare did not take effect`,
      );
    const fd = fs.openSync(`/proc/${this.pid}/ns/mnt`, 'r');
    this.mnt = { ino: fs.fstatSync(fd).ino, fd };
  }

  /** SIGTERM (dockerd stops its containers and containerd), SIGKILL after graceMs. */
  async stop(graceMs = 30_000): Promise<void> {
    if (!this.running()) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }

  /**
   * Kills (SIGKILL) whatever still runs in this dockerd's mount namespace or in
   * the cgroup parent, then lets the namespace go. Synchronous (usable from a
   * signal handler); returns notes on what it had to do.
   */
  reap(timeoutMs = 10_000): string[] {
    const notes = reapEngine(this.mnt ? [this.mnt.ino] : [], this.spec.cgroupParent, timeoutMs);
    this.unpin();
    return notes;
  }

  /** Closes the fd that keeps the mount namespace alive (idempotent). */
  unpin(): void {
    if (!this.mnt || this.mnt.fd < 0) return;
    try {
      fs.closeSync(this.mnt.fd);
    } catch {
      /* already closed */
    }
    this.mnt.fd = -1;
  }
}

/** The bytes of a log file from start on, at most the last maxBytes of them. */
export function readLog(file: string, start = 0, maxBytes = 4 << 20): string {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    const from = Math.max(start, size - maxBytes);
    const buf = Buffer.alloc(Math.max(0, size - from));
    fs.readSync(fd, buf, 0, buf.length, from);
    return buf.toString('utf8');
  } catch {
    return '';
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function ping(sock: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath: sock, path: '/_ping', method: 'GET', timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

export interface DockerResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the docker CLI against host, without blocking the event loop (a plugin served by this process keeps answering). */
export function dockerAsync(
  cli: string,
  host: string,
  cliConfig: string,
  args: string[],
  o: { timeoutMs?: number; input?: string } = {},
): Promise<DockerResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cli, ['-H', host, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: dockerCliEnv(cliConfig),
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.stdin!.on('error', () => {
      /* the CLI did not read its input */
    });
    child.stdin!.end(o.input ?? '');
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${(o.timeoutMs ?? 120_000) / 1000} s)`;
      child.kill('SIGKILL');
    }, o.timeoutMs ?? 120_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      resolve({
        status: null,
        signal: null,
        stdout,
        stderr: `${stderr}${e.message}`,
        ms: performance.now() - t0,
      });
    });
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

/**
 * A root filesystem with /bin/busybox (static) and its applets as symlinks,
 * packed as dir/rootfs.tar for `docker import`. Returns the tar's path.
 */
export function writeBusyboxTar(dir: string, applets: string[] = BUSYBOX_APPLETS): string {
  const rootfs = path.join(dir, 'rootfs');
  fs.mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
  fs.mkdirSync(path.join(rootfs, 'tmp'), { mode: 0o1777 });
  fs.copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
  fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
  for (const a of new Set(applets)) fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
  const tar = path.join(dir, 'rootfs.tar');
  const r = spawnSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', tar, '.'], {
    encoding: 'utf8',
  });
  if (r.status !== 0)
    throw new Error(`tar of the busybox rootfs failed: ${(r.stderr || String(r.error)).trim()}`);
  return tar;
}

// ---- finding and removing what an engine left ----

export function cgroupHierarchies(): string[] {
  try {
    // cgroup v1: one hierarchy per directory; v2: /sys/fs/cgroup itself.
    return [
      '/sys/fs/cgroup',
      ...fs
        .readdirSync('/sys/fs/cgroup', { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => path.join('/sys/fs/cgroup', e.name)),
    ];
  } catch {
    return [];
  }
}

/** Every directory of the cgroup (absolute name) in every hierarchy, deepest first. */
export function cgroupDirs(cgroup: string): string[] {
  const rel = cgroup.replace(/^\/+/, '');
  if (!rel) throw new Error('cgroupDirs: refusing the root cgroup');
  const out: string[] = [];
  const walk = (d: string) => {
    let ents: fs.Dirent[];
    try {
      ents = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    out.push(d);
    for (const e of ents) if (e.isDirectory()) walk(path.join(d, e.name));
  };
  for (const h of cgroupHierarchies()) walk(path.join(h, rel));
  return out.sort((a, b) => b.length - a.length);
}

/** Pids in the cgroup (absolute name), any hierarchy. */
export function cgroupPids(cgroup: string): number[] {
  const out = new Set<number>();
  for (const d of cgroupDirs(cgroup)) {
    try {
      for (const l of fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n'))
        if (l) out.add(Number(l));
    } catch {
      /* removed meanwhile */
    }
  }
  return [...out];
}

/** Live pids (not ours) whose mount namespace is one of the inodes. */
export function pidsInMountNs(inodes: number[]): number[] {
  if (inodes.length === 0) return [];
  const want = new Set(inodes.map((i) => `mnt:[${i}]`));
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (want.has(fs.readlinkSync(`/proc/${d}/ns/mnt`))) out.push(Number(d));
    } catch {
      /* exited, or a kernel thread */
    }
  }
  return out;
}

/** True while pid runs (a zombie counts as gone). */
export function pidAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) [ZX] /s.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** The engine's live processes: in one of its mount namespaces (dockerd, containerd, shims, docker-proxy) or in its cgroup parent (containers). */
export function enginePids(mntNs: number[], cgroupParent: string): number[] {
  return [...new Set([...pidsInMountNs(mntNs), ...cgroupPids(cgroupParent)])].filter(
    (p) => p !== process.pid && pidAlive(p),
  );
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * SIGKILLs the engine's processes until none is left (or timeoutMs), then
 * removes the cgroup parent in every hierarchy. Synchronous. Returns notes:
 * what had to be killed, what could not be removed.
 */
export function reapEngine(mntNs: number[], cgroupParent: string, timeoutMs = 10_000): string[] {
  const notes: string[] = [];
  const deadline = Date.now() + timeoutMs;
  let left = enginePids(mntNs, cgroupParent);
  if (left.length)
    notes.push(`killed leftover engine processes ${left.map((p) => `${p}(${commOf(p)})`).join(' ')}`);
  while (left.length && Date.now() < deadline) {
    for (const p of left) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    sleepSync(50);
    left = enginePids(mntNs, cgroupParent);
  }
  if (left.length) notes.push(`engine processes still alive: ${left.join(' ')}`);
  for (const d of cgroupDirs(cgroupParent)) {
    for (let i = 0; ; i++) {
      try {
        fs.rmdirSync(d);
        break;
      } catch (e) {
        // A cgroup stays busy for a moment after its last process was reaped.
        if ((e as NodeJS.ErrnoException).code === 'EBUSY' && i < 40) {
          sleepSync(25);
          continue;
        }
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
          notes.push(`cgroup ${d}: ${(e as Error).message}`);
        break;
      }
    }
  }
  return notes;
}

export function commOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}
