// The overlay's convergence through the cluster store, a section of bench case
// "overlay" (BENCH_OVERLAY_PARTS=convergence): etcd in the underlay's switch
// netns, one real cnmd per host netns (--cluster-store, --cluster-advertise),
// an --internal overlay network made on host 1. Host 1 (A) keeps a prober
// sandbox; each sample is an attach (POST /sandboxes) on host B (hosts 2..N in
// turn), timed from just before the request:
//   attach    until the API answered on B;
//   store     until the endpoint record was in etcd (an `etcdctl watch` on the
//             endpoints prefix, stamped when the bench reads it);
//   neigh     until the new endpoint's static neighbour entry exists on A
//             (`ip -ts monitor neigh` in A's network netns: conv-probe.ts);
//   ping      until A's prober got its first echo reply (ping -D stamps it;
//             started once A has the entry: ARP is answered by A's vxlan
//             device from that entry, never crosses the underlay);
// then the sandbox is removed on B and `removal` is the time until A's entry
// is gone (the next sample starts after that).
// BENCH_OVERLAY_CONV_ATTACHES samples (200) at each size of
// BENCH_OVERLAY_CONV_HOSTS (3,20), after BENCH_OVERLAY_CONV_WARMUP (5) untimed
// ones; p50/p99 of each. CPU: every daemon's and etcd's utime+stime over an
// idle window (the reconcile ticks, leases) and over the samples; the work
// per sample is the samples' CPU less the idle rate.
// At the largest size, BENCH_OVERLAY_FILL (50) sandboxes are then made on every
// host at once (20 x 50 = 1000 endpoints at 20 hosts): the time until A has
// every remote one, each daemon's VmRSS after that, and
// BENCH_OVERLAY_CONV_LOADED (50) more samples with those endpoints present
// (the cost of one change when every host knows a thousand).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { ChildProcess, spawn } from 'node:child_process';
import { Handle } from '../../src/netlink/handle';
import { underlay, UNDERLAY_BRIDGE } from '../../test/lib/underlay';
import { intEnv, median, percentile } from './host';
import { CNMD_JS, Cnmd } from './peers';
import { NeighMonitor, cpuMs, now, readyPinger, round2, rssMb } from './conv-probe';
import type { OverlayLab } from '../cases/overlay';

const ATTACHES = intEnv('BENCH_OVERLAY_CONV_ATTACHES', 200, 1, 5000);
const WARMUP = intEnv('BENCH_OVERLAY_CONV_WARMUP', 5, 0, 100);
const FILL = intEnv('BENCH_OVERLAY_FILL', 50, 0, 500);
const LOADED = intEnv('BENCH_OVERLAY_CONV_LOADED', 50, 0, 5000);
const ADDED_N = intEnv('BENCH_OVERLAY_ADDED_ATTACHES', 50, 0, 5000);
const IDLE_MS = intEnv('BENCH_OVERLAY_IDLE_MS', 4000, 0, 60_000);
const SIZES = (process.env.BENCH_OVERLAY_CONV_HOSTS ?? '3,20').split(',').map(Number);
const CNMD = process.env.BENCH_OVERLAY_CNMD ?? CNMD_JS;
/** Where the daemons' logs go (default: the scratch root, removed with it). */
const LOG_DIR = process.env.BENCH_OVERLAY_LOG_DIR;
const LOG_LEVEL = process.env.BENCH_OVERLAY_LOG_LEVEL ?? 'warn';
if (!['debug', 'info', 'warn'].includes(LOG_LEVEL))
  throw new Error(`BENCH_OVERLAY_LOG_LEVEL: "${LOG_LEVEL}" is not debug, info or warn`);
const STORE_IP = '192.168.77.254';
const ENDPOINTS_PREFIX = '/cnmd/v1/endpoints/';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(
  what: string,
  ms: number,
  fn: () => Promise<T | undefined> | T | undefined,
  every = 1,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`bench overlay convergence: ${what} not within ${ms} ms`);
    await sleep(every);
  }
}

/** When each endpoint record (by its IPv4) reached etcd: an `etcdctl watch` read as it prints. */
class StoreWatch {
  private readonly proc: ChildProcess;
  readonly puts = new Map<string, number>();

  constructor(swNs: string, track: (pid?: number) => void) {
    this.proc = spawn(
      'nsenter',
      [
        `--net=${swNs}`,
        'etcdctl',
        '--endpoints',
        `http://${STORE_IP}:2379`,
        'watch',
        '--prefix',
        ENDPOINTS_PREFIX,
      ],
      { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, ETCDCTL_API: '3' } },
    );
    track(this.proc.pid);
    readline.createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      if (!l.startsWith('{')) return;
      const t = now();
      try {
        const ip = (JSON.parse(l) as { ipv4?: string }).ipv4?.split('/')[0];
        if (ip && !this.puts.has(ip)) this.puts.set(ip, t);
      } catch {
        /* not a record */
      }
    });
  }

  stop(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

interface Samples {
  attach: number[];
  store: number[];
  neigh: number[];
  ping: number[];
  removal: number[];
}

async function one(
  lab: OverlayLab,
  hosts: number,
  largest: boolean,
  smallest: boolean,
): Promise<Record<string, number>> {
  const { s } = lab;
  const tag = `cv${hosts}`;
  const track = (pid?: number) => s.trackPid(pid);
  const { sw, hosts: hs } = await underlay(
    async (n) => {
      const made = await lab.netns.create(n);
      lab.made.push(made);
      return made;
    },
    hosts,
    { prefix: tag },
  );
  await sw.handle.addrAdd(UNDERLAY_BRIDGE, `${STORE_IP}/24`);
  const dir = path.join(s.run, tag);
  fs.mkdirSync(dir);
  let etcd: ChildProcess | undefined;
  const daemons: Cnmd[] = [];
  let monitor: NeighMonitor | undefined;
  let storeWatch: StoreWatch | undefined;
  try {
    // nsenter execs etcd: the child's pid is etcd's (its CPU and RSS are read from it).
    const out = fs.openSync(path.join(dir, 'etcd.log'), 'w');
    try {
      etcd = spawn(
        'nsenter',
        [
          `--net=${sw.path}`,
          'etcd',
          '--data-dir',
          path.join(dir, 'etcd'),
          '--listen-client-urls',
          `http://${STORE_IP}:2379`,
          '--advertise-client-urls',
          `http://${STORE_IP}:2379`,
          '--listen-peer-urls',
          `http://${STORE_IP}:2380`,
        ],
        { stdio: ['ignore', out, out] },
      );
    } finally {
      fs.closeSync(out);
    }
    track(etcd.pid);
    // One daemon per host netns, all starting at once (they wait for etcd themselves).
    const started = await Promise.allSettled(
      hs.map((h, i) =>
        Cnmd.start(s, path.join(tag, h.name), {
          script: CNMD,
          hostNs: h.path,
          client: 'cnmctl',
          dataOnTmpfs: true,
          readyMs: 60_000,
          logLevel: LOG_LEVEL as 'debug' | 'info' | 'warn',
          logFile: LOG_DIR ? path.join(LOG_DIR, `${tag}-${h.name}.log`) : undefined,
          nodeArgs:
            i === 0 && process.env.BENCH_OVERLAY_PROFILE
              ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_OVERLAY_PROFILE}`]
              : [],
          args: [
            '--cluster-store',
            `etcd://${STORE_IP}:2379`,
            '--cluster-advertise',
            h.ip,
            '--netns-pool-size',
            '4',
          ],
        }),
      ),
    );
    for (const r of started) if (r.status === 'fulfilled') daemons.push(r.value);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const api: Api = (i, method, p, body) => daemons[i].request(method, p, body);
    const made = await api(0, 'POST', '/networks/create', {
      Name: 'conv',
      Driver: 'overlay',
      Internal: true,
      IPAM: { Config: [{ Subnet: '10.200.0.0/16' }] },
    });
    if (made.status !== 201)
      throw new Error(`bench overlay convergence: network create: ${JSON.stringify(made.body)}`);
    const net = (await api(0, 'GET', '/networks/conv')).body;
    for (let i = 1; i < hosts; i++)
      await until(
        'network on every host',
        10_000,
        async () => ((await api(i, 'GET', '/networks/conv')).status === 200 ? true : undefined),
        10,
      );
    const probe = await api(0, 'POST', '/sandboxes', { Name: 'probe', Networks: [{ Network: 'conv' }] });
    if (probe.status !== 201)
      throw new Error(`bench overlay convergence: probe: ${JSON.stringify(probe.body)}`);
    const probeKey = (await api(0, 'GET', '/sandboxes/probe')).body.SandboxKey as string;
    const vni = Number(net.Options['com.docker.network.driver.overlay.vxlanid_list']);
    const aNs = path.join(daemons[0].execRoot, 'overlay', 'netns', `ov-${net.Id}`);
    const dev = `vx-${vni.toString(16).padStart(6, '0')}`;
    monitor = new NeighMonitor([`--net=${aNs}`], dev, track);
    await monitor.start();
    storeWatch = new StoreWatch(sw.path, track);
    const mon = monitor;
    const sw8 = storeWatch;

    const runSamples = async (n: number, prefix: string, into?: Samples) => {
      for (let k = 0; k < n; k++) {
        const b = 1 + (k % (hosts - 1));
        const name = `${prefix}${k}`;
        const pinger = readyPinger([`--net=${probeKey}`], track);
        const t0 = now();
        const r = await api(b, 'POST', '/sandboxes', { Name: name, Networks: [{ Network: 'conv' }] }).catch(
          (e) => {
            pinger.cancel();
            throw e;
          },
        );
        const tAttach = now();
        if (r.status !== 201) {
          pinger.cancel();
          throw new Error(`bench overlay convergence: attach: ${JSON.stringify(r.body)}`);
        }
        const ip = (await api(b, 'GET', `/sandboxes/${name}`)).body.Networks.conv.IPAddress as string;
        const ev = await mon.wait(ip, false, t0, 10_000).catch((e) => {
          pinger.cancel();
          throw e;
        });
        const tPing = await pinger.fire(ip);
        const tStore = sw8.puts.get(ip);
        sw8.puts.delete(ip);
        const tDel = now();
        const d = await api(b, 'DELETE', `/sandboxes/${name}`);
        if (d.status !== 204 && d.status !== 200)
          throw new Error(`bench overlay convergence: delete: ${JSON.stringify(d.body)}`);
        const gone = await mon.wait(ip, true, tDel, 10_000);
        mon.trim();
        if (!into) continue;
        into.attach.push(tAttach - t0);
        if (tStore !== undefined) into.store.push(tStore - t0);
        into.neigh.push(ev.t - t0);
        into.ping.push(tPing - t0);
        into.removal.push(gone.t - tDel);
      }
    };
    const pids = daemons.map((d) => d.pid);
    const etcdPid = etcd.pid!;
    const cpuAll = () => pids.reduce((a, p) => a + cpuMs(p), 0);
    const summary = (label: string, x: Samples, cpu: number, etcdCpu: number, n: number) => {
      const out: Record<string, number> = {
        [`${label}_attach_p50_ms`]: round2(percentile(x.attach, 50)),
        [`${label}_attach_p99_ms`]: round2(percentile(x.attach, 99)),
        [`${label}_store_p50_ms`]: round2(percentile(x.store, 50)),
        [`${label}_store_p99_ms`]: round2(percentile(x.store, 99)),
        [`${label}_neigh_p50_ms`]: round2(percentile(x.neigh, 50)),
        [`${label}_neigh_p99_ms`]: round2(percentile(x.neigh, 99)),
        [`${label}_ping_p50_ms`]: round2(percentile(x.ping, 50)),
        [`${label}_ping_p99_ms`]: round2(percentile(x.ping, 99)),
        [`${label}_removal_p50_ms`]: round2(percentile(x.removal, 50)),
        [`${label}_removal_p99_ms`]: round2(percentile(x.removal, 99)),
        [`${label}_samples`]: x.attach.length,
        [`${label}_daemons_cpu_ms_per_sample`]: round2(cpu / n),
        [`${label}_etcd_cpu_ms_per_sample`]: round2(etcdCpu / n),
      };
      console.log(
        `  convergence ${label}: attach ${x.attach.length} samples p50/p99 ${out[`${label}_attach_p50_ms`]}/${out[`${label}_attach_p99_ms`]} ms, ` +
          `store ${out[`${label}_store_p50_ms`]}/${out[`${label}_store_p99_ms`]}, neigh on A ${out[`${label}_neigh_p50_ms`]}/${out[`${label}_neigh_p99_ms`]}, ` +
          `ping ${out[`${label}_ping_p50_ms`]}/${out[`${label}_ping_p99_ms`]}, removal ${out[`${label}_removal_p50_ms`]}/${out[`${label}_removal_p99_ms`]}; ` +
          `CPU per sample (attach + remove, less idle): daemons ${out[`${label}_daemons_cpu_ms_per_sample`]} ms, etcd ${out[`${label}_etcd_cpu_ms_per_sample`]} ms`,
      );
      return out;
    };
    /** Samples with CPU accounted: the idle rate over the same span is taken out. */
    const measured = async (label: string, n: number, idlePerMs: { d: number; e: number; a: number }) => {
      const x: Samples = { attach: [], store: [], neigh: [], ping: [], removal: [] };
      const [c0, e0, a0, t0] = [cpuAll(), cpuMs(etcdPid), cpuMs(pids[0]), performance.now()];
      await runSamples(n, `${label}s`, x);
      const span = performance.now() - t0;
      const cpu = cpuAll() - c0 - idlePerMs.d * span;
      const etcdCpu = cpuMs(etcdPid) - e0 - idlePerMs.e * span;
      // A is never B: its CPU is an observer's, for two events (the put and the delete) per sample.
      const aCpu = cpuMs(pids[0]) - a0 - idlePerMs.a * span;
      const out = summary(label, x, Math.max(0, cpu), Math.max(0, etcdCpu), n);
      out[`${label}_observer_cpu_ms_per_event`] = round2(Math.max(0, aCpu) / (2 * n));
      console.log(
        `  convergence ${label}: one observer (A) spent ${out[`${label}_observer_cpu_ms_per_event`]} ms CPU per event`,
      );
      return out;
    };
    const idle = async () => {
      const [c0, e0, a0, t0] = [cpuAll(), cpuMs(etcdPid), cpuMs(pids[0]), performance.now()];
      await sleep(IDLE_MS);
      const span = performance.now() - t0;
      return {
        d: (cpuAll() - c0) / span,
        e: (cpuMs(etcdPid) - e0) / span,
        a: (cpuMs(pids[0]) - a0) / span,
      };
    };

    const figures: Record<string, number> = {};
    const L = `conv_${hosts}h`;
    await runSamples(WARMUP, 'w');
    const idle0 = await idle();
    figures[`${L}_daemons_idle_cpu_ms_per_s`] = round2(idle0.d * 1000);
    figures[`${L}_etcd_idle_cpu_ms_per_s`] = round2(idle0.e * 1000);
    figures[`${L}_rss_idle_median_mb`] = round2(median(pids.map(rssMb)));
    console.log(
      `  convergence ${L}: ${hosts} daemons idle: CPU ${figures[`${L}_daemons_idle_cpu_ms_per_s`]} ms/s together, etcd ${figures[`${L}_etcd_idle_cpu_ms_per_s`]} ms/s; RSS median ${figures[`${L}_rss_idle_median_mb`]} MB`,
    );
    Object.assign(figures, await measured(L, ATTACHES, idle0));

    if (smallest && ADDED_N > 0) Object.assign(figures, await addedAttach(api));

    if (largest && FILL > 0) {
      // Every host makes FILL sandboxes at once (one after another on each host).
      const a = Handle.at(aNs);
      try {
        const remote = (hosts - 1) * FILL;
        const [c0, e0, t0] = [cpuAll(), cpuMs(etcdPid), performance.now()];
        await Promise.all(
          hs.map(async (_h, i) => {
            for (let k = 0; k < FILL; k++) {
              const r = await api(i, 'POST', '/sandboxes', {
                Name: `f${k}`,
                Networks: [{ Network: 'conv' }],
              });
              if (r.status !== 201)
                throw new Error(`bench overlay convergence: fill on h${i + 1}: ${JSON.stringify(r.body)}`);
            }
          }),
        );
        const created = performance.now() - t0;
        await until(
          `A has the ${remote} remote endpoints`,
          120_000,
          async () => ((await a.neighList({ dev })).length >= remote ? true : undefined),
          20,
        );
        const converged = performance.now() - t0;
        const fillCpu = cpuAll() - c0;
        const fillEtcd = cpuMs(etcdPid) - e0;
        const E = `${L}_${hosts * FILL}ep`;
        figures[`${E}_create_s`] = round2(created / 1000);
        figures[`${E}_converged_s`] = round2(converged / 1000);
        figures[`${E}_daemons_cpu_ms_per_endpoint`] = round2(fillCpu / (hosts * FILL));
        figures[`${E}_etcd_cpu_ms_per_endpoint`] = round2(fillEtcd / (hosts * FILL));
        const idle1 = await idle();
        const rss = pids.map(rssMb);
        figures[`${E}_rss_median_mb`] = round2(median(rss));
        figures[`${E}_rss_max_mb`] = round2(Math.max(...rss));
        figures[`${E}_etcd_rss_mb`] = round2(rssMb(etcdPid));
        figures[`${E}_daemons_idle_cpu_ms_per_s`] = round2(idle1.d * 1000);
        console.log(
          `  ${E}: ${hosts} x ${FILL} sandboxes made in ${figures[`${E}_create_s`]} s, on A (${remote} remote) after ${figures[`${E}_converged_s`]} s; ` +
            `daemon CPU ${figures[`${E}_daemons_cpu_ms_per_endpoint`]} ms per endpoint (all hosts); daemon RSS median ${figures[`${E}_rss_median_mb`]} MB, ` +
            `max ${figures[`${E}_rss_max_mb`]} MB (idle ${figures[`${L}_rss_idle_median_mb`]}); etcd ${figures[`${E}_etcd_rss_mb`]} MB; idle CPU ${figures[`${E}_daemons_idle_cpu_ms_per_s`]} ms/s`,
        );
        if (LOADED > 0) Object.assign(figures, await measured(E, LOADED, idle1));
      } finally {
        a.close();
      }
    }
    return figures;
  } finally {
    monitor?.stop();
    storeWatch?.stop();
    await Promise.all(daemons.map((d) => d.stop()));
    if (etcd && etcd.exitCode === null && etcd.signalCode === null) {
      const gone = new Promise((r) => etcd!.once('exit', r));
      etcd.kill('SIGTERM');
      await Promise.race([gone, sleep(5000)]);
      if (etcd.exitCode === null && etcd.signalCode === null) etcd.kill('SIGKILL');
    }
  }
}

type Api = (i: number, method: string, p: string, body?: unknown) => Promise<{ status: number; body: any }>;

/**
 * The overlay's added cost over a local bridge, through the API as a user
 * attaches: on host 2, POST /sandboxes on a (not internal: with its
 * cnmd_gwbridge interface, as swarm's) overlay network and on a bridge
 * network, alternating, each removed after (untimed); medians.
 */
async function addedAttach(api: Api): Promise<Record<string, number>> {
  const made = [
    await api(0, 'POST', '/networks/create', {
      Name: 'ovg',
      Driver: 'overlay',
      IPAM: { Config: [{ Subnet: '10.201.0.0/16' }] },
    }),
    await api(1, 'POST', '/networks/create', {
      Name: 'lb',
      Driver: 'bridge',
      IPAM: { Config: [{ Subnet: '10.202.0.0/24' }] },
    }),
  ];
  for (const m of made)
    if (m.status !== 201)
      throw new Error(`bench overlay added attach: network create: ${JSON.stringify(m.body)}`);
  await until(
    'overlay network ovg on host 2',
    10_000,
    async () => ((await api(1, 'GET', '/networks/ovg')).status === 200 ? true : undefined),
    10,
  );
  const times: Record<string, number[]> = { ovg: [], lb: [] };
  for (let k = -3; k < ADDED_N; k++) {
    for (const net of k % 2 ? ['ovg', 'lb'] : ['lb', 'ovg']) {
      const name = `a${net}${k + 3}`;
      const t0 = performance.now();
      const r = await api(1, 'POST', '/sandboxes', { Name: name, Networks: [{ Network: net }] });
      const ms = performance.now() - t0;
      if (r.status !== 201) throw new Error(`bench overlay added attach: ${net}: ${JSON.stringify(r.body)}`);
      if (k >= 0) times[net].push(ms);
      await api(1, 'DELETE', `/sandboxes/${name}`);
    }
  }
  const [o, b] = [median(times.ovg), median(times.lb)];
  console.log(
    `  added attach (API, host 2, ${ADDED_N} each): overlay ${round2(o)} ms, bridge ${round2(b)} ms, added ${round2(o - b)} ms`,
  );
  return {
    cnmd_api_attach_overlay_median_ms: round2(o),
    cnmd_api_attach_bridge_median_ms: round2(b),
    cnmd_api_overlay_added_attach_ms: round2(o - b),
  };
}

export async function sectionConvergence(lab: OverlayLab): Promise<Record<string, number>> {
  const figures: Record<string, number> = {};
  for (const n of SIZES)
    if (!Number.isInteger(n) || n < 2 || n > 60)
      throw new Error(`BENCH_OVERLAY_CONV_HOSTS: "${n}" is not a host count from 2 to 60`);
  const [largest, smallest] = [Math.max(...SIZES), Math.min(...SIZES)];
  for (const n of SIZES) Object.assign(figures, await one(lab, n, n === largest, n === smallest));
  return figures;
}
