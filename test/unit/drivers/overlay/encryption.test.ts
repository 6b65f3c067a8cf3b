// The encrypted overlay's desired XFRM state (drivers/overlay/encryption.ts), pure:
// SAs per direction per peer per key, one outbound policy per peer, ESP MTU.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  desiredXfrm,
  encryptedMtu,
  ENC_MARK,
  ENC_REQID,
  GUARD_PRIORITY,
  guardPolicy,
  RingKeys,
} from '../../../../drivers/overlay/encryption';
import { buildSpi, pairKey } from '../../../../src/cluster/keys';
import { encodePolicyAdd, encodeStateAdd } from '../../../../src/netlink/xfrm/xfrm';

const ring: RingKeys = {
  keys: new Map([
    [4, Buffer.alloc(32, 4)],
    [5, Buffer.alloc(32, 5)],
    [6, Buffer.alloc(32, 6)],
  ]),
  primary: 5,
};

test('desired xfrm: receive SAs for every key, a send SA for the primary, one marked outbound policy per peer', () => {
  const d = desiredXfrm('192.0.2.1', ['192.0.2.3', '192.0.2.2', '192.0.2.1', '192.0.2.2'], ring, 4789);
  // Two peers (self and the duplicate ignored), 3 rx + 1 tx each.
  assert.equal(d.states.length, 8);
  assert.equal(d.policies.length, 2);
  const rx = d.states.filter((s) => s.dst === '192.0.2.1');
  const tx = d.states.filter((s) => s.src === '192.0.2.1');
  assert.deepEqual(
    rx.map((s) => [s.src, s.spi]),
    ['192.0.2.2', '192.0.2.3'].flatMap((p) => [4, 5, 6].map((t) => [p, buildSpi(p, '192.0.2.1', t)])),
  );
  assert.deepEqual(
    tx.map((s) => [s.dst, s.spi]),
    ['192.0.2.2', '192.0.2.3'].map((p) => [p, buildSpi('192.0.2.1', p, 5)]),
  );
  for (const s of d.states) {
    assert.equal(s.reqid, ENC_REQID);
    assert.equal(s.mode, 'transport');
    assert.equal(s.esnWindow, 128);
    assert.equal(s.aead?.name, 'rfc4106(gcm(aes))');
    assert.equal(s.aead?.icvBits, 128);
    assert.deepEqual(s.selector, { src: `${s.src}/32`, dst: `${s.dst}/32`, proto: 'udp', dport: 4789 });
    // Send SAs are marked (looked up with the packet's mark); receive SAs are not (incoming packets have none).
    assert.deepEqual(s.mark, s.src === '192.0.2.1' ? ENC_MARK : undefined);
    // Encodable as is (the netlink layer's checks pass).
    assert.ok(encodeStateAdd(s).length > 224);
  }
  // Keys: the pair's own, per direction.
  const t2 = tx.find((s) => s.dst === '192.0.2.2')!;
  assert.deepEqual(t2.aead!.key, pairKey(ring.keys.get(5)!, 5, '192.0.2.1', '192.0.2.2'));
  const r2 = rx.find((s) => s.src === '192.0.2.2' && s.spi === buildSpi('192.0.2.2', '192.0.2.1', 5))!;
  assert.deepEqual(r2.aead!.key, pairKey(ring.keys.get(5)!, 5, '192.0.2.2', '192.0.2.1'));
  assert.notDeepEqual(r2.aead!.key, t2.aead!.key);
  // The other end derives the mirror image: its send SA is our receive SA, byte for byte.
  const theirs = desiredXfrm('192.0.2.2', ['192.0.2.1'], ring, 4789);
  const theirTx = theirs.states.find((s) => s.src === '192.0.2.2')!;
  assert.equal(theirTx.spi, r2.spi);
  assert.deepEqual(theirTx.aead!.key, r2.aead!.key);
  const p = d.policies[0];
  assert.deepEqual(p.selector, { src: '192.0.2.1/32', dst: '192.0.2.2/32', proto: 'udp', dport: 4789 });
  assert.equal(p.dir, 'out');
  assert.deepEqual(p.mark, ENC_MARK);
  assert.deepEqual(p.templates, [
    { src: '192.0.2.1', dst: '192.0.2.2', proto: 'esp', mode: 'transport', reqid: ENC_REQID, spi: t2.spi },
  ]);
  assert.ok(encodePolicyAdd(p).length > 168);
  assert.deepEqual(desiredXfrm('192.0.2.1', [], ring, 4789), { states: [], policies: [] });
  assert.throws(() => desiredXfrm('192.0.2.1', ['192.0.2.2'], { ...ring, primary: 9 }, 4789), /send key 9/);
});

test("encrypted MTU: ESP's 26 bytes off, rounded down to a multiple of 4 (libnetwork's rule)", () => {
  assert.equal(encryptedMtu(1450), 1424);
  assert.equal(encryptedMtu(1500), 1472);
  assert.equal(encryptedMtu(8950), 8924);
  for (const m of [1400, 1401, 1402, 1403]) assert.equal(encryptedMtu(m) % 4, 0);
});

test('desired xfrm with the guard: marked VXLAN from the VTEP to anywhere blocked, below every peer policy', () => {
  const d = desiredXfrm('192.0.2.1', ['192.0.2.2'], ring, 4789, true);
  assert.deepEqual(d.guard, {
    selector: { src: '192.0.2.1/32', dst: '0.0.0.0/0', proto: 'udp', dport: 4789 },
    dir: 'out',
    mark: ENC_MARK,
    action: 'block',
    priority: GUARD_PRIORITY,
  });
  // The kernel takes the lowest priority value: a peer's policy wins over the guard.
  assert.ok(d.policies.every((p) => (p.priority ?? 0) < GUARD_PRIORITY));
  assert.equal(desiredXfrm('192.0.2.1', ['192.0.2.2'], ring, 4789).guard, undefined);
  assert.deepEqual(guardPolicy('fd00::1', 8472).selector, {
    src: 'fd00::1/128',
    dst: '::/0',
    proto: 'udp',
    dport: 8472,
  });
  encodePolicyAdd(d.guard!); // encodable
});
