// The guest side of bench case overlay-encrypted: runs INSIDE the kernel
// lane's VM (Debian's kernel has ESP and GCM, this machine's lacks them).
// Two host netns on one underlay with etcd and a cnmd each (test/lib/cluster.ts),
// an encrypted and a plain overlay between them, one sandbox per host on each:
//   throughput  iperf3 sandbox -> sandbox, plain and encrypted alternating, medians;
//   latency     ping RTT (-i 0.05), plain and encrypted alternating, medians;
//   rotation    a rotation asked for through the store (the key the daemons' ring agent
//               takes requests on), timed from the request to the ring's steady phase as
//               etcd streams it, with ping at 100/s both ways across it: requests lost.
// Prints one line "@@BENCH-FIGURES <json>" for bench/cases/overlay-encrypted.ts.
import * as os from 'node:os';
import { spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import { clusterLab, ClusterLab } from '../../test/lib/cluster';
import { eventually } from '../../test/lib/fixture';
import { etcdctl, etcdWatch, meshOf, network, Sb } from '../../test/lib/overlay-cluster';
import { pinger } from '../../test/lib/wire';
import { iperfClient } from './peers-ports';
import { inNs } from './peers';
import { intEnv, median } from './host';

const SECONDS = intEnv('BENCH_OVERLAY_ENC_IPERF_SECONDS', 5, 1, 120);
const ROUNDS = intEnv('BENCH_OVERLAY_ENC_ROUNDS', 3, 1, 20);
const ROTATIONS = intEnv('BENCH_OVERLAY_ENC_ROTATIONS', 3, 1, 20);
const WAIT_MS = 300_000;

interface Enc {
  KeyTags: number[];
  PrimaryKeyTag?: number;
  Peers: { State: string; TxKeyTag?: number }[];
}

async function enc(c: ClusterLab, i: number): Promise<Enc> {
  const r = await c.daemons[i].request('GET', '/networks/sec');
  if (!r.body?.Encryption)
    throw new Error(`inspect sec on host ${i + 1}: no Encryption: ${JSON.stringify(r.body)}`);
  return r.body.Encryption;
}

/** Both hosts send with one primary to a peer whose state is encrypted, the ring steady. */
async function steady(c: ClusterLab): Promise<number> {
  return eventually(async () => {
    const [a, b] = [await enc(c, 0), await enc(c, 1)];
    for (const e of [a, b]) {
      if (e.KeyTags.length > 2 || e.PrimaryKeyTag !== a.PrimaryKeyTag) throw new Error('ring moving');
      if (e.Peers.length !== 1 || e.Peers[0].State !== 'encrypted' || e.Peers[0].TxKeyTag !== a.PrimaryKeyTag)
        throw new Error(`peer not settled: ${JSON.stringify(e.Peers)}`);
    }
    return a.PrimaryKeyTag!;
  }, WAIT_MS);
}

function rttMs(sb: Sb, ip: string): number {
  const r = inNs(sb.key, `ping ${ip}`, 'ping', ['-4', '-n', '-q', '-c', '40', '-i', '0.05', ip], {
    timeoutMs: 60_000,
  });
  const m = /= [\d.]+\/([\d.]+)\//.exec(r.stdout);
  if (!m) throw new Error(`ping ${ip}: no rtt line: ${r.stdout}`);
  return Number(m[1]);
}

function iperfServer(sb: Sb, hooks: (() => unknown)[]): void {
  const p = spawn('nsenter', [`--net=${sb.key}`, 'iperf3', '-s', '-p', '5201'], { stdio: 'ignore' });
  hooks.push(() => void (p.exitCode === null && p.kill('SIGKILL')));
}

/** One rotation asked for now: ms to the ring's switching and steady phases, and pings lost across it. */
async function rotation(
  c: ClusterLab,
  sbs: Sb[],
): Promise<{ switchMs: number; steadyMs: number; sent: number; lost: number }> {
  const before = await steady(c);
  const w = etcdWatch(c, '/cnmd/v1/enc/ring');
  const pings = [pinger(sbs[0].key, sbs[1].ip), pinger(sbs[1].key, sbs[0].ip)];
  // A second of traffic before the request: the count covers the whole rotation.
  await new Promise((r) => setTimeout(r, 1000));
  const t0 = Date.now();
  etcdctl(c, 'put', '/cnmd/v1/enc/rotate', JSON.stringify({ host: 'bench', at: t0 }));
  let switchAt = 0;
  let steadyAt = 0;
  try {
    await eventually(() => {
      const out = w.text();
      const sw = out.indexOf('"phase":"switching"');
      if (sw < 0) throw new Error(`rotation not switching yet: ${out}`);
      switchAt ||= Date.now();
      if (!out.slice(sw).includes('"phase":"steady"')) throw new Error(`rotation not steady yet: ${out}`);
      steadyAt = Date.now();
    }, WAIT_MS);
  } finally {
    w.stop();
  }
  const after = await steady(c);
  if (after === before) throw new Error(`rotation asked, primary still ${before}`);
  await new Promise((r) => setTimeout(r, 1000));
  const got = await Promise.all(pings.map((p) => p.stop()));
  return {
    switchMs: switchAt - t0,
    steadyMs: steadyAt - t0,
    sent: got.reduce((a, g) => a + g.highest, 0),
    lost: got.reduce((a, g) => a + g.lost.length, 0),
  };
}

async function main(): Promise<void> {
  const hooks: (() => unknown)[] = [];
  const ctx = { after: (fn: () => unknown) => void hooks.push(fn) } as unknown as TestContext;
  const figures: Record<string, number> = { load_avg_1m_start: os.loadavg()[0] };
  const t0 = Date.now();
  try {
    const c = await clusterLab(ctx, {
      hosts: 2,
      ttl: 10,
      readyMs: 600_000,
      secret: true,
      // No rotation but the ones asked for.
      args: ['--encryption-key-rotation', '24h'],
    });
    await Promise.all([0, 1].map((i) => c.startDaemon(i)));
    const secNet = await network(c.daemons[0], 'sec', '10.41.0.0/24', { encrypted: '' });
    const plainNet = await network(c.daemons[0], 'plain', '10.42.0.0/24');
    const sec = await meshOf(c, secNet, 'sec', { hosts: 2, ms: WAIT_MS });
    const plain = await meshOf(c, plainNet, 'plain', { hosts: 2, ms: WAIT_MS });
    await steady(c);
    iperfServer(sec[1], hooks);
    iperfServer(plain[1], hooks);
    // Warm-up: both servers listening, both paths up.
    for (const sbs of [sec, plain])
      await eventually(() => iperfClient(sbs[0].key, sbs[1].ip, 5201, 1), WAIT_MS);
    const g = { sec: [] as number[], plain: [] as number[] };
    const rtt = { sec: [] as number[], plain: [] as number[] };
    for (let r = 0; r < ROUNDS; r++) {
      g.plain.push(iperfClient(plain[0].key, plain[1].ip, 5201, SECONDS));
      g.sec.push(iperfClient(sec[0].key, sec[1].ip, 5201, SECONDS));
      rtt.plain.push(rttMs(plain[0], plain[1].ip));
      rtt.sec.push(rttMs(sec[0], sec[1].ip));
    }
    figures.iperf_seconds = SECONDS;
    figures.rounds = ROUNDS;
    figures.plain_gbps = median(g.plain);
    figures.encrypted_gbps = median(g.sec);
    figures.plain_rtt_ms = median(rtt.plain);
    figures.encrypted_rtt_ms = median(rtt.sec);
    const rot = [];
    for (let r = 0; r < ROTATIONS; r++) rot.push(await rotation(c, sec));
    figures.rotations = ROTATIONS;
    figures.rotation_to_switch_median_ms = median(rot.map((x) => x.switchMs));
    figures.rotation_to_steady_median_ms = median(rot.map((x) => x.steadyMs));
    figures.rotation_to_steady_max_ms = Math.max(...rot.map((x) => x.steadyMs));
    figures.rotation_pings = rot.reduce((a, x) => a + x.sent, 0);
    figures.rotation_pings_lost = rot.reduce((a, x) => a + x.lost, 0);
    figures.ratio_encrypted_vs_plain_gbps = figures.encrypted_gbps / figures.plain_gbps;
    figures.ratio_encrypted_vs_plain_rtt = figures.encrypted_rtt_ms / figures.plain_rtt_ms;
    figures.load_avg_1m_end = os.loadavg()[0];
    figures.guest_seconds = (Date.now() - t0) / 1000;
    console.log(`@@BENCH-FIGURES ${JSON.stringify(figures)}`);
  } finally {
    for (const fn of hooks.reverse()) await fn();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
