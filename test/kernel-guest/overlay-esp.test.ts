// Runs inside Debian's kernel under qemu (the kernel lane): the encrypted
// overlay's XFRM programming (drivers/overlay/encryption.ts) between two
// "hosts" (netns on a veth underlay) with a VXLAN device each. Marked VXLAN
// (the mark the firewall will set for encrypted VNIs; set here by an iptables
// rule) goes out only as ESP with ESN, the SAs count it, a peer's policy is a
// block before its SAs exist, and re-applying, rotating and removing change
// only what differs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { warmGcm } from '../lib/kernel';
import { lab, Ns } from '../lib/fixture';
import { applyXfrm, desiredXfrm, ENC_MARK, RingKeys } from '../../drivers/overlay/encryption';
import { buildSpi } from '../../src/cluster/keys';

const A = '10.45.0.1';
const B = '10.45.0.2';

function vxlan(ns: Ns, local: string, remote: string, inner: string) {
  ns.run('ip', [
    'link',
    'add',
    'vx0',
    'type',
    'vxlan',
    'id',
    '4096',
    'dstport',
    '4789',
    'local',
    local,
    'remote',
    remote,
    'dev',
    'ea',
  ]);
  ns.run('ip', ['addr', 'add', `${inner}/24`, 'dev', 'vx0']);
  ns.run('ip', ['link', 'set', 'vx0', 'up']);
  // Stand-in for the firewall's rule: only encrypted VNIs' VXLAN carries the mark.
  ns.run('iptables', [
    '-t',
    'mangle',
    '-A',
    'OUTPUT',
    '-p',
    'udp',
    '--dport',
    '4789',
    '-j',
    'MARK',
    '--set-mark',
    String(ENC_MARK.value),
  ]);
}

test('encrypted overlay xfrm: marked VXLAN only as ESP (ESN), block policy before the SAs, reconcile changes only differences', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  for (const ns of [a, b]) ns.run('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
  await a.handle.linkAdd({ kind: 'veth', name: 'ea', up: true, peer: { name: 'ea', netns: b.path } });
  await b.handle.linkSet('ea', { up: true });
  await a.handle.addrAdd('ea', `${A}/24`);
  await b.handle.addrAdd('ea', `${B}/24`);
  vxlan(a, A, B, '10.250.0.1');
  vxlan(b, B, A, '10.250.0.2');

  warmGcm(a, A, B);
  const ring: RingKeys = { keys: new Map([[1, Buffer.alloc(32, 1)]]), primary: 1 };
  // First pass on a only: its policy to b exists (as a block, then pointing at its SA) before b has SAs.
  const first = await applyXfrm(a.handle, desiredXfrm(A, [B], ring, 4789));
  assert.deepEqual(first.blocked, [`${A}>${B}`]);
  assert.equal(first.statesAdded.length, 2);
  assert.deepEqual(first.policiesSet, [`${A}>${B}`]);
  // b has nothing yet: a's VXLAN leaves as ESP that b cannot open: no cleartext reply path, the ping fails.
  assert.match(a.run('sh', ['-c', 'ping -c 2 -W 1 10.250.0.2 || true']), /2 packets transmitted, 0 received/);
  await applyXfrm(b.handle, desiredXfrm(B, [A], ring, 4789));
  // The failed ping left b's address FAILED in a's neighbour table: resolved afresh.
  a.run('ip', ['neigh', 'flush', 'dev', 'vx0']);

  const out = a.run('ping', ['-c', '3', '-W', '2', '10.250.0.2']);
  assert.match(out, /3 packets transmitted, 3 received/);
  const tx = await a.handle.xfrmStateGet({ dst: B, spi: buildSpi(A, B, 1), proto: 'esp', mark: ENC_MARK });
  assert.ok(tx.stats.packets >= 3n, `a's send SA counted ${tx.stats.packets}`);
  assert.equal(tx.esn?.window, 128);
  assert.ok((tx.esn?.oseq ?? 0n) >= 3n, `ESN output sequence ${tx.esn?.oseq}`);
  const rx = await b.handle.xfrmStateGet({ dst: B, spi: buildSpi(A, B, 1), proto: 'esp' });
  assert.ok(rx.stats.packets >= 3n, `b's receive SA counted ${rx.stats.packets}`);
  assert.equal(rx.stats.integrityFailed, 0);
  const text = a.run('ip', ['xfrm', 'state', 'list']);
  assert.match(text, /flag esn/);
  assert.match(text, /aead rfc4106\(gcm\(aes\)\) 0x[0-9a-f]{72} 128/);

  // Re-applied: nothing to do.
  const { replays, ...again } = await applyXfrm(a.handle, desiredXfrm(A, [B], ring, 4789));
  assert.deepEqual([...replays.values()], [0, 0], 'no replay drops on either SA');
  assert.deepEqual(again, {
    blocked: [],
    statesAdded: [],
    policiesSet: [],
    policiesRemoved: [],
    statesRemoved: [],
  });

  // Rotation: key 2 for receive on both, then the send switch, then key 1 dropped; traffic at every step.
  ring.keys.set(2, Buffer.alloc(32, 2));
  for (const [ns, me, peer] of [
    [a, A, B],
    [b, B, A],
  ] as const) {
    const ch = await applyXfrm(ns.handle, desiredXfrm(me, [peer], ring, 4789));
    assert.deepEqual(ch.statesAdded, [`${peer}>${me}#${buildSpi(peer, me, 2)}`]);
    assert.deepEqual(ch.policiesSet, []);
  }
  assert.match(a.run('ping', ['-c', '2', '-W', '2', '10.250.0.2']), /2 received/);
  ring.primary = 2;
  for (const [ns, me, peer] of [
    [a, A, B],
    [b, B, A],
  ] as const) {
    const ch = await applyXfrm(ns.handle, desiredXfrm(me, [peer], ring, 4789));
    assert.deepEqual(ch.policiesSet, [`${me}>${peer}`]);
    assert.deepEqual(ch.statesRemoved, [`${me}>${peer}#${buildSpi(me, peer, 1)}`]);
    assert.match(a.run('ping', ['-c', '2', '-W', '2', '10.250.0.2']), /2 received/);
  }
  const tx2 = await a.handle.xfrmStateGet({ dst: B, spi: buildSpi(A, B, 2), proto: 'esp', mark: ENC_MARK });
  assert.ok(tx2.stats.packets >= 2n);
  ring.keys.delete(1);
  for (const [ns, me, peer] of [
    [a, A, B],
    [b, B, A],
  ] as const) {
    const ch = await applyXfrm(ns.handle, desiredXfrm(me, [peer], ring, 4789));
    assert.deepEqual(ch.statesRemoved, [`${peer}>${me}#${buildSpi(peer, me, 1)}`]);
  }
  assert.match(a.run('ping', ['-c', '2', '-W', '2', '10.250.0.2']), /2 received/);

  // The peer gone: its policy and SAs go; nothing of cnmd's is left.
  const gone = await applyXfrm(a.handle, desiredXfrm(A, [], ring, 4789));
  assert.deepEqual(gone.policiesRemoved, [`${A}>${B}`]);
  assert.equal(gone.statesRemoved.length, 2);
  assert.deepEqual(await a.handle.xfrmStateList(), []);
  assert.deepEqual(await a.handle.xfrmPolicyList(), []);
});
