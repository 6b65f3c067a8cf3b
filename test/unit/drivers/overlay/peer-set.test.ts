// The overlay driver's incremental peer changes (PeerSet.apply): the entries
// a change writes are exactly those that differ between the desired entries
// of the set before and after it (desiredEntries of each whole set), so that
// one change costs its own entries and never a dump, and clashes still go to
// the lowest endpoint id.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  desiredEntries,
  diffEntries,
  EntryDelta,
  OverlayPeer,
  PeerSet,
} from '../../../../drivers/overlay/peers';
import { CnmdError } from '../../../../src/errors';

const LOCAL = '192.0.2.1';
const peer = (n: number, vtep = '192.0.2.2', ip = n, mac = n): OverlayPeer => ({
  endpointId: `e${String(n).padStart(3, '0')}`,
  address: `10.0.${ip >> 8}.${ip & 255}/16`,
  mac: `02:42:0a:00:${(mac >> 8).toString(16).padStart(2, '0')}:${(mac & 255).toString(16).padStart(2, '0')}`,
  vtep,
});

const sorted = (d: EntryDelta) => ({
  neigh: [...d.neigh].sort(),
  fdb: [...d.fdb].map(([m, v]) => [m, v.vtep, v.vtep === undefined ? v.was : undefined]).sort(),
});

function newSet(): PeerSet {
  return new PeerSet(
    () => LOCAL,
    () => undefined,
  );
}

test('peer set: an added, a moved and a removed peer write their own entries only', () => {
  const s = newSet();
  s.replaceAll([peer(2), peer(3), peer(4, '192.0.2.3')]);
  assert.deepEqual(sorted(s.apply({ put: [peer(5)], remove: [] })), {
    neigh: [['10.0.0.5', '02:42:0a:00:00:05']],
    fdb: [['02:42:0a:00:00:05', '192.0.2.2', undefined]],
  });
  // Moved to another host: the FDB entry is replaced, the neighbour entry rewritten.
  assert.deepEqual(sorted(s.apply({ put: [peer(3, '192.0.2.4')], remove: [] })), {
    neigh: [['10.0.0.3', '02:42:0a:00:00:03']],
    fdb: [['02:42:0a:00:00:03', '192.0.2.4', undefined]],
  });
  assert.deepEqual(sorted(s.apply({ put: [], remove: ['e004'] })), {
    neigh: [['10.0.0.4', undefined]],
    fdb: [['02:42:0a:00:00:04', undefined, '192.0.2.3']],
  });
  // Published again unchanged, or removed when unknown: nothing to write.
  assert.deepEqual(sorted(s.apply({ put: [peer(2)], remove: ['e999'] })), { neigh: [], fdb: [] });
  // A peer on this host: no entries (it is on the bridge).
  assert.deepEqual(sorted(s.apply({ put: [peer(6, LOCAL)], remove: [] })), { neigh: [], fdb: [] });
  assert.deepEqual(
    s.want,
    desiredEntries([peer(2), peer(3, '192.0.2.4'), peer(5), peer(6, LOCAL)], LOCAL, () => undefined),
  );
});

test('peer set: a bad peer refuses the change and nothing changes', () => {
  const s = newSet();
  s.replaceAll([peer(2), peer(3)]);
  const before = structuredClone(s.want);
  for (const bad of [
    { ...peer(4), mac: 'ff:ff:ff:ff:ff:ff' },
    { ...peer(4), vtep: 'h2' },
    { ...peer(4), address: '10.0.0.300' },
  ])
    assert.throws(
      () => s.apply({ put: [peer(5), bad], remove: ['e002'] }),
      (e: unknown) => e instanceof CnmdError && e.code === 'INVALID_ARGUMENT',
    );
  assert.deepEqual(s.want, before);
  assert.deepEqual(sorted(s.apply({ put: [], remove: ['e002'] })).neigh, [['10.0.0.2', undefined]]);
});

test('peer set: random changes (clashes, moves, local peers) write exactly the difference of the whole sets', () => {
  // A small seeded generator: the same sequence every run.
  let seed = 0x2545f491;
  const rnd = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const vteps = ['192.0.2.2', '192.0.2.3', '192.0.2.4', LOCAL];
  const s = newSet();
  const cur = new Map<string, OverlayPeer>();
  s.replaceAll([]);
  let clashed = 0;
  for (let step = 0; step < 3000; step++) {
    const put: OverlayPeer[] = [];
    const remove: string[] = [];
    for (let k = 1 + rnd(3); k > 0; k--) {
      const n = 1 + rnd(40);
      const id = peer(n).endpointId;
      if (rnd(3) === 0) {
        if (!remove.includes(id) && !put.some((p) => p.endpointId === id)) remove.push(id);
      } else if (!remove.includes(id) && !put.some((p) => p.endpointId === id)) {
        // Addresses and MACs from a small range: two peers often claim one.
        put.push(peer(n, vteps[rnd(vteps.length)], 1 + rnd(30), 1 + rnd(30)));
      }
    }
    const before = desiredEntries([...cur.values()], LOCAL, () => undefined);
    for (const id of remove) cur.delete(id);
    for (const p of put) cur.set(p.endpointId, p);
    const after = desiredEntries([...cur.values()], LOCAL, () => undefined);
    if (after.clashes) clashed++;
    const delta = s.apply({ put, remove });
    assert.deepEqual(s.want.neigh, after.neigh, `step ${step}: neighbours`);
    assert.deepEqual(s.want.fdb, after.fdb, `step ${step}: FDB`);
    // What was written makes the old entries the new ones (a rewrite of an unchanged entry is allowed).
    const want = diffEntries(before, after);
    for (const [ip, mac] of want.neigh) {
      assert.ok(delta.neigh.has(ip), `step ${step}: neighbour ${ip} not written`);
      assert.equal(delta.neigh.get(ip), mac, `step ${step}: neighbour ${ip}`);
    }
    for (const [mac, d] of want.fdb) {
      assert.ok(delta.fdb.has(mac), `step ${step}: FDB ${mac} not written`);
      assert.equal(delta.fdb.get(mac)!.vtep, d.vtep, `step ${step}: FDB ${mac}`);
      // A removal names the destination it removes (the kernel's FDB delete needs it).
      if (d.vtep === undefined) assert.equal(delta.fdb.get(mac)!.was, d.was, `step ${step}: FDB ${mac} was`);
    }
    for (const [ip, mac] of delta.neigh) assert.equal(after.neigh.get(ip), mac, `step ${step}: extra ${ip}`);
    for (const [mac, d] of delta.fdb) assert.equal(after.fdb.get(mac), d.vtep, `step ${step}: extra ${mac}`);
  }
  assert.ok(clashed > 100, `the sequence exercises clashes (${clashed} steps had one)`);
});
