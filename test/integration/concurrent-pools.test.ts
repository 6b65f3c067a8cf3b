// Networks created in parallel without --subnet (what compose does) each get a
// pool of their own: read back from the bridges' addresses in the kernel and
// from the IPAM's records in the store, and still usable after another is removed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { lab } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
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
