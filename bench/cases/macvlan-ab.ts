// Bench case "macvlan-ab": this checkout's macvlan attach against a baseline
// revision's, measured where the macvlan case measures it: in the rotation,
// each cnmd attach coming after the CNI macvlan plugin's and netavark's (~25 ms
// of other processes' work on both CPUs), so the daemon is idle before each
// attach. The bridge's back-to-back A/B is attach-ab; this one is the A/B of a
// change aimed at the rotation (issue #15, docs/design-notes.md "Where a
// macvlan attach's time goes").
//
// The baseline is built as attach-ab builds it (BENCH_AB_BASELINE, default
// main: a branch against the main it would land on; BENCH_AB_BASELINE_DIR
// names a built checkout). Peers (bench/cases/macvlan.ts):
// cnmd old and new (each a daemon with a macvlan network on its own lan0,
// static IPAM), CNI macvlan, netavark. Protocol: an anchor each,
// BENCH_AB_WARMUP (5) untimed attach+detach rounds, then BENCH_AB_ROUNDS (4)
// runs of BENCH_ATTACH_N (40) rounds of one timed attach per peer in turn
// (old, cni, new, netavark in even runs; new, cni, old, netavark in odd ones),
// a sample checked, the detaches the same way, only the anchors left.
// Figures: each cnmd's attach median and p90 over every run, the ratio
// new/old, per run its ratio (median and spread), and the peers' medians.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  Scratch,
  cleanupOnSignals,
  cpuProbeMs,
  ensureDebPackages,
  intEnv,
  median,
  percentile,
  sleep,
} from '../lib/host';
import { buildBaseline } from './attach-ab';
import { ATTACH_DAEMON, sample } from './attach';
import { CNI_DIR, NETAVARK, Peer, cniPeer, cnmdPeer, netavarkPeer } from './macvlan';

export const name = 'macvlan-ab';
export const unit = 'ms';

const BASELINE = process.env.BENCH_AB_BASELINE || 'main';
const RUNS = intEnv('BENCH_AB_ROUNDS', 4, 1, 100);
const N = intEnv('BENCH_ATTACH_N', 40, 1, 1000);
const WARMUP = intEnv('BENCH_AB_WARMUP', 5, 0, 100);
const SETTLE_MS = intEnv('BENCH_SETTLE_MS', 1500, 0, 60000);

export async function run(): Promise<Record<string, number>> {
  const installErr = ensureDebPackages(['containernetworking-plugins', 'netavark']);
  for (const f of [path.join(CNI_DIR, 'macvlan'), path.join(CNI_DIR, 'host-local'), NETAVARK])
    if (!fs.existsSync(f))
      throw new Error(`macvlan-ab bench: ${f} is missing (${installErr ?? 'not installed'})`);
  const tStart = performance.now();
  const s = new Scratch('cnmd-bench-macvlan-ab-');
  const offSignals = cleanupOnSignals(() => s.cleanup());
  const figures: Record<string, number> = { runs: RUNS, n: N, warmup: WARMUP };
  const peers: Peer[] = [];
  const t = new Map<Peer, number[]>();
  const perRun: number[] = [];
  let what = BASELINE;
  try {
    const base = buildBaseline(s, BASELINE);
    what = base.what;
    console.log(
      `macvlan-ab: old = ${what}, new = this checkout; ${RUNS} runs of ${N} rotations (cnmd old, CNI, cnmd new, netavark); ` +
        `${os.cpus().length} cores, load average ${os
          .loadavg()
          .map((l) => l.toFixed(2))
          .join(' ')}`,
    );
    const oldP = await cnmdPeer(
      s,
      'macvlan',
      false,
      { ...ATTACH_DAEMON, script: base.script },
      { label: 'old', prefix: '10.214.' },
    );
    const newP = await cnmdPeer(s, 'macvlan', false, ATTACH_DAEMON, { label: 'new', prefix: '10.215.' });
    peers.push(oldP, newP, await cniPeer(s), await netavarkPeer(s));
    for (const p of peers) {
      t.set(p, []);
      await p.attach('anchor');
    }
    for (let i = 0; i < WARMUP; i++)
      for (const p of peers) {
        await p.attach(`w${i}`);
        await p.detach(`w${i}`);
      }
    figures.cpu_probe_start_ms = cpuProbeMs();
    for (let r = 0; r < RUNS; r++) {
      await sleep(SETTLE_MS); // the previous run's namespaces go in the kernel's background work
      const [a, b] = r % 2 === 0 ? [oldP, newP] : [newP, oldP];
      const order = [a, peers[2], b, peers[3]];
      const run = new Map<Peer, number[]>(order.map((p) => [p, []]));
      for (let i = 0; i < N; i++)
        for (const p of order) {
          const t0 = performance.now();
          await p.attach(`r${r}c${i}`);
          run.get(p)!.push(performance.now() - t0);
        }
      if (r === 0) for (const i of sample(N)) for (const p of order) await p.verify(`r${r}c${i}`);
      for (let i = 0; i < N; i++) for (const p of order) await p.detach(`r${r}c${i}`);
      for (const [p, v] of run) t.get(p)!.push(...v);
      perRun.push(median(run.get(newP)!) / median(run.get(oldP)!));
      console.log(
        `  run ${r + 1}/${RUNS} (${a.label} first): attach median old ${median(run.get(oldP)!).toFixed(2)} ms, ` +
          `new ${median(run.get(newP)!).toFixed(2)} ms (new/old ${perRun[r].toFixed(3)}), ` +
          `cni ${median(run.get(peers[2])!).toFixed(2)}, netavark ${median(run.get(peers[3])!).toFixed(2)}`,
      );
    }
    figures.cpu_probe_end_ms = cpuProbeMs();
    for (const p of peers) await p.verifyEmpty();
  } finally {
    for (const p of peers) await p.close().catch((e) => console.log(`  ${p.label}: close failed: ${e}`));
    offSignals();
    for (const n of s.cleanup()) console.log(`  macvlan-ab cleanup: ${n}`);
  }
  for (const p of peers) {
    figures[`${p.label}_attach_median_ms`] = median(t.get(p)!);
    figures[`${p.label}_attach_p90_ms`] = percentile(t.get(p)!, 90);
  }
  figures.ratio_new_vs_old_attach = figures.new_attach_median_ms / figures.old_attach_median_ms;
  figures.ratio_new_vs_old_attach_per_run_median = median(perRun);
  figures.ratio_new_vs_old_attach_per_run_min = Math.min(...perRun);
  figures.ratio_new_vs_old_attach_per_run_max = Math.max(...perRun);
  figures.case_seconds = (performance.now() - tStart) / 1000;
  console.log(
    `  macvlan attach in the rotation: old ${figures.old_attach_median_ms.toFixed(3)} ms, new ${figures.new_attach_median_ms.toFixed(3)} ms: ` +
      `new/old ${figures.ratio_new_vs_old_attach.toFixed(3)} (per run: median ${figures.ratio_new_vs_old_attach_per_run_median.toFixed(3)}, ` +
      `${figures.ratio_new_vs_old_attach_per_run_min.toFixed(3)}-${figures.ratio_new_vs_old_attach_per_run_max.toFixed(3)}; old = ${what})`,
  );
  return figures;
}
