// Encrypted overlays' key material (issue 17), pure: the cluster secret,
// ring keys sealed under it, per-pair ESP keys, SPIs, and the 3-key ring's
// rotation order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import {
  buildSpi,
  clusterSecret,
  ESP_KEY_BYTES,
  newRingKey,
  openRingKey,
  pairKey,
  readClusterSecret,
  sealRingKey,
} from '../../../src/cluster/keys';
import {
  advance,
  beginRotation,
  HostKeys,
  initialRing,
  RingState,
  validRing,
  wanted,
} from '../../../src/cluster/key-ring';
import { CnmdError } from '../../../src/errors';

const secretA = clusterSecret(Buffer.alloc(64, 1));
const secretB = clusterSecret(Buffer.alloc(64, 2));

test('--cluster-secret-file: a missing or short file is refused saying what to give', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-secret-'));
  try {
    assert.throws(
      () => readClusterSecret(path.join(dir, 'nope')),
      (e: CnmdError) =>
        e.code === 'INVALID_ARGUMENT' &&
        /nope: cannot be read \(ENOENT\).*at least 32 random bytes/.test(e.message),
    );
    fs.writeFileSync(path.join(dir, 'short'), Buffer.alloc(31, 7));
    assert.throws(
      () => readClusterSecret(path.join(dir, 'short')),
      /holds 31 bytes; it needs at least 32 random bytes/,
    );
    fs.writeFileSync(path.join(dir, 'ok'), crypto.randomBytes(64));
    const s = readClusterSecret(path.join(dir, 'ok'));
    assert.equal(s.wrapKey.length, 32);
    assert.match(s.fingerprint, /^[0-9a-f]{16}$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('ring keys: sealed under the secret (no key bytes in the record), opened with it; a wrong secret or another tag fails authentication', () => {
  const key = newRingKey();
  const rec = sealRingKey(secretA, 7, key);
  const json = JSON.stringify(rec);
  assert.ok(!json.includes(key.toString('base64')) && !json.includes(key.toString('hex')));
  assert.ok(!Buffer.from(rec.sealed, 'base64').includes(key.subarray(0, 8)));
  assert.deepEqual(openRingKey(secretA, rec), key);
  // Each seal takes a fresh nonce.
  assert.notEqual(sealRingKey(secretA, 7, key).sealed, rec.sealed);
  assert.throws(
    () => openRingKey(secretB, rec),
    (e: CnmdError) =>
      e.code === 'FORBIDDEN' &&
      /do not open with this host's cluster secret \(fingerprint [0-9a-f]{16}\)/.test(e.message),
  );
  assert.throws(
    () => openRingKey(secretA, { ...rec, tag: 8 }),
    (e: CnmdError) => e.code === 'FORBIDDEN',
  );
  const flipped = Buffer.from(rec.sealed, 'base64');
  flipped[0] ^= 1;
  assert.throws(
    () => openRingKey(secretA, { ...rec, sealed: flipped.toString('base64') }),
    (e: CnmdError) => e.code === 'FORBIDDEN',
  );
  assert.throws(
    () => openRingKey(secretA, { ...rec, nonce: 'AAAA' }),
    (e: CnmdError) => e.code === 'MALFORMED_REPLY',
  );
  assert.throws(() => sealRingKey(secretA, 0, key), /key tag 0/);
  assert.throws(() => sealRingKey(secretA, 1, Buffer.alloc(16)), /32 bytes, not 16/);
});

test('pair keys: 36 bytes, one per direction of each pair and per tag, deterministic on both ends', () => {
  const ring = Buffer.alloc(32, 9);
  const ab = pairKey(ring, 1, '192.0.2.1', '192.0.2.2');
  assert.equal(ab.length, ESP_KEY_BYTES);
  assert.deepEqual(pairKey(ring, 1, '192.0.2.1', '192.0.2.2'), ab);
  const others = [
    pairKey(ring, 1, '192.0.2.2', '192.0.2.1'),
    pairKey(ring, 1, '192.0.2.1', '192.0.2.3'),
    pairKey(ring, 2, '192.0.2.1', '192.0.2.2'),
    pairKey(Buffer.alloc(32, 8), 1, '192.0.2.1', '192.0.2.2'),
    pairKey(ring, 1, '2001:db8::1', '2001:db8::2'),
  ];
  for (const o of others) assert.notDeepEqual(o, ab);
  assert.equal(new Set(others.map((o) => o.toString('hex'))).size, others.length);
  assert.throws(() => pairKey(ring, 1, 'bogus', '192.0.2.2'), /"bogus" is not an IP address/);
});

test("SPIs: libnetwork's FNV-1a of src16 || tag || dst16, direction- and tag-specific, never in RFC 4303's reserved 0..255", () => {
  // FNV-1a 32 of the 36 bytes, computed independently here.
  const fnv = (b: Buffer) => {
    let h = 0x811c9dc5n;
    for (const x of b) h = ((h ^ BigInt(x)) * 0x01000193n) & 0xffffffffn;
    return Number(h);
  };
  const mapped = (last: number) => Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 192, 0, 2, last]);
  const expect = fnv(Buffer.concat([mapped(1), Buffer.from([0, 0, 0, 5]), mapped(2)]));
  assert.equal(buildSpi('192.0.2.1', '192.0.2.2', 5), expect < 256 ? expect + 256 : expect);
  assert.notEqual(buildSpi('192.0.2.2', '192.0.2.1', 5), buildSpi('192.0.2.1', '192.0.2.2', 5));
  assert.notEqual(buildSpi('192.0.2.1', '192.0.2.2', 6), buildSpi('192.0.2.1', '192.0.2.2', 5));
  for (let i = 1; i < 2000; i++) assert.ok(buildSpi('10.0.0.1', `10.0.${i >> 8}.${i & 255}`, i) >= 256);
});

/** Every live host installs what the ring says, then the ring advances as far as it goes. */
function converge(r: RingState, live: string[], reports: Map<string, HostKeys>): RingState {
  for (const h of live) reports.set(h, wanted(r));
  return advance(r, live, reports);
}

test('key ring: a new key is receive-only until every live host has it, then the send key; the oldest goes only after every live host sends with the new one', () => {
  const hosts = ['h1', 'h2', 'h3'];
  const reports = new Map<string, HostKeys>();
  let r = initialRing(1);
  for (const h of hosts) reports.set(h, wanted(r));
  r = beginRotation(r)!;
  assert.deepEqual(r, { tags: [1, 2], primary: 1, phase: 'installing' });
  assert.equal(beginRotation(r), undefined, 'one rotation at a time');
  // h1 and h2 installed key 2; h3 not yet: nobody sends with it.
  reports.set('h1', wanted(r));
  reports.set('h2', wanted(r));
  assert.equal(advance(r, hosts, reports), r);
  reports.set('h3', wanted(r));
  r = advance(r, hosts, reports);
  assert.deepEqual(r, { tags: [1, 2], primary: 2, phase: 'switching' });
  // Until every host sends with 2, key 1 stays for receive.
  reports.set('h1', wanted(r));
  assert.equal(advance(r, hosts, reports), r);
  r = converge(r, hosts, reports);
  assert.deepEqual(r, { tags: [1, 2], primary: 2, phase: 'steady' });
  // The next rotations keep at most three keys; the oldest goes last.
  r = beginRotation(r)!;
  assert.deepEqual(r.tags, [1, 2, 3]);
  r = converge(r, hosts, reports);
  assert.deepEqual(r, { tags: [1, 2, 3], primary: 3, phase: 'switching' });
  r = converge(r, hosts, reports);
  assert.deepEqual(r, { tags: [2, 3], primary: 3, phase: 'steady' });
  for (const s of [r, beginRotation(r)!]) assert.ok(validRing(s));
});

test('key ring: a host down through rotations is not waited for, and catches up by installing the ring as it is', () => {
  const reports = new Map<string, HostKeys>();
  let r = initialRing(1);
  for (const h of ['h1', 'h2', 'h3']) reports.set(h, wanted(r));
  const live = ['h1', 'h2']; // h3 down
  for (let i = 0; i < 3; i++) {
    r = beginRotation(r)!;
    r = converge(converge(r, live, reports), live, reports);
  }
  assert.deepEqual(r, { tags: [3, 4], primary: 4, phase: 'steady' });
  // h3's stale report (key 1 only) does not block anything while it is down; back, it takes the ring.
  assert.deepEqual(reports.get('h3'), { rx: [1], tx: 1 });
  assert.deepEqual(wanted(r), { rx: [3, 4], tx: 4 });
  // Once live again it is waited for: a rotation does not switch until it has the new key.
  r = beginRotation(r)!;
  reports.set('h1', wanted(r));
  reports.set('h2', wanted(r));
  assert.equal(advance(r, ['h1', 'h2', 'h3'], reports).phase, 'installing');
  reports.set('h3', wanted(r));
  assert.equal(advance(r, ['h1', 'h2', 'h3'], reports).phase, 'switching');
});

test('key ring read from the store: malformed rings are refused', () => {
  for (const bad of [
    undefined,
    {},
    { tags: [], primary: 1, phase: 'steady' },
    { tags: [1, 2, 3, 4], primary: 4, phase: 'switching' },
    { tags: [2, 1], primary: 2, phase: 'steady' },
    { tags: [1, 2], primary: 1, phase: 'steady' },
    { tags: [1, 2], primary: 2, phase: 'installing' },
    { tags: [1, 2], primary: 5, phase: 'switching' },
    { tags: [1.5], primary: 1.5, phase: 'steady' },
    { tags: [1], primary: 1, phase: 'rotating' },
  ])
    assert.equal(validRing(bad), false, JSON.stringify(bad));
  assert.equal(validRing(initialRing()), true);
});
