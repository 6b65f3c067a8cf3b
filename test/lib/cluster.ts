// A cluster on one machine, inside the test's own namespaces: an underlay
// bridge in netns "ul" (192.0.2.254/24, every host's default gateway), N
// "host" netns h1..hN on it (192.0.2.N), etcd members in netns of their own
// (192.0.2.101..) with their data under the test's temp root, and one cnmd
// per host pointed at them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ChildProcess, spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import { Lab, Ns, eventually, lab } from './fixture';
import { RunningDaemon, startDaemon } from './daemon';

export const UNDERLAY_GW = '192.0.2.254';
export const hostAddr = (i: number) => `192.0.2.${i}`;
/** Host i's IPv6 underlay address (with `underlay6`), and the underlay bridge's. */
export const hostAddr6 = (i: number) => `2001:db8:2::${i}`;
export const UNDERLAY_GW6 = '2001:db8:2::fe';
export const etcdAddr = (i: number) => `192.0.2.${100 + i}`;

export interface EtcdMember {
  name: string;
  ns: Ns;
  ip: string;
  dataDir: string;
  proc?: ChildProcess;
  logs(): string;
  start(): Promise<void>;
  /** SIGKILL and wait. */
  stop(): Promise<void>;
}

export interface ClusterLab {
  lab: Lab;
  underlay: Ns;
  hosts: Ns[];
  etcd: EtcdMember[];
  /** etcd://... for --cluster-store */
  storeUrl: string;
  daemons: RunningDaemon[];
  /** The --cluster-secret-file every daemon gets (with `secret: true`). */
  secretFile?: string;
  /** Starts host i's daemon (0-based) with the cluster's flags, then `extraArgs` (kept for its restarts). */
  startDaemon(i: number, extraArgs?: string[]): Promise<RunningDaemon>;
  restart(i: number): Promise<RunningDaemon>;
  /** A further netns on the underlay (not a host: no daemon), e.g. an attacker's. */
  attach(name: string, ip: string): Promise<Ns>;
}

function run(ns: Ns, cmd: string): void {
  const [c, ...args] = cmd.split(' ');
  ns.run(c, args);
}

/** Connects a new netns to the underlay bridge with address ip/24 on its eth0. */
async function attach(l: Lab, ul: Ns, name: string, ip: string, idx: number): Promise<Ns> {
  const ns = await l.ns(name);
  run(ul, `ip link add u${idx} type veth peer name eth0 netns ${ns.path}`);
  run(ul, `ip link set u${idx} master br0 up`);
  run(ns, 'ip link set lo up');
  run(ns, `ip addr add ${ip}/24 dev eth0`);
  run(ns, 'ip link set eth0 up');
  run(ns, `ip route add default via ${UNDERLAY_GW}`);
  return ns;
}

/**
 * The member answers a quorum read (etcdctl endpoint health): it has a leader and its bootstrap is
 * committed. An open port alone came too early: a member SIGKILLed right after it restarted with an
 * empty configuration and never elected itself again (a cluster-lane flake).
 */
function etcdHealthy(nsPath: string, ip: string): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn(
      'nsenter',
      [
        `--net=${nsPath}`,
        'etcdctl',
        '--endpoints',
        `http://${ip}:2379`,
        '--command-timeout=2s',
        'endpoint',
        'health',
      ],
      { stdio: 'ignore', env: { ...process.env, ETCDCTL_API: '3' } },
    );
    p.on('exit', (code) => resolve(code === 0));
    p.on('error', () => resolve(false));
  });
}

export async function clusterLab(
  t: TestContext,
  o: {
    hosts?: number;
    etcdMembers?: number;
    ttl?: number;
    args?: string[];
    /** Write a cluster secret (64 random bytes) under the test root and give it to every daemon. */
    secret?: boolean;
    /** How long a daemon may take to answer /_ping (the kernel lane's VM is several times slower). */
    readyMs?: number;
    /** A dual-stack underlay: hosts also get hostAddr6(i)/64 (etcd stays on IPv4), for IPv6 VTEPs. */
    underlay6?: boolean;
  } = {},
): Promise<ClusterLab> {
  const l = await lab(t);
  const ul = await l.ns('ul');
  run(ul, 'ip link set lo up');
  run(ul, 'ip link add br0 type bridge');
  run(ul, `ip addr add ${UNDERLAY_GW}/24 dev br0`);
  run(ul, 'ip link set br0 up');
  const members = o.etcdMembers ?? 1;
  const etcd: EtcdMember[] = [];
  const initial = Array.from({ length: members }, (_, i) => `e${i + 1}=http://${etcdAddr(i + 1)}:2380`).join(
    ',',
  );
  for (let i = 1; i <= members; i++) {
    const ns = await attach(l, ul, `e${i}`, etcdAddr(i), 100 + i);
    const ip = etcdAddr(i);
    const dataDir = path.join(l.root, `etcd-e${i}`);
    let out = '';
    const m: EtcdMember = {
      name: `e${i}`,
      ns,
      ip,
      dataDir,
      logs: () => out,
      async start() {
        const p = spawn(
          'nsenter',
          [
            `--net=${ns.path}`,
            'etcd',
            '--name',
            `e${i}`,
            '--data-dir',
            dataDir,
            '--listen-client-urls',
            `http://${ip}:2379`,
            '--advertise-client-urls',
            `http://${ip}:2379`,
            '--listen-peer-urls',
            `http://${ip}:2380`,
            '--initial-advertise-peer-urls',
            `http://${ip}:2380`,
            '--initial-cluster',
            initial,
            '--initial-cluster-state',
            'new',
            '--heartbeat-interval',
            '50',
            '--election-timeout',
            '500',
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        p.stdout!.on('data', (d) => (out += d));
        p.stderr!.on('data', (d) => (out += d));
        m.proc = p;
      },
      async stop() {
        const p = m.proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        const gone = new Promise((r) => p.once('exit', r));
        p.kill('SIGKILL');
        await gone;
      },
    };
    etcd.push(m);
  }
  l.beforeCleanup(async () => {
    for (const m of etcd) await m.stop();
  });
  for (const m of etcd) await m.start();
  for (const m of etcd) {
    await eventually(async () => {
      if (m.proc?.exitCode !== null && m.proc?.exitCode !== undefined)
        throw new Error(`etcd ${m.name} exited:\n${m.logs()}`);
      if (!(await etcdHealthy(m.ns.path, m.ip))) throw new Error(`etcd ${m.name} not healthy:\n${m.logs()}`);
    }, 60_000);
  }
  const storeUrl = `etcd://${etcd.map((m) => `${m.ip}:2379`).join(',')}`;
  const hosts: Ns[] = [];
  for (let i = 1; i <= (o.hosts ?? 3); i++) hosts.push(await attach(l, ul, `h${i}`, hostAddr(i), i));
  if (o.underlay6) {
    // nodad: usable at once (no duplicate address detection wait).
    run(ul, `ip -6 addr add ${UNDERLAY_GW6}/64 dev br0 nodad`);
    for (const [k, h] of hosts.entries()) run(h, `ip -6 addr add ${hostAddr6(k + 1)}/64 dev eth0 nodad`);
  }
  let secretFile: string | undefined;
  if (o.secret) {
    secretFile = path.join(l.root, 'cluster-secret');
    fs.writeFileSync(secretFile, randomBytes(64), { mode: 0o600 });
  }
  const daemonArgs = [
    '--cluster-store',
    storeUrl,
    '--cluster-ttl',
    String(o.ttl ?? 3),
    '--netns-pool-size',
    '0',
    ...(secretFile ? ['--cluster-secret-file', secretFile] : []),
    ...(o.args ?? []),
  ];
  const hostArgs: string[][] = [];
  let extra = 200;
  const c: ClusterLab = {
    lab: l,
    underlay: ul,
    hosts,
    etcd,
    storeUrl,
    secretFile,
    daemons: [],
    async startDaemon(i: number, extraArgs: string[] = []) {
      hostArgs[i] = [...daemonArgs, ...extraArgs];
      const d = await startDaemon(t, l, { hostNs: hosts[i], args: hostArgs[i], readyMs: o.readyMs });
      c.daemons[i] = d;
      return d;
    },
    async restart(i: number) {
      const old = c.daemons[i];
      const d = await startDaemon(t, l, {
        hostNs: old.host,
        base: old.base,
        args: hostArgs[i] ?? daemonArgs,
        readyMs: o.readyMs,
      });
      c.daemons[i] = d;
      return d;
    },
    attach: (name: string, ip: string) => attach(l, ul, name, ip, extra++),
  };
  return c;
}
