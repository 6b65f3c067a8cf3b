// Bench case "engine": container start through the real Docker engine on a
// network of cnmd's plugin driver vs on the engine's built-in bridge driver,
// one dockerd, one run, interleaved (issue 6, point 6: no slower than the
// built-in driver; the engine's own overhead dominates, cnmd must not add to it).
//
// Set-up, all in one private "host" netns:
//  cnmd     a daemon (bench/lib/peers-ports.ts Cnmd: nsenter --net=<host netns>,
//           private roots and socket, --plugin-dir <run>/cnmd/plugins), at
//           --log-level info as in production. It serves cnmd-bridge.sock (a
//           NetworkDriver) and cnmd-ipam.sock (an IpamDriver) in its plugin dir.
//  dockerd  Debian's docker.io in the same netns (the plugin makes its veths in
//           the daemon's netns and the engine moves them into containers), in a
//           private mount namespace where cnmd's plugin dir is bind-mounted onto
//           /run/docker/plugins (the only place dockerd looks), private roots,
//           cgroup parent; a busybox image from busybox-static (`docker import`).
//           Launcher: test/lib/dockerd-launch.ts, shared with the engine lane.
//  networks builtin: `docker network create --subnet 10.77.0.0/16 --gateway
//           10.77.0.1` (driver bridge, default IPAM); cnmd: `docker network
//           create -d cnmd-bridge --ipam-driver cnmd-ipam --subnet 10.78.0.0/16
//           --gateway 10.78.0.1`.
//
// Timed, CLI process included (as a user sees it), each variant once per round,
// the order rotated every round so no variant always follows another:
//  none_run      `docker run --rm --network none IMAGE true`: the engine without
//                networking; subtracted from the others it gives the network's cost.
//  builtin_run   `docker run --rm --network builtin IMAGE true`
//  cnmd_run      `docker run --rm --network cnmd IMAGE true`
//  builtin_ping  `docker run --rm --network builtin IMAGE ping -c1 -W2 GATEWAY`
//  cnmd_ping     the same on cnmd's network: the interface is not only made but
//                works (a ping that is not answered fails the case).
// BENCH_ENGINE_WARMUP (2) untimed rounds first, then BENCH_ENGINE_ROUNDS (20).
// Figures are medians and p90s (nearest rank); ratio_cnmd_vs_builtin_* is
// cnmd / builtin (<= 1: the goal is met).
//
// Correctness, beyond the pings: once per network, a container's eth0 holds an
// address in the subnet and its default route is the gateway; after the rounds
// no container is left and the host netns holds the veths it held before (no
// endpoint leaked by either driver); both networks are removed with `docker
// network rm`.
//
// When the cnmd half cannot run (cnmd's plugin sockets never appear, `docker
// network create -d cnmd-bridge` or a run fails), the built-in half still runs
// and is printed, then the case FAILS with the reason: a result without the
// cnmd figures would read as a comparison that never happened.
// BENCH_ENGINE_DRIVERS=builtin measures the built-in half alone on purpose
// (no ratios).
//
// Host hygiene: bench/lib/host.ts Scratch (one mkdtemp root with a tmpfs; every
// process naming it, in its namespaces, in the engine's mount namespace or
// cgroup is killed; mounts and the root removed, pass or fail, also on
// SIGINT/SIGTERM). Nothing runs in the machine's own netns or mount namespace.
//
// Environment: BENCH_ENGINE_ROUNDS (20), BENCH_ENGINE_WARMUP (2),
// BENCH_ENGINE_DRIVERS (builtin,cnmd), BENCH_ENGINE_SOCKET_WAIT_S (10: how long
// to wait for cnmd's plugin sockets), BENCH_NO_INSTALL=1 (do not apt-get).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  Scratch,
  commandExists,
  ensureDebPackages,
  eventually,
  intEnv,
  median,
  percentile,
  sleep,
  vethCount,
  cleanupOnSignals,
} from '../lib/host';
import { Cnmd, Dockerd, guardNetns, inNs, startDockerd } from '../lib/peers';

export const name = 'engine';
export const unit = 'ms';

const ROUNDS = intEnv('BENCH_ENGINE_ROUNDS', 20, 1, 1000);
const WARMUP = intEnv('BENCH_ENGINE_WARMUP', 2, 0, 100);
const SOCKET_WAIT_S = intEnv('BENCH_ENGINE_SOCKET_WAIT_S', 10, 0, 600);
const DRIVERS = new Set(
  (process.env.BENCH_ENGINE_DRIVERS ?? 'builtin,cnmd')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean),
);

const NETS = {
  builtin: {
    name: 'bench-builtin',
    subnet: '10.77.0.0/16',
    gateway: '10.77.0.1',
    prefix: '10.77.',
    create: ['--driver', 'bridge'],
  },
  cnmd: {
    name: 'bench-cnmd',
    subnet: '10.78.0.0/16',
    gateway: '10.78.0.1',
    prefix: '10.78.',
    create: ['--driver', 'cnmd-bridge', '--ipam-driver', 'cnmd-ipam'],
  },
} as const;
type Driver = keyof typeof NETS;

type Variant = 'none_run' | 'builtin_run' | 'cnmd_run' | 'builtin_ping' | 'cnmd_ping';

interface VariantSpec {
  driver?: Driver;
  args(image: string): string[];
}

const VARIANTS: Record<Variant, VariantSpec> = {
  none_run: { args: (img) => ['run', '--rm', '--network', 'none', img, 'true'] },
  builtin_run: {
    driver: 'builtin',
    args: (img) => ['run', '--rm', '--network', NETS.builtin.name, img, 'true'],
  },
  cnmd_run: { driver: 'cnmd', args: (img) => ['run', '--rm', '--network', NETS.cnmd.name, img, 'true'] },
  builtin_ping: {
    driver: 'builtin',
    args: (img) => [
      'run',
      '--rm',
      '--network',
      NETS.builtin.name,
      img,
      'ping',
      '-c',
      '1',
      '-W',
      '2',
      NETS.builtin.gateway,
    ],
  },
  cnmd_ping: {
    driver: 'cnmd',
    args: (img) => [
      'run',
      '--rm',
      '--network',
      NETS.cnmd.name,
      img,
      'ping',
      '-c',
      '1',
      '-W',
      '2',
      NETS.cnmd.gateway,
    ],
  },
};

function checkTools(): void {
  if (process.getuid?.() !== 0) throw new Error('bench engine: needs root (namespaces, mounts, cgroups)');
  for (const tool of ['ip', 'nsenter', 'unshare', 'mount', 'iptables', 'tar']) {
    if (!commandExists(tool)) throw new Error(`bench engine: "${tool}" is not installed`);
  }
  const bad = [...DRIVERS].filter((x) => !(x in NETS));
  if (bad.length || !DRIVERS.has('builtin'))
    throw new Error(`BENCH_ENGINE_DRIVERS: want builtin[,cnmd], got ${[...DRIVERS].join(',')}`);
}

/** Waits for cnmd's plugin sockets; returns why they are not there, or undefined. */
async function pluginSockets(dir: string): Promise<string | undefined> {
  const want = ['cnmd-bridge.sock', 'cnmd-ipam.sock'];
  const deadline = Date.now() + SOCKET_WAIT_S * 1000;
  for (;;) {
    const missing = want.filter((f) => {
      try {
        return !fs.statSync(path.join(dir, f)).isSocket();
      } catch {
        return true;
      }
    });
    if (missing.length === 0) return undefined;
    if (Date.now() > deadline) {
      return `cnmd did not create ${missing.join(' and ')} in its plugin dir ${dir} within ${SOCKET_WAIT_S} s (is cnmd's plugin server, issue 6 point 1, there yet?)`;
    }
    await sleep(100);
  }
}

/** Checks, from a container on the network, its address and default route. */
function checkNetwork(dk: Dockerd, driver: Driver): void {
  const n = NETS[driver];
  const out = dk.cli(
    `check ${driver}`,
    [
      'run',
      '--rm',
      '--network',
      n.name,
      dk.image,
      'sh',
      '-c',
      'ip -4 -o addr show dev eth0; echo ---; ip -4 route show default',
    ],
    60_000,
  ).stdout;
  const [addrs, routes] = out.split('---');
  if (!new RegExp(`inet ${n.prefix.replace(/\./g, '\\.')}\\d+\\.\\d+/16 `).test(addrs))
    throw new Error(`verify ${driver}: eth0 holds no address in ${n.subnet}: ${addrs.trim()}`);
  if (!routes.includes(`default via ${n.gateway} `))
    throw new Error(`verify ${driver}: the default route is not via ${n.gateway}: ${routes.trim()}`);
}

function rotate<T>(xs: T[], k: number): T[] {
  const i = k % xs.length;
  return [...xs.slice(i), ...xs.slice(0, i)];
}

export async function run(): Promise<Record<string, number>> {
  checkTools();
  const tStart = performance.now();
  const wantCnmd = DRIVERS.has('cnmd');
  const installErr = ensureDebPackages(['docker.io', 'containerd', 'runc', 'busybox-static']);
  if (installErr) throw new Error(`bench engine: ${installErr}`);

  const s = new Scratch('cnmd-bench-engine-');
  guardNetns(s);
  const offSignals = cleanupOnSignals(() => s.cleanup());
  console.log(
    `engine: ${ROUNDS} rounds (warm-up ${WARMUP}), drivers ${[...DRIVERS].join(', ')}, root ${s.root} (tmpfs at run/), ${os.cpus().length} cores, load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );

  const times = new Map<Variant, number[]>();
  const creates: Partial<Record<Driver, number>> = {};
  let cnmdFailure: string | undefined;
  let version = '';
  try {
    // cnmd first, in a new host netns; the engine joins that netns and sees cnmd's plugin dir.
    const cnmd = await Cnmd.start(s, 'cnmd', { client: 'cnmctl', logLevel: 'info' });
    const pluginDir = cnmd.pluginDir;
    const started = await startDockerd(s, 'docker', undefined, { hostNs: cnmd.hostNs, pluginDir });
    if (!started.ok) throw new Error(`bench engine: dockerd cannot run here: ${started.reason}`);
    const dk = started.d;
    version = dk.version;
    try {
      const create = (driver: Driver) => {
        const n = NETS[driver];
        creates[driver] = dk.cli(`network create (${driver})`, [
          'network',
          'create',
          ...n.create,
          '--subnet',
          n.subnet,
          '--gateway',
          n.gateway,
          n.name,
        ]).ms;
        checkNetwork(dk, driver);
      };
      create('builtin');
      if (wantCnmd) {
        cnmdFailure = await pluginSockets(pluginDir);
        if (!cnmdFailure) {
          try {
            create('cnmd');
          } catch (e) {
            cnmdFailure = (e as Error).message;
          }
        }
      }
      const active = (): Variant[] =>
        (Object.keys(VARIANTS) as Variant[]).filter((v) => {
          const d = VARIANTS[v].driver;
          return d === undefined || (d === 'builtin' ? true : wantCnmd && !cnmdFailure);
        });
      const vethsBefore = vethCount(cnmd.hostNs);
      for (let r = -WARMUP; r < ROUNDS; r++) {
        const line: string[] = [];
        for (const v of rotate(active(), r + WARMUP)) {
          const spec = VARIANTS[v];
          if (spec.driver === 'cnmd' && cnmdFailure) continue;
          let res: { ms: number; stdout: string };
          try {
            res = dk.cli(`${v} round ${r}`, spec.args(dk.image), 120_000);
            if (v.endsWith('_ping') && !/1 packets received/.test(res.stdout))
              throw new Error(`${v} round ${r}: the gateway did not answer: ${res.stdout.trim()}`);
          } catch (e) {
            if (spec.driver === 'cnmd') {
              cnmdFailure = `${(e as Error).message.slice(0, 1500)}; dockerd: ${dk.tail()}`;
              continue;
            }
            throw e;
          }
          line.push(`${v} ${res.ms.toFixed(0)}`);
          if (r >= 0) {
            if (!times.has(v)) times.set(v, []);
            times.get(v)!.push(res.ms);
          }
        }
        console.log(`  ${r < 0 ? 'warm-up' : `round ${r + 1}/${ROUNDS}`}: ${line.join(', ')} ms`);
      }
      const left = dk.cli('ps', ['ps', '-aq']).stdout.trim();
      if (left) throw new Error(`verify: containers left after the rounds: ${left.split('\n').join(' ')}`);
      await eventually(() => {
        const v = vethCount(cnmd.hostNs);
        if (v !== vethsBefore)
          throw new Error(
            `verify: ${v} veths in the host netns after the rounds, ${vethsBefore} before (an endpoint leaked)`,
          );
      }, 10_000);
      dk.cli('network rm', ['network', 'rm', NETS.builtin.name]);
      if (creates.cnmd !== undefined) {
        try {
          dk.cli('network rm', ['network', 'rm', NETS.cnmd.name]);
        } catch (e) {
          cnmdFailure ??= (e as Error).message;
        }
      }
      const bridges = inNs(cnmd.hostNs, 'bridges', 'ip', ['-o', 'link', 'show', 'type', 'bridge']).stdout;
      if (bridges.includes(`br-`))
        console.log(
          `  engine: bridges left after network rm: ${bridges
            .trim()
            .split('\n')
            .map((l) => l.split(':')[1]?.trim())
            .join(' ')}`,
        );
    } finally {
      await dk.stop();
      await cnmd.stop();
    }
  } finally {
    offSignals();
    for (const n of s.cleanup()) console.log(`  engine cleanup: ${n}`);
  }

  const figures: Record<string, number> = { rounds: ROUNDS, warmup: WARMUP };
  const f = (x: number) => x.toFixed(1).padStart(7);
  for (const v of Object.keys(VARIANTS) as Variant[]) {
    const xs = times.get(v);
    if (!xs) continue;
    figures[`${v}_median_ms`] = median(xs);
    figures[`${v}_p90_ms`] = percentile(xs, 90);
    console.log(
      `  ${v.padEnd(13)} median ${f(median(xs))} ms  p90 ${f(percentile(xs, 90))} ms  (${xs.length} runs)`,
    );
  }
  for (const d of Object.keys(creates) as Driver[]) figures[`${d}_network_create_ms`] = creates[d]!;
  const none = times.get('none_run');
  for (const d of ['builtin', 'cnmd'] as Driver[]) {
    const xs = times.get(`${d}_run`);
    if (none && xs) figures[`${d}_network_cost_ms`] = median(xs) - median(none);
  }
  const cr = times.get('cnmd_run');
  const br = times.get('builtin_run')!;
  if (cr && !cnmdFailure) {
    const cp = times.get('cnmd_ping')!;
    const bp = times.get('builtin_ping')!;
    figures.ratio_cnmd_vs_builtin_run = median(cr) / median(br);
    figures.ratio_cnmd_vs_builtin_run_p90 = percentile(cr, 90) / percentile(br, 90);
    figures.ratio_cnmd_vs_builtin_ping = median(cp) / median(bp);
    const r = figures.ratio_cnmd_vs_builtin_run;
    console.log(
      `engine goal: docker run on cnmd-bridge no slower than the built-in bridge: ${r.toFixed(3)}x (p90 ${figures.ratio_cnmd_vs_builtin_run_p90.toFixed(3)}x, ping runs ${figures.ratio_cnmd_vs_builtin_ping.toFixed(3)}x): ${r <= 1 ? 'met' : `MISSED by ${(median(cr) - median(br)).toFixed(1)} ms`}`,
    );
  }
  figures.case_seconds = (performance.now() - tStart) / 1000;
  console.log(`engine: dockerd ${version}, case ran ${figures.case_seconds.toFixed(1)} s`);
  if (wantCnmd && cnmdFailure) {
    throw new Error(
      `bench engine: the cnmd half failed, so there is nothing to compare (the built-in half is printed above): ${cnmdFailure}`,
    );
  }
  return figures;
}
