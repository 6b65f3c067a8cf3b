// The kernel lane (docs/design.md, "The kernel lane"): run a shell command
// inside Debian's kernel under qemu (TCG), with the host's root filesystem
// shared read-only over 9p and used as the guest's root through a chroot.
//
// The initramfs has two parts, concatenated (Linux unpacks every cpio archive
// in the initrd, one after the other):
//   1. a cached, gzip-compressed archive: busybox-static, /init, the modprobe
//      wrapper and the virtio/9p modules. Keyed by kernel version and a hash of
//      its contents, kept under os.tmpdir(), rebuilt only when missing;
//   2. a tiny per-run, uncompressed archive under /job: the command, its
//      environment and cwd, the modules to load and a nonce for the markers.
// The command's exit code comes back on the serial console in a marker line.
import { spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

export interface VmResult {
  /** The command's exit code; -1 when the guest never reported one (boot failure, timeout). */
  exitCode: number;
  /** The whole serial console, CRLF normalised, without kernel log lines ("[  1.23] ..."), terminal escapes and the firmware banner. */
  output: string;
  timedOut: boolean;
  /** Only what the command itself printed (between the begin and exit markers). */
  commandOutput: string;
  /** The raw serial console (CRLF normalised), kernel lines included, plus qemu's stderr. */
  console: string;
  /** Wall-clock time of the whole run (initramfs, boot, command, power-off), in ms. */
  durationMs: number;
}

export interface VmOptions {
  /** Kill the VM after this long (default 240 s); the result then has timedOut=true. */
  timeoutMs?: number;
  /** Modules to `modprobe` (inside the chroot) before the command; failures are printed, not fatal. */
  modules?: string[];
  /** Extra environment for the command (on top of PATH, HOME, LANG). */
  env?: Record<string, string>;
  /** Directory (a path of the host, visible at the same path in the guest) to run the command in. */
  cwd?: string;
}

export const DEFAULT_MODULES = [
  'dummy',
  'ipvlan',
  '8021q',
  'esp4',
  'xfrm_user',
  'nf_tables',
  'nft_chain_nat',
  'nf_nat',
  'veth',
  'vxlan',
  'bridge',
  'macvlan',
];

/** Modules the initramfs insmods, in this order (dependencies first; "unknown symbol" otherwise). */
const BOOT_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio_pci',
  'netfs',
  'fscache',
  '9pnet',
  '9pnet_virtio',
  '9p',
];

const GUEST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const DEFAULT_TIMEOUT_MS = 240_000;
const QEMU = 'qemu-system-x86_64';
const INSTALL_HINT = 'apt-get install -y qemu-system-x86 linux-image-amd64 busybox-static';

// ---------------------------------------------------------------------------
// Prerequisites

interface Lane {
  kernel: string;
  vmlinuz: string;
  modulesDir: string;
  busybox: string;
  qemu: string;
  /** BOOT_MODULES that are real modules (not built in), with their file paths, in load order. */
  bootModules: { name: string; file: string }[];
}

function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH || '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** Natural comparison of kernel versions ("6.1.0-9" < "6.1.0-56"). */
function compareVersions(a: string, b: string): number {
  const ta = a.split(/(\d+)/);
  const tb = b.split(/(\d+)/);
  for (let i = 0; i < Math.max(ta.length, tb.length); i++) {
    const x = ta[i] ?? '';
    const y = tb[i] ?? '';
    if (x === y) continue;
    if (/^\d+$/.test(x) && /^\d+$/.test(y)) return Number(x) - Number(y);
    return x < y ? -1 : 1;
  }
  return 0;
}

/** True when the ELF file has no PT_INTERP program header (statically linked). */
function isStaticElf(file: string): boolean {
  const b = fs.readFileSync(file);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return false; // ELF64 LE only
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  const phnum = b.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > b.length) return false;
    if (b.readUInt32LE(off) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

const modName = (file: string) =>
  path
    .basename(file)
    .replace(/\.ko(\.(xz|zst|gz))?$/, '')
    .replace(/-/g, '_');

/** Resolves BOOT_MODULES through modules.dep; every dependency is placed before its users. */
function resolveBootModules(modulesDir: string): { name: string; file: string }[] {
  const depFile = path.join(modulesDir, 'modules.dep');
  const deps = new Map<string, { file: string; deps: string[] }>();
  for (const line of fs.readFileSync(depFile, 'utf8').split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    deps.set(modName(m[1]), { file: m[1], deps: m[2].split(/\s+/).filter(Boolean).map(modName) });
  }
  let builtin = new Set<string>();
  try {
    builtin = new Set(
      fs
        .readFileSync(path.join(modulesDir, 'modules.builtin'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map(modName),
    );
  } catch {
    /* no modules.builtin: nothing is built in as far as we know */
  }
  const out: { name: string; file: string }[] = [];
  const seen = new Set<string>();
  const missing: string[] = [];
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const d = deps.get(name);
    if (!d) {
      if (!builtin.has(name)) missing.push(name);
      return;
    }
    // modules.dep lists the full transitive closure; visiting each dependency
    // (deepest first through recursion) yields a valid load order.
    for (const dep of d.deps) visit(dep);
    out.push({ name, file: path.join(modulesDir, d.file) });
  };
  for (const m of BOOT_MODULES) visit(m);
  if (missing.length) throw new Error(`modules ${missing.join(', ')} are neither in ${depFile} nor built in`);
  return out;
}

let laneCache: Lane | undefined;

function lane(): Lane {
  if (laneCache) return laneCache;
  const problems: string[] = [];
  const qemu = which(QEMU);
  if (!qemu) problems.push(`${QEMU} not found in PATH (Debian package qemu-system-x86)`);

  let kernel = '';
  let vmlinuz = '';
  let modulesDir = '';
  const candidates = (fs.existsSync('/boot') ? fs.readdirSync('/boot') : [])
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter(
      (v) =>
        fs.existsSync(path.join('/lib/modules', v, 'kernel')) &&
        fs.existsSync(path.join('/lib/modules', v, 'modules.dep')),
    )
    .sort(compareVersions);
  if (candidates.length === 0) {
    problems.push(
      `no /boot/vmlinuz-<ver> with a matching /lib/modules/<ver>/kernel (Debian package linux-image-amd64)`,
    );
  } else {
    kernel = candidates[candidates.length - 1];
    vmlinuz = path.join('/boot', `vmlinuz-${kernel}`);
    modulesDir = path.join('/lib/modules', kernel);
    try {
      fs.accessSync(vmlinuz, fs.constants.R_OK);
    } catch {
      problems.push(`${vmlinuz} is not readable by this user (run as root)`);
    }
  }

  let bootModules: { name: string; file: string }[] = [];
  if (modulesDir) {
    try {
      bootModules = resolveBootModules(modulesDir);
    } catch (e) {
      problems.push(`${(e as Error).message} (Debian package linux-image-amd64 for kernel ${kernel})`);
    }
  }

  let busybox = '';
  for (const p of ['/bin/busybox', '/usr/bin/busybox', '/usr/lib/initramfs-tools/bin/busybox']) {
    try {
      if (fs.statSync(p).isFile() && isStaticElf(p)) {
        busybox = p;
        break;
      }
    } catch {
      /* next */
    }
  }
  if (!busybox) problems.push('no statically linked busybox at /bin/busybox (Debian package busybox-static)');

  if (problems.length) {
    throw new Error(
      `kernel lane cannot run:\n  - ${problems.join('\n  - ')}\ninstall the missing Debian packages: ${INSTALL_HINT}`,
    );
  }
  laneCache = { kernel, vmlinuz, modulesDir, busybox, qemu: qemu!, bootModules };
  return laneCache;
}

/** Throws an Error naming the missing Debian packages when the lane cannot run. */
export function kernelLanePrerequisites(): { kernel: string; vmlinuz: string; modulesDir: string } {
  const l = lane();
  return { kernel: l.kernel, vmlinuz: l.vmlinuz, modulesDir: l.modulesDir };
}

// ---------------------------------------------------------------------------
// newc cpio writer

type CpioEntry =
  | { type: 'dir'; name: string; mode?: number }
  | { type: 'file'; name: string; data: Buffer; mode?: number }
  | { type: 'symlink'; name: string; target: string }
  | { type: 'chardev'; name: string; major: number; minor: number; mode?: number };

const pad4 = (n: number) => (4 - (n % 4)) % 4;

/** A newc ("070701") cpio archive, ending with TRAILER!!!. */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const hex = (n: number) => (n >>> 0).toString(16).padStart(8, '0');
  const push = (name: string, mode: number, data: Buffer, nlink: number, rmaj = 0, rmin = 0) => {
    const nameBuf = Buffer.from(name + '\0', 'utf8');
    const header =
      '070701' +
      [ino++, mode, 0, 0, nlink, 0, data.length, 0, 0, rmaj, rmin, nameBuf.length, 0].map(hex).join('');
    parts.push(
      Buffer.from(header, 'ascii'),
      nameBuf,
      Buffer.alloc(pad4(110 + nameBuf.length)),
      data,
      Buffer.alloc(pad4(data.length)),
    );
  };
  for (const e of entries) {
    const name = e.name.replace(/^\/+/, '');
    switch (e.type) {
      case 'dir':
        push(name, 0o040000 | (e.mode ?? 0o755), Buffer.alloc(0), 2);
        break;
      case 'file':
        push(name, 0o100000 | (e.mode ?? 0o644), e.data, 1);
        break;
      case 'symlink':
        push(name, 0o120777, Buffer.from(e.target, 'utf8'), 1);
        break;
      case 'chardev':
        push(name, 0o020000 | (e.mode ?? 0o600), Buffer.alloc(0), 1, e.major, e.minor);
        break;
    }
  }
  push('TRAILER!!!', 0, Buffer.alloc(0), 1);
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------
// The cached initramfs

function initScript(modules: string[]): string {
  return `#!/bin/busybox sh
# cnmd kernel lane init (generated by test/lib/kernel-vm.ts)
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "cnmd-vm: $*"; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${modules.join(' ')}; do
  insmod /modules/$m.ko || say "insmod $m failed"
done
mkdir -p /root
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /root; then
  say "FATAL: cannot mount the host root (9p, tag hostroot) on /root"
  poweroff -f
fi
mount -t proc proc /root/proc
mount -t sysfs sysfs /root/sys
mount -t devtmpfs devtmpfs /root/dev
mkdir -p /root/dev/pts /root/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /root/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /root/dev/shm
mount -t tmpfs -o mode=755 tmpfs /root/run
if [ -d /root/var/run ] && [ ! -L /root/var/run ]; then mount -t tmpfs -o mode=755 tmpfs /root/var/run; fi
if [ -d /root/sys/fs/bpf ]; then mount -t bpf bpf /root/sys/fs/bpf 2>/dev/null; fi
# cgroup2 for runc (dockerd's containers); a writable /var/tmp outside /run for TMPDIR (dockerd hides /run).
mount -t cgroup2 cgroup2 /root/sys/fs/cgroup || say "cannot mount cgroup2 on /sys/fs/cgroup"
mount -t tmpfs -o mode=1777 tmpfs /root/var/tmp || say "cannot mount a tmpfs on /var/tmp"
echo /sbin/cnmd-modprobe > /proc/sys/kernel/modprobe
hostname cnmd-vm
ip link set lo up
if [ ! -f /job/job.conf ]; then
  say "FATAL: no /job/job.conf in the initramfs"
  poweroff -f
fi
. /job/job.conf
mkdir -p /root/run/cnmd-vm
cp /job/run.sh /job/command.sh /root/run/cnmd-vm/
for m in $JOB_MODULES; do
  chroot /root /sbin/modprobe "$m" || say "modprobe $m failed"
done
dmesg -n 1
dmesg -c > /dev/null
echo "@@CNMD-VM-BEGIN $JOB_NONCE@@"
chroot /root /usr/bin/env -i /bin/sh /run/cnmd-vm/run.sh < /dev/null
rc=$?
echo "@@CNMD-VM-EXIT $JOB_NONCE $rc@@"
dmesg -r | grep -E '^<[0-4]>' | sed 's/^/cnmd-vm: kernel: /'
poweroff -f
sleep 5
`;
}

const MODPROBE_WRAPPER = `#!/bin/busybox sh
# The kernel's module auto-loader runs this (in the initramfs root): use the
# host's modprobe and modules through the chroot.
exec /bin/busybox chroot /root /sbin/modprobe "$@"
`;

function readModule(file: string): Buffer {
  const tryDecompress = (cmd: string, pkg: string): Buffer => {
    const r = spawnSync(cmd, ['-dc', file], { maxBuffer: 256 << 20 });
    if (r.error || r.status !== 0) {
      throw new Error(
        `cannot decompress ${file} with ${cmd} (Debian package ${pkg}): ${r.error?.message ?? r.stderr.toString()}`,
      );
    }
    return r.stdout;
  };
  if (file.endsWith('.ko')) return fs.readFileSync(file);
  if (file.endsWith('.ko.gz')) return zlib.gunzipSync(fs.readFileSync(file));
  if (file.endsWith('.ko.xz')) return tryDecompress('xz', 'xz-utils');
  if (file.endsWith('.ko.zst')) return tryDecompress('zstd', 'zstd');
  throw new Error(`unknown module file type: ${file}`);
}

function cacheDir(): string {
  for (const base of [os.tmpdir(), '/var/tmp']) {
    const dir = path.join(base, 'cnmd-kernel-lane');
    try {
      fs.mkdirSync(dir, { recursive: true });
      fs.accessSync(dir, fs.constants.W_OK);
      return dir;
    } catch {
      /* next */
    }
  }
  throw new Error(
    'no writable cache directory for the kernel lane initramfs (tried os.tmpdir() and /var/tmp)',
  );
}

/** Path of the cached base initramfs (gzip'd newc, zero-padded to 4 bytes), built if missing. */
function baseInitramfs(l: Lane): string {
  const init = initScript(l.bootModules.map((m) => m.name));
  const bb = fs.statSync(l.busybox);
  const h = crypto.createHash('sha256');
  h.update(init).update(MODPROBE_WRAPPER).update(`${l.busybox}:${bb.size}:${bb.mtimeMs}\n`);
  for (const m of l.bootModules) {
    const st = fs.statSync(m.file);
    h.update(`${m.file}:${st.size}:${st.mtimeMs}\n`);
  }
  const file = path.join(cacheDir(), `initramfs-${l.kernel}-${h.digest('hex').slice(0, 16)}.cpio.gz`);
  if (fs.existsSync(file)) return file;

  const entries: CpioEntry[] = [
    { type: 'dir', name: 'bin' },
    { type: 'dir', name: 'sbin' },
    { type: 'dir', name: 'dev' },
    { type: 'chardev', name: 'dev/console', major: 5, minor: 1 },
    { type: 'chardev', name: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { type: 'dir', name: 'proc' },
    { type: 'dir', name: 'sys' },
    { type: 'dir', name: 'root' },
    { type: 'dir', name: 'tmp', mode: 0o1777 },
    { type: 'dir', name: 'modules' },
    { type: 'file', name: 'bin/busybox', data: fs.readFileSync(l.busybox), mode: 0o755 },
    { type: 'symlink', name: 'bin/sh', target: 'busybox' },
    { type: 'file', name: 'init', data: Buffer.from(init), mode: 0o755 },
    { type: 'file', name: 'sbin/cnmd-modprobe', data: Buffer.from(MODPROBE_WRAPPER), mode: 0o755 },
  ];
  for (const m of l.bootModules)
    entries.push({ type: 'file', name: `modules/${m.name}.ko`, data: readModule(m.file) });
  const gz = zlib.gzipSync(cpioNewc(entries), { level: 6 });
  // The kernel only looks for the next archive at a 4-byte aligned offset.
  const padded = Buffer.concat([gz, Buffer.alloc(pad4(gz.length))]);
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, padded);
  fs.renameSync(tmp, file);
  return file;
}

// ---------------------------------------------------------------------------
// Running

const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function jobArchive(command: string, opts: VmOptions, nonce: string): Buffer {
  const modules = opts.modules ?? DEFAULT_MODULES;
  for (const m of modules)
    if (!/^[A-Za-z0-9_-]+$/.test(m)) throw new Error(`bad module name ${JSON.stringify(m)}`);
  // /tmp stays the host's (read-only, so a checkout or build under /tmp is visible);
  // what the guest writes goes to TMPDIR on its own tmpfs. Not under /run: a dockerd
  // started there (test/lib/dockerd-launch.ts) puts a private tmpfs over /run, which
  // would hide its data-root and API socket from the test.
  const env: Record<string, string> = {
    PATH: GUEST_PATH,
    HOME: '/root',
    LANG: 'C.UTF-8',
    TMPDIR: '/var/tmp',
    ...(opts.env ?? {}),
  };
  const lines = ['#!/bin/sh', '# per-run wrapper (cnmd kernel lane)'];
  for (const [k, v] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
      throw new Error(`bad environment variable name ${JSON.stringify(k)}`);
    lines.push(`export ${k}=${shq(v)}`);
  }
  lines.push('mkdir -p "$TMPDIR"');
  if (opts.cwd)
    lines.push(`cd ${shq(opts.cwd)} || { echo "cnmd-vm: cannot cd to "${shq(opts.cwd)} >&2; exit 125; }`);
  lines.push('exec /bin/sh /run/cnmd-vm/command.sh');
  const conf = `JOB_NONCE=${nonce}\nJOB_MODULES=${shq(modules.join(' '))}\n`;
  return cpioNewc([
    { type: 'dir', name: 'job' },
    { type: 'file', name: 'job/job.conf', data: Buffer.from(conf) },
    { type: 'file', name: 'job/run.sh', data: Buffer.from(lines.join('\n') + '\n'), mode: 0o755 },
    { type: 'file', name: 'job/command.sh', data: Buffer.from(command + '\n'), mode: 0o755 },
  ]);
}

const KERNEL_LINE = /^\[\s*\d+\.\d+\] /;

/**
 * Boots the VM, runs `command` (a /bin/sh -c string) inside `chroot /root`
 * with /proc, /sys, /dev, /tmp, /run prepared, and returns its exit code and
 * the console output.
 */
export async function runInKernelVm(command: string, opts: VmOptions = {}): Promise<VmResult> {
  const started = Date.now();
  const l = lane();
  const base = baseInitramfs(l);
  const nonce = crypto.randomBytes(8).toString('hex');
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-vm-'));
  const initrd = path.join(runDir, 'initrd.img');
  fs.writeFileSync(initrd, Buffer.concat([fs.readFileSync(base), jobArchive(command, opts, nonce)]));

  const args = [
    '-accel',
    'tcg',
    '-m',
    '2048',
    '-smp',
    '2',
    '-nographic',
    '-nodefaults',
    '-no-user-config',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    l.vmlinuz,
    '-initrd',
    initrd,
    '-virtfs',
    'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-append',
    'console=ttyS0 quiet panic=-1',
  ];
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const exitRe = new RegExp(`@@CNMD-VM-EXIT ${nonce} (\\d+)@@`);
  const beginMarker = `@@CNMD-VM-BEGIN ${nonce}@@`;

  let out = '';
  let err = '';
  let timedOut = false;
  const child = spawn(l.qemu, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const killChild = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killChild);
  const timer = setTimeout(() => {
    timedOut = true;
    killChild();
  }, timeoutMs);
  // After the exit marker the guest powers off at once; do not wait forever if it does not.
  let graceTimer: NodeJS.Timeout | undefined;
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    out += d;
    if (!graceTimer && exitRe.test(out)) graceTimer = setTimeout(killChild, 15_000);
  });
  child.stderr.on('data', (d: string) => (err += d));
  const spawnError = await new Promise<Error | undefined>((resolve) => {
    child.once('error', (e) => resolve(e));
    child.once('close', () => resolve(undefined));
  });
  clearTimeout(timer);
  if (graceTimer) clearTimeout(graceTimer);
  process.removeListener('exit', killChild);
  fs.rmSync(runDir, { recursive: true, force: true });

  const raw = out.replace(/\r\n/g, '\n').replace(/\r/g, '');
  let consoleText = raw;
  if (err.trim()) consoleText += `\n[qemu stderr]\n${err}`;
  if (spawnError) consoleText += `\n[qemu failed to start: ${spawnError.message}]\n`;
  const m = exitRe.exec(raw);
  const exitCode = m ? Number(m[1]) : -1;
  const b = raw.indexOf(beginMarker);
  let commandOutput = '';
  if (b >= 0) {
    const from = raw.indexOf('\n', b) + 1;
    const to = m ? m.index : raw.length;
    commandOutput = from > 0 && from <= to ? raw.slice(from, to) : '';
  }
  const output = consoleText
    .replace(/\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])/g, '')
    .replace(/^SeaBIOS \(version [^\n]*\n/m, '')
    .replace(/Booting from ROM\.*/, '')
    .split('\n')
    .filter((line) => !KERNEL_LINE.test(line))
    .join('\n');
  return {
    exitCode,
    output,
    timedOut,
    commandOutput,
    console: consoleText,
    durationMs: Date.now() - started,
  };
}

/** The last `lines` lines of a text (for failure messages). */
export function tail(text: string, lines = 60): string {
  const all = text.replace(/\n+$/, '').split('\n');
  return all.slice(-lines).join('\n');
}
