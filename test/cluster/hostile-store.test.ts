// Hostile contents in the cluster store (anyone who reaches etcd can write
// there): endpoint records with garbage addresses, MACs or VTEPs, values that
// are not JSON or not objects, a record under another endpoint's key, a
// megabyte of name. Each bad record is refused alone and logged; the other
// hosts' endpoints keep reaching the kernel (FDB read back with bridge -j,
// real pings), the embedded DNS answers, a restart starts, and the network
// can still be removed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { eventually } from '../lib/fixture';
import { ping } from '../lib/probe';
import { clusterLab, etcdAddr, hostAddr } from '../lib/cluster';
import { dig, etcdctl, fdb, meshOf, network, sandbox } from '../lib/overlay-cluster';

test('hostile store records: each bad one refused and logged, the good peers still programmed, restart and rm still work', async (t) => {
  const c = await clusterLab(t, { hosts: 2, secret: true });
  for (let i = 0; i < 2; i++) await c.startDaemon(i);
  const net = await network(c.daemons[0], 'web', '10.20.0.0/24');
  const [a, b] = await meshOf(c, net, 'web', { hosts: 2 });
  const put = (k: string, value: string) =>
    execFileSync(
      'nsenter',
      [
        `--net=${c.etcd[0].ns.path}`,
        'etcdctl',
        `--endpoints=http://${etcdAddr(1)}:2379`,
        'put',
        `/cnmd/v1/${k}`,
      ],
      { input: value, stdio: ['pipe', 'ignore', 'pipe'], maxBuffer: 1 << 22 },
    );
  const ep = (id: string, o: Record<string, unknown>) =>
    JSON.stringify({
      id,
      networkId: net.id,
      name: id,
      hostname: id,
      aliases: [],
      ipv4: '10.20.0.200/24',
      mac: '02:00:00:00:00:c8',
      host: 'evil',
      vtep: '192.0.2.77',
      ...o,
    });
  const bad: [string, string][] = [
    ['badmac', ep('badmac', { mac: 'zz:zz' })],
    ['multicast', ep('multicast', { mac: '01:00:5e:00:00:01' })],
    ['badvtep', ep('badvtep', { vtep: 'host2; rm -rf /' })],
    ['badip', ep('badip', { ipv4: '10.20.0.300/24' })],
    [
      'newline',
      ep('newline', { name: 'x\n10.0.0.1 evil', mac: '02:00:00:00:00:c9', ipv4: '10.20.0.201/24' }),
    ],
    ['elsewhere', ep('other-id', { mac: '02:00:00:00:00:ca', ipv4: '10.20.0.202/24' })],
    // Kernel-valid but useless or refused: no VTEP, a multicast group, the other family (EAFNOSUPPORT).
    ['zerovtep', ep('zerovtep', { vtep: '0.0.0.0', mac: '02:00:00:00:00:cc', ipv4: '10.20.0.204/24' })],
    ['mcastvtep', ep('mcastvtep', { vtep: '239.1.1.1', mac: '02:00:00:00:00:cd', ipv4: '10.20.0.205/24' })],
    ['v6vtep', ep('v6vtep', { vtep: '2001:db8::1', mac: '02:00:00:00:00:ce', ipv4: '10.20.0.206/24' })],
    ['null', 'null'],
    ['array', '[1,2]'],
    ['notjson', '{{{ not json'],
    ['huge', ep('huge', { name: 'n'.repeat(1 << 20), mac: '02:00:00:00:00:cb', ipv4: '10.20.0.203/24' })],
  ];
  for (const [id, value] of bad) put(`endpoints/${net.id}/${id}`, value);
  // A well-formed record of a local-scope driver: mirrored, it would make a bridge network on every host.
  const evil = 'e'.repeat(64);
  put(
    `networks/${evil}`,
    JSON.stringify({
      id: evil,
      name: 'evil',
      driver: 'bridge',
      vni: 5000,
      options: {},
      ipamConfig: [],
      labels: {},
      ipamOptions: {},
      enableIPv6: false,
      internal: false,
      attachable: false,
      created: '',
      creator: 'x',
    }),
  );
  put('hosts/garbage', 'null');
  put('networks/garbage', '"a string"');

  // A new endpoint on h2 reaches h1's FDB, and none of the bad ones does.
  const b2 = await sandbox(c.daemons[1], 'web-b2', 'web');
  await eventually(() => assert.equal(fdb(c.daemons[0], net.id, net.vni).get(b2.mac), hostAddr(2)), 8000);
  const f = fdb(c.daemons[0], net.id, net.vni);
  assert.deepEqual([...f.keys()].sort(), [b.mac, b2.mac].sort(), JSON.stringify([...f]));
  assert.ok(ping(a.key, b2.ip), 'h1 -> the new endpoint on h2');
  assert.equal(dig(a, 'web-b2'), b2.ip);
  assert.equal(dig(a, 'newline'), '');

  // Each one refused by name, on both hosts.
  for (const d of c.daemons)
    await eventually(() => {
      for (const [id] of bad.filter(([i]) => i !== 'notjson'))
        assert.match(d.logs(), new RegExp(`endpoint record endpoints/${net.id}/${id} refused`), id);
    }, 8000);

  // Address blocks whose records are garbage read as unclaimed: the first attach claims one (it threw before,
  // and no host could attach), its record made whole.
  const blk = await network(c.daemons[0], 'blk', '10.21.0.0/24');
  for (const b of ['0', '64', '128', '192'])
    put(`blocks/10.21.0.0/24/10.21.0.${b}/26`, b === '0' ? 'null' : '{"host":7}');
  const s1 = await sandbox(c.daemons[0], 'blk-s1', 'blk');
  assert.match(s1.ip, /^10\.21\.0\./);
  const claimed = JSON.parse(etcdctl(c, 'get', '--prefix', '/cnmd/v1/blocks/10.21.0.0/24/', '-w', 'json'))
    .kvs.map((kv: any) => JSON.parse(Buffer.from(kv.value, 'base64').toString()))
    .filter((v: any) => typeof v?.host === 'string' && v.host !== '');
  assert.equal(claimed.length, 1, JSON.stringify(claimed));
  assert.equal((await c.daemons[0].request('DELETE', '/sandboxes/blk-s1')).status, 204);
  assert.equal((await c.daemons[0].request('DELETE', '/networks/blk')).status, 204);
  void blk;

  // An encryption key ring that is not JSON: reported, never replaced, and no obstacle to a start.
  put('enc/ring', '{{{ not a ring');

  for (const d of c.daemons) {
    await eventually(
      () =>
        assert.match(d.logs(), /network e{64} has driver bridge, which is not global-scope: not mirrored/),
      8000,
    );
    assert.equal((await d.request('GET', '/networks/evil')).status, 404);
  }

  // A restart with the garbage still in the store: the daemon starts, and its peers are programmed again.
  await c.daemons[0].stop();
  const d0 = await c.restart(0);
  await eventually(() => assert.equal(fdb(d0, net.id, net.vni).get(b2.mac), hostAddr(2)), 8000);
  assert.match(d0.logs(), /a record that is not JSON ignored/);
  assert.doesNotMatch(d0.logs(), /the key ring kept changing/);
  assert.equal(etcdctl(c, 'get', '--print-value-only', '/cnmd/v1/enc/ring').trim(), '{{{ not a ring');
  assert.ok(ping(a.key, b.ip));

  // The bad records hold no endpoint: once the real ones are gone, the network goes (and takes them along).
  for (const [i, name] of [
    [0, 'web-s1'],
    [1, 'web-s2'],
    [1, 'web-b2'],
  ] as const)
    assert.equal((await c.daemons[i].request('DELETE', `/sandboxes/${name}`)).status, 204);
  const rm = await eventually(async () => {
    const r = await d0.request('DELETE', '/networks/web');
    assert.equal(r.status, 204, JSON.stringify(r.body));
    return r;
  }, 8000);
  assert.equal(rm.status, 204);
  assert.equal(etcdctl(c, 'get', '--prefix', '--keys-only', `/cnmd/v1/endpoints/${net.id}/`).trim(), '');
});
