// The overlay's convergence through the cluster store, a section of bench case
// "overlay" (BENCH_OVERLAY_PARTS=convergence): etcd in the underlay's switch
// netns, one real cnmd per host netns (--cluster-store, --cluster-advertise),
// an --internal overlay network made on host 1. Host 1 (A) keeps a prober
// sandbox; each sample is an attach (POST /sandboxes) on host B (hosts 2..N in
// turn), timed from just before the request:
//   attach    until the API answered on B;
//   neigh     until the new endpoint's static neighbour entry exists on A (A's
//             network netns, polled over netlink every ~1 ms);
//   ping      until A's prober got its first echo reply (ping -D stamps it;
//             started when B answered and A has the entry: ARP is answered by
//             A's vxlan device from that entry, never crosses the underlay).
// BENCH_OVERLAY_CONV_ATTACHES samples (200) at each size of BENCH_OVERLAY_CONV_HOSTS
// (3,20); p50/p99 of each. The sandbox is removed after its sample (untimed).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { apiRequest } from '../../src/cli/cnmctl-client';
import { Handle } from '../../src/netlink/handle';
import { underlay, UNDERLAY_BRIDGE } from '../../test/lib/underlay';
import { intEnv, percentile } from './host';
import type { OverlayLab } from '../cases/overlay';

const ATTACHES = intEnv('BENCH_OVERLAY_CONV_ATTACHES', 200, 10, 5000);
const SIZES = (process.env.BENCH_OVERLAY_CONV_HOSTS ?? '3,20').split(',').map(Number);
const CNMD = path.resolve(__dirname, '..', '..', 'src', 'cli', 'cnmd.js');
const STORE_IP = '192.168.77.254';

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(
  what: string,
  ms: number,
  fn: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`bench overlay convergence: ${what} not within ${ms} ms`);
    await sleep(1);
  }
}

function waitExitOrPing(sock: string): Promise<boolean> {
  return apiRequest(`unix://${sock}`, 'GET', '/_ping').then(
    (r) => r.status === 200,
    () => false,
  );
}

async function one(lab: OverlayLab, hosts: number): Promise<Record<string, number>> {
  const { s } = lab;
  const tag = `cv${hosts}`;
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
  const procs: ChildProcess[] = [];
  const start = (args: string[], log: string) => {
    const out = fs.openSync(log, 'w');
    const p = spawn('nsenter', args, { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    s.trackPid(p.pid);
    procs.push(p);
    return p;
  };
  const dir = path.join(s.run, tag);
  fs.mkdirSync(dir);
  try {
    start(
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
      path.join(dir, 'etcd.log'),
    );
    const socks = hs.map((h) => path.join(dir, h.name, 'cnmd.sock'));
    hs.forEach((h, i) => {
      const base = path.join(dir, h.name);
      fs.mkdirSync(base);
      start(
        [
          `--net=${h.path}`,
          process.execPath,
          CNMD,
          '--data-root',
          path.join(base, 'data'),
          '--exec-root',
          path.join(base, 'exec'),
          '-H',
          `unix://${socks[i]}`,
          '--plugin-dir',
          path.join(base, 'plugins'),
          '--cluster-store',
          `etcd://${STORE_IP}:2379`,
          '--cluster-advertise',
          h.ip,
          '--netns-pool-size',
          '4',
          '--log-level',
          'warn',
        ],
        path.join(base, 'cnmd.log'),
      );
    });
    for (const sock of socks)
      await until('cnmd up', 60_000, async () => ((await waitExitOrPing(sock)) ? true : undefined));
    const api = (i: number, method: string, p: string, body?: unknown) =>
      apiRequest(`unix://${socks[i]}`, method, p, body);
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
      await until('network on every host', 10_000, async () =>
        (await api(i, 'GET', '/networks/conv')).status === 200 ? true : undefined,
      );
    const probe = await api(0, 'POST', '/sandboxes', { Name: 'probe', Networks: [{ Network: 'conv' }] });
    if (probe.status !== 201)
      throw new Error(`bench overlay convergence: probe: ${JSON.stringify(probe.body)}`);
    const probeKey = (await api(0, 'GET', '/sandboxes/probe')).body.SandboxKey;
    const vni = Number(net.Options['com.docker.network.driver.overlay.vxlanid_list']);
    const aNs = path.join(dir, hs[0].name, 'exec', 'overlay', 'netns', `ov-${net.Id}`);
    const dev = `vx-${vni.toString(16).padStart(6, '0')}`;
    const a = Handle.at(aNs);
    const attach: number[] = [];
    const neigh: number[] = [];
    const ping: number[] = [];
    try {
      for (let k = 0; k < ATTACHES; k++) {
        const b = 1 + (k % (hosts - 1));
        const name = `s${k}`;
        const t0 = now();
        let tNeigh = 0;
        // The neighbour entry on A: any address not there before the request.
        const before = new Set((await a.neighList({ dev })).map((n) => n.ip));
        const watching = until('neighbour entry on A', 10_000, async () => {
          const hit = (await a.neighList({ dev })).find((n) => n.ip && !before.has(n.ip));
          if (hit) tNeigh = now();
          return hit;
        });
        const r = await api(b, 'POST', '/sandboxes', { Name: name, Networks: [{ Network: 'conv' }] });
        const tAttach = now();
        if (r.status !== 201) throw new Error(`bench overlay convergence: attach: ${JSON.stringify(r.body)}`);
        const ip = (await api(b, 'GET', `/sandboxes/${name}`)).body.Networks.conv.IPAddress as string;
        await watching;
        const p = spawnSync(
          'nsenter',
          [`--net=${probeKey}`, 'ping', '-D', '-n', '-c1', '-w2', '-i0.002', ip],
          {
            encoding: 'utf8',
          },
        );
        const m = /^\[(\d+\.\d+)\] \d+ bytes from/m.exec(p.stdout);
        if (!m)
          throw new Error(`bench overlay convergence: no echo reply from ${ip}:\n${p.stdout}${p.stderr}`);
        attach.push(tAttach - t0);
        neigh.push(tNeigh - t0);
        ping.push(Number(m[1]) * 1000 - t0);
        await api(b, 'DELETE', `/sandboxes/${name}`);
      }
    } finally {
      a.close();
    }
    const f = (x: number) => Number(x.toFixed(2));
    return {
      [`conv_${hosts}h_attach_p50_ms`]: f(percentile(attach, 50)),
      [`conv_${hosts}h_attach_p99_ms`]: f(percentile(attach, 99)),
      [`conv_${hosts}h_neigh_p50_ms`]: f(percentile(neigh, 50)),
      [`conv_${hosts}h_neigh_p99_ms`]: f(percentile(neigh, 99)),
      [`conv_${hosts}h_ping_p50_ms`]: f(percentile(ping, 50)),
      [`conv_${hosts}h_ping_p99_ms`]: f(percentile(ping, 99)),
      [`conv_${hosts}h_samples`]: attach.length,
    };
  } finally {
    for (const p of procs.reverse()) {
      if (p.exitCode !== null || p.signalCode !== null) continue;
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([gone, sleep(5000)]);
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
  }
}

export async function sectionConvergence(lab: OverlayLab): Promise<Record<string, number>> {
  const figures: Record<string, number> = {};
  for (const n of SIZES) {
    if (!Number.isInteger(n) || n < 2 || n > 60)
      throw new Error(`BENCH_OVERLAY_CONV_HOSTS: "${n}" is not a host count from 2 to 60`);
    Object.assign(figures, await one(lab, n));
  }
  return figures;
}
