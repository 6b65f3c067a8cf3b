// Overlay networks on a clusterLab: networks made through one daemon's API,
// sandboxes on each host, what their embedded DNS answers, the overlay's FDB
// read back with bridge -j. Shared by the cluster lane and the kernel lane's
// cluster-in-a-VM tests (whose waits are longer: pass `ms`).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { eventually, runIn } from './fixture';
import type { RunningDaemon } from './daemon';
import { ClusterLab, etcdAddr, hostAddr } from './cluster';

export const VXLANID = 'com.docker.network.driver.overlay.vxlanid_list';

export interface Sb {
  name: string;
  key: string;
  ip: string;
  mac: string;
}

export interface OverlayNet {
  id: string;
  vni: number;
}

export async function network(
  d: RunningDaemon,
  name: string,
  subnet: string,
  options: Record<string, string> = {},
): Promise<OverlayNet> {
  const r = await d.request('POST', '/networks/create', {
    Name: name,
    Driver: 'overlay',
    Internal: true,
    Options: options,
    IPAM: { Config: [{ Subnet: subnet }] },
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const n = (await d.request('GET', `/networks/${r.body.Id}`)).body;
  return { id: n.Id, vni: Number(n.Options[VXLANID]) };
}

export async function sandbox(d: RunningDaemon, name: string, net: string, ip?: string): Promise<Sb> {
  const r = await d.request('POST', '/sandboxes', {
    Name: name,
    Networks: [{ Network: net, ...(ip ? { IPv4Address: ip } : {}) }],
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const s = (await d.request('GET', `/sandboxes/${name}`)).body;
  const e = s.Networks[net];
  return { name, key: s.SandboxKey, ip: e.IPAddress, mac: e.MacAddress };
}

/** Waits until the network exists on d (mirrored from the cluster). */
export async function mirrored(d: RunningDaemon, net: string, ms = 3000): Promise<void> {
  await eventually(async () => assert.equal((await d.request('GET', `/networks/${net}`)).status, 200), ms);
}

/** What the sandbox's embedded DNS answers for name ('' for none: an unknown name goes upstream, unreachable here). */
export function dig(sb: Sb, name: string): string {
  const r = spawnSync(
    'nsenter',
    [`--net=${sb.key}`, 'dig', '+short', '+time=1', '+tries=1', '@127.0.0.11', name],
    {
      encoding: 'utf8',
    },
  );
  // +short prints addresses, one a line (and its errors, which are not answers).
  return r.stdout
    .split('\n')
    .filter((l) => /^[0-9.]+$/.test(l))
    .join(' ');
}

/** The overlay's network netns on host d. */
export const overlayNs = (d: RunningDaemon, netId: string) =>
  path.join(d.execRoot, 'overlay', 'netns', `ov-${netId}`);

/** The overlay's permanent FDB entries on host d for a network: MAC -> VTEP. */
export function fdb(d: RunningDaemon, netId: string, vni: number): Map<string, string> {
  const dev = `vx-${vni.toString(16).padStart(6, '0')}`;
  const out = new Map<string, string>();
  for (const e of JSON.parse(runIn(overlayNs(d, netId), 'bridge', ['-j', 'fdb', 'show', 'dev', dev]) || '[]'))
    if (e.dst && e.mac !== '00:00:00:00:00:00') out.set(e.mac, e.dst);
  return out;
}

/** One sandbox per host on `net` (hosts 0..n-1 of c), each seeing the others in its FDB (at their VTEP: hostAddr unless `vtep`). */
export async function meshOf(
  c: ClusterLab,
  net: OverlayNet,
  name: string,
  o: { hosts?: number; ms?: number; vtep?: (i: number) => string } = {},
): Promise<Sb[]> {
  const n = o.hosts ?? 3;
  const vtep = o.vtep ?? hostAddr;
  const sbs: Sb[] = [];
  for (let i = 0; i < n; i++) {
    await mirrored(c.daemons[i], name, o.ms);
    sbs.push(await sandbox(c.daemons[i], `${name}-s${i + 1}`, name));
  }
  for (let i = 0; i < n; i++)
    await eventually(() => {
      const f = fdb(c.daemons[i], net.id, net.vni);
      for (let j = 0; j < n; j++) if (j !== i) assert.equal(f.get(sbs[j].mac), vtep(j + 1));
    }, o.ms);
  return sbs;
}

/** etcdctl against the first member, from its netns. */
export function etcdctl(c: ClusterLab, ...args: string[]): string {
  return c.etcd[0].ns.run('etcdctl', [`--endpoints=http://${etcdAddr(1)}:2379`, ...args]);
}

/**
 * `etcdctl watch key` from the first member's netns, from the store's next
 * revision (nothing written after this call is missed, however slowly etcdctl
 * starts): what it has streamed so far (events as key and value lines).
 */
export function etcdWatch(c: ClusterLab, key: string): { text(): string; stop(): void } {
  const rev = Number(JSON.parse(etcdctl(c, 'get', key, '-w', 'json')).header.revision) + 1;
  const p = spawn(
    'nsenter',
    [
      `--net=${c.etcd[0].ns.path}`,
      'etcdctl',
      `--endpoints=http://${etcdAddr(1)}:2379`,
      'watch',
      `--rev=${rev}`,
      key,
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  const stop = () => void (p.exitCode === null && p.signalCode === null && p.kill('SIGKILL'));
  c.lab.beforeCleanup(stop);
  return { text: () => out, stop };
}
