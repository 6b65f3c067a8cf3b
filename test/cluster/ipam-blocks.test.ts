// Address blocks in etcd: hosts allocating at once from one global subnet
// never hand out the same address; static addresses are claimed once
// cluster-wide; with etcd gone a host keeps allocating from its own blocks and
// a new block fails naming the store. Each host is a worker process in its
// host netns (test/lib/cluster-ipam-worker.ts) with its own SQLite store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ClusterLab, clusterLab, etcdAddr } from '../lib/cluster';
import type { WorkerResult, WorkerStep } from '../lib/cluster-ipam-worker';
import { ipToBig } from '../../src/net/addr';

const WORKER = path.resolve(__dirname, '..', 'lib', 'cluster-ipam-worker.js');
const run = promisify(execFile);

async function worker(c: ClusterLab, host: number, steps: WorkerStep[]): Promise<WorkerResult> {
  const dir = path.join(c.lab.root, `ipam-h${host + 1}`);
  fs.mkdirSync(dir, { recursive: true });
  const r = await run(
    'nsenter',
    [
      `--net=${c.hosts[host].path}`,
      process.execPath,
      WORKER,
      c.storeUrl,
      dir,
      `host-${host + 1}`,
      JSON.stringify(steps),
    ],
    { encoding: 'utf8', timeout: 60_000, maxBuffer: 16 << 20 },
  );
  return JSON.parse(r.stdout) as WorkerResult;
}

function etcdBlocks(c: ClusterLab, subnet: string): Map<string, { host: string; statics: { ip: string }[] }> {
  const out = c.etcd[0].ns.run('etcdctl', [
    `--endpoints=http://${etcdAddr(1)}:2379`,
    'get',
    '--prefix',
    `/cnmd/v1/blocks/${subnet}/`,
  ]);
  const lines = out.split('\n').filter((l) => l);
  const m = new Map<string, { host: string; statics: { ip: string }[] }>();
  for (let i = 0; i + 1 < lines.length; i += 2)
    m.set(lines[i].slice(`/cnmd/v1/blocks/${subnet}/`.length), JSON.parse(lines[i + 1]));
  return m;
}

const inSubnet = (ip: string, base: string, size: number) => {
  const a = ipToBig(ip)!.value;
  const b = ipToBig(base)!.value;
  return a >= b && a < b + BigInt(size);
};

test('three hosts allocating 300 addresses each at once from one /22: 900 distinct addresses, disjoint blocks as etcd records them', async (t) => {
  const c = await clusterLab(t, { hosts: 3 });
  const step: WorkerStep = { pool: '10.30.0.0/22', gateway: '10.30.0.1', dynamic: 300 };
  const rs = await Promise.all([0, 1, 2].map((h) => worker(c, h, [step])));
  const all = rs.flatMap((r) => r.steps[0].given);
  for (const r of rs) assert.deepEqual(r.steps[0].errors, []);
  assert.equal(all.length, 900);
  assert.equal(new Set(all).size, 900, 'an address was handed out twice');
  for (const ip of all) {
    assert.ok(inSubnet(ip, '10.30.0.0', 1024), `${ip} outside the subnet`);
    assert.ok(!['10.30.0.0', '10.30.0.1', '10.30.3.255'].includes(ip), `${ip} is reserved`);
  }
  // Each host's addresses lie in its own blocks, and etcd says the same blocks are that host's.
  const blocks = etcdBlocks(c, '10.30.0.0/22');
  rs.forEach((r, h) => {
    const mine = r.blocks['10.30.0.0/22'];
    for (const b of mine) assert.equal(blocks.get(b)?.host, `host-${h + 1}`, `block ${b}`);
    for (const ip of r.steps[0].given)
      assert.ok(
        mine.some((b) => inSubnet(ip, b.split('/')[0], 64)),
        `${ip} of host ${h + 1} is outside its blocks ${mine}`,
      );
  });
  const owned = rs.flatMap((r) => r.blocks['10.30.0.0/22']);
  assert.equal(new Set(owned).size, owned.length, 'a block is held by two hosts');
});

test('static addresses are claimed once cluster-wide; dynamic allocation skips them; one inside another host’s block is refused naming it', async (t) => {
  const c = await clusterLab(t, { hosts: 3 });
  const pool = '10.31.0.0/24';
  const statics: WorkerStep = {
    pool,
    gateway: '10.31.0.1',
    statics: ['10.31.0.10', '10.31.0.11', '10.31.0.12'],
  };
  const rs = await Promise.all([0, 1, 2].map((h) => worker(c, h, [statics])));
  const won = rs.flatMap((r) => r.steps[0].given).sort();
  assert.deepEqual(
    won,
    ['10.31.0.10', '10.31.0.11', '10.31.0.12'],
    'each static address has exactly one winner',
  );
  for (const r of rs)
    for (const e of r.steps[0].errors) assert.match(e, /address 10\.31\.0\.1\d is already in use/);
  // Host 1 then takes every dynamic address it can get: the /24 minus the statics, the gateway, network, broadcast.
  const dyn = await worker(c, 0, [{ pool, gateway: '10.31.0.1', dynamic: 260 }]);
  const given = dyn.steps[0].given;
  for (const s of ['10.31.0.10', '10.31.0.11', '10.31.0.12', '10.31.0.1', '10.31.0.0', '10.31.0.255'])
    assert.ok(!given.includes(s), `${s} handed out dynamically`);
  assert.equal(new Set(given).size, given.length);
  assert.equal(given.length, 256 - 3 - 3, `host 1 got ${given.length}`);
  assert.ok(dyn.steps[0].errors.every((e) => /no available IPv4 addresses|no free address block/.test(e)));
  // Host 2 asking for a static address inside host 1's blocks is refused, naming the owner.
  const refused = await worker(c, 1, [{ pool, gateway: '10.31.0.1', statics: ['10.31.0.100'] }]);
  assert.equal(refused.steps[0].given.length, 0);
  assert.match(
    refused.steps[0].errors[0],
    /10\.31\.0\.100 is in block 10\.31\.0\.64\/26, which host host-1 allocates from/,
  );
});

test('etcd down: a host keeps allocating from its own block; a new block fails naming the store', async (t) => {
  const c = await clusterLab(t, { hosts: 1 });
  const pool = '10.32.0.0/24';
  const first = await worker(c, 0, [{ pool, gateway: '10.32.0.1', dynamic: 1 }]);
  assert.equal(first.steps[0].given.length, 1);
  await c.etcd[0].stop();
  const offline = await worker(c, 0, [{ pool, gateway: '10.32.0.1', dynamic: 5 }]);
  assert.deepEqual(offline.steps[0].errors, []);
  assert.equal(offline.steps[0].given.length, 5);
  const beyond = await worker(c, 0, [{ pool, gateway: '10.32.0.1', dynamic: 70 }]);
  // The block has 64 addresses, the network address and the gateway reserved, 6 given: 56 left.
  assert.equal(beyond.steps[0].given.length, 56);
  assert.equal(beyond.steps[0].errors.length, 14);
  for (const e of beyond.steps[0].errors)
    assert.match(e, /cluster store etcd:\/\/192\.0\.2\.101:2379 is unreachable/);
});
