// The default IPAM over a real SQLite store in a temporary directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SqliteStore } from '../../../src/store/sqlite';
import { DefaultIpam } from '../../../src/ipam/default';
import { Sequence } from '../../../src/ipam/sequence';
import { SERIAL_OPTION } from '../../../src/ipam/ipam';

function fresh(t: { after(fn: () => void): void }, hostNetworks: string[] = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-ipam-'));
  const store = new SqliteStore(dir);
  t.after(() => {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, store, ipam: new DefaultIpam(store, { hostNetworks: async () => hostNetworks }) };
}

test('sequence: set, unset, lowest clear, runs merge and split', () => {
  const s = new Sequence(16n);
  for (const i of [0n, 1n, 2n, 5n]) assert.equal(s.set(i), true);
  assert.equal(s.set(1n), false);
  assert.equal(s.firstClear(0n, 16n), 3n);
  assert.equal(s.set(3n), true);
  assert.equal(s.set(4n), true); // joins [0,5) and [5,6)
  assert.deepEqual(s.toJSON().runs, [['0', '6']]);
  assert.equal(s.unset(2n), true);
  assert.deepEqual(s.toJSON().runs, [
    ['0', '2'],
    ['3', '6'],
  ]);
  assert.equal(s.firstClear(0n, 16n), 2n);
  assert.equal(s.firstClear(3n, 6n), undefined);
  assert.equal(s.count(), 5n);
  assert.deepEqual(Sequence.fromJSON(s.toJSON()).toJSON(), s.toJSON());
  assert.throws(() => s.set(16n), RangeError);
});

test('predefined pools in Docker order, skipping taken ones and host routes', async (t) => {
  const { ipam } = fresh(t, ['172.18.0.0/16', '0.0.0.0/0']);
  const a = await ipam.requestPool({});
  assert.equal(a.pool, '172.17.0.0/16');
  const b = await ipam.requestPool({});
  assert.equal(b.pool, '172.19.0.0/16', '172.18/16 is routed on the host');
  const c = await ipam.requestPool({});
  assert.equal(c.pool, '172.20.0.0/16');
  await ipam.releasePool(a.poolId);
  assert.equal((await ipam.requestPool({})).pool, '172.17.0.0/16');
  const g = await ipam.requestPool({ addressSpace: 'GlobalDefault' });
  assert.equal(g.pool, '10.0.0.0/24');
  const v6 = await ipam.requestPool({ v6: true });
  assert.equal(v6.pool, 'fd5c:6e6d:a000::/64');
});

test('gateway, dynamic, static and aux addresses; reserved network and broadcast', async (t) => {
  const { ipam } = fresh(t);
  const p = await ipam.requestPool({ pool: '10.1.0.0/29' });
  assert.equal(p.poolId, 'LocalDefault/10.1.0.0/29');
  assert.equal(await ipam.requestAddress(p.poolId, undefined, { gateway: true }), '10.1.0.1/29');
  assert.equal(await ipam.requestAddress(p.poolId, '10.1.0.5'), '10.1.0.5/29');
  assert.equal(await ipam.requestAddress(p.poolId), '10.1.0.2/29');
  assert.equal(await ipam.requestAddress(p.poolId), '10.1.0.3/29');
  assert.equal(await ipam.requestAddress(p.poolId), '10.1.0.4/29');
  assert.equal(await ipam.requestAddress(p.poolId), '10.1.0.6/29');
  await assert.rejects(ipam.requestAddress(p.poolId), {
    code: 'EXHAUSTED',
    message: /no available IPv4 addresses in 10\.1\.0\.0\/29/,
  });
  await assert.rejects(ipam.requestAddress(p.poolId, '10.1.0.5'), {
    code: 'IN_USE',
    message: /^ipam request address: Address already in use: 10\.1\.0\.5 in 10\.1\.0\.0\/29$/,
  });
  await assert.rejects(ipam.requestAddress(p.poolId, '10.1.0.7'), { code: 'IN_USE', message: /reserved/ });
  await assert.rejects(ipam.requestAddress(p.poolId, '10.1.0.0'), { code: 'IN_USE', message: /reserved/ });
  await assert.rejects(ipam.requestAddress(p.poolId, '10.2.0.1'), {
    code: 'INVALID_ARGUMENT',
    message: /outside subnet 10\.1\.0\.0\/29/,
  });
  await assert.rejects(ipam.requestAddress(p.poolId, 'nope'), { code: 'INVALID_ARGUMENT' });
  await ipam.releaseAddress(p.poolId, '10.1.0.3');
  assert.equal(await ipam.requestAddress(p.poolId), '10.1.0.3/29', 'lowest free is reused');
  await assert.rejects(ipam.releaseAddress(p.poolId, '10.1.0.0/29'), {
    code: 'INVALID_ARGUMENT',
    message: /never allocated/,
  });
  await ipam.releaseAddress(p.poolId, '10.1.0.2');
  await assert.rejects(ipam.releaseAddress(p.poolId, '10.1.0.2'), { code: 'NOT_FOUND' });
});

test('--ip-range limits dynamic addresses; static ones may be anywhere in the subnet', async (t) => {
  const { ipam } = fresh(t);
  const p = await ipam.requestPool({ pool: '10.5.0.0/16', subPool: '10.5.7.0/30' });
  assert.equal(await ipam.requestAddress(p.poolId, undefined, { gateway: true }), '10.5.7.0/16');
  assert.equal(await ipam.requestAddress(p.poolId), '10.5.7.1/16');
  assert.equal(await ipam.requestAddress(p.poolId, '10.5.200.9'), '10.5.200.9/16');
  assert.equal(await ipam.requestAddress(p.poolId), '10.5.7.2/16');
  assert.equal(await ipam.requestAddress(p.poolId), '10.5.7.3/16');
  await assert.rejects(ipam.requestAddress(p.poolId), { code: 'EXHAUSTED', message: /10\.5\.7\.0\/30/ });
  await assert.rejects(ipam.requestPool({ pool: '10.6.0.0/16', subPool: '10.7.0.0/24' }), {
    code: 'INVALID_ARGUMENT',
    message: /not inside subnet/,
  });
  await assert.rejects(ipam.requestPool({ subPool: '10.7.0.0/24' }), {
    code: 'INVALID_ARGUMENT',
    message: /needs --subnet/,
  });
});

test('overlapping subnets, host bits and bad input are refused with what to fix', async (t) => {
  const { ipam } = fresh(t);
  await ipam.requestPool({ pool: '10.9.0.0/16' });
  await assert.rejects(ipam.requestPool({ pool: '10.9.3.0/24' }), {
    code: 'IN_USE',
    message: /overlaps with 10\.9\.0\.0\/16/,
  });
  await assert.rejects(ipam.requestPool({ pool: '10.10.0.1/16' }), {
    code: 'INVALID_ARGUMENT',
    message: /host bits set; did you mean 10\.10\.0\.0\/16/,
  });
  await assert.rejects(ipam.requestPool({ pool: '10.10.0.0/33' }), {
    code: 'INVALID_ARGUMENT',
    message: /not a CIDR/,
  });
  await assert.rejects(ipam.requestPool({ pool: 'fd00::/64' }), {
    code: 'INVALID_ARGUMENT',
    message: /IPv6 but an IPv4 pool/,
  });
  await assert.rejects(ipam.requestPool({ addressSpace: 'Elsewhere' }), { code: 'INVALID_ARGUMENT' });
  await assert.rejects(ipam.releasePool('LocalDefault/1.2.3.0/24'), { code: 'NOT_FOUND' });
});

test('IPv6: static, dynamic and gateway in a /64; the serial option continues after the last address', async (t) => {
  const { ipam } = fresh(t);
  const p = await ipam.requestPool({ pool: 'fd00:1::/64', v6: true });
  assert.equal(await ipam.requestAddress(p.poolId, undefined, { gateway: true }), 'fd00:1::1/64');
  assert.equal(await ipam.requestAddress(p.poolId), 'fd00:1::2/64');
  assert.equal(await ipam.requestAddress(p.poolId, 'fd00:1::ffff:1'), 'fd00:1::ffff:1/64');
  const s = await ipam.requestPool({ pool: '10.8.0.0/24', options: { [SERIAL_OPTION]: 'true' } });
  assert.equal(await ipam.requestAddress(s.poolId), '10.8.0.1/24');
  assert.equal(await ipam.requestAddress(s.poolId), '10.8.0.2/24');
  await ipam.releaseAddress(s.poolId, '10.8.0.1');
  assert.equal(await ipam.requestAddress(s.poolId), '10.8.0.3/24', 'serial: 10.8.0.1 is not reused at once');
});

test('allocations persist: a new IPAM over the same store continues where the old one stopped', async (t) => {
  const { dir, store, ipam } = fresh(t);
  const p = await ipam.requestPool({ pool: '10.20.0.0/24' });
  await ipam.requestAddress(p.poolId);
  await ipam.requestAddress(p.poolId);
  store.close();
  const again = new SqliteStore(dir);
  t.after(() => again.close());
  const ipam2 = new DefaultIpam(again);
  assert.equal(await ipam2.requestAddress(p.poolId), '10.20.0.3/24');
  await assert.rejects(ipam2.requestPool({ pool: '10.20.0.0/25' }), { code: 'IN_USE' });
});

test('a store transaction that throws rolls the IPAM back', async (t) => {
  const { store, ipam } = fresh(t);
  const p = await ipam.requestPool({ pool: '10.30.0.0/24' });
  const before = store.get('ipam-pool', p.poolId);
  assert.throws(() =>
    store.tx(() => {
      store.put('ipam-pool', p.poolId, { broken: true });
      throw new Error('driver failed');
    }),
  );
  assert.deepEqual(store.get('ipam-pool', p.poolId), before);
});

test('concurrent pool requests without a subnet get distinct pools while the host routes are read', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-ipam-'));
  const store = new SqliteStore(dir);
  t.after(() => {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // The route dump answers later, as netlink does: every request is in flight at once.
  const ipam = new DefaultIpam(store, {
    hostNetworks: () => new Promise((resolve) => setTimeout(() => resolve(['172.18.0.0/16']), 5)),
  });
  const global = await Promise.all(
    Array.from({ length: 50 }, () => ipam.requestPool({ addressSpace: 'GlobalDefault' })),
  );
  assert.equal(new Set(global.map((p) => p.pool)).size, 50, 'GlobalDefault: 50 distinct pools');
  // The local space has Docker's 31 predefined pools, one of them routed on the host: 30 go, the rest
  // are refused as exhausted, and none is handed out twice.
  const local = await Promise.allSettled(Array.from({ length: 40 }, () => ipam.requestPool({})));
  const pools = local.flatMap((r) => (r.status === 'fulfilled' ? [r.value.pool] : []));
  assert.equal(pools.length, 30, `30 local pools: ${pools.join(' ')}`);
  assert.equal(new Set(pools).size, 30, `distinct pools: ${pools.join(' ')}`);
  assert.ok(!pools.includes('172.18.0.0/16'), 'the host route is still skipped');
  for (const r of local)
    if (r.status === 'rejected') assert.equal((r.reason as { code: string }).code, 'EXHAUSTED');
  assert.equal(store.list('ipam-pool').length, 80, 'one record per pool, none overwritten');
  // Each pool's bitmap is its own: an address taken in one is free in the others.
  const all = [...global, ...local.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))];
  for (const p of all) assert.match(await ipam.requestAddress(p.poolId), /\.1\/\d+$/);
});
