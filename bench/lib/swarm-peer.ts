// The peer of the overlay's convergence: Docker's own overlay, a section of
// bench case "overlay" (BENCH_OVERLAY_PARTS=swarm). The setup, tried by
// hand before this case was written: three Debian dockerd (docker.io 20.10, each
// starting its containerd) in three host netns on one underlay bridge, each in
// a private mount namespace with a tmpfs over /run, a private /etc/docker and a
// sysfs of its own netns (test/lib/dockerd-launch.ts, privateSysfs), forming a
// swarm (host 1 the manager); address pools that avoid the underlay
// (192.168.77.0/24): bip 10.210.0.1/24, default pools 10.211.0.0/16, swarm pool
// 10.212.0.0/16, the attachable overlay `ov` 10.213.0.0/16, a local bridge `lb`
// 10.214.0.0/24 on each host. Measured as cnmd's convergence is
// (bench/lib/conv-probe.ts):
//   - convergence: `docker run -d --network ov` on host B (2 and 3 in turn),
//     timed from just before the CLI starts until it returned (`attach`), the
//     new container's neighbour entry exists in A's overlay netns (`neigh`: ip
//     -ts monitor neigh, entered through dockerd's mount namespace), and A's
//     prober container got its first echo reply (`ping`); then `docker rm -f`
//     and the entry's removal on A. Keeper containers on B hosts keep the
//     network on every node (as the note's runs did).
//   - the overlay's added attach cost: `docker run -d` on host 2 on `ov` and on
//     `lb`, alternating; medians; added = ov - lb.
// If dockerd cannot run here the section says why and reports swarm_available 0.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { dockerdPaths, missingEngineTools } from '../../test/lib/dockerd-launch';
import { underlay } from '../../test/lib/underlay';
import { intEnv, median, percentile } from './host';
import { Dockerd, startDockerd } from './peers';
import { NeighMonitor, now, readyPinger, round2 } from './conv-probe';
import type { OverlayLab } from '../cases/overlay';

const SAMPLES = intEnv('BENCH_OVERLAY_SWARM_SAMPLES', 200, 1, 5000);
const WARMUP = intEnv('BENCH_OVERLAY_SWARM_WARMUP', 3, 0, 100);
const ATTACHES = intEnv('BENCH_OVERLAY_SWARM_ATTACHES', 20, 0, 1000);
const HOSTS = 3;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function sectionSwarm(lab: OverlayLab): Promise<Record<string, number>> {
  const missing = missingEngineTools();
  if (missing.length) {
    console.log(`  swarm: NOT RUN, not installed: ${missing.join(', ')}`);
    return { swarm_available: 0 };
  }
  const { s } = lab;
  const track = (pid?: number) => s.trackPid(pid);
  const { hosts } = await underlay(
    async (n) => {
      const made = await lab.netns.create(n);
      lab.made.push(made);
      return made;
    },
    HOSTS,
    { prefix: 'sw' },
  );
  const ds: Dockerd[] = [];
  let monitor: NeighMonitor | undefined;
  try {
    const started = await Promise.all(
      hosts.map((h, i) =>
        startDockerd(s, `swarm${i + 1}`, undefined, {
          hostNs: h.path,
          privateSysfs: true,
          config: {
            bip: '10.210.0.1/24',
            'default-address-pools': [{ base: '10.211.0.0/16', size: 24 }],
          },
        }),
      ),
    );
    for (const r of started) if (r.ok) ds.push(r.d);
    const failed = started.find((r) => !r.ok);
    if (failed && !failed.ok) {
      console.log(`  swarm: NOT RUN, dockerd cannot run here: ${failed.reason}`);
      return { swarm_available: 0 };
    }
    const [m] = ds;
    m.cli('swarm init', [
      'swarm',
      'init',
      '--advertise-addr',
      hosts[0].ip,
      '--listen-addr',
      `${hosts[0].ip}:2377`,
      '--default-addr-pool',
      '10.212.0.0/16',
      '--default-addr-pool-mask-length',
      '24',
    ]);
    const token = m.cli('join-token', ['swarm', 'join-token', '-q', 'worker']).stdout.trim();
    for (let i = 1; i < HOSTS; i++)
      ds[i].cli('swarm join', [
        'swarm',
        'join',
        '--advertise-addr',
        hosts[i].ip,
        '--listen-addr',
        `${hosts[i].ip}:2377`,
        '--token',
        token,
        `${hosts[0].ip}:2377`,
      ]);
    m.cli('network create', [
      'network',
      'create',
      '-d',
      'overlay',
      '--attachable',
      '--subnet',
      '10.213.0.0/16',
      'ov',
    ]);
    for (const d of ds)
      d.cli('network create', ['network', 'create', '-d', 'bridge', '--subnet', '10.214.0.0/24', 'lb']);
    const run = async (d: Dockerd, args: string[]) => {
      const r = await d.cliCapped(args, 120_000);
      if (r.status !== 0)
        throw new Error(`bench swarm: docker ${args.join(' ')}: ${r.out}; dockerd: ${d.tail()}`);
      return r;
    };
    // The prober on A, a keeper on each B: the network exists on every node before the samples.
    await run(m, ['run', '-d', '--network', 'ov', '--name', 'probe', m.image, 'sleep', '3600']);
    for (let i = 1; i < HOSTS; i++)
      await run(ds[i], ['run', '-d', '--network', 'ov', '--name', `keep${i}`, ds[i].image, 'sleep', '3600']);
    const probePid = m.cli('inspect', ['inspect', '-f', '{{.State.Pid}}', 'probe']).stdout.trim();
    const netId = m.cli('inspect', ['network', 'inspect', '-f', '{{.Id}}', 'ov']).stdout.trim();
    const execRoot = dockerdPaths({
      disk: path.join(s.root, 'swarm1'),
      run: path.join(s.run, 'swarm1'),
    }).execRoot;
    // dockerd's netns files exist in its private mount namespace only: reached through /proc/<pid>/root.
    const aNs = `/proc/${m.pid}/root${execRoot}/netns/1-${netId.slice(0, 10)}`;
    for (let i = 0; !fs.existsSync(aNs); i++) {
      if (i > 100) throw new Error(`bench swarm: A's overlay netns ${aNs} never appeared`);
      await sleep(100);
    }
    monitor = new NeighMonitor([`--net=${aNs}`], /^vx/, track);
    await monitor.start();
    const mon = monitor;
    const probeNs = [`--net=/proc/${probePid}/ns/net`];
    let missedRemovals = 0;
    const x = {
      attach: [] as number[],
      neigh: [] as number[],
      ping: [] as number[],
      removal: [] as number[],
    };
    for (let k = -WARMUP; k < SAMPLES; k++) {
      const d = ds[1 + ((k + WARMUP) % (HOSTS - 1))];
      const name = `c${k + WARMUP}`;
      const pinger = readyPinger(probeNs, track);
      const t0 = now();
      await run(d, ['run', '-d', '--network', 'ov', '--name', name, d.image, 'sleep', '3600']).catch((e) => {
        pinger.cancel();
        throw e;
      });
      const tRun = now();
      const ip = d
        .cli('inspect', ['inspect', '-f', '{{.NetworkSettings.Networks.ov.IPAddress}}', name])
        .stdout.trim();
      const ev = await mon.wait(ip, false, t0, 30_000).catch((e) => {
        pinger.cancel();
        // What A's overlay netns holds instead, for the message.
        const look = (args: string[]) =>
          spawnSync('nsenter', [`--net=${aNs}`, 'ip', ...args], { encoding: 'utf8' }).stdout.trim();
        throw new Error(
          `${(e as Error).message}; A's overlay netns: links ${look(['-br', 'link'])}; neighbours ${look(['neigh'])}`,
        );
      });
      const tPing = await pinger.fire(ip);
      const tDel = now();
      await run(d, ['rm', '-f', name]);
      const gone = await mon.wait(ip, true, tDel, 15_000).catch(() => undefined);
      mon.trim();
      if (k < 0) continue;
      x.attach.push(tRun - t0);
      x.neigh.push(ev.t - t0);
      x.ping.push(tPing - t0);
      if (gone) x.removal.push(gone.t - tDel);
      else missedRemovals++;
    }
    const f: Record<string, number> = { swarm_available: 1, swarm_hosts: HOSTS };
    for (const [k, v] of Object.entries(x)) {
      f[`swarm_conv_${k}_p50_ms`] = round2(percentile(v, 50));
      f[`swarm_conv_${k}_p99_ms`] = round2(percentile(v, 99));
    }
    f.swarm_conv_samples = x.attach.length;
    f.swarm_conv_removal_missed = missedRemovals;
    console.log(
      `  swarm convergence (${HOSTS} hosts, ${x.attach.length} samples) p50/p99: docker run ${f.swarm_conv_attach_p50_ms}/${f.swarm_conv_attach_p99_ms} ms, ` +
        `neigh on A ${f.swarm_conv_neigh_p50_ms}/${f.swarm_conv_neigh_p99_ms}, ping ${f.swarm_conv_ping_p50_ms}/${f.swarm_conv_ping_p99_ms}, ` +
        `removal ${f.swarm_conv_removal_p50_ms}/${f.swarm_conv_removal_p99_ms} (${missedRemovals} not seen within 15 s)`,
    );
    if (ATTACHES > 0) {
      const d = ds[1];
      const t: Record<string, number[]> = { ov: [], lb: [] };
      for (let k = -2; k < ATTACHES; k++)
        for (const net of k % 2 ? ['ov', 'lb'] : ['lb', 'ov']) {
          const name = `a${net}${k + 2}`;
          const r = await run(d, ['run', '-d', '--network', net, '--name', name, d.image, 'sleep', '3600']);
          if (k >= 0) t[net].push(r.ms);
          await run(d, ['rm', '-f', name]);
        }
      const [o, b] = [median(t.ov), median(t.lb)];
      f.swarm_run_overlay_median_ms = round2(o);
      f.swarm_run_bridge_median_ms = round2(b);
      f.swarm_overlay_added_attach_ms = round2(o - b);
      console.log(
        `  swarm added attach (docker run on host 2, ${ATTACHES} each): overlay ${f.swarm_run_overlay_median_ms} ms, bridge ${f.swarm_run_bridge_median_ms} ms, added ${f.swarm_overlay_added_attach_ms} ms`,
      );
    }
    return f;
  } finally {
    monitor?.stop();
    // Containers first (dockerd would stop each with a timeout), then the engines.
    await Promise.all(
      ds.map(async (d) => {
        const ids = (await d.cliCapped(['ps', '-aq'], 30_000)).out.split('\n').filter(Boolean);
        if (ids.length) await d.cliCapped(['rm', '-f', ...ids], 60_000);
        await d.stop();
      }),
    );
  }
}
