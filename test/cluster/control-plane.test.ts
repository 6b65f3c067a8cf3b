// The cluster's control plane across three hosts on one etcd: global networks
// created on one host are on every host (same id, subnet, VNI, options),
// removed from any, refused with clear errors; host membership follows the
// daemons' leases. (Traffic across hosts: overlay.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { eventually, lab } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { clusterLab } from '../lib/cluster';
import { etcdctl, VXLANID } from '../lib/overlay-cluster';

/** The docker CLI (Debian's docker.io client) against a daemon's socket; throws with its stderr on failure. */
function docker(d: RunningDaemon, ...args: string[]): string {
  const config = path.join(d.base, 'docker-config');
  return execFileSync('docker', args, {
    encoding: 'utf8',
    env: {
      PATH: process.env.PATH,
      HOME: d.base,
      DOCKER_HOST: d.hostUri,
      DOCKER_CONFIG: config,
      DOCKER_CLI_HINTS: 'false',
    },
    timeout: 30_000,
  });
}

async function threeHosts(t: Parameters<typeof clusterLab>[0]) {
  const c = await clusterLab(t, { hosts: 3 });
  const ds = [];
  for (let i = 0; i < 3; i++) {
    ds.push(await c.startDaemon(i));
  }
  return { c, ds };
}

test('a global network created on h1 is on h2 and h3 with the same id, subnet, VNI and options; rm on h2 removes it everywhere', async (t) => {
  const { c, ds } = await threeHosts(t);
  const [d1, d2, d3] = ds;
  const made = await d1.request('POST', '/networks/create', {
    Name: 'web',
    Driver: 'overlay',
    IPAM: { Config: [{ Subnet: '10.10.0.0/16' }] },
    Options: { 'cnmd.test': 'x' },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const id = made.body.Id;
  const want = (await d1.request('GET', `/networks/${id}`)).body;
  assert.equal(want.Scope, 'global');
  assert.equal(want.Options[VXLANID], '4096');
  assert.deepEqual(want.IPAM.Config, [{ Subnet: '10.10.0.0/16', Gateway: '10.10.0.1' }]);
  for (const d of [d2, d3]) {
    const got = await eventually(async () => {
      const r = await d.request('GET', `/networks/web`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body;
    });
    assert.equal(got.Id, id);
    assert.equal(got.Scope, 'global');
    assert.deepEqual(got.Options, want.Options);
    assert.deepEqual(got.IPAM.Config, want.IPAM.Config);
  }
  // The record in etcd, read by etcdctl.
  const rec = JSON.parse(etcdctl(c, 'get', '--print-value-only', `/cnmd/v1/networks/${id}`));
  assert.equal(rec.vni, 4096);
  // A second network gets the next VNI; the same name anywhere is refused.
  const second = await d2.request('POST', '/networks/create', { Name: 'api', Driver: 'overlay' });
  assert.equal(second.status, 201, JSON.stringify(second.body));
  assert.equal((await d2.request('GET', '/networks/api')).body.Options[VXLANID], '4097');
  const again = await d3.request('POST', '/networks/create', { Name: 'web', Driver: 'overlay' });
  assert.equal(again.status, 409);
  assert.match(again.body.message, /web already exists/);

  // The stock docker CLI on cnmd's socket: create on h3, seen on h1 with the same id and scope.
  const made3 = docker(d3, 'network', 'create', '-d', 'overlay', '--subnet', '10.40.0.0/24', 'viacli').trim();
  assert.match(made3, /^[0-9a-f]{64}$/);
  await eventually(() =>
    assert.equal(
      docker(d1, 'network', 'inspect', '-f', '{{.Id}} {{.Scope}} {{.Driver}}', 'viacli').trim(),
      `${made3} global overlay`,
    ),
  );
  docker(d1, 'network', 'rm', 'viacli');

  const rm = await d2.request('DELETE', `/networks/web`);
  assert.equal(rm.status, 204, JSON.stringify(rm.body));
  for (const d of ds)
    await eventually(async () => assert.equal((await d.request('GET', `/networks/${id}`)).status, 404));
  assert.equal(etcdctl(c, 'get', '--print-value-only', `/cnmd/v1/networks/${id}`).trim(), '');
});

test('bad input: a VNI out of range or taken, a subnet overlapping another overlay network', async (t) => {
  const { ds } = await threeHosts(t);
  const [d1, d2] = ds;
  for (const vni of ['0', '16777216', 'abc', '5000,5001']) {
    const r = await d1.request('POST', '/networks/create', {
      Name: `bad${vni.replace(/\W/g, '')}`,
      Driver: 'overlay',
      Options: { [VXLANID]: vni },
    });
    assert.equal(r.status, 400, `${vni}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.message, /vxlanid_list/);
  }
  const a = await d1.request('POST', '/networks/create', {
    Name: 'a',
    Driver: 'overlay',
    Options: { [VXLANID]: '5000' },
    IPAM: { Config: [{ Subnet: '10.20.0.0/16' }] },
  });
  assert.equal(a.status, 201, JSON.stringify(a.body));
  const taken = await d2.request('POST', '/networks/create', {
    Name: 'b',
    Driver: 'overlay',
    Options: { [VXLANID]: '5000' },
  });
  assert.equal(taken.status, 403);
  assert.match(taken.body.message, /VXLAN id 5000 is already used by network a/);
  const overlap = await d2.request('POST', '/networks/create', {
    Name: 'c',
    Driver: 'overlay',
    IPAM: { Config: [{ Subnet: '10.20.128.0/24' }] },
  });
  assert.equal(overlap.status, 403);
  assert.match(overlap.body.message, /overlaps with 10\.20\.0\.0\/16 of overlay network a/);
  // Nothing of the refused ones anywhere.
  for (const d of ds) {
    const names = (await d.request('GET', '/networks')).body.map((n: any) => n.Name);
    for (const bad of ['b', 'c']) assert.ok(!names.includes(bad), `${bad} exists: ${names}`);
  }
});

test('hosts are members by lease: a killed daemon disappears from the store within the TTL, and a restart rejoins', async (t) => {
  const { c } = await threeHosts(t);
  const hosts = () =>
    etcdctl(c, 'get', '--prefix', '--print-value-only', '/cnmd/v1/hosts/')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l).vtep)
      .sort();
  assert.deepEqual(hosts(), ['192.0.2.1', '192.0.2.2', '192.0.2.3']);
  await c.daemons[2].kill();
  // TTL 3 s (the lab's --cluster-ttl) and etcd's own lease check: gone within the TTL plus a margin.
  await eventually(() => assert.deepEqual(hosts(), ['192.0.2.1', '192.0.2.2']), 6000);
  await c.restart(2);
  await eventually(() => assert.deepEqual(hosts(), ['192.0.2.1', '192.0.2.2', '192.0.2.3']));
});

test('no cluster store: a global network is refused naming --cluster-store; a wrong advertise address stops the daemon with its reason', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const r = await d.request('POST', '/networks/create', { Name: 'ov', Driver: 'overlay' });
  assert.equal(r.status, 403);
  assert.match(r.body.message, /--cluster-store/);
  const h = await l.ns('h9');
  let out = '';
  try {
    execFileSync(
      'nsenter',
      [
        `--net=${h.path}`,
        process.execPath,
        path.resolve(__dirname, '..', '..', 'src', 'cli', 'cnmd.js'),
        '--data-root',
        path.join(l.root, 'd9'),
        '--exec-root',
        path.join(l.root, 'x9'),
        '-H',
        `unix://${path.join(l.root, 'd9.sock')}`,
        '--plugin-dir',
        path.join(l.root, 'p9'),
        '--cluster-store',
        'etcd://192.0.2.200:2379',
        '--cluster-advertise',
        '192.0.2.77',
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 },
    );
  } catch (e) {
    out = String((e as { stderr?: string }).stderr);
  }
  assert.match(out, /--cluster-advertise 192\.0\.2\.77 is not an address of this host/);
});

test('an unreachable store: creating a global network fails naming the store; local networks keep working', async (t) => {
  const c = await clusterLab(t, { hosts: 1 });
  await c.etcd[0].stop();
  const d = await c.startDaemon(0);
  const r = await d.request('POST', '/networks/create', { Name: 'ov', Driver: 'overlay' });
  assert.equal(r.status, 503, JSON.stringify(r.body));
  assert.match(r.body.message, /cluster store etcd:\/\/192\.0\.2\.101:2379 is unreachable/);
  const local = await d.request('POST', '/networks/create', { Name: 'lb', Driver: 'bridge' });
  assert.equal(local.status, 201, JSON.stringify(local.body));
  // The store back: the daemon joins by itself, and the network can be made (etcd's restart and
  // election, then the daemon's next join attempt: seconds, more on a loaded machine).
  await c.etcd[0].start();
  await eventually(async () => {
    const ok = await d.request('POST', '/networks/create', { Name: 'ov', Driver: 'overlay' });
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
  }, 30_000);
});
