// Runs inside Debian's kernel under qemu (the kernel lane): ESP transport with
// rfc4106(gcm(aes)) — the encrypted overlay's SA — between two namespaces,
// states and policies made through our API; a ping is carried and the SAs
// count its packets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab, Ns } from '../lib/fixture';

const KEY_AB = '0x' + '11'.repeat(16) + 'a1a2a3a4'; // 16-byte AES key + 4-byte salt
const KEY_BA = '0x' + '22'.repeat(16) + 'b1b2b3b4';
const MARK = { value: 0xd0c4e3, mask: 0xffffffff };

async function esp(
  me: Ns,
  local: string,
  peer: string,
  spiOut: number,
  spiIn: number,
  keyOut: string,
  keyIn: string,
  mark?: typeof MARK,
) {
  const aead = (key: string) => ({ name: 'rfc4106(gcm(aes))', key, icvBits: 64 });
  await me.handle.xfrmStateAdd({
    src: local,
    dst: peer,
    spi: spiOut,
    proto: 'esp',
    mode: 'transport',
    reqid: 7,
    aead: aead(keyOut),
    mark,
  });
  await me.handle.xfrmStateAdd({
    src: peer,
    dst: local,
    spi: spiIn,
    proto: 'esp',
    mode: 'transport',
    reqid: 7,
    aead: aead(keyIn),
    mark,
  });
  const tmpl = (src: string, dst: string) => [
    { src, dst, proto: 'esp' as const, mode: 'transport' as const, reqid: 7 },
  ];
  await me.handle.xfrmPolicyAdd({
    selector: { src: `${local}/32`, dst: `${peer}/32` },
    dir: 'out',
    templates: tmpl(local, peer),
    mark,
  });
  await me.handle.xfrmPolicyAdd({
    selector: { src: `${peer}/32`, dst: `${local}/32` },
    dir: 'in',
    templates: tmpl(peer, local),
    mark,
  });
}

async function pair(t: Parameters<typeof lab>[0]) {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  await a.handle.linkAdd({ kind: 'veth', name: 'ea', up: true, peer: { name: 'eb', netns: b.path } });
  await b.handle.linkSet('eb', { up: true });
  await a.handle.addrAdd('ea', '10.44.0.1/24');
  await b.handle.addrAdd('eb', '10.44.0.2/24');
  return { a, b };
}

test('ESP transport with rfc4106(gcm(aes)) carries a ping; the SAs count the packets', async (t) => {
  const { a, b } = await pair(t);
  await esp(a, '10.44.0.1', '10.44.0.2', 0x1001, 0x2002, KEY_AB, KEY_BA);
  await esp(b, '10.44.0.2', '10.44.0.1', 0x2002, 0x1001, KEY_BA, KEY_AB);

  const st = await a.handle.xfrmStateGet({ dst: '10.44.0.2', spi: 0x1001, proto: 'esp' });
  assert.equal(st.aead?.name, 'rfc4106(gcm(aes))');
  assert.equal(st.aead?.keyBits, 160);
  assert.equal(st.aead?.icvBits, 64);
  assert.equal(st.reqid, 7);
  assert.equal(st.mode, 'transport');
  // ip's own view of what we installed
  const text = a.run('ip', ['xfrm', 'state', 'list']);
  assert.match(text, /src 10\.44\.0\.1 dst 10\.44\.0\.2\s+proto esp spi 0x00001001 reqid 7 mode transport/);
  assert.match(text, /aead rfc4106\(gcm\(aes\)\) 0x1{32}a1a2a3a4 64/);
  const pol = a.run('ip', ['xfrm', 'policy', 'list']);
  assert.match(pol, /src 10\.44\.0\.1\/32 dst 10\.44\.0\.2\/32\s+dir out/);
  assert.match(pol, /tmpl src 10\.44\.0\.1 dst 10\.44\.0\.2\s+proto esp reqid 7 mode transport/);

  const out = a.run('ping', ['-c', '3', '-W', '2', '10.44.0.2']);
  assert.match(out, /3 packets transmitted, 3 received/);
  const after = await a.handle.xfrmStateGet({ dst: '10.44.0.2', spi: 0x1001, proto: 'esp' });
  assert.ok(after.stats.packets >= 3n, `outbound SA counted ${after.stats.packets} packets`);
  const inbound = await b.handle.xfrmStateGet({ dst: '10.44.0.2', spi: 0x1001, proto: 'esp' });
  assert.ok(inbound.stats.packets >= 3n, `peer's inbound SA counted ${inbound.stats.packets} packets`);
  assert.equal(inbound.stats.integrityFailed, 0);

  // A wrong key on one side: the ping fails and the peer counts integrity failures.
  await b.handle.xfrmStateDel({ dst: '10.44.0.2', spi: 0x1001, proto: 'esp' });
  await b.handle.xfrmStateAdd({
    src: '10.44.0.1',
    dst: '10.44.0.2',
    spi: 0x1001,
    proto: 'esp',
    reqid: 7,
    aead: { name: 'rfc4106(gcm(aes))', key: '0x' + '33'.repeat(20), icvBits: 64 },
  });
  const bad = a.run('sh', ['-c', 'ping -c 2 -W 1 10.44.0.2 || true']);
  assert.match(bad, /2 packets transmitted, 0 received/);
  const broken = await b.handle.xfrmStateGet({ dst: '10.44.0.2', spi: 0x1001, proto: 'esp' });
  assert.ok(broken.stats.integrityFailed >= 2, `integrity failures ${broken.stats.integrityFailed}`);
});

test('marked SAs and policies (the overlay mark 0xD0C4E3): list, get, delete and flush', async (t) => {
  const { a } = await pair(t);
  await esp(a, '10.44.0.1', '10.44.0.2', 0x3003, 0x4004, KEY_AB, KEY_BA, MARK);
  const states = await a.handle.xfrmStateList();
  assert.equal(states.length, 2);
  for (const s of states) assert.deepEqual(s.mark, MARK);
  // Without the mark the SA is not found: marks are part of the identity.
  await assert.rejects(a.handle.xfrmStateGet({ dst: '10.44.0.2', spi: 0x3003, proto: 'esp' }), {
    code: 'NOT_FOUND',
  });
  const s = await a.handle.xfrmStateGet({ dst: '10.44.0.2', spi: 0x3003, proto: 'esp', mark: MARK });
  assert.equal(s.spi, 0x3003);
  const pols = await a.handle.xfrmPolicyList();
  assert.equal(pols.length, 2);
  assert.ok(pols.every((p) => p.mark?.value === MARK.value && p.templates[0].reqid === 7));
  assert.match(a.run('ip', ['xfrm', 'policy', 'list']), /mark 0xd0c4e3\/0xffffffff/);
  await a.handle.xfrmPolicyDel({
    selector: { src: '10.44.0.1/32', dst: '10.44.0.2/32' },
    dir: 'out',
    mark: MARK,
  });
  assert.equal((await a.handle.xfrmPolicyList()).length, 1);
  await a.handle.xfrmStateDel({ dst: '10.44.0.2', spi: 0x3003, proto: 'esp', mark: MARK });
  assert.equal((await a.handle.xfrmStateList()).length, 1);
  await a.handle.xfrmStateFlush();
  await a.handle.xfrmPolicyFlush();
  assert.equal(a.run('ip', ['xfrm', 'state', 'list']).trim(), '');
  assert.equal(a.run('ip', ['xfrm', 'policy', 'list']).trim(), '');
});
