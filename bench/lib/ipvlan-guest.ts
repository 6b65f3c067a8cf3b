// The guest side of bench case ipvlan: runs INSIDE the kernel lane's VM (this
// machine's kernel lacks CONFIG_IPVLAN; Debian's under qemu has it). The
// macvlan case's peers and protocol (bench/cases/macvlan.ts, measure) with
// ipvlan children in l2 mode: cnmd (`-d ipvlan -o parent=lan0`) beside the CNI
// ipvlan plugin (Debian's containernetworking-plugins, read from the host's
// root through 9p), alternating attach by attach. Debian's netavark (1.4.0) has no ipvlan
// driver, so it is not a peer here. Prints one line "@@BENCH-FIGURES <json>"
// for bench/cases/ipvlan.ts.
import * as os from 'node:os';
import { Scratch, intEnv } from './host';
import { Peer, cniPeer, cnmdPeer, measure } from '../cases/macvlan';

const N = intEnv('BENCH_IPVLAN_N', 30, 1, 1000);
const WARMUP = intEnv('BENCH_IPVLAN_WARMUP', 3, 0, 100);

async function main(): Promise<void> {
  const t0 = performance.now();
  const loadStart = os.loadavg()[0];
  const s = new Scratch('cnmd-bench-ipvlan-');
  const peers: Peer[] = [];
  try {
    // Under TCG node starts and fills its netns pool tens of times slower than on hardware.
    peers.push(await cnmdPeer(s, 'ipvlan', false, { readyMs: 600_000 }), await cniPeer(s, 'ipvlan'));
    console.log(`ipvlan (guest): N=${N} (warm-up ${WARMUP}), alternating cnmd / CNI ipvlan`);
    const { figures } = await measure(s, peers, { n: N, warmup: WARMUP });
    // Under TCG a bare spawn costs about what the plugin's whole call does (1378 vs 1213 ms in a
    // loaded run), measured apart from the rotation: taking it out leaves noise, not the plugin.
    for (const k of Object.keys(figures)) if (k.endsWith('_harness_out')) delete figures[k];
    figures.load_avg_1m_start = loadStart;
    figures.load_avg_1m_end = os.loadavg()[0];
    figures.guest_seconds = (performance.now() - t0) / 1000;
    console.log(`@@BENCH-FIGURES ${JSON.stringify(figures)}`);
  } finally {
    for (const p of peers) await p.close().catch((e) => console.log(`  ${p.label}: close failed: ${e}`));
    s.cleanup();
  }
}

main().catch((e) => {
  console.error(`ipvlan guest: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
