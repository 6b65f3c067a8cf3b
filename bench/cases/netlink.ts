// Bench case "netlink": N (default 200) veth pairs, each peer moved into a
// fresh netns of its own as eth0 with loopback up, eth0 up, an IPv4 address
// and a default route, the host end up; then all of it torn down. Done five
// ways in one run (each once per round), each in a private "host" netns:
//
//  cnmd       Our API, the way a driver uses it: NetnsManager.create (netns +
//             loopback up + a Handle opened inside it), the host Handle's
//             linkAdd veth with peer {name: 'eth0', netns: path}, then eth0
//             up / address / default route through the netns Handle, host end
//             up. The N pairs run concurrently (Promise.all: independent
//             requests pipelined, as a daemon serving N attach calls would);
//             the steps of one pair are awaited in order. The peer is not
//             created up: on this kernel IFF_UP on a veth peer created in
//             another netns fails with ENOTCONN, so it is set up afterwards.
//             Teardown, in the order of the ip_batch one: the host Handle's
//             linkDel of every host end (pipelined), then NetnsManager.delete
//             of every netns. Meanwhile one unrelated request (linkGet through
//             another netns's Handle) is timed: head-of-line blocking.
//  cnmd_seq   The same, one pair after the other (the latency of one attach;
//             also gives the per-step breakdown). Teardown in the order of
//             the ip_per_op one: per pair linkDel, then NetnsManager.delete.
//  cnmd_nsdel Set up as cnmd; torn down by NetnsManager.delete alone: the
//             kernel destroys eth0 and its host end when the netns goes, in
//             one batched unregister; timed until the host has no veth left.
//             (An explicit RTM_DELLINK costs ~20 ms per link on this kernel:
//             each waits for an RCU grace period after dropping the rtnl lock.)
//  ip_per_op  One `ip` process per operation, run by a /bin/sh script: per
//             pair `ip netns add`, `ip -n NS link set lo up`, `ip -n HOST link
//             add vhI type veth peer name eth0 netns NS`, `ip -n NS link set
//             eth0 up`, `ip -n NS addr add`, `ip -n NS route add default via`,
//             `ip -n HOST link set vhI up` (7 processes); teardown `ip -n HOST
//             link del vhI` and `ip netns del NS` (2 processes).
//  ip_batch   `ip -batch` with as few processes as iproute2 allows. A single
//             process cannot do it: ip.c's batch() opens one rtnetlink socket
//             before reading the first line and keeps it; `-n NS` is a global
//             option only, not accepted on batch lines; `netns exec` on a batch
//             line forks and execs a new program (lib/exec.c cmd_exec); and
//             `netns add` restores the original netns right after creating the
//             new one (ipnetns.c netns_save/netns_restore). The kernel has no
//             way to add an address or route in another netns from outside it
//             (RTM_NEWADDR/RTM_NEWROUTE take no target netns), and moving a
//             configured device into a netns drops its addresses and routes. So
//             the work that must happen inside each netns needs a socket there,
//             which for iproute2 means one process per netns. What we run,
//             N+2 processes: `ip -batch` (N x `netns add`), `ip -n HOST
//             -batch` (N x `link add vhI type veth peer name eth0 netns NS` +
//             `link set vhI up`), and per netns `ip -n NS -batch` (lo up, eth0
//             up, addr add, route add). Teardown is 2 processes: `ip -n HOST
//             -batch` (N x `link del`) and `ip -batch` (N x `netns del`).
//             (`netns add` cannot go in the `-n HOST` batch: `ip -n` moves the
//             process into a slave mount namespace, so the netns mounts it makes
//             would not be seen by the other processes.)
//
// Host hygiene: nothing runs in the machine's own netns. cnmd's namespaces are
// files under a private exec-root (mkdtemp, on tmpfs when there is one) and
// removed pass or fail (also on SIGINT/SIGTERM). The ip variants run under
// `unshare --mount --propagation private`, with <exec-root>/<variant>/netns
// bind-mounted over /run/netns (iproute2 hard-codes that directory): their
// netns mounts exist only in that private mount namespace, so even a killed
// run leaves nothing mounted on the host, and every name still carries the
// prefix cnmdbench-<pid>-.
//
// Ratios are taken between the medians (over rounds) of the figures.
//
// Correctness: before each teardown, every host end is checked (exists, UP) and
// a few namespaces are spot-checked with `ip -j addr` / `ip -j route` (lo and
// eth0 UP, the address, the default route); after teardown the host must have
// no veth left. A fast-but-wrong run fails the case.
//
// Environment: BENCH_PAIRS (200), BENCH_ROUNDS (3; figures are medians),
// BENCH_SETTLE_MS (1500: pause between variants so the kernel's asynchronous
// netns cleanup of the previous one does not bill the next), BENCH_TMPDIR
// (where the exec-root is made; default /dev/shm if tmpfs: see execRootParent).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { native } from '../../native';
import { CreatedNetns, NetnsManager } from '../../src/netns/netns';
import { cleanupOnSignals } from '../lib/host';

export const name = 'netlink';
export const unit = 'ms';

const PAIRS = intEnv('BENCH_PAIRS', 200, 1, 60000);
const ROUNDS = intEnv('BENCH_ROUNDS', 3, 1, 50);
const SETTLE_MS = intEnv('BENCH_SETTLE_MS', 1500, 0, 60000);
const SCRIPT_TIMEOUT_MS = 600_000;

function intEnv(key: string, def: number, min: number, max: number): number {
  const raw = process.env[key];
  if (raw === undefined || raw === '') return def;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max)
    throw new Error(`${key}=${raw}: want an integer in ${min}..${max}`);
  return v;
}

// ---- addressing: pair i gets 10.(64 + i/256).(i%256).2/24 via .1 ----

function subnet(i: number): string {
  return `10.${64 + (i >> 8)}.${i & 255}`;
}
function cidrOf(i: number): string {
  return `${subnet(i)}.2/24`;
}
function gatewayOf(i: number): string {
  return `${subnet(i)}.1`;
}
/** Namespaces checked in depth: first, second, middle, last two. */
function spotIndexes(n: number): number[] {
  return [...new Set([0, 1, n >> 1, n - 2, n - 1].filter((i) => i >= 0 && i < n))];
}

// ---- verification (shared: all variants are checked from `ip -j` output) ----

interface IpLink {
  ifname: string;
  flags?: string[];
  addr_info?: { family: string; local: string; prefixlen: number }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
}

function parseJson<T>(what: string, text: string): T {
  try {
    return JSON.parse(text.trim() === '' ? '[]' : text) as T;
  } catch (e) {
    throw new Error(`verify: ${what}: not JSON (${(e as Error).message}): ${text.slice(0, 200)}`);
  }
}

function checkHostLinks(variant: string, n: number, json: string): void {
  const links = parseJson<IpLink[]>(`${variant} host links`, json);
  const byName = new Map(links.map((l) => [l.ifname.replace(/@.*$/, ''), l]));
  for (let i = 0; i < n; i++) {
    const l = byName.get(`vh${i}`);
    if (!l)
      throw new Error(
        `verify ${variant}: host end vh${i} is missing (${links.length} veths in the host netns)`,
      );
    if (!l.flags?.includes('UP'))
      throw new Error(`verify ${variant}: host end vh${i} is not UP (flags ${l.flags?.join(',')})`);
  }
  if (links.length !== n)
    throw new Error(`verify ${variant}: ${links.length} veths in the host netns, want ${n}`);
}

function checkNetns(variant: string, i: number, addrJson: string, routeJson: string): void {
  const links = parseJson<IpLink[]>(`${variant} netns ${i} addr`, addrJson);
  const routes = parseJson<IpRoute[]>(`${variant} netns ${i} route`, routeJson);
  const where = `verify ${variant}: netns of pair ${i}`;
  const lo = links.find((l) => l.ifname === 'lo');
  if (!lo?.flags?.includes('UP')) throw new Error(`${where}: lo is not UP`);
  const eth0 = links.find((l) => l.ifname === 'eth0');
  if (!eth0) throw new Error(`${where}: no eth0 (links: ${links.map((l) => l.ifname).join(', ')})`);
  if (!eth0.flags?.includes('UP'))
    throw new Error(`${where}: eth0 is not UP (flags ${eth0.flags?.join(',')})`);
  if (links.length !== 2) throw new Error(`${where}: ${links.length} links, want lo and eth0 only`);
  const [ip, len] = cidrOf(i).split('/');
  if (!eth0.addr_info?.some((a) => a.family === 'inet' && a.local === ip && a.prefixlen === Number(len))) {
    throw new Error(`${where}: eth0 lacks ${cidrOf(i)} (has ${JSON.stringify(eth0.addr_info)})`);
  }
  const def = routes.find((r) => r.dst === 'default');
  if (!def || def.gateway !== gatewayOf(i) || def.dev !== 'eth0') {
    throw new Error(
      `${where}: want default via ${gatewayOf(i)} dev eth0, routes are ${JSON.stringify(routes)}`,
    );
  }
}

function checkHostEmpty(variant: string, json: string): void {
  const left = parseJson<IpLink[]>(`${variant} host links after teardown`, json);
  if (left.length !== 0)
    throw new Error(`verify ${variant}: ${left.length} veths left in the host netns after teardown`);
}

// ---- helpers ----

/** Mount points at or under dir, deepest first. */
function mountsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp && (mp === dir || mp.startsWith(dir + '/'))) out.push(mp.replace(/\\040/g, ' '));
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Removes every netns mount under root, then root itself. Synchronous: also used from a signal handler. */
function removeRoot(root: string): void {
  for (const mp of mountsUnder(root)) {
    try {
      native.netnsDelete(mp);
    } catch {
      /* not a netns bind mount: rmSync below reports what is left */
    }
  }
  fs.rmSync(root, { recursive: true, force: true });
}

function ipIn(nsPath: string, args: string[]): string {
  return execFileSync('nsenter', [`--net=${nsPath}`, 'ip', ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

const TMPFS_MAGIC = 0x01021994;

/**
 * Where the private exec-root goes: BENCH_TMPDIR, else /dev/shm when it is a
 * tmpfs, else the OS temp dir. cnmd's exec-root (/run/cnmd) and iproute2's
 * /run/netns are on tmpfs on a normal host; on a disk filesystem each netns
 * file creation costs more (on a journal-less ext4, ext4's inode allocator
 * scans recently deleted inodes: O(files deleted in the last seconds) per create).
 */
function execRootParent(): { dir: string; tmpfs: boolean } {
  const isTmpfs = (d: string) => {
    try {
      return fs.statfsSync(d).type === TMPFS_MAGIC;
    } catch {
      return false;
    }
  };
  const env = process.env.BENCH_TMPDIR;
  if (env) return { dir: env, tmpfs: isTmpfs(env) };
  if (isTmpfs('/dev/shm')) return { dir: '/dev/shm', tmpfs: true };
  return { dir: os.tmpdir(), tmpfs: isTmpfs(os.tmpdir()) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

interface VariantResult {
  setupMs: number;
  teardownMs: number;
  processes?: number;
  /** Sequential cnmd only: mean ms per pair of each step. */
  steps?: Record<string, number>;
  /** Pipelined cnmd only: how long an unrelated request (another netns's handle) took during the teardown. */
  probeMs?: number;
}

// ---- (a) cnmd ----

type CnmdMode = 'pipelined' | 'sequential' | 'netns_only_teardown';

async function runCnmd(dir: string, n: number, mode: CnmdMode): Promise<VariantResult> {
  const sequential = mode === 'sequential';
  const variant = mode === 'pipelined' ? 'cnmd' : mode === 'sequential' ? 'cnmd_seq' : 'cnmd_nsdel';
  const mgr = new NetnsManager(dir);
  const host = await mgr.create('host');
  const made: (CreatedNetns | undefined)[] = new Array(n);
  const steps = { netns_create: 0, link_add: 0, in_netns: 0, host_up: 0 };
  const hostVeths = async () => (await host.handle.linkList()).filter((l) => l.kind === 'veth').length;
  try {
    const pair = async (i: number): Promise<void> => {
      let t = sequential ? performance.now() : 0;
      const lap = (k: keyof typeof steps) => {
        if (!sequential) return;
        const now = performance.now();
        steps[k] += now - t;
        t = now;
      };
      const ns = await mgr.create(`c${i}`);
      made[i] = ns;
      lap('netns_create');
      await host.handle.linkAdd({ kind: 'veth', name: `vh${i}`, peer: { name: 'eth0', netns: ns.path } });
      lap('link_add');
      const h = ns.handle;
      const eth0 = await h.linkIndex('eth0');
      await h.linkSet(eth0, { up: true });
      await h.addrAdd(eth0, cidrOf(i));
      await h.routeAdd({ gateway: gatewayOf(i), dev: eth0 });
      lap('in_netns');
      await host.handle.linkSet(`vh${i}`, { up: true });
      lap('host_up');
    };

    const t0 = performance.now();
    if (sequential) {
      for (let i = 0; i < n; i++) await pair(i);
    } else {
      await Promise.all(Array.from({ length: n }, (_, i) => pair(i)));
    }
    const setupMs = performance.now() - t0;

    checkHostLinks(variant, n, ipIn(host.path, ['-j', 'link', 'show', 'type', 'veth']));
    for (const i of spotIndexes(n)) {
      const p = made[i]!.path;
      checkNetns(variant, i, ipIn(p, ['-j', 'addr', 'show']), ipIn(p, ['-j', 'route', 'show']));
    }

    const removeNetns = (i: number) => {
      const ns = made[i]!;
      ns.handle.close();
      mgr.delete(ns.id);
      made[i] = undefined;
    };
    const range = Array.from({ length: n }, (_, i) => i);
    let probeMs: number | undefined;
    const t1 = performance.now();
    if (mode === 'pipelined') {
      // Same order as the ip -batch teardown: every veth (pipelined), then every netns.
      // Meanwhile, one unrelated request through another netns's handle: does it wait behind the deletes?
      const probe = (async () => {
        await sleep(20);
        const t = performance.now();
        await made[n - 1]!.handle.linkGet(1);
        probeMs = performance.now() - t;
      })();
      await Promise.all(range.map((i) => host.handle.linkDel(`vh${i}`)));
      await probe;
      range.forEach(removeNetns);
    } else if (mode === 'sequential') {
      // Same order as the ip-per-op teardown: per pair, the veth, then its netns.
      for (const i of range) {
        await host.handle.linkDel(`vh${i}`);
        removeNetns(i);
      }
    } else {
      // Remove only the namespaces; the kernel destroys each eth0, and with it
      // its host end, in its batched netns cleanup. Done when no veth is left.
      range.forEach(removeNetns);
      while ((await hostVeths()) > 0) await sleep(2);
    }
    const teardownMs = performance.now() - t1;

    checkHostEmpty(variant, ipIn(host.path, ['-j', 'link', 'show', 'type', 'veth']));
    const left = mgr.list().filter((id) => id !== 'host');
    if (left.length) throw new Error(`verify ${variant}: namespaces left after teardown: ${left.join(', ')}`);
    return {
      setupMs,
      teardownMs,
      probeMs,
      steps: sequential ? Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, v / n])) : undefined,
    };
  } finally {
    for (const ns of made) ns?.handle.close();
    host.handle.close();
    removeRoot(dir);
  }
}

// ---- (b), (c) iproute2, driven by /bin/sh in a private mount namespace ----

function ipScript(
  mode: 'per_op' | 'batch',
  dir: string,
  prefix: string,
  n: number,
): { script: string; processes: number } {
  const H = `${prefix}-host`;
  const ns = (i: number) => `${prefix}-${i}`;
  const setup: string[] = [];
  const teardown: string[] = [];
  let processes = 0;
  if (mode === 'per_op') {
    for (let i = 0; i < n; i++) {
      setup.push(
        `ip netns add ${ns(i)}`,
        `ip -n ${ns(i)} link set lo up`,
        `ip -n ${H} link add vh${i} type veth peer name eth0 netns ${ns(i)}`,
        `ip -n ${ns(i)} link set eth0 up`,
        `ip -n ${ns(i)} addr add ${cidrOf(i)} dev eth0`,
        `ip -n ${ns(i)} route add default via ${gatewayOf(i)} dev eth0`,
        `ip -n ${H} link set vh${i} up`,
      );
      teardown.push(`ip -n ${H} link del vh${i}`, `ip netns del ${ns(i)}`);
    }
    processes = setup.length;
  } else {
    const write = (f: string, lines: string[]) =>
      fs.writeFileSync(path.join(dir, f), lines.join('\n') + '\n');
    const range = Array.from({ length: n }, (_, i) => i);
    write(
      'netns-add.batch',
      range.map((i) => `netns add ${ns(i)}`),
    );
    write(
      'host.batch',
      range.flatMap((i) => [`link add vh${i} type veth peer name eth0 netns ${ns(i)}`, `link set vh${i} up`]),
    );
    for (const i of range) {
      write(`ns-${i}.batch`, [
        'link set lo up',
        'link set eth0 up',
        `addr add ${cidrOf(i)} dev eth0`,
        `route add default via ${gatewayOf(i)} dev eth0`,
      ]);
    }
    write(
      'host-del.batch',
      range.map((i) => `link del vh${i}`),
    );
    write(
      'netns-del.batch',
      range.map((i) => `netns del ${ns(i)}`),
    );
    setup.push(
      `ip -batch "$D/netns-add.batch"`,
      `ip -n ${H} -batch "$D/host.batch"`,
      ...range.map((i) => `ip -n ${ns(i)} -batch "$D/ns-${i}.batch"`),
    );
    teardown.push(`ip -n ${H} -batch "$D/host-del.batch"`, `ip -batch "$D/netns-del.batch"`);
    processes = setup.length;
  }
  const verify = [
    `ip -n ${H} -j link show type veth > "$D/v-host.json"`,
    ...spotIndexes(n).flatMap((i) => [
      `ip -n ${ns(i)} -j addr show > "$D/v-${i}-addr.json"`,
      `ip -n ${ns(i)} -j route show > "$D/v-${i}-route.json"`,
    ]),
  ];
  const after = [
    `ip -n ${H} -j link show type veth > "$D/v-host-after.json"`,
    `ls /run/netns > "$D/v-after-ls.txt"`,
  ];
  const script = [
    'set -e',
    `D='${dir}'`,
    // iproute2 hard-codes /run/netns: give it our own directory, in this private mount namespace only.
    '[ -d /run/netns ] || { mount -t tmpfs -o mode=755,size=1m cnmdbench-run /run; mkdir /run/netns; }',
    'mkdir -p "$D/netns"',
    'mount --bind "$D/netns" /run/netns',
    // Pass or fail, remove what is left (only our namespaces are in this /run/netns).
    "trap 'ip -all netns delete >/dev/null 2>&1 || true' EXIT",
    'mark() { echo "MARK $1 $(date +%s%N)"; }',
    `ip netns add ${H}`,
    `ip -n ${H} link set lo up`,
    'mark setup_start',
    ...setup,
    'mark setup_end',
    ...verify,
    'mark teardown_start',
    ...teardown,
    'mark teardown_end',
    ...after,
    '',
  ].join('\n');
  return { script, processes };
}

function runIp(mode: 'per_op' | 'batch', dir: string, n: number): VariantResult {
  const variant = `ip_${mode}`;
  fs.mkdirSync(dir, { recursive: true });
  const prefix = `cnmdbench-${process.pid}-${mode === 'per_op' ? 'p' : 'b'}`;
  try {
    const { script, processes } = ipScript(mode, dir, prefix, n);
    const file = path.join(dir, 'run.sh');
    fs.writeFileSync(file, script);
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-e', file], {
      encoding: 'utf8',
      timeout: SCRIPT_TIMEOUT_MS,
      killSignal: 'SIGKILL',
      maxBuffer: 64 << 20,
    });
    if (r.error) throw new Error(`${variant}: ${r.error.message}`);
    if (r.status !== 0) {
      throw new Error(
        `${variant}: script failed (exit ${r.status ?? r.signal}): ${(r.stderr || '').trim().split('\n').slice(-8).join(' | ')}`,
      );
    }
    const marks = new Map<string, bigint>();
    for (const line of r.stdout.split('\n')) {
      const m = /^MARK (\S+) (\d+)$/.exec(line);
      if (m) marks.set(m[1], BigInt(m[2]));
    }
    const span = (a: string, b: string) => {
      const x = marks.get(a);
      const y = marks.get(b);
      if (x === undefined || y === undefined)
        throw new Error(`${variant}: timing marks ${a}/${b} missing from the script output`);
      return Number(y - x) / 1e6;
    };
    const read = (f: string) => fs.readFileSync(path.join(dir, f), 'utf8');
    checkHostLinks(variant, n, read('v-host.json'));
    for (const i of spotIndexes(n))
      checkNetns(variant, i, read(`v-${i}-addr.json`), read(`v-${i}-route.json`));
    checkHostEmpty(variant, read('v-host-after.json'));
    const left = read('v-after-ls.txt')
      .split('\n')
      .filter((l) => l && l !== `${prefix}-host`);
    if (left.length) throw new Error(`verify ${variant}: namespaces left after teardown: ${left.join(', ')}`);
    return {
      setupMs: span('setup_start', 'setup_end'),
      teardownMs: span('teardown_start', 'teardown_end'),
      processes,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---- the case ----

export async function run(): Promise<Record<string, number>> {
  if (process.getuid?.() !== 0) throw new Error('bench netlink: needs root (network namespaces)');
  for (const tool of ['ip', 'unshare', 'nsenter', 'mount']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
      throw new Error(`bench netlink: "${tool}" is not installed`);
  }
  const parent = execRootParent();
  const root = fs.mkdtempSync(path.join(parent.dir, 'cnmd-bench-netlink-'));
  const offSignals = cleanupOnSignals(() => removeRoot(root));
  const rounds: Record<string, VariantResult>[] = [];
  try {
    console.log(
      `netlink: ${PAIRS} pairs, ${ROUNDS} round(s), exec-root ${root} (${parent.tmpfs ? 'tmpfs' : 'not tmpfs'}), load average ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    for (let r = 0; r < ROUNDS; r++) {
      const res: Record<string, VariantResult> = {};
      const variants: [string, () => Promise<VariantResult> | VariantResult][] = [
        ['cnmd', () => runCnmd(path.join(root, `cnmd-${r}`), PAIRS, 'pipelined')],
        ['cnmd_seq', () => runCnmd(path.join(root, `cnmd-seq-${r}`), PAIRS, 'sequential')],
        ['cnmd_nsdel', () => runCnmd(path.join(root, `cnmd-nsdel-${r}`), PAIRS, 'netns_only_teardown')],
        ['ip_batch', () => runIp('batch', path.join(root, `ip-batch-${r}`), PAIRS)],
        ['ip_per_op', () => runIp('per_op', path.join(root, `ip-per-op-${r}`), PAIRS)],
      ];
      for (const [v, fn] of variants) {
        await sleep(SETTLE_MS);
        res[v] = await fn();
        console.log(
          `  round ${r + 1} ${v.padEnd(10)} setup ${res[v].setupMs.toFixed(1).padStart(8)} ms (${(res[v].setupMs / PAIRS).toFixed(3)} ms/pair)` +
            `  teardown ${res[v].teardownMs.toFixed(1).padStart(8)} ms (${(res[v].teardownMs / PAIRS).toFixed(3)} ms/pair)` +
            (res[v].probeMs !== undefined
              ? `  unrelated request during teardown ${res[v].probeMs!.toFixed(1)} ms`
              : '') +
            (res[v].steps
              ? `  steps/pair: ${Object.entries(res[v].steps!)
                  .map(([k, x]) => `${k} ${x.toFixed(3)}`)
                  .join(', ')}`
              : ''),
        );
      }
      rounds.push(res);
    }
  } finally {
    offSignals();
    removeRoot(root);
  }

  const med = (v: string, f: (x: VariantResult) => number) => median(rounds.map((r) => f(r[v])));
  const figures: Record<string, number> = {
    pairs: PAIRS,
    rounds: ROUNDS,
    exec_root_on_tmpfs: parent.tmpfs ? 1 : 0,
  };
  for (const v of ['cnmd', 'ip_batch', 'ip_per_op']) {
    const setup = med(v, (x) => x.setupMs);
    const down = med(v, (x) => x.teardownMs);
    figures[`${v}_total_ms`] = setup;
    figures[`${v}_ms_per_pair`] = setup / PAIRS;
    figures[`${v}_teardown_ms`] = down;
    figures[`${v}_teardown_ms_per_pair`] = down / PAIRS;
    if (v !== 'cnmd') figures[`${v}_processes`] = rounds[0][v].processes!;
  }
  figures.cnmd_teardown_unrelated_request_ms = med('cnmd', (x) => x.probeMs!);
  figures.cnmd_seq_ms_per_pair = med('cnmd_seq', (x) => x.setupMs) / PAIRS;
  figures.cnmd_seq_teardown_ms_per_pair = med('cnmd_seq', (x) => x.teardownMs) / PAIRS;
  for (const k of Object.keys(rounds[0].cnmd_seq.steps!)) {
    figures[`cnmd_seq_step_${k}_ms`] = med('cnmd_seq', (x) => x.steps![k]);
  }
  figures.cnmd_teardown_netns_only_ms = med('cnmd_nsdel', (x) => x.teardownMs);
  figures.cnmd_teardown_netns_only_ms_per_pair = figures.cnmd_teardown_netns_only_ms / PAIRS;
  figures.ratio_cnmd_vs_ip_batch = figures.cnmd_ms_per_pair / figures.ip_batch_ms_per_pair;
  figures.ratio_ip_per_op_vs_cnmd = figures.ip_per_op_ms_per_pair / figures.cnmd_ms_per_pair;
  figures.ratio_cnmd_teardown_vs_ip_batch = figures.cnmd_teardown_ms / figures.ip_batch_teardown_ms;
  figures.ratio_ip_per_op_teardown_vs_cnmd = figures.ip_per_op_teardown_ms / figures.cnmd_teardown_ms;

  const within2x = figures.ratio_cnmd_vs_ip_batch <= 2;
  const tenX = figures.ratio_ip_per_op_vs_cnmd >= 10;
  console.log(
    `netlink goals: cnmd within 2x of ip -batch: ${figures.ratio_cnmd_vs_ip_batch.toFixed(2)}x -> ${within2x ? 'met' : 'MISSED'}; ` +
      `ip per op at least 10x slower than cnmd: ${figures.ratio_ip_per_op_vs_cnmd.toFixed(1)}x -> ${tenX ? 'met' : 'MISSED'}`,
  );
  return figures;
}
