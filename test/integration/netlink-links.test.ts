// Links made through our netlink handle, read back with `ip -j -d link` and
// compared field by field. Every test works in namespaces of its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { lab } from '../lib/fixture';

/** The running kernel's config (/proc/config.gz, else /boot/config-<release>); '' if neither. */
function kernelConfig(): string {
  try {
    return zlib.gunzipSync(fs.readFileSync('/proc/config.gz')).toString();
  } catch {
    try {
      return fs.readFileSync(`/boot/config-${require('node:os').release()}`, 'utf8');
    } catch {
      return '';
    }
  }
}

test('veth pair with the peer created directly in another netns', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  const link = await a.handle.linkAdd({ kind: 'veth', name: 'va', mtu: 1400, mac: '02:00:00:00:0a:01', peer: { name: 'vb', netns: b.path, mtu: 1400, mac: '02:00:00:00:0b:01' } });
  assert.equal(link?.name, 'va');
  assert.equal(link?.kind, 'veth');
  const [va] = a.ipj('-d', 'link', 'show', 'va');
  const [vb] = b.ipj('-d', 'link', 'show', 'vb');
  assert.equal(va.linkinfo.info_kind, 'veth');
  assert.equal(vb.linkinfo.info_kind, 'veth');
  assert.equal(va.mtu, 1400);
  assert.equal(vb.mtu, 1400);
  assert.equal(va.address, '02:00:00:00:0a:01');
  assert.equal(vb.address, '02:00:00:00:0b:01');
  // Each side names the other: its ifindex in the peer's namespace.
  assert.equal(va.link_index, vb.ifindex);
  assert.equal(vb.link_index, va.ifindex);
  assert.equal(typeof va.link_netnsid, 'number');
  assert.ok(!a.ipj('link').some((x: any) => x.ifname === 'vb'), 'the peer is not in a');
  const got = await b.handle.linkGet('vb');
  assert.equal(got.index, vb.ifindex);
  assert.equal(got.mac, '02:00:00:00:0b:01');
});

test('bridge with STP, forward delay, ageing and VLAN filtering', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const vlanFiltering = /^CONFIG_BRIDGE_VLAN_FILTERING=y$/m.test(kernelConfig());
  if (!vlanFiltering) {
    // This kernel lacks it: the option is refused, typed, and nothing is left.
    await assert.rejects(a.handle.linkAdd({ kind: 'bridge', name: 'brv', vlanFiltering: true }), { code: 'KERNEL_FEATURE_MISSING', message: /CONFIG_BRIDGE_VLAN_FILTERING/ });
    assert.ok(!a.ipj('link').some((x: any) => x.ifname === 'brv'));
  }
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0', stpState: 1, forwardDelay: 400, ageingTime: 30000, vlanFiltering: vlanFiltering || undefined, mtu: 9000, up: true });
  const [br] = a.ipj('-d', 'link', 'show', 'br0');
  const info = br.linkinfo.info_data;
  assert.equal(br.linkinfo.info_kind, 'bridge');
  assert.equal(info.stp_state, 1);
  assert.equal(info.forward_delay, 400);
  assert.equal(info.ageing_time, 30000);
  assert.equal(info.vlan_filtering, vlanFiltering ? 1 : 0);
  assert.equal(br.mtu, 9000);
  assert.ok(br.flags.includes('UP'));
  const got = await a.handle.linkGet('br0');
  assert.deepEqual(got.bridge, { stpState: 1, forwardDelay: 400, ageingTime: 30000, vlanFiltering });
});

test('vxlan with every option an overlay needs', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'under0', up: true });
  await a.handle.addrAdd('under0', '192.0.2.10/24');
  await a.handle.linkAdd({
    kind: 'vxlan',
    name: 'vx0',
    vni: 4097,
    port: 4789,
    local: '192.0.2.10',
    group: '192.0.2.20',
    dev: 'under0',
    ttl: 32,
    learning: false,
    proxy: true,
    l2miss: true,
    l3miss: true,
    ageing: 300,
    udpCsum: true,
    mtu: 1450,
  });
  const [vx] = a.ipj('-d', 'link', 'show', 'vx0');
  const d = vx.linkinfo.info_data;
  assert.equal(vx.linkinfo.info_kind, 'vxlan');
  assert.equal(d.id, 4097);
  assert.equal(d.port, 4789);
  assert.equal(d.local, '192.0.2.10');
  assert.equal(d.remote, '192.0.2.20');
  assert.equal(d.link, 'under0');
  assert.equal(d.ttl, 32);
  assert.equal(d.learning, false);
  assert.equal(d.proxy, true);
  assert.equal(d.l2miss, true);
  assert.equal(d.l3miss, true);
  assert.equal(d.ageing, 300);
  assert.equal(d.udp_csum, true);
  assert.equal(vx.mtu, 1450);
  const got = await a.handle.linkGet('vx0');
  assert.equal(got.vxlan?.vni, 4097);
  assert.equal(got.vxlan?.group, '192.0.2.20');
  assert.equal(got.vxlan?.local, '192.0.2.10');
  assert.equal(got.vxlan?.learning, false);
  await assert.rejects(a.handle.linkAdd({ kind: 'vxlan', name: 'vx1', vni: 1 << 24 }), { code: 'INVALID_ARGUMENT' });
});

test('macvlan in each mode on a veth parent', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  await a.handle.linkAdd({ kind: 'veth', name: 'parent0', up: true, peer: { name: 'p0', netns: b.path } });
  for (const mode of ['bridge', 'private', 'vepa', 'passthru'] as const) {
    const name = `mv-${mode.slice(0, 4)}`;
    const link = await a.handle.linkAdd({ kind: 'macvlan', name, parent: 'parent0', mode });
    assert.equal(link?.macvlan?.mode, mode);
    const [mv] = a.ipj('-d', 'link', 'show', name);
    assert.equal(mv.linkinfo.info_kind, 'macvlan');
    assert.equal(mv.linkinfo.info_data.mode, mode);
    assert.equal(mv.link, 'parent0');
    // passthru takes the whole parent: remove it before the next mode.
    await a.handle.linkDel(name);
  }
  await assert.rejects(a.handle.linkAdd({ kind: 'macvlan', name: 'mv-x', parent: 'parent0', mode: 'bogus' as never }), { code: 'INVALID_ARGUMENT', message: /macvlan mode "bogus"/ });
  await assert.rejects(a.handle.linkAdd({ kind: 'macvlan', name: 'mv-y', parent: 'nope0' }), { code: 'NOT_FOUND' });
});

test('link set: up/down, master/nomaster, mtu, mac, name, alias, netns; get, list, delete', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  await a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'v0p' } });
  await a.handle.linkSet('v0', { up: true, master: 'br0', mtu: 1300, mac: '02:11:22:33:44:55', alias: 'cnmd test' });
  let [v0] = a.ipj('-d', 'link', 'show', 'v0');
  assert.ok(v0.flags.includes('UP'));
  assert.equal(v0.master, 'br0');
  assert.equal(v0.mtu, 1300);
  assert.equal(v0.address, '02:11:22:33:44:55');
  assert.equal(v0.ifalias, 'cnmd test');
  assert.equal(v0.linkinfo.info_slave_kind, 'bridge');
  await a.handle.linkSet('v0', { up: false, master: null });
  [v0] = a.ipj('-d', 'link', 'show', 'v0');
  assert.ok(!v0.flags.includes('UP'));
  assert.equal(v0.master, undefined);
  // Rename by index, then move to b.
  const idx = v0.ifindex;
  await a.handle.linkSet(idx, { name: 'renamed0' });
  assert.equal(a.ipj('link', 'show', 'renamed0')[0].ifindex, idx);
  assert.equal((await a.handle.linkGet(idx)).name, 'renamed0');
  await a.handle.linkSet('renamed0', { netns: b.path });
  assert.ok(!a.ipj('link').some((x: any) => x.ifname === 'renamed0'));
  assert.equal(b.ipj('link', 'show', 'renamed0').length, 1);
  // list matches ip's list
  const names = (await a.handle.linkList()).map((x) => x.name).sort();
  assert.deepEqual(names, a.ipj('link').map((x: any) => x.ifname).sort());
  await a.handle.linkDel('br0');
  await a.handle.linkDel('v0p');
  assert.deepEqual((await a.handle.linkList()).map((x) => x.name), ['lo']);
});

test('ipvlan, 802.1Q vlan and dummy on this kernel: a typed error naming the missing feature, nothing created', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0', up: true });
  const before = a.ipj('link').map((x: any) => x.ifname).sort();
  const cases = [
    { spec: { kind: 'ipvlan' as const, name: 'ipv0', parent: 'br0', mode: 'l2' as const }, kconfig: 'CONFIG_IPVLAN' },
    { spec: { kind: 'ipvlan' as const, name: 'ipv1', parent: 'br0', mode: 'l3' as const }, kconfig: 'CONFIG_IPVLAN' },
    { spec: { kind: 'vlan' as const, name: 'br0.10', parent: 'br0', id: 10 }, kconfig: 'CONFIG_VLAN_8021Q' },
    { spec: { kind: 'dummy' as const, name: 'dm0' }, kconfig: 'CONFIG_DUMMY' },
  ];
  for (const c of cases) {
    await assert.rejects(a.handle.linkAdd(c.spec), (e: any) => {
      assert.equal(e.code, 'KERNEL_FEATURE_MISSING');
      assert.equal(e.op, 'link add');
      assert.equal(e.object, c.spec.name);
      assert.equal(e.errno, 'EOPNOTSUPP');
      assert.match(e.message, new RegExp(`this kernel lacks the "${c.spec.kind}" link type \\(${c.kconfig}\\)`));
      return true;
    });
  }
  assert.deepEqual(a.ipj('link').map((x: any) => x.ifname).sort(), before);
});
