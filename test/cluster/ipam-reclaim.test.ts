// Address blocks of a dead host are reclaimed (--cluster-block-grace): a
// /25 overlay subnet has two /26 blocks, h1 and h2 hold one each, so h3 has
// none. h1 killed and restarted within the grace (its lease already expired)
// keeps its block; h1 killed for good past TTL + grace loses it, and h3
// allocates from it. h1 coming back after that allocates nothing more from the
// block it lost. Blocks read back from etcd with etcdctl.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually } from '../lib/fixture';
import type { RunningDaemon } from '../lib/daemon';
import { ClusterLab, clusterLab, etcdAddr } from '../lib/cluster';
import { ipToBig } from '../../src/net/addr';

const SUBNET = '10.77.0.0/25';
const GRACE = 12;

function etcdGet(c: ClusterLab, prefix: string): Map<string, any> {
  const lines = c.etcd[0].ns
    .run('etcdctl', [`--endpoints=http://${etcdAddr(1)}:2379`, 'get', '--prefix', prefix])
    .split('\n')
    .filter((l) => l);
  const m = new Map<string, any>();
  for (let i = 0; i + 1 < lines.length; i += 2)
    m.set(lines[i].slice(prefix.length), JSON.parse(lines[i + 1]));
  return m;
}

/** Block -> the host id allocating from it, as etcd has it. */
const blocks = (c: ClusterLab) =>
  new Map([...etcdGet(c, `/cnmd/v1/blocks/${SUBNET}/`)].map(([b, v]) => [b, v.host as string]));
/** Live host ids (their records are under their leases). */
const liveHosts = (c: ClusterLab) => [...etcdGet(c, '/cnmd/v1/hosts/').keys()];

async function attach(d: RunningDaemon, name: string): Promise<{ status: number; ip?: string; body: any }> {
  const r = await d.request('POST', '/sandboxes', { Name: name, Networks: [{ Network: 'web' }] });
  if (r.status !== 201) return { status: r.status, body: r.body };
  const s = (await d.request('GET', `/sandboxes/${name}`)).body;
  return { status: 201, ip: s.Networks.web.IPAddress, body: s };
}

const inBlock = (ip: string, block: string) => {
  const [base, len] = block.split('/');
  const size = 1n << BigInt(32 - Number(len));
  const a = ipToBig(ip)!.value;
  const b = ipToBig(base)!.value;
  return a >= b && a < b + size;
};

test(
  "a dead host's address blocks: kept when it restarts within the grace, reclaimed past TTL + grace and allocatable by another host, not used by it when it comes back late",
  { timeout: 180_000 },
  async (t) => {
    const c = await clusterLab(t, { hosts: 3, ttl: 3, args: ['--cluster-block-grace', String(GRACE)] });
    for (let i = 0; i < 3; i++) await c.startDaemon(i);
    const [, d2, d3] = c.daemons;
    let d1 = c.daemons[0];
    const r = await d1.request('POST', '/networks/create', {
      Name: 'web',
      Driver: 'overlay',
      Internal: true,
      IPAM: { Config: [{ Subnet: SUBNET }] },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    for (const d of [d2, d3])
      await eventually(async () => assert.equal((await d.request('GET', '/networks/web')).status, 200));
    const h1Hosts = liveHosts(c);
    const a1 = await attach(d1, 's1');
    const a2 = await attach(d2, 's2');
    assert.equal(a1.status, 201, JSON.stringify(a1.body));
    assert.equal(a2.status, 201, JSON.stringify(a2.body));
    const held = blocks(c);
    assert.equal(held.size, 2, `two blocks held: ${[...held]}`);
    const b1 = [...held.keys()].find((b) => inBlock(a1.ip!, b))!;
    const b2 = [...held.keys()].find((b) => inBlock(a2.ip!, b))!;
    const h1 = held.get(b1)!;
    assert.ok(h1Hosts.includes(h1) && b1 !== b2);
    // h3 has no block to claim.
    const none = await attach(d3, 's3-early');
    assert.equal(none.status, 409, JSON.stringify(none.body));
    assert.match(none.body.message, /no free address block left in 10\.77\.0\.0\/25/);

    // h1 killed; its lease expires (host record gone), and it is back within the grace: it keeps its block.
    await d1.kill();
    await eventually(() => assert.ok(!liveHosts(c).includes(h1), 'h1 lease expired'), 15_000);
    const gone = Date.now();
    d1 = await c.restart(0);
    await eventually(() => assert.ok(liveHosts(c).includes(h1), 'h1 joined again'), 10_000);
    // Watched past the point where it would have been reclaimed (the grace, plus a reclaimer's first look, from
    // when the lease expired), with the reclaimers of h2 and h3 ticking: still h1's.
    while (Date.now() - gone < (GRACE + 8) * 1000) {
      assert.equal(blocks(c).get(b1), h1);
      await new Promise((res) => setTimeout(res, 1000));
    }
    const again = await attach(d1, 's1b');
    assert.equal(again.status, 201, JSON.stringify(again.body));
    assert.ok(inBlock(again.ip!, b1), `${again.ip} from h1's block ${b1}`);

    // h1's sandboxes go (a live host keeps its empty blocks), then h1 dies for good.
    for (const s of ['s1', 's1b']) assert.equal((await d1.request('DELETE', `/sandboxes/${s}`)).status, 204);
    assert.equal(blocks(c).get(b1), h1);
    await d1.kill();
    // Past TTL + grace: released in etcd (exactly once; h2 and h3 both reclaim), h2 keeps its own.
    await eventually(
      () => assert.equal(blocks(c).has(b1), false, `${b1} still ${blocks(c).get(b1)}`),
      3_000 + GRACE * 1000 + 20_000,
    );
    assert.equal(blocks(c).get(b2), held.get(b2));
    // Both reclaim; at most one succeeds (none logs it when its transaction timed out on a loaded machine but
    // was applied: the block is gone all the same).
    const logs = [d2, d3].map((d) => d.logs()).join('\n');
    assert.ok(
      (logs.match(/address block of a gone host reclaimed/g)?.length ?? 0) <= 1,
      'two reclaimers won',
    );
    // h3 allocates from it now.
    const a3 = await attach(d3, 's3');
    assert.equal(a3.status, 201, JSON.stringify(a3.body));
    assert.ok(inBlock(a3.ip!, b1), `${a3.ip} in the reclaimed ${b1}`);
    const h3 = blocks(c).get(b1)!;
    assert.notEqual(h3, h1);

    // h1 back too late: the block is h3's; h1 gives it up and has no block left to allocate from.
    // It checks its blocks against the store when it joins, before its API answers.
    d1 = await c.restart(0);
    const late = await attach(d1, 's1late');
    assert.equal(late.status, 409, JSON.stringify(late.body));
    assert.match(late.body.message, /no free address block left/);
    assert.match(d1.logs(), /address block reclaimed by another host while this host was away/);
    assert.equal(blocks(c).get(b1), h3);
  },
);
