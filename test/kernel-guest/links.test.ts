// Runs inside Debian's kernel under qemu (the kernel lane): link kinds this
// machine's kernel lacks — dummy, 802.1Q/802.1ad vlan, ipvlan l2/l3 — created
// through our API, read back with `ip -j -d link`, and carrying traffic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab } from '../lib/fixture';

test('dummy link: created, read back as kind dummy, removed', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const link = await a.handle.linkAdd({
    kind: 'dummy',
    name: 'dm0',
    mtu: 1400,
    mac: '02:00:00:00:00:0a',
    up: true,
  });
  assert.equal(link?.kind, 'dummy');
  const [ip] = a.ipj('-d', 'link', 'show', 'dm0');
  assert.equal(ip.linkinfo.info_kind, 'dummy');
  assert.equal(ip.mtu, 1400);
  assert.equal(ip.address, '02:00:00:00:00:0a');
  assert.ok(ip.flags.includes('UP'));
  await a.handle.linkDel('dm0');
  assert.deepEqual(a.ipj('link', 'show', 'type', 'dummy'), []);
});

test('vlan links: 802.1Q and 802.1ad on a parent, ids and protocols as ip reports them', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'dummy', name: 'dm0', up: true });
  const q = await a.handle.linkAdd({ kind: 'vlan', name: 'dm0.10', parent: 'dm0', id: 10 });
  assert.deepEqual(q?.vlan, { id: 10, protocol: '802.1Q' });
  await a.handle.linkAdd({ kind: 'vlan', name: 'dm0.20', parent: 'dm0', id: 20, protocol: '802.1ad' });
  const [v10] = a.ipj('-d', 'link', 'show', 'dm0.10');
  assert.equal(v10.linkinfo.info_kind, 'vlan');
  assert.equal(v10.linkinfo.info_data.id, 10);
  assert.equal(v10.linkinfo.info_data.protocol, '802.1Q');
  assert.equal(v10.link, 'dm0');
  const [v20] = a.ipj('-d', 'link', 'show', 'dm0.20');
  assert.equal(v20.linkinfo.info_data.id, 20);
  assert.equal(v20.linkinfo.info_data.protocol, '802.1ad');
  const got = await a.handle.linkGet('dm0.20');
  assert.deepEqual(got.vlan, { id: 20, protocol: '802.1ad' });
  await assert.rejects(a.handle.linkAdd({ kind: 'vlan', name: 'dm0.5000', parent: 'dm0', id: 5000 }), {
    code: 'INVALID_ARGUMENT',
  });
});

test('vlan traffic: two namespaces ping over 802.1Q subinterfaces of a veth pair', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  await a.handle.linkAdd({ kind: 'veth', name: 'va', up: true, peer: { name: 'vb', netns: b.path } });
  await b.handle.linkSet('vb', { up: true });
  await a.handle.linkAdd({ kind: 'vlan', name: 'va.42', parent: 'va', id: 42, up: true });
  await b.handle.linkAdd({ kind: 'vlan', name: 'vb.42', parent: 'vb', id: 42, up: true });
  await a.handle.addrAdd('va.42', '192.168.42.1/24');
  await b.handle.addrAdd('vb.42', '192.168.42.2/24');
  const out = a.run('ping', ['-c', '2', '-W', '2', '192.168.42.2']);
  assert.match(out, /2 packets transmitted, 2 received/);
});

for (const mode of ['l2', 'l3'] as const) {
  test(`ipvlan ${mode}: slaves in two namespaces, read back and pinging each other`, async (t) => {
    const l = await lab(t);
    const host = await l.ns('host');
    const b = await l.ns('b');
    const c = await l.ns('c');
    await host.handle.linkAdd({ kind: 'dummy', name: 'parent0', up: true });
    await host.handle.linkAdd({ kind: 'ipvlan', name: 'ipv-b', parent: 'parent0', mode, flag: 'bridge' });
    await host.handle.linkAdd({ kind: 'ipvlan', name: 'ipv-c', parent: 'parent0', mode, flag: 'private' });
    const [ib] = host.ipj('-d', 'link', 'show', 'ipv-b');
    assert.equal(ib.linkinfo.info_kind, 'ipvlan');
    assert.equal(ib.linkinfo.info_data.mode, mode);
    assert.equal(ib.link, 'parent0');
    const got = await host.handle.linkGet('ipv-c');
    assert.deepEqual(got.ipvlan, { mode, flag: 'private' });
    // Private slaves don't talk to each other; move both, then make c bridge mode too.
    await host.handle.linkDel('ipv-c');
    await host.handle.linkAdd({ kind: 'ipvlan', name: 'ipv-c', parent: 'parent0', mode, flag: 'bridge' });
    await host.handle.linkSet('ipv-b', { netns: b.path });
    await host.handle.linkSet('ipv-c', { netns: c.path });
    for (const [ns, dev, ip] of [
      [b, 'ipv-b', '10.77.0.2/24'],
      [c, 'ipv-c', '10.77.0.3/24'],
    ] as const) {
      await ns.handle.linkSet(dev, { up: true });
      await ns.handle.addrAdd(dev, ip);
    }
    if (mode === 'l3') {
      // l3 mode has no ARP: a connected route through the device is enough.
      assert.ok(b.ipj('route').some((r: any) => r.dst === '10.77.0.0/24' && r.dev === 'ipv-b'));
    }
    const out = b.run('ping', ['-c', '2', '-W', '2', '10.77.0.3']);
    assert.match(out, /2 packets transmitted, 2 received/);
  });
}
