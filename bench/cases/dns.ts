// Bench case "dns": the embedded DNS under load, cnmd side by side with its
// peers in one run, each in private namespaces of its own, with dnsperf
// (Debian) run from inside a container's netns against the container's
// resolver, asking for the names of the other containers on its network
// (BENCH_DNS_NAMES, 20, type A, the query file looped over):
//
//  cnmd      a daemon (as the attach case starts it: private host netns,
//            exec-root on a tmpfs) with a user-defined bridge network, 20
//            named sandboxes and a "client" sandbox; dnsperf runs in the
//            client's netns (nsenter --net=<SandboxKey>) against 127.0.0.11.
//  docker    Debian docker.io 20.10 (dockerd as in the attach case: private
//            mount namespace, host netns, roots, cgroup parent), busybox image
//            from busybox-static, a user-defined network, 20 named containers
//            and a client container running sleep; dnsperf via `nsenter -n -t
//            <client pid>` against Docker's embedded resolver at 127.0.0.11
//            (dockerd's socket behind its DNAT in the container netns).
//  aardvark  Debian aardvark-dns (podman's resolver): `aardvark-dns --config
//            DIR -p 53 run` inside a "host" netns whose bridge holds the
//            gateway address, DIR/<network> listing the 20 names and the
//            client; dnsperf in a client netns joined to that bridge by a
//            veth, against the gateway (as a podman container asks it).
//
// All three are set up first and stay up; then BENCH_DNS_ROUNDS (3) rounds,
// each doing every kind of run below for every peer, peer after peer, the
// order rotating each round (interleaved: other load on the machine is shared
// out). Figures are medians over the rounds; lost queries are summed.
//  1. throughput: `-c 4 -l 10 -S 1` (closed loop, dnsperf's default 100
//     queries outstanding): queries/s, average and max latency, lost: the
//     figures of bench/baselines.md.
//  2. loaded latency: the same with -v (one line per answered query with its
//     latency): p50/p99/p99.9 under saturation. Printing slows dnsperf down
//     (its rate in this run is not the headline figure); the percentiles are
//     still taken in the same closed loop for every peer.
//  3. fixed rate: `-c 4 -l 5 -Q BENCH_DNS_RATE -v` (10,000/s, below every
//     peer's capacity): p50/p99/p99.9 at equal offered load.
// dnsperf gives average and max only: the percentiles come from its -v output.
// The server process's CPU time over each run is read from /proc (cnmd's
// daemon, dockerd, aardvark-dns): CPU microseconds per query, the cost of a
// query whatever else the 2 cores are doing.
// Every run's response codes must all be NOERROR, and before the runs every
// name is resolved once from the client and checked against the address the
// peer gave the container (fast-but-wrong fails the case).
//
// Memory: fresh daemons, each with one network and BENCH_DNS_RSS_SANDBOXES
// (100) sandboxes, one with the embedded DNS (a resolver per sandbox) and one
// on a network with `cnmd.network.embedded_dns=false`, alternating for
// BENCH_DNS_RSS_ROUNDS (2) rounds; VmRSS after 1 s idle before and after the
// sandboxes; MB per resolver = (median growth with DNS - median growth
// without) / sandboxes. Checked: with DNS, the last sandbox resolves the first
// and itself; the daemon holds 2 more fds per sandbox (UDP + TCP sockets)
// than without.
//
// Profile (BENCH_DNS_PROFILE=1, default): one more daemon under
// `node --cpu-prof`, the same 20 names, dnsperf -l 5; the samples taken during
// the load (CLOCK_MONOTONIC window) summarised by self time: where the time goes.
//
// Host hygiene: as bench/cases/attach.ts (bench/lib/host.ts Scratch): every
// netns, daemon root and socket under one mkdtemp root with a tmpfs; dockerd in
// a private mount namespace and cgroup parent; aardvark-dns (it daemonizes)
// killed by pid, and any process left inside one of our namespaces killed at
// cleanup; pass or fail, and on SIGINT/SIGTERM.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { EMBEDDED_DNS_OPTION } from '../../src/controller/controller';
import {
  Scratch,
  commandExists,
  ensureDebPackages,
  intEnv,
  median,
  memKb,
  sleep,
  cleanupOnSignals,
} from '../lib/host';
import {
  AARDVARK,
  NsRef,
  PerfResult,
  ProfileSummary,
  checkResolves,
  dnsperf,
  monotonicUs,
  resolveAll,
  startAardvark,
  stopPid,
  summarizeProfile,
  writeAardvarkConfig,
  writeQueryFile,
} from '../lib/peers-dns';
import { Cnmd, CnmdOptions, inNs, makeNetns, startDockerd } from '../lib/peers';

export const name = 'dns';
export const unit = 'queries/s, ms, MB';

const NAMES = intEnv('BENCH_DNS_NAMES', 20, 1, 200);
const CLIENTS = intEnv('BENCH_DNS_CLIENTS', 4, 1, 64);
const SECONDS = intEnv('BENCH_DNS_SECONDS', 10, 1, 120);
const ROUNDS = intEnv('BENCH_DNS_ROUNDS', 3, 1, 10);
const RATE = intEnv('BENCH_DNS_RATE', 10000, 100, 1_000_000);
const RATE_SECONDS = intEnv('BENCH_DNS_RATE_SECONDS', 5, 1, 120);
const RSS_SANDBOXES = intEnv('BENCH_DNS_RSS_SANDBOXES', 100, 0, 2000);
const RSS_ROUNDS = intEnv('BENCH_DNS_RSS_ROUNDS', 2, 1, 10);
const PROFILE = intEnv('BENCH_DNS_PROFILE', 1, 0, 1) === 1;
const PROFILE_SECONDS = intEnv('BENCH_DNS_PROFILE_SECONDS', 5, 1, 60);
const SETTLE_MS = intEnv('BENCH_SETTLE_MS', 1500, 0, 60000);
const ALL_PEERS = ['cnmd', 'docker', 'aardvark'] as const;
type Peer = (typeof ALL_PEERS)[number];
const PEERS = parsePeers(process.env.BENCH_DNS_PEERS);

const NET = 'dnsnet';
const CNMD_SUBNET = '10.210.0.0/16';
const DOCKER_NET = { subnet: '10.77.0.0/16', gateway: '10.77.0.1' };
const AV_NET = { prefix: '10.89.', gateway: '10.89.0.1', client: '10.89.0.2' };

function parsePeers(raw: string | undefined): Set<Peer> {
  if (!raw) return new Set(ALL_PEERS);
  const want = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = want.filter((p) => !(ALL_PEERS as readonly string[]).includes(p));
  if (bad.length)
    throw new Error(`BENCH_DNS_PEERS: unknown ${bad.join(', ')}; known: ${ALL_PEERS.join(', ')}`);
  return new Set(want as Peer[]);
}

const peerNames = () => Array.from({ length: NAMES }, (_, i) => `peer${i}`);

// ---- the resolvers under test ----

/** A resolver ready to be measured: where dnsperf runs, what it asks, whose CPU is the server's. */
interface Target {
  key: Peer;
  ns: NsRef;
  server: string;
  pid: number;
  /** Version, memory: for the console. */
  detail(): string;
  stop(): Promise<void>;
}

type Setup = { ok: true; t: Target } | { ok: false; reason: string };

interface Runs {
  thr: PerfResult[];
  loaded: PerfResult[];
  fixed: PerfResult[];
}

function checkRcodes(where: string, r: PerfResult): void {
  const other = Object.entries(r.rcodes).filter(([k]) => k !== 'NOERROR');
  if (other.length || r.completed === 0 || (r.rcodes.NOERROR ?? 0) !== r.completed) {
    throw new Error(
      `verify ${where}: dnsperf response codes ${JSON.stringify(r.rcodes)} for ${r.completed} completed queries: want all NOERROR`,
    );
  }
}

type Kind = keyof Runs;

/** One dnsperf run of a kind against a target (output files on the tmpfs). */
function perfRun(s: Scratch, t: Target, kind: Kind, round: number): PerfResult {
  const dir = path.join(s.run, 'perf');
  fs.mkdirSync(dir, { recursive: true });
  const qf = path.join(dir, 'queries.txt');
  if (!fs.existsSync(qf)) writeQueryFile(qf, peerNames());
  const out = path.join(dir, `${t.key}-${kind}-${round}.out`);
  const o =
    kind === 'thr'
      ? { clients: CLIENTS, seconds: SECONDS, intervals: true }
      : kind === 'loaded'
        ? { clients: CLIENTS, seconds: SECONDS, verbose: true }
        : { clients: CLIENTS, seconds: RATE_SECONDS, rate: RATE, verbose: true };
  const r = dnsperf(t.ns, t.server, qf, out, { ...o, serverPid: t.pid });
  checkRcodes(`${t.key} ${kind} run ${round + 1}`, r);
  fs.rmSync(out, { force: true }); // -v output is large; parsed already
  return r;
}

/** Medians over the rounds of one kind of run. */
function med(rs: PerfResult[], pick: (r: PerfResult) => number | undefined): number {
  return median(rs.map(pick).filter((x): x is number => x !== undefined && Number.isFinite(x)));
}

function report(label: string, m: Runs, detail: string): void {
  const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '-');
  const iv = m.thr.flatMap((r) => r.intervals);
  const lost = (rs: PerfResult[]) => rs.reduce((a, r) => a + r.lost, 0);
  console.log(
    `  ${label.padEnd(9)} ${f(
      med(m.thr, (r) => r.qps),
      0,
    ).padStart(7)} queries/s (rounds ${m.thr.map((r) => r.qps.toFixed(0)).join(', ')})  avg ${f(
      med(m.thr, (r) => r.avgMs),
      3,
    )} ms  ` +
      `max ${f(Math.max(...m.thr.map((r) => r.maxMs)), 1)} ms  lost ${lost(m.thr)}/${m.thr.reduce((a, r) => a + r.sent, 0)}  server CPU ${f(
        med(m.thr, (r) => r.serverCpuPct),
        0,
      )} % (${f(
        med(m.thr, (r) => r.serverCpuUsPerQuery),
        1,
      )} us/query: user ${f(
        med(m.thr, (r) => r.serverUserUsPerQuery),
        1,
      )}, kernel ${f(
        med(m.thr, (r) => r.serverSysUsPerQuery),
        1,
      )})  ` +
      `1-s intervals ${iv.length ? `${f(Math.min(...iv), 0)}..${f(Math.max(...iv), 0)}` : '-'}  ${detail}`,
  );
  console.log(
    `  ${''.padEnd(9)} loaded -v (${f(
      med(m.loaded, (r) => r.qps),
      0,
    )}/s): p50 ${f(
      med(m.loaded, (r) => r.p50Ms),
      3,
    )}  p99 ${f(
      med(m.loaded, (r) => r.p99Ms),
      3,
    )}  ` +
      `p99.9 ${f(
        med(m.loaded, (r) => r.p999Ms),
        3,
      )} ms, lost ${lost(m.loaded)};  at ${RATE}/s (${f(
        med(m.fixed, (r) => r.qps),
        0,
      )}/s done): p50 ${f(
        med(m.fixed, (r) => r.p50Ms),
        3,
      )}  ` +
      `p99 ${f(
        med(m.fixed, (r) => r.p99Ms),
        3,
      )}  p99.9 ${f(
        med(m.fixed, (r) => r.p999Ms),
        3,
      )}  max ${f(Math.max(...m.fixed.map((r) => r.maxMs)), 2)} ms, lost ${lost(m.fixed)}, ` +
      `server CPU ${f(
        med(m.fixed, (r) => r.serverCpuPct),
        0,
      )} %`,
  );
  console.log(
    `  ${''.padEnd(9)} 1-s rates of the throughput runs (thousands/s): ${m.thr.map((r) => r.intervals.map((x) => (x / 1000).toFixed(1)).join(' ')).join(' | ')}`,
  );
}

// ---- cnmd ----

/**
 * How this case runs its daemons: info logs, requests through cnmctl's client, a
 * private resolv.conf (the host's would do too: nothing here is forwarded; a
 * private one keeps the run self-contained).
 */
const DAEMON: CnmdOptions = { client: 'cnmctl', logLevel: 'info', resolvConf: 'nameserver 192.0.2.53\n' };

interface CnmdNet {
  d: Cnmd;
  client: NsRef;
  want: Map<string, string>;
}

/** A daemon with the network, the named sandboxes and the client; names checked from the client. */
async function cnmdWithNames(s: Scratch, tag: string, nodeArgs?: string[]): Promise<CnmdNet> {
  const d = await Cnmd.start(s, tag, { ...DAEMON, nodeArgs });
  try {
    await d.ok('POST', '/networks/create', 201, {
      Name: NET,
      Driver: 'bridge',
      IPAM: { Config: [{ Subnet: CNMD_SUBNET }] },
    });
    const want = new Map<string, string>();
    for (const n of peerNames()) {
      const id = (await d.ok('POST', '/sandboxes', 201, { Name: n, Networks: [{ Network: NET }] }))
        .Id as string;
      const sb = await d.ok('GET', `/sandboxes/${id}`, 200);
      want.set(n, String(sb.Networks?.[NET]?.IPAddress ?? ''));
    }
    const cid = (await d.ok('POST', '/sandboxes', 201, { Name: 'client', Networks: [{ Network: NET }] }))
      .Id as string;
    const csb = await d.ok('GET', `/sandboxes/${cid}`, 200);
    if (!String(csb.SandboxKey).startsWith(s.run + '/'))
      throw new Error(`verify cnmd: client netns ${csb.SandboxKey} is not under the tmpfs exec-root`);
    const client: NsRef = { path: csb.SandboxKey };
    checkResolves(`cnmd (${tag})`, client, '127.0.0.11', want);
    return { d, client, want };
  } catch (e) {
    await d.stop();
    throw e;
  }
}

async function setupCnmd(s: Scratch): Promise<Target> {
  const { d, client } = await cnmdWithNames(s, 'cnmd');
  return {
    key: 'cnmd',
    ns: client,
    server: '127.0.0.11',
    pid: d.pid,
    detail: () => `(daemon VmRSS ${(memKb(d.pid).rss / 1024).toFixed(1)} MB)`,
    stop: () => d.stop(),
  };
}

// ---- docker ----

async function setupDocker(s: Scratch): Promise<Setup> {
  const started = await startDockerd(s, 'docker');
  if (!started.ok) return started;
  const dk = started.d;
  const names = [...peerNames(), 'client'];
  const stop = async () => {
    try {
      dk.cli('rm', ['rm', '-f', ...names], 120_000);
      dk.cli('network rm', ['network', 'rm', NET]);
    } catch (e) {
      console.log(
        `  dns: docker cleanup: ${(e as Error).message.slice(0, 300)} (the scratch cleanup kills what is left)`,
      );
    }
    await dk.stop();
  };
  try {
    try {
      dk.cli('network create', [
        'network',
        'create',
        '--driver',
        'bridge',
        '--subnet',
        DOCKER_NET.subnet,
        '--gateway',
        DOCKER_NET.gateway,
        NET,
      ]);
      for (const n of names)
        dk.cli(`run ${n}`, ['run', '-d', '--name', n, '--network', NET, dk.image, '/bin/sleep', '3600']);
    } catch (e) {
      await stop();
      return {
        ok: false,
        reason: `docker could not run the containers here: ${(e as Error).message.slice(0, 600)}; dockerd: ${dk.tail()}`,
      };
    }
    const want = new Map<string, string>();
    let clientPid = 0;
    const lines = dk
      .cli('inspect', [
        'inspect',
        '-f',
        `{{.Name}} {{.State.Pid}} {{(index .NetworkSettings.Networks "${NET}").IPAddress}}`,
        ...names,
      ])
      .stdout.trim()
      .split('\n');
    for (const l of lines) {
      const [nm, pid, ip] = l.trim().split(/\s+/);
      const bare = nm.replace(/^\//, '');
      if (bare === 'client') clientPid = Number(pid);
      else want.set(bare, ip);
    }
    if (!(clientPid > 0)) throw new Error(`docker: no pid for the client container: ${lines.join(' | ')}`);
    const client: NsRef = { pid: clientPid };
    checkResolves('docker', client, '127.0.0.11', want);
    return {
      ok: true,
      t: {
        key: 'docker',
        ns: client,
        server: '127.0.0.11',
        pid: dk.pid,
        detail: () => `(dockerd ${dk.version}, VmRSS ${(memKb(dk.pid).rss / 1024).toFixed(1)} MB)`,
        stop,
      },
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

// ---- aardvark-dns ----

async function setupAardvark(s: Scratch): Promise<Setup> {
  if (!fs.existsSync(AARDVARK))
    return { ok: false, reason: `${AARDVARK} is missing (Debian package aardvark-dns)` };
  const dir = path.join(s.run, 'aardvark');
  fs.mkdirSync(dir);
  const hostNs = await makeNetns(path.join(dir, 'host-netns'));
  const clientNs = await makeNetns(path.join(dir, 'client-netns'));
  const h = (what: string, ...args: string[]) => inNs(hostNs, `aardvark host: ${what}`, 'ip', args);
  h('bridge', 'link', 'add', 'avbr0', 'type', 'bridge');
  h('gateway', 'addr', 'add', `${AV_NET.gateway}/16`, 'dev', 'avbr0');
  h('bridge up', 'link', 'set', 'avbr0', 'up');
  h('veth', 'link', 'add', 'av-client', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', clientNs);
  h('veth port', 'link', 'set', 'av-client', 'master', 'avbr0', 'up');
  inNs(clientNs, 'aardvark client addr', 'ip', ['addr', 'add', `${AV_NET.client}/16`, 'dev', 'eth0']);
  inNs(clientNs, 'aardvark client up', 'ip', ['link', 'set', 'eth0', 'up']);
  const want = new Map<string, string>();
  const entries = peerNames().map((n, i) => {
    const ip = `${AV_NET.prefix}${(10 + i) >> 8}.${(10 + i) & 255}`;
    want.set(n, ip);
    return { id: (Buffer.from(n).toString('hex') + '0'.repeat(64)).slice(0, 64), ipv4: ip, names: [n] };
  });
  entries.push({ id: 'c'.repeat(64), ipv4: AV_NET.client, names: ['client'] });
  const cfg = path.join(dir, 'config');
  writeAardvarkConfig(cfg, NET, AV_NET.gateway, entries);
  const pid = await startAardvark(s, hostNs, cfg);
  try {
    const client: NsRef = { path: clientNs };
    checkResolves('aardvark', client, AV_NET.gateway, want);
    let ver = 'aardvark-dns';
    try {
      ver = execFileSync(AARDVARK, ['--version'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    } catch {
      /* unknown version */
    }
    return {
      ok: true,
      t: {
        key: 'aardvark',
        ns: client,
        server: AV_NET.gateway,
        pid,
        detail: () => `(${ver}, VmRSS ${(memKb(pid).rss / 1024).toFixed(1)} MB)`,
        stop: () => stopPid(pid),
      },
    };
  } catch (e) {
    await stopPid(pid);
    throw e;
  }
}

// ---- memory per resolver ----

interface RssSample {
  dns: boolean;
  baseKb: number;
  afterKb: number;
  fds: number;
}

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

async function rssOnce(s: Scratch, tag: string, dns: boolean): Promise<RssSample> {
  const d = await Cnmd.start(s, tag, DAEMON);
  try {
    await d.ok('POST', '/networks/create', 201, {
      Name: 'rssnet',
      Driver: 'bridge',
      IPAM: { Config: [{ Subnet: '10.211.0.0/16' }] },
      ...(dns ? {} : { Options: { [EMBEDDED_DNS_OPTION]: 'false' } }),
    });
    await sleep(1000);
    const baseKb = memKb(d.pid).rss;
    const fd0 = fdCount(d.pid);
    const ids: string[] = [];
    for (let i = 0; i < RSS_SANDBOXES; i++)
      ids.push(
        (await d.ok('POST', '/sandboxes', 201, { Name: `r${i}`, Networks: [{ Network: 'rssnet' }] })).Id,
      );
    await sleep(1000);
    const afterKb = memKb(d.pid).rss;
    const fds = fdCount(d.pid) - fd0;
    if (RSS_SANDBOXES > 0) {
      const last = await d.ok('GET', `/sandboxes/${ids[ids.length - 1]}`, 200);
      const ns: NsRef = { path: last.SandboxKey };
      if (dns) {
        const first = await d.ok('GET', `/sandboxes/${ids[0]}`, 200);
        checkResolves(
          `cnmd rss (${tag})`,
          ns,
          '127.0.0.11',
          new Map([
            ['r0', first.Networks.rssnet.IPAddress],
            [last.Name, last.Networks.rssnet.IPAddress],
          ]),
        );
      } else {
        const got = resolveAll(ns, '127.0.0.11', ['r0']);
        if (got.r0.rcode !== -1)
          throw new Error(
            `verify cnmd rss (${tag}): 127.0.0.11 answered (${JSON.stringify(got.r0)}) on a network with ${EMBEDDED_DNS_OPTION}=false`,
          );
      }
    }
    for (const id of ids) await d.ok('DELETE', `/sandboxes/${id}`, 204);
    await d.ok('DELETE', '/networks/rssnet', 204);
    return { dns, baseKb, afterKb, fds };
  } finally {
    await d.stop();
  }
}

interface RssResult {
  withDeltaKb: number;
  withoutDeltaKb: number;
  withAfterKb: number;
  withoutAfterKb: number;
  baseKb: number;
  perResolverKb: number;
  fdsPerResolver: number;
  samples: RssSample[];
}

async function runRss(s: Scratch): Promise<RssResult> {
  const samples: RssSample[] = [];
  for (let r = 0; r < RSS_ROUNDS; r++) {
    // Alternate which variant goes first.
    for (const dns of r % 2 === 0 ? [true, false] : [false, true])
      samples.push(await rssOnce(s, `rss-${r}-${dns ? 'dns' : 'nodns'}`, dns));
  }
  const pick = (dns: boolean) => samples.filter((x) => x.dns === dns);
  const withDeltaKb = median(pick(true).map((x) => x.afterKb - x.baseKb));
  const withoutDeltaKb = median(pick(false).map((x) => x.afterKb - x.baseKb));
  const fdsPerResolver =
    (median(pick(true).map((x) => x.fds)) - median(pick(false).map((x) => x.fds))) / RSS_SANDBOXES;
  if (Math.abs(fdsPerResolver - 2) > 0.05)
    throw new Error(
      `verify cnmd rss: ${fdsPerResolver.toFixed(2)} more fds per sandbox with the embedded DNS than without, want 2 (UDP + TCP)`,
    );
  return {
    withDeltaKb,
    withoutDeltaKb,
    withAfterKb: median(pick(true).map((x) => x.afterKb)),
    withoutAfterKb: median(pick(false).map((x) => x.afterKb)),
    baseKb: median(samples.map((x) => x.baseKb)),
    perResolverKb: (withDeltaKb - withoutDeltaKb) / RSS_SANDBOXES,
    fdsPerResolver,
    samples,
  };
}

// ---- profile ----

async function runProfile(s: Scratch): Promise<{ qps: number; summary: ProfileSummary }> {
  const dir = path.join(s.run, 'cpuprof');
  fs.mkdirSync(dir);
  const { d, client } = await cnmdWithNames(s, 'cnmd-prof', ['--cpu-prof', `--cpu-prof-dir=${dir}`]);
  let qps = 0;
  let from = 0;
  let to = 0;
  try {
    const qf = path.join(dir, 'queries.txt');
    writeQueryFile(qf, peerNames());
    await sleep(500);
    from = monotonicUs();
    const r = dnsperf(client, '127.0.0.11', qf, path.join(dir, 'perf.out'), {
      clients: CLIENTS,
      seconds: PROFILE_SECONDS,
    });
    to = monotonicUs();
    checkRcodes('cnmd profiled run', r);
    qps = r.qps;
  } finally {
    await d.stop();
  }
  const prof = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  if (prof.length !== 1)
    throw new Error(`cnmd --cpu-prof: want one .cpuprofile in ${dir}, found ${prof.length}`);
  return { qps, summary: summarizeProfile(path.join(dir, prof[0]), from, to) };
}

// ---- the case ----

function checkTools(): void {
  if (process.getuid?.() !== 0) throw new Error('bench dns: needs root (network namespaces, mounts)');
  for (const tool of ['ip', 'nsenter', 'unshare', 'mount', 'umount', 'tar']) {
    if (!commandExists(tool)) throw new Error(`bench dns: "${tool}" is not installed`);
  }
}

function perfFigures(out: Record<string, number>, key: string, m: Runs): void {
  out[`${key}_qps`] = med(m.thr, (r) => r.qps);
  out[`${key}_avg_ms`] = med(m.thr, (r) => r.avgMs);
  out[`${key}_p99_ms`] = med(m.loaded, (r) => r.p99Ms);
  out[`${key}_lost`] = m.thr.reduce((a, r) => a + r.lost, 0);
  out[`${key}_max_ms`] = Math.max(...m.thr.map((r) => r.maxMs));
  out[`${key}_p50_ms`] = med(m.loaded, (r) => r.p50Ms);
  out[`${key}_p999_ms`] = med(m.loaded, (r) => r.p999Ms);
  out[`${key}_loaded_v_qps`] = med(m.loaded, (r) => r.qps);
  out[`${key}_fixed_rate_p50_ms`] = med(m.fixed, (r) => r.p50Ms);
  out[`${key}_fixed_rate_p99_ms`] = med(m.fixed, (r) => r.p99Ms);
  out[`${key}_fixed_rate_p999_ms`] = med(m.fixed, (r) => r.p999Ms);
  out[`${key}_lost_latency_runs`] = [...m.loaded, ...m.fixed].reduce((a, r) => a + r.lost, 0);
  out[`${key}_server_cpu_pct`] = med(m.thr, (r) => r.serverCpuPct);
  out[`${key}_fixed_rate_server_cpu_pct`] = med(m.fixed, (r) => r.serverCpuPct);
  out[`${key}_cpu_us_per_query`] = med(m.thr, (r) => r.serverCpuUsPerQuery);
  out[`${key}_cpu_user_us_per_query`] = med(m.thr, (r) => r.serverUserUsPerQuery);
  out[`${key}_cpu_sys_us_per_query`] = med(m.thr, (r) => r.serverSysUsPerQuery);
  const iv = m.thr.flatMap((r) => r.intervals);
  if (iv.length) out[`${key}_qps_min_1s`] = Math.min(...iv);
}

export async function run(): Promise<Record<string, number>> {
  checkTools();
  const want = (p: Peer) => PEERS.has(p);
  const pkgs = [
    'dnsperf',
    ...(want('aardvark') ? ['aardvark-dns'] : []),
    ...(want('docker') ? ['docker.io', 'containerd', 'runc', 'busybox-static'] : []),
  ];
  const installErr = ensureDebPackages(pkgs);
  if (installErr) console.log(`  dns: ${installErr}`);
  if (!commandExists('dnsperf'))
    throw new Error(`bench dns: dnsperf is not installed (${installErr ?? 'Debian package dnsperf'})`);
  const tStart = performance.now();

  const s = new Scratch('cnmd-bench-dns-');
  const offSignals = cleanupOnSignals(() => s.cleanup());
  console.log(
    `dns: ${NAMES} names, ${ROUNDS} round(s) of dnsperf -c ${CLIENTS} -l ${SECONDS}, the same with -v, and -Q ${RATE} -l ${RATE_SECONDS} -v per peer; peers ${[...PEERS].join(', ')}; ` +
      `root ${s.root} (tmpfs at run/), ${os.cpus().length} cores, load average ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
  );
  const figures: Record<string, number> = {
    names: NAMES,
    clients: CLIENTS,
    seconds: SECONDS,
    rounds: ROUNDS,
    fixed_rate_qps: RATE,
    load_avg_1m_start: os.loadavg()[0],
  };
  const unavailable: string[] = [];
  const targets: Target[] = [];
  const runs = new Map<Peer, Runs>();
  const details = new Map<Peer, string>();
  let rss: RssResult | undefined;
  let prof: { qps: number; summary: ProfileSummary } | undefined;
  try {
    // Every resolver set up first and left idle while the others are measured;
    // the runs then interleave (each kind of run, peer after peer, the order
    // rotating every round) so that whatever else the machine does is shared out.
    const tSetup = performance.now();
    if (want('cnmd')) targets.push(await setupCnmd(s));
    if (want('docker')) {
      const r = await setupDocker(s);
      if (r.ok) targets.push(r.t);
      else unavailable.push(`docker: ${r.reason}`);
    }
    if (want('aardvark')) {
      const r = await setupAardvark(s);
      if (r.ok) targets.push(r.t);
      else unavailable.push(`aardvark: ${r.reason}`);
    }
    console.log(
      `  set up ${targets.map((t) => t.key).join(', ')} in ${((performance.now() - tSetup) / 1000).toFixed(1)} s; load average ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    for (const t of targets) runs.set(t.key, { thr: [], loaded: [], fixed: [] });
    for (let round = 0; round < ROUNDS; round++) {
      const order = targets.map((_, i) => targets[(i + round) % targets.length]);
      for (const kind of ['thr', 'loaded', 'fixed'] as Kind[]) {
        for (const t of order) {
          await sleep(500);
          runs.get(t.key)![kind].push(perfRun(s, t, kind, round));
        }
      }
    }
    for (const t of targets) details.set(t.key, t.detail());
    while (targets.length) await targets.pop()!.stop();
    for (const [k, m] of runs) report(k, m, details.get(k) ?? '');

    if (want('cnmd') && RSS_SANDBOXES > 0) {
      await sleep(SETTLE_MS);
      rss = await runRss(s);
      console.log(
        `  cnmd      RSS: +${(rss.withDeltaKb / 1024).toFixed(2)} MB for ${RSS_SANDBOXES} sandboxes with resolvers, +${(rss.withoutDeltaKb / 1024).toFixed(2)} MB without ` +
          `(embedded DNS off), medians of ${RSS_ROUNDS}: ${(rss.perResolverKb / 1024).toFixed(3)} MB (${rss.perResolverKb.toFixed(0)} kB) per resolver; ` +
          `${rss.fdsPerResolver.toFixed(2)} fds per resolver; samples (kB, base->after) ${rss.samples.map((x) => `${x.dns ? 'dns' : 'off'} ${x.baseKb}->${x.afterKb}`).join(', ')}`,
      );
    }
    if (want('cnmd') && PROFILE) {
      await sleep(SETTLE_MS);
      prof = await runProfile(s);
      const sm = prof.summary;
      console.log(
        `  cnmd      profile (node --cpu-prof, ${prof.qps.toFixed(0)} queries/s while profiled, ${sm.windowMs.toFixed(0)} ms of samples${sm.windowed ? ' during the load' : ', whole run (window not matched)'}):`,
      );
      console.log(`    by category: ${sm.categories.map(([k, v]) => `${k} ${v.toFixed(1)} %`).join('; ')}`);
      console.log(`    top self time:`);
      for (const [k, v] of sm.top) console.log(`      ${v.toFixed(1).padStart(5)} %  ${k}`);
    }
  } finally {
    for (const t of targets) {
      try {
        await t.stop();
      } catch (e) {
        console.log(`  dns: stopping ${t.key}: ${(e as Error).message}`);
      }
    }
    offSignals();
    const notes = s.cleanup();
    for (const n of notes) console.log(`  dns cleanup: ${n}`);
  }

  const cnmd = runs.get('cnmd');
  const dock = runs.get('docker');
  const av = runs.get('aardvark');
  if (cnmd) perfFigures(figures, 'cnmd', cnmd);
  if (want('docker')) {
    figures.docker_available = dock ? 1 : 0;
    if (dock) perfFigures(figures, 'docker', dock);
  }
  if (want('aardvark')) {
    figures.aardvark_available = av ? 1 : 0;
    if (av) perfFigures(figures, 'aardvark', av);
  }
  const peers = (['docker', 'aardvark'] as const).filter((k) => runs.has(k));
  const best = [...peers].sort((a, b) => figures[`${b}_qps`] - figures[`${a}_qps`])[0];
  const bestP99 = peers.length ? Math.min(...peers.map((k) => figures[`${k}_p99_ms`])) : NaN;
  const bestFixedP99 = peers.length ? Math.min(...peers.map((k) => figures[`${k}_fixed_rate_p99_ms`])) : NaN;
  if (cnmd) {
    for (const k of peers) figures[`ratio_cnmd_vs_${k}_qps`] = figures.cnmd_qps / figures[`${k}_qps`];
    if (best) {
      figures.ratio_cnmd_vs_best_peer_qps = figures.cnmd_qps / figures[`${best}_qps`];
      figures.ratio_best_peer_vs_cnmd_p99 = bestP99 / figures.cnmd_p99_ms;
      figures.ratio_best_peer_vs_cnmd_fixed_rate_p99 = bestFixedP99 / figures.cnmd_fixed_rate_p99_ms;
      figures.ratio_best_peer_vs_cnmd_cpu_per_query =
        Math.min(...peers.map((k) => figures[`${k}_cpu_us_per_query`])) / figures.cnmd_cpu_us_per_query;
    }
  }
  if (rss) {
    figures.cnmd_rss_base_mb = rss.baseKb / 1024;
    figures[`cnmd_rss_${RSS_SANDBOXES}_sandboxes_dns_mb`] = rss.withAfterKb / 1024;
    figures[`cnmd_rss_${RSS_SANDBOXES}_sandboxes_nodns_mb`] = rss.withoutAfterKb / 1024;
    figures.cnmd_rss_growth_dns_mb = rss.withDeltaKb / 1024;
    figures.cnmd_rss_growth_nodns_mb = rss.withoutDeltaKb / 1024;
    figures.cnmd_rss_per_resolver_mb = rss.perResolverKb / 1024;
  }
  if (prof) figures.cnmd_profiled_qps = prof.qps;
  figures.load_avg_1m_end = os.loadavg()[0];
  figures.case_seconds = (performance.now() - tStart) / 1000;

  for (const u of unavailable) console.log(`  UNAVAILABLE ${u}`);
  // Goals (issue 5): >= 1.2x the faster peer's queries/s, p99 no worse, nothing lost; <= 1 MB RSS per resolver.
  const goals: string[] = [];
  const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
  if (cnmd && best) {
    const q = figures.cnmd_qps;
    const bq = figures[`${best}_qps`];
    const r = figures.ratio_cnmd_vs_best_peer_qps;
    goals.push(
      `queries/s ${q.toFixed(0)} vs ${best} ${bq.toFixed(0)} = ${r.toFixed(2)}x >= 1.2x: ${verdict(r >= 1.2)}` +
        (r < 1.2
          ? ` (short by ${(1.2 * bq - q).toFixed(0)} queries/s: cnmd needs +${(((1.2 * bq) / q - 1) * 100).toFixed(0)} %)`
          : ''),
    );
    const p = figures.cnmd_p99_ms;
    goals.push(
      `p99 under load ${p.toFixed(3)} ms vs best peer ${bestP99.toFixed(3)} ms: ${verdict(p <= bestP99)}${p > bestP99 ? ` (by ${(p - bestP99).toFixed(3)} ms)` : ''}`,
    );
    const pf = figures.cnmd_fixed_rate_p99_ms;
    goals.push(
      `p99 at ${RATE}/s ${pf.toFixed(3)} ms vs best peer ${bestFixedP99.toFixed(3)} ms: ${verdict(pf <= bestFixedP99)}${pf > bestFixedP99 ? ` (by ${(pf - bestFixedP99).toFixed(3)} ms)` : ''}`,
    );
  }
  if (cnmd) {
    const lost = figures.cnmd_lost + figures.cnmd_lost_latency_runs;
    goals.push(`lost ${lost}: ${verdict(lost === 0)}`);
  }
  if (rss) {
    const mb = figures.cnmd_rss_per_resolver_mb;
    goals.push(
      `RSS ${mb.toFixed(3)} MB per resolver <= 1 MB: ${verdict(mb <= 1)}${mb > 1 ? ` (by ${(mb - 1).toFixed(3)} MB)` : ''}`,
    );
  }
  if (goals.length) console.log(`dns goals: ${goals.join('; ')}`);
  console.log(`dns: case ran ${figures.case_seconds.toFixed(1)} s (installs excluded)`);
  return figures;
}
