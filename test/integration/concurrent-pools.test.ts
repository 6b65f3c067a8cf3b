// Networks created in parallel without --subnet (what compose does) each get a
// pool of their own: read back from the bridges' addresses in the kernel and
// from the IPAM's records in the store, and still usable after another is removed.
// Docker's default local pools hold 31 networks; --default-address-pool (as
// dockerd's) gives more.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { lab } from '../lib/fixture';
import { spawnSync } from 'node:child_process';
import { CNMD, RunningDaemon, startDaemon } from '../lib/daemon';
import { ok } from '../lib/api';

/** The IPAM's pool records as the store holds them (read-only, beside the running daemon). */
function storedPools(d: RunningDaemon): { id: string; pool: string }[] {
  const db = new Database(path.join(d.dataRoot, 'cnmd.db'), { readonly: true });
  try {
    return (
      db.prepare("SELECT value FROM objects WHERE kind = 'ipam-pool'").all() as { value: string }[]
    ).map((r) => JSON.parse(r.value));
  } finally {
    db.close();
  }
}

test('50 parallel network creates without a subnet: no pool twice, in the kernel or the store', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const replies = await Promise.all(
    Array.from({ length: 50 }, (_, i) => d.request('POST', '/networks/create', { Name: `par${i}` })),
  );
  // Docker's 31 local pools, one taken by the default bridge: 30 networks, then "no pool left".
  const made = replies.filter((r) => r.status === 201);
  const refused = replies.filter((r) => r.status !== 201);
  assert.equal(made.length, 30, JSON.stringify(refused.slice(0, 3).map((r) => r.body)));
  for (const r of refused)
    assert.match(r.body.message, /could not find an available, non-overlapping IPv4 address pool/);

  const nets = ((await ok(d, 'GET', '/networks')) as any[]).filter((n) => n.Name.startsWith('par'));
  assert.equal(nets.length, 30);
  const subnets = nets.map((n) => n.IPAM.Config[0].Subnet);
  assert.equal(new Set(subnets).size, 30, `distinct subnets: ${subnets.join(' ')}`);
  // The kernel: every bridge has its own address, nobody's gateway twice.
  const bridgeAddrs = d.host
    .ipj('addr', 'show', 'type', 'bridge')
    .flatMap((l: any) => l.addr_info.filter((a: any) => a.family === 'inet').map((a: any) => a.local));
  assert.equal(bridgeAddrs.length, 31, `bridge addresses: ${bridgeAddrs.join(' ')}`);
  assert.equal(new Set(bridgeAddrs).size, 31, `no bridge address twice: ${bridgeAddrs.join(' ')}`);
  // The store: one pool record per network (and the default bridge's), each for one subnet.
  const pools = storedPools(d);
  assert.deepEqual(
    pools.map((p) => p.pool).sort(),
    [...subnets, '172.17.0.0/16'].sort(),
    'one record per network pool, no more',
  );

  // The probe's symptom: removing one network broke another that shared its pool.
  await ok(d, 'DELETE', `/networks/${nets[0].Id}`);
  for (const n of nets.slice(1, 6)) {
    const sb = await ok(d, 'POST', '/sandboxes', { Networks: [{ Network: n.Name }] });
    const ip = (await ok(d, 'GET', `/sandboxes/${sb.Id}`)).Networks[n.Name].IPAddress;
    assert.ok(ip.startsWith(n.IPAM.Config[0].Subnet.split('.').slice(0, 2).join('.')), `${ip} in ${n.Name}`);
  }
});

test('--default-address-pool base=10.0.0.0/8,size=24: 50 parallel creates get 50 distinct, non-overlapping /24s', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l, { args: ['--default-address-pool', 'base=10.0.0.0/8,size=24'] });
  const replies = await Promise.all(
    Array.from({ length: 50 }, (_, i) => d.request('POST', '/networks/create', { Name: `wide${i}` })),
  );
  const failed = replies.filter((r) => r.status !== 201);
  assert.deepEqual(
    failed.map((r) => r.body),
    [],
  );
  // The API: every network a /24 of 10.0.0.0/8, no two overlapping (the default bridge's too).
  const nets = (await ok(d, 'GET', '/networks')) as any[];
  const wide = nets.filter((n) => n.Name.startsWith('wide'));
  assert.equal(wide.length, 50);
  const subnets = nets.filter((n) => n.Driver === 'bridge').map((n) => n.IPAM.Config[0].Subnet as string);
  assert.equal(subnets.length, 51);
  for (const s of subnets) assert.match(s, /^10\.\d+\.\d+\.0\/24$/);
  assert.equal(new Set(subnets).size, 51, `distinct subnets: ${subnets.join(' ')}`);
  // The kernel: 51 bridges, each with the .1 of its own /24 (distinct /24s cannot overlap).
  const onBridges = d.host
    .ipj('addr', 'show', 'type', 'bridge')
    .flatMap((x: any) => x.addr_info.filter((a: any) => a.family === 'inet'));
  assert.equal(onBridges.length, 51);
  const kernelNets = onBridges.map((a: any) => {
    assert.equal(a.prefixlen, 24);
    assert.match(a.local, /^10\.\d+\.\d+\.1$/);
    return a.local.replace(/\.1$/, '.0/24');
  });
  assert.deepEqual(kernelNets.sort(), [...subnets].sort());
  // The store: one pool record per network.
  assert.deepEqual(
    storedPools(d)
      .map((p) => p.pool)
      .sort(),
    [...subnets].sort(),
  );
});

test('--default-address-pool with a bad base or size: cnmd refuses to start, naming the flag', () => {
  for (const [spec, why] of [
    ['base=10.0.0.0/8,size=7', /size 7 must be from the base's prefix length \(8\) to 30/],
    ['base=10.0.0.300/8,size=24', /base "10\.0\.0\.300\/8" is not a CIDR/],
  ] as const) {
    const r = spawnSync(process.execPath, [CNMD, '--default-address-pool', spec], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^cnmd: --default-address-pool "${spec.replace(/[./]/g, '\\$&')}": `));
    assert.match(r.stderr, why);
  }
});
