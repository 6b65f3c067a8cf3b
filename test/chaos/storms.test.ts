// Storms from a seed: parallel create/delete/connect/disconnect of sandboxes
// (some publishing ports) and networks (some without --subnet, so pools are
// chosen concurrently), then the invariants of test/lib/invariants.ts (store
// vs kernel vs iptables-save); and SIGKILL at a random instant of such a
// stream, a restart, the same invariants, and the daemon still serving.
// Bounded: a fixed number of rounds and operations (about a minute here).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab, Lab } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { assertInvariants } from '../lib/invariants';
import { chaosRng, Rng } from '../lib/seed';

/** Statuses a storm operation may get: the outcome of a race is one of these, never a 500. */
const EXPECTED = new Set([200, 201, 204, 400, 403, 404, 409]);

interface World {
  l: Lab;
  d: RunningDaemon;
  rng: Rng;
  nets: string[];
  sandboxes: string[];
  port: number;
}

/** One random operation; resolves with its status (or 0 when the daemon went away). */
async function randomOp(w: World): Promise<{ what: string; status: number; body?: any }> {
  const { d, rng } = w;
  const sb = () => rng.pick(w.sandboxes.length ? w.sandboxes : ['none-yet']);
  const net = () => rng.pick(w.nets);
  const roll = rng.int(100);
  let what: string;
  let call: Promise<{ status: number; body: any }>;
  if (roll < 35) {
    const name = `s${rng.int(1e9)}`;
    w.sandboxes.push(name);
    const nets = [...new Set([net(), ...(rng.int(3) === 0 ? [net()] : [])])];
    const ports = rng.int(3) === 0 ? [`${w.port++}:80`, `${w.port++}:53/udp`] : [];
    what = `create ${name} on ${nets.join(',')}${ports.length ? ` -p ${ports.join(' ')}` : ''}`;
    call = d.request('POST', '/sandboxes', {
      Name: name,
      Networks: nets.map((n) => ({ Network: n })),
      Ports: ports,
    });
  } else if (roll < 60) {
    const name = sb();
    what = `delete ${name}`;
    call = d.request('DELETE', `/sandboxes/${name}`);
  } else if (roll < 75) {
    const [n, s] = [net(), sb()];
    what = `connect ${s} to ${n}`;
    call = d.request('POST', `/networks/${n}/connect`, { Container: s });
  } else if (roll < 88) {
    const [n, s] = [net(), sb()];
    what = `disconnect ${s} from ${n}`;
    call = d.request('POST', `/networks/${n}/disconnect`, { Container: s });
  } else if (roll < 95) {
    const name = `n${rng.int(1e9)}`;
    w.nets.push(name);
    what = `network create ${name}`;
    call = d.request('POST', '/networks/create', { Name: name });
  } else {
    // The storm's own networks only: ca, cb and bridge stay for the sandboxes made after a kill.
    const n = rng.pick(w.nets.slice(3).length ? w.nets.slice(3) : ['none-yet']);
    what = `network rm ${n}`;
    call = d.request('DELETE', `/networks/${n}`);
  }
  try {
    const r = await call;
    return { what, status: r.status, body: r.body };
  } catch {
    return { what, status: 0 };
  }
}

async function world(t: Parameters<typeof chaosRng>[0], rng: Rng): Promise<World> {
  const l = await lab(t);
  const d = await startDaemon(t, l, { args: ['--netns-pool-size', '8'] });
  for (const [name, subnet] of [
    ['ca', '10.160.0.0/24'],
    ['cb', '10.161.0.0/24'],
  ]) {
    const r = await d.request('POST', '/networks/create', {
      Name: name,
      IPAM: { Config: [{ Subnet: subnet }] },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  return { l, d, rng, nets: ['ca', 'cb', 'bridge'], sandboxes: [], port: 34000 };
}

test('chaos storms: parallel create/delete/connect/disconnect of sandboxes and networks keep every invariant', async (t) => {
  const rng = chaosRng(t);
  const w = await world(t, rng);
  for (let round = 0; round < 10; round++) {
    const results = await Promise.all(Array.from({ length: 50 }, () => randomOp(w)));
    const bad = results.filter((r) => !EXPECTED.has(r.status));
    assert.deepEqual(bad, [], `round ${round}: unexpected answers`);
    await assertInvariants(w.d);
  }
  // Distinct pools for the networks made without a subnet (made concurrently with everything else).
  const nets = ((await w.d.request('GET', '/networks')).body as any[]).filter((n) => n.Driver === 'bridge');
  const subnets = nets.map((n) => n.IPAM.Config[0]?.Subnet);
  assert.equal(new Set(subnets).size, subnets.length, `no subnet twice: ${subnets.join(' ')}`);
});

test('chaos storms: SIGKILL at a random instant of an operation stream, restart, every invariant holds', async (t) => {
  const rng = chaosRng(t);
  const w = await world(t, rng);
  for (let round = 0; round < 8; round++) {
    // Eight workers issue operations back to back until the kill.
    let killed = false;
    const workers = Array.from({ length: 8 }, async () => {
      while (!killed) {
        const r = await randomOp(w);
        if (!killed && r.status !== 0)
          assert.ok(EXPECTED.has(r.status), `${r.what} -> ${r.status} ${JSON.stringify(r.body)}`);
      }
    });
    await new Promise((r) => setTimeout(r, 50 + rng.int(400)));
    killed = true;
    await w.d.kill();
    await Promise.all(workers);
    w.d = await startDaemon(t, w.l, {
      hostNs: w.d.host,
      base: w.d.base,
      args: ['--netns-pool-size', '8'],
    });
    await assertInvariants(w.d);
    // Still serving: a sandbox with a port on a surviving network.
    const r = await w.d.request('POST', '/sandboxes', {
      Name: `after${round}`,
      Networks: [{ Network: 'ca' }],
      Ports: [`${w.port++}:80`],
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    w.sandboxes.push(`after${round}`);
  }
  // Everything removed: nothing of it is left anywhere (the checker sees no rule, link, netns or pool of it).
  for (const s of (await w.d.request('GET', '/sandboxes')).body as any[])
    assert.equal((await w.d.request('DELETE', `/sandboxes/${s.Id}`)).status, 204);
  for (const n of w.nets.slice(3)) {
    const r = await w.d.request('DELETE', `/networks/${n}`);
    assert.ok(r.status === 204 || r.status === 404, `${n}: ${r.status} ${JSON.stringify(r.body)}`);
  }
  await assertInvariants(w.d);
  const nat = w.d.host.run('iptables-save', ['-t', 'nat']);
  assert.doesNotMatch(nat, / -j DNAT /, 'no DNAT left');
  assert.equal(w.d.host.ipj('link', 'show', 'type', 'veth').length, 0, 'no veth left');
});
