// Overlay networks across hosts, end to end: three cnmd on three host netns,
// one etcd, the overlay driver's data path. Real packets between sandboxes on
// different hosts, names through the embedded DNS, the kernel's neighbour and
// FDB tables read back with ip -j / bridge -j, and the failures of issue 16:
// a daemon killed, a host gone, etcd stopped, an etcd member lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { eventually, runIn } from '../lib/fixture';
import { ping } from '../lib/probe';
import { clusterLab, hostAddr } from '../lib/cluster';
import { dig, fdb, meshOf, mirrored, network, sandbox, VXLANID } from '../lib/overlay-cluster';

async function threeHosts(t: Parameters<typeof clusterLab>[0], o: Parameters<typeof clusterLab>[1] = {}) {
  const c = await clusterLab(t, { hosts: 3, ...o });
  for (let i = 0; i < 3; i++) await c.startDaemon(i);
  return c;
}

test('three hosts: full-mesh ping by address and by name, the embedded DNS answers for remote endpoints, inspect lists the peers, an FDB entry deleted by hand is back', async (t) => {
  const c = await threeHosts(t);
  const net = await network(c.daemons[0], 'web', '10.10.0.0/16');
  assert.equal(net.vni, 4096);
  const sbs = await meshOf(c, net, 'web');
  assert.equal(new Set(sbs.map((s) => s.ip)).size, 3);
  for (const a of sbs)
    for (const b of sbs) {
      if (a === b) continue;
      assert.ok(ping(a.key, b.ip), `${a.name} -> ${b.name} (${b.ip})`);
      assert.equal(dig(a, b.name), b.ip, `${a.name} resolves ${b.name}`);
    }
  const peers = (await c.daemons[1].request('GET', '/networks/web')).body.Peers;
  assert.deepEqual(peers.map((p: any) => p.IP).sort(), [hostAddr(1), hostAddr(2), hostAddr(3)]);
  // Deleted by hand on h1: the reconcile loop puts it back within seconds.
  const ns = path.join(c.daemons[0].execRoot, 'overlay', 'netns', `ov-${net.id}`);
  const dev = `vx-${net.vni.toString(16).padStart(6, '0')}`;
  runIn(ns, 'bridge', ['fdb', 'del', sbs[1].mac, 'dev', dev, 'dst', hostAddr(2), 'self']);
  assert.equal(fdb(c.daemons[0], net.id, net.vni).get(sbs[1].mac), undefined);
  await eventually(() => assert.equal(fdb(c.daemons[0], net.id, net.vni).get(sbs[1].mac), hostAddr(2)), 8000);
  assert.ok(ping(sbs[0].key, sbs[1].ip));
  // An endpoint removed on h3 is gone from h1's and h2's tables, and its name from their DNS.
  assert.equal((await c.daemons[2].request('DELETE', `/sandboxes/${sbs[2].name}`)).status, 204);
  for (const i of [0, 1])
    await eventually(() => assert.equal(fdb(c.daemons[i], net.id, net.vni).get(sbs[2].mac), undefined));
  assert.equal(dig(sbs[0], sbs[2].name), '');
  // rm is refused while hosts have endpoints, naming them.
  const busy = await c.daemons[2].request('DELETE', '/networks/web');
  assert.equal(busy.status, 403);
  assert.match(
    busy.body.message,
    /hosts .*192\.0\.2\.1\).*192\.0\.2\.2\)|hosts .*192\.0\.2\.2\).*192\.0\.2\.1\)/,
  );
});

test('concurrent attaches on every host give distinct addresses; concurrent creates give distinct VNIs', async (t) => {
  const c = await threeHosts(t);
  await network(c.daemons[0], 'many', '10.11.0.0/24');
  for (const d of c.daemons) await mirrored(d, 'many');
  const made = await Promise.all(
    c.daemons.flatMap((d, h) => Array.from({ length: 12 }, (_, i) => sandbox(d, `m${h + 1}-${i}`, 'many'))),
  );
  const ips = made.map((s) => s.ip);
  assert.equal(new Set(ips).size, 36, `duplicates among ${ips}`);
  const creates = await Promise.all(
    c.daemons.flatMap((d, h) =>
      [0, 1].map((i) =>
        d.request('POST', '/networks/create', { Name: `v${h}${i}`, Driver: 'overlay', Internal: true }),
      ),
    ),
  );
  for (const r of creates) assert.equal(r.status, 201, JSON.stringify(r.body));
  // Read on h1, where the other hosts' networks arrive by the watch.
  const vnis = await Promise.all(
    creates.map((r) =>
      eventually(async () => {
        const v = (await c.daemons[0].request('GET', `/networks/${r.body.Id}`)).body?.Options?.[VXLANID];
        assert.ok(v, `network ${r.body.Id} is on h1`);
        return v;
      }),
    ),
  );
  assert.equal(new Set(vnis).size, 6, `VNIs ${vnis}`);
});

test('cnmd SIGKILLed on h2: traffic keeps flowing, the restart is clean; h3 removed disappears from h1 and h2 within the TTL', async (t) => {
  const c = await threeHosts(t);
  const net = await network(c.daemons[0], 'kill', '10.12.0.0/24');
  const sbs = await meshOf(c, net, 'kill');
  await c.daemons[1].kill();
  assert.ok(ping(sbs[0].key, sbs[1].ip), 'h1 -> h2 with h2 cnmd dead');
  assert.ok(ping(sbs[1].key, sbs[2].ip), 'h2 -> h3 with h2 cnmd dead');
  const d2 = await c.restart(1);
  // Its endpoint is published again under the new lease; tables unchanged everywhere.
  await eventually(async () => {
    const peers = (await d2.request('GET', '/networks/kill')).body.Peers;
    assert.equal(peers.length, 3);
  });
  for (let i = 0; i < 3; i++) {
    const f = fdb(c.daemons[i], net.id, net.vni);
    for (let j = 0; j < 3; j++) if (j !== i) assert.equal(f.get(sbs[j].mac), hostAddr(j + 1));
  }
  assert.ok(ping(sbs[0].key, sbs[1].ip));
  assert.ok(
    !/error/i.test(
      d2
        .logs()
        .split('\n')
        .filter((l) => l.includes('"level":50'))
        .join('\n'),
    ),
    d2.logs(),
  );
  // h3 gone entirely: its daemon killed and its underlay link removed.
  await c.daemons[2].kill();
  runIn(c.underlay.path, 'ip', ['link', 'del', 'u3']);
  for (const i of [0, 1])
    await eventually(() => assert.equal(fdb(c.daemons[i], net.id, net.vni).get(sbs[2].mac), undefined), 8000);
  assert.equal(dig(sbs[0], sbs[2].name), '');
});

test('etcd stopped: traffic flows, an attach works from the host’s block and is published when etcd is back', async (t) => {
  const c = await threeHosts(t, { ttl: 10 });
  const net = await network(c.daemons[0], 'down', '10.13.0.0/24');
  const sbs = await meshOf(c, net, 'down');
  await c.etcd[0].stop();
  assert.ok(ping(sbs[0].key, sbs[1].ip));
  const late = await sandbox(c.daemons[0], 'down-late', 'down');
  assert.ok(late.ip.startsWith('10.13.0.'));
  const refused = await c.daemons[1].request('POST', '/networks/create', { Name: 'nope', Driver: 'overlay' });
  assert.equal(refused.status, 503);
  assert.match(refused.body.message, /cluster store etcd:\/\/192\.0\.2\.101:2379 is unreachable/);
  await c.etcd[0].start();
  // etcd's restart, the watches' and the lease's return, the queued publication, the next reconcile.
  await eventually(() => assert.equal(fdb(c.daemons[1], net.id, net.vni).get(late.mac), hostAddr(1)), 30_000);
  assert.ok(ping(sbs[1].key, late.ip));
  // h3's watch resumes on its own backoff, independently of h2's.
  await eventually(() => assert.equal(dig(sbs[2], 'down-late'), late.ip), 10_000);
});

test('a 3-member etcd losing one member changes nothing', async (t) => {
  const c = await threeHosts(t, { etcdMembers: 3 });
  await c.etcd[0].stop();
  const net = await network(c.daemons[1], 'quorum', '10.14.0.0/24');
  const sbs = await meshOf(c, net, 'quorum');
  assert.ok(ping(sbs[0].key, sbs[2].ip));
  assert.equal(dig(sbs[2], sbs[0].name), sbs[0].ip);
});
