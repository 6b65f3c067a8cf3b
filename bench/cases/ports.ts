// Bench case "ports": publishing a 1000-port and a 10,000-port range, cnmd
// side by side with its peers in one run, each in a private "host" netns of
// its own with an "outside" netns on a veth uplink (HOST_IP / OUTSIDE_IP):
//
//  cnmd       a daemon (nsenter --net=<host netns> node dist/src/cli/cnmd.js,
//             --log-level debug) with a bridge network. Publish = POST
//             /sandboxes {Name, Networks:[{Network}], Ports:["A-B:A-B"]};
//             remove = DELETE /sandboxes/{id}. The cost of the ports is the
//             create (delete) with the range minus a create (delete) without
//             ports: medians of BENCH_PORTS_REPEATS interleaved repeats, both
//             raw and net reported. Processes: strace -f -z -e trace=execve
//             attached to every thread of the daemon around one (untimed)
//             create and one delete per range, plus the daemon's descendants
//             in /proc before and after (persistent ones: how many more there
//             are; the spare iptables-restore a batch used is replaced by
//             another pid, the count stays). RSS: VmRSS after
//             1 s idle, before and with the ranged sandbox. Correctness: a
//             server in the sandbox on every port of the 1000 range (every
//             20th of the 10,000) answers from the outside netns through
//             HOST_IP, a sample also through the host's 127.0.0.1 (the
//             in-daemon proxy), GET /sandboxes/{id} shows one .Ports key per
//             port; after DELETE none answers and iptables-save (all tables)
//             is exactly as before.
//  netavark   /usr/lib/podman/netavark setup/teardown with
//             port_mappings [{host_port A, container_port A, range N}], the
//             same baseline-subtraction (a setup without ports), the same
//             reachability check from outside; processes by strace on one
//             untimed setup/teardown per range.
//  docker     dockerd (private roots, mount namespace, netns, cgroup parent; a
//             busybox image imported from busybox-static) with its default
//             userland proxy: `docker run -d -p A-B:A-B IMAGE sleep` timed
//             (CLI included), docker-proxy processes counted (those in its
//             netns) and their VmRSS summed, then `docker rm -f` timed. Capped
//             by BENCH_PORTS_DOCKER_TIMEOUT_S and a memory watchdog; the
//             10,000 range only when the 1000 one started within
//             BENCH_PORTS_DOCKER_10K_IF_1K_UNDER_S and 10x its proxies' RSS
//             fits in half the free memory. What did not run is reported as
//             such, never estimated.
//  proxy      iperf3, one TCP stream for BENCH_PORTS_IPERF_SECONDS from the
//             cnmd host netns's 127.0.0.1:HP to an iperf3 server in a sandbox:
//             through cnmd's in-daemon proxy (HP published by the sandbox) and
//             through Docker's docker-proxy binary run standalone in the same
//             netns (-host-ip 127.0.0.1 to the same server), alternating,
//             BENCH_PORTS_IPERF_ROUNDS rounds, medians.
//
// Host hygiene: as bench/lib/host.ts Scratch (one mkdtemp root, a tmpfs, every
// netns a file there, everything killed and removed pass or fail), plus a
// cleanup hook that kills any process still inside one of our namespaces
// (docker-proxy, servers). No rule is ever made in the machine's own netns.
//
// Environment: BENCH_PORTS_REPEATS (11), BENCH_PORTS_PEERS
// (cnmd,netavark,docker,proxy), BENCH_PORTS_IPERF_SECONDS (5),
// BENCH_PORTS_IPERF_ROUNDS (3), BENCH_PORTS_DOCKER_TIMEOUT_S (300),
// BENCH_PORTS_DOCKER_10K_IF_1K_UNDER_S (20), BENCH_PORTS_GAP_MS (200: pause
// before each timed operation), BENCH_SETTLE_MS (1500),
// BENCH_NO_INSTALL=1 (do not apt-get missing tools).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  Scratch,
  alive,
  commandExists,
  ensureDebPackages,
  intEnv,
  median,
  memKb,
  percentile,
  pidsMentioning,
  sleep,
  cleanupOnSignals,
} from '../lib/host';
import {
  ExecTrace,
  ExecWatch,
  HOST_IP,
  Server,
  descendants,
  dockerProxyStandalone,
  iperfClient,
  iperfServer,
  iptablesState,
  makeOutside,
  memAvailableKb,
  netavarkNet,
  pssSumKb,
  rssSumKb,
  samplePorts,
  serveTcp,
  stateDiff,
  summarizePrograms,
  unanswered,
} from '../lib/peers-ports';
import {
  Cnmd,
  NETAVARK,
  commOf,
  dockerProxies,
  dockerProxyPath,
  guardNetns,
  startDockerd,
} from '../lib/peers';

export const name = 'ports';
export const unit = 'ms';

const REPEATS = intEnv('BENCH_PORTS_REPEATS', 11, 1, 50);
const IPERF_SECONDS = intEnv('BENCH_PORTS_IPERF_SECONDS', 5, 1, 60);
const IPERF_ROUNDS = intEnv('BENCH_PORTS_IPERF_ROUNDS', 3, 1, 20);
const DOCKER_TIMEOUT_S = intEnv('BENCH_PORTS_DOCKER_TIMEOUT_S', 300, 10, 7200);
const DOCKER_10K_IF_1K_UNDER_S = intEnv('BENCH_PORTS_DOCKER_10K_IF_1K_UNDER_S', 20, 0, 7200);
const SETTLE_MS = intEnv('BENCH_SETTLE_MS', 1500, 0, 60000);
/** Pause before each timed operation: the daemon finishes a removal's veth in the background (RTM_DELLINK waits ~20 ms for RCU), which would otherwise bill the next create. */
const GAP_MS = intEnv('BENCH_PORTS_GAP_MS', 200, 0, 10000);
const ALL_PEERS = ['cnmd', 'netavark', 'docker', 'proxy'] as const;
type Peer = (typeof ALL_PEERS)[number];
const PEERS = parsePeers(process.env.BENCH_PORTS_PEERS);

/**
 * The two ranges, host port = container port. Both below ip_local_port_range
 * (32768-60999 by default): cnmd's proxy listens on an ephemeral 127.0.0.1
 * port, and its allocator refuses a range that covers it ("already in use by
 * a process on the host"), so 30000-39999 fails at random.
 */
const RANGES = [
  { n: 1000, first: 20000 },
  { n: 10000, first: 21000 },
] as const;
type Range = (typeof RANGES)[number];
const last = (r: Range) => r.first + r.n - 1;
const spec = (r: Range) => `${r.first}-${last(r)}:${r.first}-${last(r)}`;
/** Ports a server listens on and the outside sweep checks: all of 1000, every 20th of 10,000. */
const checked = (r: Range) => samplePorts(r.first, last(r), r.n <= 1000 ? 1 : 20);
/** Ports checked through the loopback proxy. */
const checkedLoopback = (r: Range) => samplePorts(r.first, last(r), Math.max(1, Math.floor(r.n / 50)));

const IPERF_CNMD_PORT = 15201;
const IPERF_DOCKER_PROXY_PORT = 15202;

function parsePeers(raw: string | undefined): Set<Peer> {
  if (!raw) return new Set(ALL_PEERS);
  const want = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = want.filter((p) => !(ALL_PEERS as readonly string[]).includes(p));
  if (bad.length)
    throw new Error(`BENCH_PORTS_PEERS: unknown ${bad.join(', ')}; known: ${ALL_PEERS.join(', ')}`);
  return new Set(want as Peer[]);
}

const f2 = (x: number) => x.toFixed(2);
const mb = (kb: number) => kb / 1024;

// ---- cnmd ----

interface OpTiming {
  client: number[];
  server: number[];
  /** Sum of the iptables-restore batch times logged during each request. */
  iptables: number[];
  batches: number[];
}
const newOp = (): OpTiming => ({ client: [], server: [], iptables: [], batches: [] });

interface CnmdRange {
  r: Range;
  create: OpTiming;
  del: OpTiming;
  spawnCreate: ExecTrace;
  spawnDelete: ExecTrace;
  persistentCreate: number;
  persistentList: string[];
  rssBeforeKb: number;
  rssWithKb: number;
  rssAfterRemoveKb: number;
  rulesAdded: number;
  checkedOutside: number;
  checkedLoopback: number;
  /** Debug log lines of the traced create (message and its timing fields), to see where the time goes. */
  createLog: string[];
}

interface CnmdResult {
  baseCreate: OpTiming;
  baseDelete: OpTiming;
  ranges: CnmdRange[];
  rssStartKb: number;
  proxy?: { cnmd: number[]; dockerProxy: number[]; dockerProxyBin: string } | { skipped: string };
}

async function runCnmd(s: Scratch, withRanges: boolean, withProxy: boolean): Promise<CnmdResult> {
  const outside = path.join(s.run, 'cnmd-outside');
  const d = await Cnmd.start(s, 'cnmd', { client: 'cnmctl', prepare: (ns) => makeOutside(ns, outside) });
  try {
    const net = 'benchnet';
    await d.ok('POST', '/networks/create', 201, {
      Name: net,
      Driver: 'bridge',
      IPAM: { Config: [{ Subnet: '10.210.0.0/16' }] },
    });
    let seq = 0;
    const isCreate = (u: string) => /^(\/v[\d.]+)?\/sandboxes$/.test(u);
    const isDelete = (u: string) => /\/sandboxes\/[^/]+$/.test(u);
    const create = async (ports: string[] | undefined, op?: OpTiming): Promise<string> => {
      if (op) await sleep(GAP_MS);
      const m = d.mark();
      const t0 = performance.now();
      const b = await d.ok('POST', '/sandboxes', 201, {
        Name: `sb${seq++}`,
        Networks: [{ Network: net }],
        ...(ports ? { Ports: ports } : {}),
      });
      const ms = performance.now() - t0;
      if (op) {
        op.client.push(ms);
        op.server.push((await d.serverMs(m, 'POST', isCreate, 1))[0] ?? NaN);
        const fw = d.firewallMs(m);
        op.iptables.push(fw.reduce((a, x) => a + x, 0));
        op.batches.push(fw.length);
      }
      return b.Id as string;
    };
    const remove = async (id: string, op?: OpTiming): Promise<void> => {
      if (op) await sleep(GAP_MS);
      const m = d.mark();
      const t0 = performance.now();
      await d.ok('DELETE', `/sandboxes/${id}`, 204);
      const ms = performance.now() - t0;
      if (op) {
        op.client.push(ms);
        op.server.push((await d.serverMs(m, 'DELETE', isDelete, 1))[0] ?? NaN);
        const fw = d.firewallMs(m);
        op.iptables.push(fw.reduce((a, x) => a + x, 0));
        op.batches.push(fw.length);
      }
    };

    // An anchor sandbox (the bridge and its rules exist, as on a busy host), warm-up.
    const anchor = await create(undefined);
    for (let i = 0; i < 3; i++) await remove(await create(undefined));
    await remove(await create(['19000-19099:19000-19099']));
    await sleep(1000);
    const rssStartKb = memKb(d.pid).rss;
    const state0 = iptablesState(d.hostNs);

    // Per range, phase A: processes and RSS (one untimed create + delete each,
    // before any test traffic, whose garbage would be collected in the window).
    const ranges: CnmdRange[] = [];
    for (const r of withRanges ? RANGES : []) {
      await sleep(1000);
      const rssBeforeKb = memKb(d.pid).rss;
      const before = descendants(d.pid);
      const w = new ExecWatch(s, d.pid, path.join(s.root, `strace-cnmd-create-${r.n}.log`));
      await w.start();
      const m = d.mark();
      const id = await create([spec(r)]);
      await sleep(300);
      const now = descendants(d.pid);
      const after = [...now].filter((p) => !before.has(p));
      const spawnCreate = await w.stop();
      const createLog = d
        .lines(m)
        .filter((j) => j.msg !== 'api' || isCreate(String(j.url)))
        .map((j) => {
          const { level: _l, time: _t, pid: _p, hostname: _h, msg, ...rest } = j;
          return `${msg} ${JSON.stringify(rest)}`;
        });
      await sleep(1000);
      const rssWithKb = memKb(d.pid).rss;
      const w2 = new ExecWatch(s, d.pid, path.join(s.root, `strace-cnmd-delete-${r.n}.log`));
      await w2.start();
      await remove(id);
      await sleep(300);
      const spawnDelete = await w2.stop();
      await sleep(1000);
      const rssAfterRemoveKb = memKb(d.pid).rss;
      ranges.push({
        r,
        create: newOp(),
        del: newOp(),
        spawnCreate,
        spawnDelete,
        // By count: the daemon keeps an iptables-restore per family waiting for the next
        // batch (firewall/exec.ts), and the one a batch used is replaced by a new pid.
        persistentCreate: Math.max(0, now.size - before.size),
        persistentList: after.map((p) => `${p}:${commOf(p)}`),
        rssBeforeKb,
        rssWithKb,
        rssAfterRemoveKb,
        rulesAdded: 0,
        checkedOutside: 0,
        checkedLoopback: 0,
        createLog,
      });
      console.log(
        `  cnmd ${String(r.n).padStart(5)} ports: untimed traced create spawned ${spawnCreate.processes} processes (${summarizePrograms(spawnCreate)}), ` +
          `${after.length} new descendants still running 300 ms later${after.length ? ` (${after.map((p) => `${p}:${commOf(p)}`).join(' ')})` : ''}; ` +
          `delete spawned ${spawnDelete.processes} (${summarizePrograms(spawnDelete)}); VmRSS ${f2(mb(rssBeforeKb))} -> ${f2(mb(rssWithKb))} MB with the range, ${f2(mb(rssAfterRemoveKb))} MB after its removal`,
      );
    }

    // Phase B: correctness (one untimed create + delete each).
    for (const x of ranges) {
      const r = x.r;
      const where = `verify cnmd ${r.n}-port range`;
      const id = await create([spec(r)]);
      const sb = await d.ok('GET', `/sandboxes/${id}`, 200);
      const keys = Object.keys(sb.Ports ?? {}).filter((k) => /^\d+\/tcp$/.test(k));
      if (keys.length !== r.n)
        throw new Error(`${where}: GET /sandboxes shows ${keys.length} published tcp ports, want ${r.n}`);
      for (const p of [r.first, last(r)]) {
        const v = sb.Ports[`${p}/tcp`] as { HostIp: string; HostPort: string }[] | null;
        if (!v?.some((y) => y.HostPort === String(p)))
          throw new Error(`${where}: .Ports["${p}/tcp"] is ${JSON.stringify(v)}, want HostPort ${p}`);
      }
      const stateWith = iptablesState(d.hostNs);
      const lines0 = new Set(state0.split('\n'));
      x.rulesAdded = stateWith.split('\n').filter((l) => l.startsWith('-A ') && !lines0.has(l)).length;
      const ports = checked(r);
      const lo = checkedLoopback(r);
      const server: Server = await serveTcp(s, sb.SandboxKey, ports);
      try {
        const missOut = unanswered(outside, HOST_IP, ports);
        if (missOut.length)
          throw new Error(
            `${where}: ${missOut.length} of ${ports.length} ports do not answer from outside through ${HOST_IP} (first: ${missOut.slice(0, 10).join(' ')})`,
          );
        const missLo = unanswered(d.hostNs, '127.0.0.1', lo);
        if (missLo.length)
          throw new Error(
            `${where}: ${missLo.length} of ${lo.length} ports do not answer through the host's 127.0.0.1 (the proxy) (first: ${missLo.slice(0, 10).join(' ')})`,
          );
        await remove(id);
        const stillOut = ports.length - unanswered(outside, HOST_IP, ports, 1000).length;
        if (stillOut) throw new Error(`${where}: ${stillOut} ports still answer from outside after DELETE`);
        const stillLo = lo.length - unanswered(d.hostNs, '127.0.0.1', lo, 1000).length;
        if (stillLo)
          throw new Error(`${where}: ${stillLo} ports still answer through 127.0.0.1 after DELETE`);
        const state1 = iptablesState(d.hostNs);
        if (state1 !== state0)
          throw new Error(
            `${where}: iptables differ after DELETE from before the create: ${stateDiff(state0, state1)}`,
          );
      } finally {
        await server.stop();
      }
      x.checkedOutside = ports.length;
      x.checkedLoopback = lo.length;
      console.log(
        `  cnmd ${String(r.n).padStart(5)} ports: ${keys.length} ports in GET .Ports, ${x.rulesAdded} iptables rules added; ${ports.length} ports answered from outside, ` +
          `${lo.length} via 127.0.0.1; none after DELETE, iptables-save as before`,
      );
    }

    // Timed repeats, interleaved: baseline, 1000, 10,000.
    const baseCreate = newOp();
    const baseDelete = newOp();
    for (let i = 0; i < (withRanges ? REPEATS : 0); i++) {
      await remove(await create(undefined, baseCreate), baseDelete);
      for (const x of ranges) await remove(await create([spec(x.r)], x.create), x.del);
    }
    const stateEnd = iptablesState(d.hostNs);
    if (stateEnd !== state0)
      throw new Error(`verify cnmd: iptables differ after the timed repeats: ${stateDiff(state0, stateEnd)}`);
    const left = (await d.ok('GET', '/sandboxes', 200)) as { Id: string }[];
    if (left.length !== 1 || left[0].Id !== anchor)
      throw new Error(`verify cnmd: ${left.length} sandboxes left after the repeats, want only the anchor`);

    let proxy: CnmdResult['proxy'];
    if (withProxy) proxy = await runProxy(s, d, net);
    await remove(anchor);
    return { baseCreate, baseDelete, ranges, rssStartKb, proxy };
  } finally {
    await d.stop();
  }
}

/** iperf3 through cnmd's in-daemon proxy and through a standalone docker-proxy, alternating. */
async function runProxy(s: Scratch, d: Cnmd, net: string): Promise<NonNullable<CnmdResult['proxy']>> {
  const bin = dockerProxyPath();
  if (!commandExists('iperf3')) return { skipped: 'iperf3 is not installed' };
  if (!bin) return { skipped: 'docker-proxy is not installed (Debian docker.io)' };
  const id = (
    await d.ok('POST', '/sandboxes', 201, {
      Name: 'iperf',
      Networks: [{ Network: net }],
      Ports: [`${IPERF_CNMD_PORT}:5201`],
    })
  ).Id as string;
  const sb = await d.ok('GET', `/sandboxes/${id}`, 200);
  const cip = sb.Networks?.[net]?.IPAddress as string;
  if (!cip) throw new Error(`proxy: sandbox iperf has no address on ${net}: ${JSON.stringify(sb.Networks)}`);
  const servers: Server[] = [];
  try {
    servers.push(await iperfServer(s, sb.SandboxKey));
    servers.push(await dockerProxyStandalone(s, bin, d.hostNs, IPERF_DOCKER_PROXY_PORT, cip, 5201));
    const cnmd: number[] = [];
    const dockerProxy: number[] = [];
    for (let i = 0; i < IPERF_ROUNDS; i++) {
      // Alternate which goes first, so neither always runs on a warmer machine.
      const order = i % 2 === 0 ? (['cnmd', 'docker'] as const) : (['docker', 'cnmd'] as const);
      for (const which of order) {
        const g = iperfClient(
          d.hostNs,
          '127.0.0.1',
          which === 'cnmd' ? IPERF_CNMD_PORT : IPERF_DOCKER_PROXY_PORT,
          IPERF_SECONDS,
        );
        (which === 'cnmd' ? cnmd : dockerProxy).push(g);
        await sleep(500);
      }
    }
    console.log(
      `  proxy: iperf3 1 stream ${IPERF_SECONDS} s, 127.0.0.1 -> sandbox ${cip}:5201: cnmd in-daemon proxy ${cnmd.map(f2).join(' / ')} Gbit/s, docker-proxy ${dockerProxy.map(f2).join(' / ')} Gbit/s`,
    );
    return { cnmd, dockerProxy, dockerProxyBin: bin };
  } finally {
    for (const x of servers.reverse()) await x.stop();
    await d.ok('DELETE', `/sandboxes/${id}`, 204);
  }
}

// ---- netavark ----

interface NavRange {
  r: Range;
  setup: number[];
  teardown: number[];
  spawnSetup: ExecTrace;
  spawnTeardown: ExecTrace;
  checkedOutside: number;
  leftRules: string;
}

interface NavResult {
  baseSetup: number[];
  baseTeardown: number[];
  aloneSetup: number[];
  aloneTeardown: number[];
  ranges: NavRange[];
}

async function runNetavark(s: Scratch): Promise<NavResult> {
  const outside = path.join(s.run, 'netavark-outside');
  const nav = await netavarkNet(
    s,
    'netavark',
    { prefix: '10.211.', cidr: '10.211.0.0/16', gateway: '10.211.0.1' },
    (ns) => makeOutside(ns, outside),
  );
  const mapping = (r: Range) => [
    { host_ip: '', container_port: r.first, host_port: r.first, range: r.n, protocol: 'tcp' as const },
  ];
  let seq = 0;
  await nav.setup('anchor', []);
  for (let i = 0; i < 3; i++) {
    const id = `w${seq++}`;
    await nav.setup(id, []);
    nav.teardown(id);
  }
  const state0 = iptablesState(nav.hostNs);
  const ranges: NavRange[] = [];
  for (const r of RANGES) {
    const id = `t${r.n}`;
    const up = await nav.setup(id, mapping(r), path.join(s.root, `strace-netavark-setup-${r.n}.log`));
    const ports = checked(r);
    const where = `verify netavark ${r.n}-port range`;
    const server = await serveTcp(s, up.ns, ports);
    let spawnTeardown: ExecTrace;
    try {
      const miss = unanswered(outside, HOST_IP, ports);
      if (miss.length)
        throw new Error(
          `${where}: ${miss.length} of ${ports.length} ports do not answer from outside (first: ${miss.slice(0, 10).join(' ')})`,
        );
      spawnTeardown = nav.teardown(id, path.join(s.root, `strace-netavark-teardown-${r.n}.log`)).trace!;
      const still = ports.length - unanswered(outside, HOST_IP, ports, 1000).length;
      if (still) throw new Error(`${where}: ${still} ports still answer after teardown`);
    } finally {
      await server.stop();
    }
    const state1 = iptablesState(nav.hostNs);
    const leftRules = state1 === state0 ? '' : stateDiff(state0, state1);
    console.log(
      `  netavark ${String(r.n).padStart(5)} ports: setup ran ${up.trace!.processes} processes (${summarizePrograms(up.trace!)}), teardown ${spawnTeardown.processes}; ` +
        `${ports.length} ports answered from outside, none after teardown${leftRules ? `; iptables NOT as before: ${leftRules}` : ''}`,
    );
    ranges.push({
      r,
      setup: [],
      teardown: [],
      spawnSetup: up.trace!,
      spawnTeardown,
      checkedOutside: ports.length,
      leftRules,
    });
  }
  const baseSetup: number[] = [];
  const baseTeardown: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const b = `b${seq++}`;
    await sleep(GAP_MS);
    baseSetup.push((await nav.setup(b, [])).ms);
    await sleep(GAP_MS);
    baseTeardown.push(nav.teardown(b).ms);
    for (const x of ranges) {
      const id = `r${x.r.n}x${seq++}`;
      await sleep(GAP_MS);
      x.setup.push((await nav.setup(id, mapping(x.r))).ms);
      await sleep(GAP_MS);
      x.teardown.push(nav.teardown(id).ms);
    }
  }
  nav.teardown('anchor');
  // The 1000-port range on a network with no other container (netavark then
  // also creates and deletes the bridge and its chains): how baselines.md measured it.
  const aloneSetup: number[] = [];
  const aloneTeardown: number[] = [];
  const r1000 = RANGES.find((r) => r.n === 1000)!;
  for (let i = 0; i < REPEATS; i++) {
    const id = `a${seq++}`;
    await sleep(GAP_MS);
    aloneSetup.push((await nav.setup(id, mapping(r1000))).ms);
    await sleep(GAP_MS);
    aloneTeardown.push(nav.teardown(id).ms);
  }
  return { baseSetup, baseTeardown, ranges, aloneSetup, aloneTeardown };
}

// ---- docker ----

interface DockerRange {
  r: Range;
  startMs: number;
  startStatus: string;
  timedOut: boolean;
  proxies: number;
  proxiesRssKb: number;
  proxiesPssKb: number;
  dockerdRssGrowthKb: number;
  removeMs: number;
  removeStatus: string;
  checkedOutside: number;
}

type DockerResult =
  | {
      ok: true;
      version: string;
      baseStart: number[];
      baseRemove: number[];
      ranges: DockerRange[];
      skipped10k?: string;
    }
  | { ok: false; reason: string };

async function runDocker(s: Scratch): Promise<DockerResult> {
  const outside = path.join(s.run, 'docker-outside');
  const started = await startDockerd(s, 'docker', (ns) => makeOutside(ns, outside));
  if (!started.ok) return started;
  const d = started.d;
  try {
    // Baseline: a container without ports (3 runs), each started and removed.
    const baseStart: number[] = [];
    const baseRemove: number[] = [];
    for (let i = 0; i < 4; i++) {
      const st = d.cli('run', ['run', '-d', '--name', `base${i}`, d.image, '/bin/sleep', '3600']).ms;
      const rm = d.cli('rm', ['rm', '-f', `base${i}`]).ms;
      if (i > 0) {
        baseStart.push(st);
        baseRemove.push(rm);
      }
    }
    const ranges: DockerRange[] = [];
    let skipped10k: string | undefined;
    for (const r of RANGES) {
      if (r.n > 1000) {
        const prev = ranges.find((x) => x.r.n === 1000);
        const avail = memAvailableKb();
        if (!prev) {
          skipped10k = 'the 1000-port range did not run';
          break;
        }
        if (prev.timedOut || prev.startMs > DOCKER_10K_IF_1K_UNDER_S * 1000) {
          skipped10k = `not attempted: the 1000-port range took ${(prev.startMs / 1000).toFixed(1)} s to start${prev.timedOut ? ' (timed out)' : ''}, over the ${DOCKER_10K_IF_1K_UNDER_S} s allowed for trying 10,000 (BENCH_PORTS_DOCKER_10K_IF_1K_UNDER_S)`;
          break;
        }
        if (prev.proxiesRssKb * 10 > avail / 2) {
          skipped10k = `not attempted: 10x the 1000-port range's docker-proxy RSS (${f2(mb(prev.proxiesRssKb * 10) / 1024)} GB) exceeds half the available memory (${f2(mb(avail) / 1024)} GB)`;
          break;
        }
      }
      const avail = memAvailableKb();
      if (avail < 8 * 1024 * 1024) {
        if (r.n === 1000)
          return {
            ok: false,
            reason: `only ${f2(mb(avail) / 1024)} GB of memory available; Docker's 1000-port range needed ~6.3 GB of docker-proxy processes here`,
          };
      }
      const c = `p${r.n}`;
      const rss0 = memKb(d.pid).rss;
      const floorKb = Math.max(2 * 1024 * 1024, avail / 8);
      const watchdog = () =>
        memAvailableKb() < floorKb
          ? `aborted: MemAvailable fell below ${f2(mb(floorKb) / 1024)} GB`
          : undefined;
      console.log(`  docker ${r.n} ports: docker run -d -p ${spec(r)} (cap ${DOCKER_TIMEOUT_S} s) ...`);
      const st = await d.cliCapped(
        ['run', '-d', '--name', c, '-p', spec(r), d.image, '/bin/sleep', '3600'],
        DOCKER_TIMEOUT_S * 1000,
        watchdog,
      );
      const timedOut = st.aborted !== undefined || st.status !== 0;
      const startStatus =
        st.aborted ??
        (st.status === 0
          ? 'ok'
          : `exit ${st.status ?? st.signal}: ${st.out.split('\n').slice(-2).join(' | ')}`);
      await sleep(1000);
      const proxyPids = dockerProxies(d.hostNs);
      const proxiesRssKb = rssSumKb(proxyPids);
      const proxiesPssKb = pssSumKb(proxyPids);
      const dockerdRssGrowthKb = memKb(d.pid).rss - rss0;
      let checkedOutside = 0;
      if (!timedOut) {
        // A sample of the range answers from outside (a server in the container's netns).
        const pid = Number(d.cli('inspect', ['inspect', '-f', '{{.State.Pid}}', c]).stdout.trim());
        const ports = samplePorts(r.first, last(r), Math.max(1, Math.floor(r.n / 50)));
        const server = await serveTcp(s, `/proc/${pid}/ns/net`, ports);
        try {
          const miss = unanswered(outside, HOST_IP, ports);
          if (miss.length)
            throw new Error(
              `verify docker ${r.n}-port range: ${miss.length} of ${ports.length} ports do not answer from outside (first: ${miss.slice(0, 10).join(' ')})`,
            );
          checkedOutside = ports.length;
        } finally {
          await server.stop();
        }
      }
      console.log(
        `  docker ${r.n} ports: start ${(st.ms / 1000).toFixed(1)} s (${startStatus}), ${proxyPids.length} docker-proxy processes, ${f2(mb(proxiesRssKb))} MB VmRSS summed over them (${f2(mb(proxiesPssKb))} MB Pss), dockerd +${f2(mb(dockerdRssGrowthKb))} MB; removing ...`,
      );
      const rm = await d.cliCapped(['rm', '-f', c], DOCKER_TIMEOUT_S * 2 * 1000);
      const removeStatus =
        rm.aborted ??
        (rm.status === 0
          ? 'ok'
          : `exit ${rm.status ?? rm.signal}: ${rm.out.split('\n').slice(-2).join(' | ')}`);
      const t0 = Date.now();
      while (dockerProxies(d.hostNs).length && Date.now() - t0 < 30_000) await sleep(200);
      const leftProxies = dockerProxies(d.hostNs).length;
      console.log(
        `  docker ${r.n} ports: removed in ${(rm.ms / 1000).toFixed(1)} s (${removeStatus}); docker-proxy left: ${leftProxies}`,
      );
      ranges.push({
        r,
        startMs: st.ms,
        startStatus,
        timedOut,
        proxies: proxyPids.length,
        proxiesRssKb,
        proxiesPssKb,
        dockerdRssGrowthKb,
        removeMs: rm.ms,
        removeStatus,
        checkedOutside,
      });
      if (timedOut || rm.status !== 0) break;
    }
    if (!ranges.some((x) => x.r.n === 10000) && !skipped10k)
      skipped10k = 'not attempted: the 1000-port range did not complete';
    return { ok: true, version: d.version, baseStart, baseRemove, ranges, skipped10k };
  } finally {
    await d.stop();
  }
}

// ---- the case ----

function checkTools(): void {
  if (process.getuid?.() !== 0) throw new Error('bench ports: needs root (network namespaces, mounts)');
  for (const tool of ['ip', 'nsenter', 'unshare', 'mount', 'umount', 'iptables', 'iptables-save', 'tar']) {
    if (!commandExists(tool)) throw new Error(`bench ports: "${tool}" is not installed`);
  }
}

export async function run(): Promise<Record<string, number>> {
  checkTools();
  const want = (p: Peer) => PEERS.has(p);
  const pkgs = [
    'strace',
    ...(want('netavark') ? ['netavark'] : []),
    ...(want('docker') ? ['docker.io', 'containerd', 'runc', 'busybox-static'] : []),
    ...(want('proxy') ? ['iperf3', 'docker.io'] : []),
  ];
  const installErr = ensureDebPackages([...new Set(pkgs)]);
  if (installErr) console.log(`  ports: ${installErr}`);
  if (want('cnmd') && !ExecWatch.available())
    throw new Error('bench ports: strace is needed to count the processes cnmd starts');
  const tStart = performance.now();

  const s = new Scratch('cnmd-bench-ports-');
  guardNetns(s);
  // Registered last, so it runs first: name what the generic cleanup is about to kill.
  s.onCleanup(() => {
    const left = pidsMentioning(s.root).filter(alive);
    if (left.length)
      console.log(
        `  ports cleanup: still running at the end: ${left.map((p) => `${p}:${commOf(p)}`).join(' ')}`,
      );
  });
  const offSignals = cleanupOnSignals(() => s.cleanup());
  console.log(
    `ports: ranges ${RANGES.map(spec).join(' and ')}, ${REPEATS} timed repeats, peers ${[...PEERS].join(', ')}, root ${s.root} (tmpfs at run/), ` +
      `${os.cpus().length} cores, load average ${os.loadavg().map(f2).join(' ')}, MemAvailable ${f2(mb(memAvailableKb()) / 1024)} GB`,
  );
  const unavailable: string[] = [];
  let cnmd: CnmdResult | undefined;
  let nav: NavResult | undefined;
  let dock: DockerResult | undefined;
  try {
    if (want('cnmd') || want('proxy')) {
      cnmd = await runCnmd(s, want('cnmd'), want('proxy'));
      if (cnmd.proxy && 'skipped' in cnmd.proxy) unavailable.push(`proxy throughput: ${cnmd.proxy.skipped}`);
    }
    if (want('netavark')) {
      await sleep(SETTLE_MS);
      if (!fs.existsSync(NETAVARK))
        unavailable.push(`netavark: ${NETAVARK} is missing (${installErr ?? 'not installed'})`);
      else nav = await runNetavark(s);
    }
    if (want('docker')) {
      await sleep(SETTLE_MS);
      dock = await runDocker(s);
      if (!dock.ok) unavailable.push(`docker: ${dock.reason}`);
      else if (dock.skipped10k) unavailable.push(`docker 10,000-port range: ${dock.skipped10k}`);
    }
  } finally {
    offSignals();
    const notes = s.cleanup();
    for (const n of notes) console.log(`  ports cleanup: ${n}`);
  }

  const figures: Record<string, number> = { repeats: REPEATS };
  if (cnmd && want('cnmd')) {
    const bc = median(cnmd.baseCreate.client);
    const bd = median(cnmd.baseDelete.client);
    figures.cnmd_sandbox_create_baseline_ms = bc;
    figures.cnmd_sandbox_delete_baseline_ms = bd;
    figures.cnmd_rss_baseline_mb = mb(cnmd.rssStartKb);
    for (const x of cnmd.ranges) {
      const n = x.r.n;
      figures[`cnmd_sandbox_create_${n}_ms`] = median(x.create.client);
      figures[`cnmd_apply_${n}_ms`] = median(x.create.client) - bc;
      figures[`cnmd_sandbox_delete_${n}_ms`] = median(x.del.client);
      figures[`cnmd_remove_${n}_ms`] = median(x.del.client) - bd;
      figures[`cnmd_apply_${n}_server_ms`] = median(x.create.server) - median(cnmd.baseCreate.server);
      figures[`cnmd_remove_${n}_server_ms`] = median(x.del.server) - median(cnmd.baseDelete.server);
      figures[`cnmd_apply_${n}_iptables_ms`] = median(x.create.iptables);
      figures[`cnmd_remove_${n}_iptables_ms`] = median(x.del.iptables);
      figures[`cnmd_processes_spawned_${n}`] = x.spawnCreate.processes;
      figures[`cnmd_persistent_processes_${n}`] = x.persistentCreate;
      figures[`cnmd_remove_processes_spawned_${n}`] = x.spawnDelete.processes;
      figures[`cnmd_rss_growth_mb_${n}`] = mb(x.rssWithKb - x.rssBeforeKb);
      figures[`cnmd_rss_after_remove_mb_${n}`] = mb(x.rssAfterRemoveKb);
      figures[`cnmd_iptables_rules_${n}`] = x.rulesAdded;
      figures[`cnmd_ports_checked_outside_${n}`] = x.checkedOutside;
      figures[`cnmd_ports_checked_loopback_${n}`] = x.checkedLoopback;
    }
  }
  if (nav) {
    const bs = median(nav.baseSetup);
    const bt = median(nav.baseTeardown);
    figures.netavark_setup_baseline_ms = bs;
    figures.netavark_teardown_baseline_ms = bt;
    figures.netavark_setup_1000_alone_ms = median(nav.aloneSetup);
    figures.netavark_teardown_1000_alone_ms = median(nav.aloneTeardown);
    for (const x of nav.ranges) {
      const n = x.r.n;
      figures[`netavark_setup_${n}_ms`] = median(x.setup);
      figures[`netavark_teardown_${n}_ms`] = median(x.teardown);
      figures[`netavark_apply_${n}_ms`] = median(x.setup) - bs;
      figures[`netavark_remove_${n}_ms`] = median(x.teardown) - bt;
      figures[`netavark_processes_spawned_${n}`] = x.spawnSetup.processes;
      figures[`netavark_teardown_processes_${n}`] = x.spawnTeardown.processes;
      figures[`netavark_ports_checked_outside_${n}`] = x.checkedOutside;
    }
  }
  if (want('docker')) {
    figures.docker_available = dock?.ok ? 1 : 0;
    if (dock?.ok) {
      figures.docker_start_baseline_ms = median(dock.baseStart);
      figures.docker_remove_baseline_ms = median(dock.baseRemove);
      for (const x of dock.ranges) {
        const n = x.r.n;
        figures[`docker_start_${n}_timed_out`] = x.timedOut ? 1 : 0;
        figures[`docker_proxy_processes_${n}`] = x.proxies;
        figures[`docker_proxy_rss_mb_${n}`] = mb(x.proxiesRssKb);
        figures[`docker_proxy_pss_mb_${n}`] = mb(x.proxiesPssKb);
        figures[`dockerd_rss_growth_mb_${n}`] = mb(x.dockerdRssGrowthKb);
        if (!x.timedOut) {
          figures[`docker_start_${n}_ms`] = x.startMs;
          figures[`docker_ports_checked_outside_${n}`] = x.checkedOutside;
        } else {
          figures[`docker_start_${n}_capped_at_ms`] = x.startMs;
        }
        if (x.removeStatus === 'ok') figures[`docker_remove_${n}_ms`] = x.removeMs;
      }
      figures.docker_10000_attempted = dock.ranges.some((x) => x.r.n === 10000) ? 1 : 0;
    }
  }
  if (cnmd?.proxy && !('skipped' in cnmd.proxy)) {
    figures.proxy_gbps_cnmd = median(cnmd.proxy.cnmd);
    figures.proxy_gbps_docker_proxy = median(cnmd.proxy.dockerProxy);
    figures.proxy_iperf_seconds = IPERF_SECONDS;
    figures.proxy_iperf_rounds = IPERF_ROUNDS;
    figures.ratio_proxy_cnmd_vs_docker = figures.proxy_gbps_cnmd / figures.proxy_gbps_docker_proxy;
  }
  for (const n of RANGES.map((r) => r.n)) {
    const ca = figures[`cnmd_apply_${n}_ms`];
    const cr = figures[`cnmd_remove_${n}_ms`];
    if (ca !== undefined && figures[`netavark_apply_${n}_ms`] !== undefined) {
      figures[`ratio_netavark_vs_cnmd_apply_${n}`] = figures[`netavark_apply_${n}_ms`] / ca;
      figures[`ratio_netavark_vs_cnmd_remove_${n}`] = figures[`netavark_remove_${n}_ms`] / cr;
      figures[`ratio_netavark_vs_cnmd_setup_${n}`] =
        figures[`netavark_setup_${n}_ms`] / figures[`cnmd_sandbox_create_${n}_ms`];
      figures[`ratio_netavark_vs_cnmd_teardown_${n}`] =
        figures[`netavark_teardown_${n}_ms`] / figures[`cnmd_sandbox_delete_${n}_ms`];
    }
    if (
      figures[`cnmd_sandbox_create_${n}_ms`] !== undefined &&
      figures[`docker_start_${n}_ms`] !== undefined
    ) {
      figures[`ratio_docker_vs_cnmd_start_${n}`] =
        figures[`docker_start_${n}_ms`] / figures[`cnmd_sandbox_create_${n}_ms`];
      if (figures[`docker_remove_${n}_ms`] !== undefined)
        figures[`ratio_docker_vs_cnmd_remove_${n}`] =
          figures[`docker_remove_${n}_ms`] / figures[`cnmd_sandbox_delete_${n}_ms`];
    }
  }
  figures.case_seconds = (performance.now() - tStart) / 1000;

  // Report.
  if (cnmd && want('cnmd')) {
    console.log(
      `  cnmd        sandbox create without ports ${f2(figures.cnmd_sandbox_create_baseline_ms)} ms, delete ${f2(figures.cnmd_sandbox_delete_baseline_ms)} ms (medians of ${REPEATS})`,
    );
    for (const x of cnmd.ranges) {
      const n = x.r.n;
      console.log(
        `  cnmd ${String(n).padStart(5)}  create ${f2(figures[`cnmd_sandbox_create_${n}_ms`])} ms (apply +${f2(figures[`cnmd_apply_${n}_ms`])} ms; server +${f2(figures[`cnmd_apply_${n}_server_ms`])}; ` +
          `iptables-restore ${f2(figures[`cnmd_apply_${n}_iptables_ms`])} ms in ${median(x.create.batches)} batch(es)), ` +
          `delete ${f2(figures[`cnmd_sandbox_delete_${n}_ms`])} ms (remove +${f2(figures[`cnmd_remove_${n}_ms`])} ms; server +${f2(figures[`cnmd_remove_${n}_server_ms`])}; iptables-restore ${f2(figures[`cnmd_remove_${n}_iptables_ms`])} ms)`,
      );
      console.log(
        `               create samples ${x.create.client.map(f2).join(' ')}; delete samples ${x.del.client.map(f2).join(' ')}`,
      );
    }
    const lg = cnmd.ranges.find((x) => x.r.n === 1000)?.createLog ?? [];
    if (lg.length)
      console.log(
        `  cnmd debug log of the traced 1000-port create (strace attached: slower than the timed ones):\n${lg.map((l) => `      ${l.slice(0, 240)}`).join('\n')}`,
      );
  }
  if (nav) {
    console.log(
      `  netavark    setup without ports ${f2(figures.netavark_setup_baseline_ms)} ms, teardown ${f2(figures.netavark_teardown_baseline_ms)} ms; ` +
        `1000-port range as the only container (bridge made and removed too): setup ${f2(figures.netavark_setup_1000_alone_ms)} ms, teardown ${f2(figures.netavark_teardown_1000_alone_ms)} ms`,
    );
    for (const x of nav.ranges) {
      const n = x.r.n;
      console.log(
        `  netavark ${String(n).padStart(5)} setup ${f2(figures[`netavark_setup_${n}_ms`])} ms (+${f2(figures[`netavark_apply_${n}_ms`])}), teardown ${f2(figures[`netavark_teardown_${n}_ms`])} ms (+${f2(figures[`netavark_remove_${n}_ms`])}); ` +
          `setup p10-p90 ${f2(percentile(x.setup, 10))}-${f2(percentile(x.setup, 90))} ms (baseline ${f2(percentile(nav.baseSetup, 10))}-${f2(percentile(nav.baseSetup, 90))})`,
      );
    }
  }
  if (dock?.ok)
    console.log(
      `  docker      ${dock.version}: run -d without ports ${f2(figures.docker_start_baseline_ms)} ms, rm -f ${f2(figures.docker_remove_baseline_ms)} ms (CLI included)`,
    );
  for (const u of unavailable) console.log(`  UNAVAILABLE ${u}`);

  const goals: string[] = [];
  const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
  const le = (label: string, v: number | undefined, max: number, u: string) => {
    if (v !== undefined)
      goals.push(
        `${label} ${f2(v)} ${u} <= ${max} ${u}: ${verdict(v <= max)}${v > max ? ` (by ${f2(v - max)} ${u})` : ''}`,
      );
  };
  const ge = (label: string, v: number | undefined, min: number) => {
    if (v !== undefined)
      goals.push(
        `${label} ${f2(v)}x >= ${min}x: ${verdict(v >= min)}${v < min ? ` (short by ${f2(min - v)})` : ''}`,
      );
  };
  le('1000-port apply', figures.cnmd_apply_1000_ms, 50, 'ms');
  le('1000-port remove', figures.cnmd_remove_1000_ms, 50, 'ms');
  ge('vs netavark 1000, net of baselines: apply', figures.ratio_netavark_vs_cnmd_apply_1000, 2);
  ge('remove', figures.ratio_netavark_vs_cnmd_remove_1000, 2);
  ge('vs netavark 1000, whole setup vs sandbox create', figures.ratio_netavark_vs_cnmd_setup_1000, 2);
  ge('whole teardown vs sandbox delete', figures.ratio_netavark_vs_cnmd_teardown_1000, 2);
  for (const n of RANGES.map((r) => r.n)) {
    const v = figures[`cnmd_persistent_processes_${n}`];
    if (v !== undefined) goals.push(`persistent processes (${n}) ${v} == 0: ${verdict(v === 0)}`);
  }
  le('RSS growth 1000', figures.cnmd_rss_growth_mb_1000, 20, 'MB');
  le('RSS growth 10000', figures.cnmd_rss_growth_mb_10000, 20, 'MB');
  ge('proxy throughput vs docker-proxy', figures.ratio_proxy_cnmd_vs_docker, 0.8);
  if (goals.length) console.log(`ports goals: ${goals.join('; ')}`);
  console.log(`ports: case ran ${figures.case_seconds.toFixed(1)} s`);
  return figures;
}
