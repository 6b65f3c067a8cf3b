// Bench case "burst": many sandboxes asked for at once, as an orchestrator
// starting a service does. cnmd and the CNI bridge plugin side by side in one
// run, each in a private "host" netns of its own (the daemon and the CNI
// harness of case attach: bench/cases/attach.ts):
//
//  cnmd  a daemon (defaults: netns pool of 64) with a bridge network on a
//        /16; BURST (100) POST /sandboxes sent at once from a client with
//        CONNS (100) kept-alive connections (bench/lib/http-client.ts, each
//        connected and used once before the timing), then the deletes the
//        same way; then BIG (500) creates over the same 100 connections
//        (5 in a row on each), and their deletes.
//  cni   `nsenter --net=<host netns> /usr/lib/cni/bridge` ADD with
//        host-local IPAM (as in case attach), the container netns made in the
//        attach: BURST execs started at once (async spawns), then the DELs the
//        same way; then BIG with CONNS execs in flight at a time.
//
// Figures: the wall time of each burst (first request sent to last answer),
// and the median and p99 (nearest rank) of one create's latency under it.
// Ratios: CNI's burst time over cnmd's. Correctness: every call succeeds;
// between creates and deletes every sandbox is listed with a distinct address
// in the subnet and the host netns has one veth each (a sample pings its
// gateway); after the deletes nothing is left (no sandbox, veth or netns in
// cnmd's exec-root; CNI: no veth, no host-local reservation).
//
// Environment: BENCH_BURST_N (100), BENCH_BURST_BIG (500), BENCH_BURST_CONNS
// (100), BENCH_SETTLE_MS (1500).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { native } from '../../native';
import {
  Scratch,
  checkAddress,
  cleanupOnSignals,
  cpuProbeMs,
  ensureDebPackages,
  eventually,
  intEnv,
  median,
  percentile,
  sleep,
  vethCount,
} from '../lib/host';
import { KeepAliveClient } from '../lib/http-client';
import { CNI_DIR, Cnmd } from '../lib/peers';
import { ATTACH_DAEMON, cniBridgeConf, cniEnv } from './attach';

export const name = 'burst';
export const unit = 'ms';

const BURST = intEnv('BENCH_BURST_N', 100, 1, 1000);
const BIG = intEnv('BENCH_BURST_BIG', 500, 1, 5000);
const CONNS = intEnv('BENCH_BURST_CONNS', 100, 1, 1000);
const SETTLE_MS = intEnv('BENCH_SETTLE_MS', 1500, 0, 60000);
const CNMD_NET = { name: 'burstnet', subnet: '10.210.0.0/16', prefix: '10.210.' };
const CNI_NET = { subnet: '10.211.0.0/16', prefix: '10.211.' };

interface Burst {
  wallMs: number;
  each: number[];
}

/** Runs fn(i) for i < n with at most `width` in flight; returns the wall time and each call's time. */
async function burst(
  n: number,
  width: number,
  fn: (i: number, lane: number) => Promise<void>,
): Promise<Burst> {
  const each: number[] = new Array(n);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async (_, lane) => {
      for (let i = next++; i < n; i = next++) {
        const t = performance.now();
        await fn(i, lane);
        each[i] = performance.now() - t;
      }
    }),
  );
  return { wallMs: performance.now() - t0, each };
}

function describe(label: string, b: Burst): string {
  return `  ${label.padEnd(22)} ${b.wallMs.toFixed(1)} ms for ${b.each.length} (one: median ${median(b.each).toFixed(1)}, p99 ${percentile(b.each, 99).toFixed(1)} ms)`;
}

// ---- cnmd ----

/** CPU time (user + system, ms) a process has used so far, from /proc/<pid>/stat (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

async function runCnmd(s: Scratch, figures: Record<string, number>): Promise<void> {
  const d = await Cnmd.start(s, 'cnmd', ATTACH_DAEMON);
  const sock = d.hostUri.replace(/^unix:\/\//, '');
  const clients = Array.from({ length: CONNS }, () => new KeepAliveClient(sock));
  try {
    await d.ok('POST', '/networks/create', 201, {
      Name: CNMD_NET.name,
      IPAM: { Config: [{ Subnet: CNMD_NET.subnet }] },
    });
    // Every connection open and used once: the burst measures requests, not connects.
    await Promise.all(clients.map((c) => c.request('GET', '/_ping')));
    const round = async (n: number, tag: string) => {
      const ids: string[] = new Array(n);
      const create = await burst(n, CONNS, async (i, lane) => {
        const r = await clients[lane].request('POST', '/sandboxes', {
          Name: `${tag}${i}`,
          Networks: [{ Network: CNMD_NET.name }],
        });
        if (r.status !== 201)
          throw new Error(`cnmd create ${tag}${i}: ${r.status} ${JSON.stringify(r.body)}`);
        ids[i] = r.body.Id;
      });
      await verifyCnmd(d, s, n);
      const del = await burst(n, CONNS, async (i, lane) => {
        const r = await clients[lane].request('DELETE', `/sandboxes/${ids[i]}`);
        if (r.status !== 204)
          throw new Error(`cnmd delete ${tag}${i}: ${r.status} ${JSON.stringify(r.body)}`);
      });
      await verifyCnmdEmpty(d, s);
      return { create, del };
    };
    for (const [n, tag] of [
      [BURST, 'b'],
      [BIG, 'g'],
    ] as const) {
      await sleep(SETTLE_MS); // the pool refills when idle, as between two bursts on a host
      const probe = cpuProbeMs();
      const cpu0 = cpuMs(d.pid);
      const { create, del } = await round(n, tag);
      // The daemon's CPU time over the creates, verification and deletes: per sandbox, both ways.
      const cpu = (cpuMs(d.pid) - cpu0) / n;
      console.log(
        describe(`cnmd create ${n}`, create) +
          `, cpu probe ${probe.toFixed(1)} ms; daemon CPU ${cpu.toFixed(2)} ms per sandbox (create + delete)`,
      );
      figures[`cnmd_burst${n}_daemon_cpu_ms_per_sandbox`] = cpu;
      console.log(describe(`cnmd delete ${n}`, del));
      figures[`cnmd_burst${n}_ms`] = create.wallMs;
      figures[`cnmd_burst${n}_create_median_ms`] = median(create.each);
      figures[`cnmd_burst${n}_create_p99_ms`] = percentile(create.each, 99);
      figures[`cnmd_burst${n}_delete_ms`] = del.wallMs;
      figures[`cnmd_burst${n}_cpu_probe_ms`] = probe;
    }
  } finally {
    for (const c of clients) c.close();
    await d.stop();
  }
}

async function verifyCnmd(d: Cnmd, s: Scratch, n: number): Promise<void> {
  const list = (await d.ok('GET', '/sandboxes', 200)) as any[];
  if (list.length !== n) throw new Error(`verify cnmd: ${list.length} sandboxes listed, want ${n}`);
  const ips = list.map((sb) => sb.Networks?.[CNMD_NET.name]?.IPAddress as string);
  if (ips.some((ip) => !ip?.startsWith(CNMD_NET.prefix)) || new Set(ips).size !== n)
    throw new Error(`verify cnmd: addresses not distinct or not in ${CNMD_NET.subnet}: ${ips.join(' ')}`);
  const v = vethCount(d.hostNs);
  if (v !== n) throw new Error(`verify cnmd: ${v} veths in the host netns, want ${n}`);
  for (const sb of [list[0], list[n >> 1], list[n - 1]]) {
    const ep = sb.Networks[CNMD_NET.name];
    if (!String(sb.SandboxKey).startsWith(s.run + '/'))
      throw new Error(`verify cnmd: netns ${sb.SandboxKey} not under the exec-root`);
    checkAddress(`cnmd ${sb.Name}`, sb.SandboxKey, `${ep.IPAddress}/${ep.IPPrefixLen}`, ep.Interface);
  }
}

async function verifyCnmdEmpty(d: Cnmd, s: Scratch): Promise<void> {
  const list = (await d.ok('GET', '/sandboxes', 200)) as any[];
  if (list.length) throw new Error(`verify cnmd: ${list.length} sandboxes left after the deletes`);
  await eventually(() => {
    const v = vethCount(d.hostNs);
    if (v !== 0) throw new Error(`verify cnmd: ${v} veths left after the deletes`);
  });
  const netnsDir = path.join(s.run, 'cnmd', 'exec', 'netns');
  const left = fs.existsSync(netnsDir) ? fs.readdirSync(netnsDir).filter((f) => f !== 'default') : [];
  if (left.length) throw new Error(`verify cnmd: netns files left: ${left.join(' ')}`);
}

// ---- the CNI bridge plugin, each exec at once ----

/** Runs the plugin asynchronously; resolves with its stdout, rejects on a non-zero exit. */
function cniCall(
  hostNs: string,
  conf: string,
  cmd: 'ADD' | 'DEL',
  id: string,
  nsPath: string,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('nsenter', [`--net=${hostNs}`, path.join(CNI_DIR, 'bridge')], {
      env: cniEnv(cmd, id, nsPath),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (err += c));
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`CNI bridge ${cmd} ${id}: exit ${code}: ${(err || out).slice(-600)}`)),
    );
    p.stdin.end(conf);
  });
}

async function runCni(s: Scratch, figures: Record<string, number>): Promise<void> {
  const dir = path.join(s.run, 'cni');
  fs.mkdirSync(dir);
  const hostNs = path.join(dir, 'host-netns');
  await native.netnsCreate(hostNs);
  const conf = cniBridgeConf(dir, CNI_NET.subnet);
  const nsPath = (id: string) => path.join(dir, `ns-${id}`);
  const reservations = () =>
    fs.existsSync(path.join(dir, 'ipam', 'benchnet'))
      ? fs
          .readdirSync(path.join(dir, 'ipam', 'benchnet'))
          .filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip'))
      : [];
  // The bridge and its rules exist before the bursts, as for cnmd's network.
  const add = async (id: string) => {
    await native.netnsCreate(nsPath(id));
    const r = JSON.parse(await cniCall(hostNs, conf, 'ADD', id, nsPath(id))) as {
      ips?: { address: string }[];
    };
    const ip = r.ips?.[0]?.address;
    if (!ip?.startsWith(CNI_NET.prefix))
      throw new Error(`CNI ADD ${id}: no address in ${CNI_NET.subnet}: ${JSON.stringify(r)}`);
    return ip;
  };
  const del = async (id: string) => {
    await cniCall(hostNs, conf, 'DEL', id, nsPath(id));
    native.netnsDelete(nsPath(id));
  };
  await add('anchor');
  for (const [n, tag] of [
    [BURST, 'b'],
    [BIG, 'g'],
  ] as const) {
    await sleep(SETTLE_MS);
    const probe = cpuProbeMs();
    const ips: string[] = new Array(n);
    const create = await burst(n, CONNS, async (i) => {
      ips[i] = await add(`${tag}${i}`);
    });
    if (new Set(ips).size !== n) throw new Error('verify cni: addresses not distinct');
    if (vethCount(hostNs) !== n + 1) throw new Error(`verify cni: ${vethCount(hostNs)} veths, want ${n + 1}`);
    for (const i of [0, n >> 1, n - 1]) checkAddress(`cni ${tag}${i}`, nsPath(`${tag}${i}`), ips[i], 'eth0');
    const gone = await burst(n, CONNS, (i) => del(`${tag}${i}`));
    await eventually(() => {
      if (vethCount(hostNs) !== 1) throw new Error(`verify cni: ${vethCount(hostNs)} veths left, want 1`);
    });
    if (reservations().length !== 1)
      throw new Error(`verify cni: reservations left: ${reservations().join(' ')}`);
    console.log(describe(`cni create ${n}`, create) + `, cpu probe ${probe.toFixed(1)} ms`);
    console.log(describe(`cni delete ${n}`, gone));
    figures[`cni_burst${n}_ms`] = create.wallMs;
    figures[`cni_burst${n}_create_median_ms`] = median(create.each);
    figures[`cni_burst${n}_create_p99_ms`] = percentile(create.each, 99);
    figures[`cni_burst${n}_delete_ms`] = gone.wallMs;
  }
  await del('anchor');
}

export async function run(): Promise<Record<string, number>> {
  if (process.getuid?.() !== 0) throw new Error('bench burst: needs root (network namespaces, mounts)');
  const installErr = ensureDebPackages(['containernetworking-plugins']);
  if (installErr) throw new Error(`bench burst: ${installErr}`);
  const s = new Scratch('cnmd-bench-burst-');
  const offSignals = cleanupOnSignals(() => s.cleanup());
  console.log(
    `burst: ${BURST} and ${BIG} creates over ${CONNS} connections, root ${s.root}, ${os.cpus().length} cores, load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  const figures: Record<string, number> = { burst: BURST, big: BIG, connections: CONNS };
  try {
    await runCnmd(s, figures);
    await sleep(SETTLE_MS);
    await runCni(s, figures);
  } finally {
    const notes = s.cleanup();
    offSignals();
    if (notes.length) console.log(`  burst cleanup: ${notes.join('; ')}`);
  }
  for (const n of [BURST, BIG])
    figures[`ratio_cni_over_cnmd_burst${n}`] = figures[`cni_burst${n}_ms`] / figures[`cnmd_burst${n}_ms`];
  const goal = figures[`cnmd_burst${BURST}_ms`] <= 250 && figures[`ratio_cni_over_cnmd_burst${BURST}`] >= 8;
  console.log(
    `  goal (${BURST} creates <= 250 ms, >= 8x CNI's burst): ${goal ? 'met' : 'MISSED'} (${figures[`cnmd_burst${BURST}_ms`].toFixed(1)} ms, ${figures[`ratio_cni_over_cnmd_burst${BURST}`].toFixed(1)}x)`,
  );
  return figures;
}
