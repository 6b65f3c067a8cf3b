// Links made through the netlink Handle, each read back with an independent
// tool (`ip -j -d link`, `ip -j netns list-id`) and compared field by field.
// Every test works in namespaces of its own (lab), never in the machine's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, lab, Ns } from '../lib/fixture';
import { CnmdError } from '../../src/errors';
import { kernelHas } from '../lib/kernel';

/** `ip -j -d link show NAME` in ns: the one link. */
function ipLink(ns: Ns, name: string): any {
  const out = ns.ipj('-d', 'link', 'show', 'dev', name);
  assert.equal(out.length, 1, `ip shows one ${name}`);
  return out[0];
}
/** Link names in ns as ip lists them, sorted. */
function ipNames(ns: Ns): string[] {
  return ns
    .ipj('link')
    .map((x: any) => x.ifname)
    .sort();
}
/** ip's nsid list inside ns (the peers it has ids for). */
function nsids(ns: Ns): number[] {
  return ns.ipj('netns', 'list-id').map((x: any) => x.nsid);
}

test('veth pair with the peer created directly in another netns: names, peer ifindex, link-netnsid, mtu, mac in both', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  const created = await a.handle.linkAdd({
    kind: 'veth',
    name: 'va',
    mtu: 1400,
    mac: '02:00:00:00:0a:01',
    txqlen: 500,
    queues: 1,
    up: true,
    peer: { name: 'vb', netns: b.path, mtu: 1380, mac: '02:00:00:00:0b:01', queues: 2 },
  });
  const va = ipLink(a, 'va');
  const vb = ipLink(b, 'vb');
  // What ip reads in a
  assert.equal(va.ifname, 'va');
  assert.equal(va.linkinfo.info_kind, 'veth');
  assert.equal(va.mtu, 1400);
  assert.equal(va.address, '02:00:00:00:0a:01');
  assert.equal(va.txqlen, 500);
  assert.deepEqual([va.num_tx_queues, va.num_rx_queues], [1, 1]);
  assert.ok(va.flags.includes('UP'), 'va is up');
  // ... and in b
  assert.equal(vb.ifname, 'vb');
  assert.equal(vb.linkinfo.info_kind, 'veth');
  assert.equal(vb.mtu, 1380);
  assert.equal(vb.address, '02:00:00:00:0b:01');
  assert.deepEqual([vb.num_tx_queues, vb.num_rx_queues], [2, 2]);
  assert.ok(!vb.flags.includes('UP'), 'vb stays down');
  // Each end names the other by its ifindex in the other namespace, through an nsid.
  assert.equal(va.link_index, vb.ifindex);
  assert.equal(vb.link_index, va.ifindex);
  assert.deepEqual(
    nsids(a),
    [va.link_netnsid],
    'a knows exactly one peer namespace: b, by the nsid va names',
  );
  assert.deepEqual(
    nsids(b),
    [vb.link_netnsid],
    'b knows exactly one peer namespace: a, by the nsid vb names',
  );
  assert.equal(va.link, undefined, 'ip cannot name a peer in another netns');
  // Each side exists only where it belongs.
  assert.deepEqual(ipNames(a), ['lo', 'va']);
  assert.deepEqual(ipNames(b), ['lo', 'vb']);
  // What the kernel echoed to us agrees with ip.
  assert.ok(created);
  assert.equal(created.index, va.ifindex);
  assert.equal(created.name, 'va');
  assert.equal(created.kind, 'veth');
  assert.equal(created.mtu, 1400);
  assert.equal(created.mac, '02:00:00:00:0a:01');
  assert.equal(created.parentIndex, vb.ifindex);
  assert.equal(created.linkNetnsId, va.link_netnsid);
  assert.equal(created.up, true);
  // And so does a get from the peer's side.
  const got = await b.handle.linkGet('vb');
  assert.equal(got.index, vb.ifindex);
  assert.equal(got.mac, '02:00:00:00:0b:01');
  assert.equal(got.mtu, 1380);
  assert.equal(got.parentIndex, va.ifindex);
  assert.equal(got.linkNetnsId, vb.link_netnsid);
  assert.equal(got.up, false);
});

test('veth pair in one netns, and a pair made from a third netns with both ends elsewhere', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  const c = await l.ns('c');
  // Both ends in a: ip names the peer, no nsid involved.
  await a.handle.linkAdd({
    kind: 'veth',
    name: 'v0',
    mtu: 9000,
    peer: { name: 'v1', mtu: 9000, mac: '02:00:00:00:00:11' },
  });
  const v0 = ipLink(a, 'v0');
  const v1 = ipLink(a, 'v1');
  assert.equal(v0.link, 'v1');
  assert.equal(v1.link, 'v0');
  assert.equal(v0.link_netnsid, undefined);
  assert.equal(v0.mtu, 9000);
  assert.equal(v1.mtu, 9000);
  assert.equal(v1.address, '02:00:00:00:00:11');
  assert.equal((await a.handle.linkGet('v0')).parentIndex, v1.ifindex);
  assert.equal((await a.handle.linkGet('v1')).parentIndex, v0.ifindex);
  // From a's handle: the link in b, its peer in c. The kernel echoes nothing to a.
  const r = await a.handle.linkAdd({
    kind: 'veth',
    name: 'vb0',
    netns: b.path,
    mtu: 1450,
    peer: { name: 'vc0', netns: c.path, mtu: 1450 },
  });
  assert.equal(r, null);
  assert.deepEqual(ipNames(a), ['lo', 'v0', 'v1'], 'nothing of the b/c pair in a');
  const vb0 = ipLink(b, 'vb0');
  const vc0 = ipLink(c, 'vc0');
  assert.equal(vb0.mtu, 1450);
  assert.equal(vc0.mtu, 1450);
  assert.equal(vb0.link_index, vc0.ifindex);
  assert.equal(vc0.link_index, vb0.ifindex);
  assert.deepEqual(nsids(b), [vb0.link_netnsid]);
  assert.deepEqual(nsids(c), [vc0.link_netnsid]);
});

test('bridge with STP, forward delay, ageing, multicast snooping, MTU; vlan_filtering as this kernel allows', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const vlanFiltering = kernelHas('CONFIG_BRIDGE_VLAN_FILTERING') === true;
  const link = await a.handle.linkAdd({
    kind: 'bridge',
    name: 'br0',
    stpState: 1,
    forwardDelay: 400,
    ageingTime: 20000,
    mcastSnooping: false,
    vlanFiltering: vlanFiltering ? true : undefined,
    mtu: 9000,
    mac: '02:00:00:00:b0:01',
    up: true,
  });
  const br = ipLink(a, 'br0');
  const d = br.linkinfo.info_data;
  assert.equal(br.linkinfo.info_kind, 'bridge');
  assert.equal(d.stp_state, 1);
  assert.equal(d.forward_delay, 400);
  assert.equal(d.ageing_time, 20000);
  assert.equal(d.mcast_snooping, 0);
  assert.equal(d.vlan_filtering, vlanFiltering ? 1 : 0);
  assert.equal(br.mtu, 9000);
  assert.equal(br.address, '02:00:00:00:b0:01');
  assert.ok(br.flags.includes('UP'));
  // Our decoding of the echo and of a get agree with ip.
  const expect = {
    stpState: d.stp_state,
    forwardDelay: d.forward_delay,
    ageingTime: d.ageing_time,
    vlanFiltering: d.vlan_filtering === 1,
  };
  assert.deepEqual(link?.bridge, expect);
  const got = await a.handle.linkGet('br0');
  assert.deepEqual(got.bridge, expect);
  assert.equal(got.kind, 'bridge');
  assert.equal(got.index, br.ifindex);
  assert.equal(got.mtu, 9000);
  assert.equal(got.up, true);

  // A bridge with every option left alone: kernel defaults, read the same both ways.
  await a.handle.linkAdd({ kind: 'bridge', name: 'br1' });
  const d1 = ipLink(a, 'br1').linkinfo.info_data;
  assert.equal(d1.stp_state, 0);
  assert.equal(d1.forward_delay, 1500);
  assert.equal(d1.ageing_time, 30000);
  assert.deepEqual((await a.handle.linkGet('br1')).bridge, {
    stpState: 0,
    forwardDelay: 1500,
    ageingTime: 30000,
    vlanFiltering: d1.vlan_filtering === 1,
  });

  if (!vlanFiltering) {
    // This kernel lacks CONFIG_BRIDGE_VLAN_FILTERING: turning it on is refused, typed, naming the option; nothing is left.
    await assert.rejects(
      a.handle.linkAdd({ kind: 'bridge', name: 'brv', stpState: 1, vlanFiltering: true }),
      (e: any) => {
        assert.ok(e instanceof CnmdError);
        assert.equal(e.code, 'KERNEL_FEATURE_MISSING');
        assert.equal(e.errno, 'EOPNOTSUPP');
        assert.equal(e.object, 'brv');
        assert.match(e.message, /CONFIG_BRIDGE_VLAN_FILTERING/);
        assert.match(e.message, /vlanFiltering/);
        return true;
      },
    );
    assert.deepEqual(ipNames(a), ['br0', 'br1', 'lo']);
  }
});

test('bridge created with vlanFiltering: false (the default state) works whether or not the kernel has CONFIG_BRIDGE_VLAN_FILTERING', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  // Asking for the state a new bridge has anyway must not depend on an optional kernel feature.
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0', vlanFiltering: false, stpState: 0 });
  assert.equal(ipLink(a, 'br0').linkinfo.info_data.vlan_filtering, 0);
  assert.equal((await a.handle.linkGet('br0')).bridge?.vlanFiltering, false);
});

test('vxlan (unicast remote) with every option an overlay needs, compared field by field', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'under0', up: true });
  await a.handle.addrAdd('under0', '192.0.2.10/24');
  const under = ipLink(a, 'under0');
  const echoed = await a.handle.linkAdd({
    kind: 'vxlan',
    name: 'vx0',
    vni: 4097,
    port: 4789,
    local: '192.0.2.10',
    group: '192.0.2.20',
    dev: 'under0',
    ttl: 32,
    tos: 1,
    learning: false,
    proxy: true,
    l2miss: true,
    l3miss: true,
    ageing: 600,
    limit: 1000,
    udpCsum: false,
    portRange: [40000, 50000],
    mtu: 1450,
    mac: '02:00:00:00:ee:01',
  });
  const vx = ipLink(a, 'vx0');
  const d = vx.linkinfo.info_data;
  assert.equal(vx.linkinfo.info_kind, 'vxlan');
  assert.equal(d.id, 4097);
  assert.equal(d.port, 4789);
  assert.equal(d.local, '192.0.2.10');
  assert.equal(d.remote, '192.0.2.20');
  assert.equal(d.group, undefined, 'a unicast peer is a remote, not a group');
  assert.equal(d.link, 'under0');
  assert.equal(d.ttl, 32);
  assert.equal(d.tos, '0x1');
  assert.equal(d.learning, false);
  assert.equal(d.proxy, true);
  assert.equal(d.l2miss, true);
  assert.equal(d.l3miss, true);
  assert.equal(d.ageing, 600);
  assert.equal(d.limit, 1000);
  assert.equal(d.udp_csum, false);
  assert.deepEqual(d.port_range, { low: 40000, high: 50000 });
  assert.equal(vx.mtu, 1450);
  assert.equal(vx.address, '02:00:00:00:ee:01');
  // Our decoding (echo and get) agrees with ip, field by field.
  const want = {
    vni: 4097,
    port: 4789,
    local: '192.0.2.10',
    group: '192.0.2.20',
    linkIndex: under.ifindex,
    ttl: 32,
    learning: false,
    proxy: true,
    l2miss: true,
    l3miss: true,
    ageing: 600,
    udpCsum: false,
  };
  assert.deepEqual(echoed?.vxlan, want);
  const got = await a.handle.linkGet('vx0');
  assert.deepEqual(got.vxlan, want);
  assert.equal(got.kind, 'vxlan');
  assert.equal(got.mtu, 1450);
});

test('vxlan on a multicast group, on IPv6, with GBP; bad vxlan input refused and nothing made', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'under0', up: true });
  await a.handle.addrAdd('under0', '192.0.2.10/24');
  await a.handle.addrAdd('under0', 'fd00:2::10/64', { nodad: true });
  await a.handle.linkAdd({
    kind: 'vxlan',
    name: 'vxm',
    vni: 100,
    group: '239.1.1.1',
    dev: 'under0',
    ttl: 5,
    port: 8472,
  });
  const m = ipLink(a, 'vxm').linkinfo.info_data;
  assert.equal(m.id, 100);
  assert.equal(m.group, '239.1.1.1');
  assert.equal(m.remote, undefined);
  assert.equal(m.link, 'under0');
  assert.equal(m.port, 8472);
  assert.equal(m.ttl, 5);
  assert.equal(m.learning, true, 'learning stays on unless turned off');
  assert.equal((await a.handle.linkGet('vxm')).vxlan?.group, '239.1.1.1');

  await a.handle.linkAdd({
    kind: 'vxlan',
    name: 'vx6',
    vni: 101,
    local: 'fd00:2::10',
    group: 'fd00:2::20',
    dev: 'under0',
    udp6ZeroCsumTx: true,
    udp6ZeroCsumRx: true,
    learning: false,
  });
  const v6 = ipLink(a, 'vx6');
  assert.equal(v6.linkinfo.info_data.local6, 'fd00:2::10');
  assert.equal(v6.linkinfo.info_data.remote6, 'fd00:2::20');
  assert.equal(v6.linkinfo.info_data.udp_zero_csum6_tx, true);
  assert.equal(v6.linkinfo.info_data.udp_zero_csum6_rx, true);
  assert.equal(v6.linkinfo.info_data.learning, false);
  assert.equal(v6.mtu, 1430, 'the kernel takes the IPv6 overhead off the underlay MTU');
  const g6 = await a.handle.linkGet('vx6');
  assert.equal(g6.vxlan?.local, 'fd00:2::10');
  assert.equal(g6.vxlan?.group, 'fd00:2::20');

  await a.handle.linkAdd({ kind: 'vxlan', name: 'vxg', vni: 102, gbp: true });
  assert.equal(ipLink(a, 'vxg').linkinfo.info_data.gbp, true);
  assert.equal(ipLink(a, 'vxg').linkinfo.info_data.port, 4789, 'the IANA port unless told otherwise');

  const before = ipNames(a);
  for (const [spec, msg] of [
    [{ kind: 'vxlan', name: 'vxbad', vni: 1 << 24 }, /VXLAN id 16777216 is outside/],
    [{ kind: 'vxlan', name: 'vxbad', vni: -1 }, /VXLAN id -1 is outside/],
    [{ kind: 'vxlan', name: 'vxbad', vni: 5, port: 0 }, /VXLAN port 0 is outside/],
    [{ kind: 'vxlan', name: 'vxbad', vni: 5, port: 65536 }, /VXLAN port 65536 is outside/],
    [
      { kind: 'vxlan', name: 'vxbad', vni: 5, group: '239.1.1.300' },
      /VXLAN group\/remote "239.1.1.300" is not an IP address/,
    ],
    [
      { kind: 'vxlan', name: 'vxbad', vni: 5, local: 'fd00::zz' },
      /VXLAN local address "fd00::zz" is not an IP address/,
    ],
  ] as const) {
    await assert.rejects(a.handle.linkAdd(spec as any), { code: 'INVALID_ARGUMENT', message: msg });
  }
  await assert.rejects(a.handle.linkAdd({ kind: 'vxlan', name: 'vxbad', vni: 5, dev: 'nope0' }), {
    code: 'NOT_FOUND',
  });
  assert.deepEqual(ipNames(a), before);
});

test('macvlan in each mode (bridge, private, vepa, passthru) on a veth parent', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  await a.handle.linkAdd({ kind: 'veth', name: 'parent0', up: true, peer: { name: 'p0', netns: b.path } });
  const parent = ipLink(a, 'parent0');
  // bridge, private and vepa can share a parent: make all three, then read each back.
  const shared = ['bridge', 'private', 'vepa'] as const;
  for (const [i, mode] of shared.entries()) {
    const link = await a.handle.linkAdd({
      kind: 'macvlan',
      name: `mv-${mode}`,
      parent: 'parent0',
      mode,
      mac: `02:00:00:00:c0:0${i}`,
      mtu: 1400,
      up: true,
    });
    assert.equal(link?.kind, 'macvlan');
    assert.equal(link?.macvlan?.mode, mode);
    assert.equal(link?.parentIndex, parent.ifindex);
  }
  for (const [i, mode] of shared.entries()) {
    const mv = ipLink(a, `mv-${mode}`);
    assert.equal(mv.linkinfo.info_kind, 'macvlan');
    assert.equal(mv.linkinfo.info_data.mode, mode);
    assert.equal(mv.link, 'parent0');
    assert.equal(mv.address, `02:00:00:00:c0:0${i}`);
    assert.equal(mv.mtu, 1400);
    assert.ok(mv.flags.includes('UP'));
    const got = await a.handle.linkGet(`mv-${mode}`);
    assert.equal(got.macvlan?.mode, mode);
    assert.equal(got.parentIndex, parent.ifindex);
  }
  // passthru takes the whole parent: the kernel refuses it while others are there.
  await assert.rejects(
    a.handle.linkAdd({ kind: 'macvlan', name: 'mv-pt', parent: 'parent0', mode: 'passthru' }),
    (e: any) => e instanceof CnmdError,
  );
  for (const mode of shared) await a.handle.linkDel(`mv-${mode}`);
  const pt = await a.handle.linkAdd({ kind: 'macvlan', name: 'mv-pt', parent: 'parent0', mode: 'passthru' });
  assert.equal(pt?.macvlan?.mode, 'passthru');
  const ptIp = ipLink(a, 'mv-pt');
  assert.equal(ptIp.linkinfo.info_data.mode, 'passthru');
  assert.equal(ptIp.link, 'parent0');
  assert.equal((await a.handle.linkGet('mv-pt')).parentIndex, parent.ifindex);
  // Bad modes and parents.
  await assert.rejects(
    a.handle.linkAdd({ kind: 'macvlan', name: 'mv-x', parent: 'parent0', mode: 'bogus' as never }),
    { code: 'INVALID_ARGUMENT', message: /macvlan mode "bogus" is not one of/ },
  );
  await assert.rejects(a.handle.linkAdd({ kind: 'macvlan', name: 'mv-y', parent: 'nope0' }), {
    code: 'NOT_FOUND',
  });
  assert.deepEqual(ipNames(a), ['lo', 'mv-pt', 'parent0']);
});

test('link set: up/down, master/nomaster, mtu, mac, alias, txqlen, name; each read back with ip', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0', up: true });
  await a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'v0p' } });
  const br = ipLink(a, 'br0');
  const idx = ipLink(a, 'v0').ifindex;

  await a.handle.linkSet('v0', { up: true });
  assert.ok(ipLink(a, 'v0').flags.includes('UP'));
  assert.equal((await a.handle.linkGet('v0')).up, true);
  await a.handle.linkSet('v0', { up: false });
  assert.ok(!ipLink(a, 'v0').flags.includes('UP'));
  assert.equal((await a.handle.linkGet('v0')).up, false);

  await a.handle.linkSet('v0', { master: 'br0' });
  let v0 = ipLink(a, 'v0');
  assert.equal(v0.master, 'br0');
  assert.equal(v0.linkinfo.info_slave_kind, 'bridge');
  let got = await a.handle.linkGet('v0');
  assert.equal(got.masterIndex, br.ifindex);
  assert.equal(got.slaveKind, 'bridge');
  await a.handle.linkSet('v0', { master: null });
  v0 = ipLink(a, 'v0');
  assert.equal(v0.master, undefined);
  assert.equal(v0.linkinfo.info_slave_kind, undefined);
  assert.equal((await a.handle.linkGet('v0')).masterIndex, undefined);
  // By index too.
  await a.handle.linkSet(idx, { master: br.ifindex });
  assert.equal(ipLink(a, 'v0').master, 'br0');
  await a.handle.linkSet(idx, { master: null });
  assert.equal(ipLink(a, 'v0').master, undefined);

  await a.handle.linkSet('v0', { mtu: 1300 });
  assert.equal(ipLink(a, 'v0').mtu, 1300);
  await a.handle.linkSet('v0', { mac: '02:AB:cd:00:00:01' });
  assert.equal(ipLink(a, 'v0').address, '02:ab:cd:00:00:01');
  await a.handle.linkSet('v0', { alias: 'cnmd test alias' });
  assert.equal(ipLink(a, 'v0').ifalias, 'cnmd test alias');
  assert.equal((await a.handle.linkGet('v0')).alias, 'cnmd test alias');
  await a.handle.linkSet('v0', { alias: '' });
  assert.equal(ipLink(a, 'v0').ifalias, undefined, 'an empty alias clears it');
  await a.handle.linkSet('v0', { txqlen: 321 });
  assert.equal(ipLink(a, 'v0').txqlen, 321);
  // IPv6 link-local generation: none, then eui64 (made when the link comes up).
  await a.handle.linkSet('v0p', { addrGenMode: 'none' });
  assert.equal(ipLink(a, 'v0p').inet6_addr_gen_mode, 'none');
  assert.equal((await a.handle.linkGet('v0p')).addrGenMode, 'none');
  await a.handle.linkSet('v0p', { up: true });
  await a.handle.linkSet('v0', { up: true });
  const ll = () =>
    a.ipj('-6', 'addr', 'show', 'dev', 'v0p')[0]?.addr_info.filter((x: any) => x.scope === 'link') ?? [];
  assert.deepEqual(ll(), [], 'no link-local with mode none');
  await a.handle.linkSet('v0p', { up: false });
  await a.handle.linkSet('v0p', { addrGenMode: 'eui64' });
  assert.equal(ipLink(a, 'v0p').inet6_addr_gen_mode, 'eui64');
  await a.handle.linkSet('v0p', { up: true });
  await eventually(() => assert.equal(ll().length, 1, 'a link-local address once up with eui64'));
  await a.handle.linkSet('v0p', { up: false });
  await a.handle.linkSet('v0', { up: false });
  await assert.rejects(a.handle.linkSet('v0p', { addrGenMode: 'bogus' as 'none' }), {
    code: 'INVALID_ARGUMENT',
  });

  // Bridge-port options as slave data, with other changes in the same request.
  await a.handle.linkSet('v0', { master: 'br0' });
  await a.handle.linkSet('v0', { alias: 'port', bridgePort: { hairpin: true, learning: false } });
  let port = ipLink(a, 'v0');
  assert.equal(port.ifalias, 'port');
  assert.equal(port.linkinfo.info_slave_data.hairpin, true);
  assert.equal(port.linkinfo.info_slave_data.learning, false);
  await a.handle.linkSet(idx, { bridgePort: { hairpin: false, learning: true } });
  port = ipLink(a, 'v0');
  assert.equal(port.linkinfo.info_slave_data.hairpin, false);
  assert.equal(port.linkinfo.info_slave_data.learning, true);
  await a.handle.linkSet('v0', { master: null });
  await assert.rejects(
    a.handle.linkSet('v0', { bridgePort: { hairpin: true } }),
    (e: CnmdError) => e instanceof CnmdError,
    'no bridge to take port options',
  );

  // Several changes in one request.
  await a.handle.linkSet('v0', {
    up: true,
    master: 'br0',
    mtu: 1280,
    mac: '02:11:22:33:44:55',
    alias: 'all at once',
  });
  v0 = ipLink(a, 'v0');
  assert.ok(v0.flags.includes('UP'));
  assert.equal(v0.master, 'br0');
  assert.equal(v0.mtu, 1280);
  assert.equal(v0.address, '02:11:22:33:44:55');
  assert.equal(v0.ifalias, 'all at once');

  // Renaming a link that is up: newer kernels allow it, older ones refuse typed (EBUSY).
  try {
    await a.handle.linkSet('v0', { name: 'upname0' });
    assert.equal(ipLink(a, 'upname0').ifindex, idx);
    await a.handle.linkSet('upname0', { name: 'v0' });
  } catch (e) {
    assert.ok(e instanceof CnmdError, String(e));
    assert.deepEqual([e.code, e.errno], ['CONFLICT', 'EBUSY']);
  }
  // Rename (down), by name and by index; the index stays.
  await a.handle.linkSet('v0', { up: false });
  await a.handle.linkSet('v0', { name: 'renamed0' });
  assert.equal(
    a.ipj('link').some((x: any) => x.ifname === 'v0'),
    false,
  );
  assert.equal(ipLink(a, 'renamed0').ifindex, idx);
  await a.handle.linkSet(idx, { name: 'renamed1', mtu: 1500 });
  const r1 = ipLink(a, 'renamed1');
  assert.equal(r1.ifindex, idx);
  assert.equal(r1.mtu, 1500);
  assert.equal(r1.master, 'br0', 'a rename keeps the rest');
  got = await a.handle.linkGet(idx);
  assert.equal(got.name, 'renamed1');
  assert.deepEqual(ipNames(a), ['br0', 'lo', 'renamed1', 'v0p']);
  // Renaming onto an existing name is refused.
  await assert.rejects(a.handle.linkSet('renamed1', { name: 'v0p' }), {
    code: 'ALREADY_EXISTS',
    errno: 'EEXIST',
  });
});

test('link set netns: move a link to another netns and back, by name and by index, with changes', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  await a.handle.linkAdd({
    kind: 'veth',
    name: 'v0',
    mac: '02:00:00:00:0e:01',
    mtu: 1400,
    peer: { name: 'v0p' },
  });
  await a.handle.linkSet('v0', { netns: b.path, up: true, mtu: 1280 });
  assert.deepEqual(ipNames(a), ['lo', 'v0p']);
  const moved = ipLink(b, 'v0');
  assert.equal(moved.address, '02:00:00:00:0e:01', 'the same device');
  assert.equal(moved.mtu, 1280);
  assert.ok(moved.flags.includes('UP'), 'brought up in its new netns');
  assert.equal(moved.link_index, ipLink(a, 'v0p').ifindex, 'still paired with v0p in a');
  assert.equal(ipLink(a, 'v0p').link_index, moved.ifindex);
  await assert.rejects(a.handle.linkGet('v0'), { code: 'NOT_FOUND' });
  assert.equal((await b.handle.linkGet('v0')).mac, '02:00:00:00:0e:01');
  // Back to a by index from b's handle, renamed on the way.
  await b.handle.linkSet(moved.ifindex, { netns: a.path, name: 'home0' });
  assert.deepEqual(ipNames(b), ['lo']);
  const home = ipLink(a, 'home0');
  assert.equal(home.address, '02:00:00:00:0e:01');
  assert.equal(home.link, 'v0p');
  // A bridge cannot leave its netns: the kernel says so, typed.
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  await assert.rejects(a.handle.linkSet('br0', { netns: b.path }), {
    code: 'INVALID_ARGUMENT',
    errno: 'EINVAL',
  });
  await assert.rejects(a.handle.linkSet('home0', { netns: '/nonexistent/netns/x' }), { code: 'NOT_FOUND' });
  assert.deepEqual(ipNames(a), ['br0', 'home0', 'lo', 'v0p']);
});

test('link created with an alias in another netns keeps its alias', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  await a.handle.linkAdd({ kind: 'veth', name: 'va', alias: 'here', peer: { name: 'va-p' } });
  assert.equal(ipLink(a, 'va').ifalias, 'here');
  // Same request, but the link is created in b: the alias must not be dropped silently.
  await a.handle.linkAdd({ kind: 'veth', name: 'vb', netns: b.path, alias: 'there', peer: { name: 'vb-p' } });
  assert.equal(ipLink(b, 'vb').ifalias, 'there');
});

test('veth created with its peer up: both ends come up', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  await a.handle.linkAdd({ kind: 'veth', name: 'v0', up: true, peer: { name: 'v1', up: true } });
  assert.ok(ipLink(a, 'v0').flags.includes('UP'));
  assert.ok(ipLink(a, 'v1').flags.includes('UP'));
  await a.handle.linkAdd({ kind: 'veth', name: 'v2', peer: { name: 'v3', up: true, netns: b.path } });
  assert.ok(ipLink(b, 'v3').flags.includes('UP'));
});

test('link add without the echo: resolves null, the link is made as asked (read back with ip), and errors still come typed', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  const r = await a.handle.linkAdd({
    kind: 'veth',
    name: 'eth0',
    index: 42,
    mtu: 1400,
    mac: '02:42:0a:00:00:07',
    up: true,
    peer: { name: 'vq0', netns: b.handle },
    echo: false,
  });
  assert.equal(r, null);
  const inA = ipLink(a, 'eth0');
  assert.equal(inA.ifindex, 42);
  assert.equal(inA.mtu, 1400);
  assert.equal(inA.address, '02:42:0a:00:00:07');
  assert.ok(inA.flags.includes('UP'));
  assert.equal(ipLink(b, 'vq0').link_index, 42, 'the peer in b names its other end');
  await assert.rejects(
    a.handle.linkAdd({ kind: 'veth', name: 'eth0', peer: { name: 'vq1' }, echo: false }),
    (e: unknown) => e instanceof CnmdError && e.code === 'ALREADY_EXISTS',
  );
  assert.ok(
    !a.ipj<{ ifname: string }[]>('link').some((x) => x.ifname === 'vq1'),
    'nothing made by the refused add',
  );
});

test("veth peer placed in another handle's netns (its fd kept open): there, up when asked, and a closed handle refuses", async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  // b's handle opened its netns fd once; each pair made from a puts its peer there.
  for (const i of [0, 1])
    await a.handle.linkAdd({
      kind: 'veth',
      name: `h${i}`,
      peer: { name: `p${i}`, netns: b.handle, up: i === 1 },
    });
  assert.deepEqual(
    b
      .ipj<{ ifname: string }[]>('link', 'show', 'type', 'veth')
      .map((x) => x.ifname)
      .sort(),
    ['p0', 'p1'],
  );
  assert.ok(ipLink(b, 'p1').flags.includes('UP'));
  assert.ok(!ipLink(b, 'p0').flags.includes('UP'));
  const c = await l.ns('c');
  const { Handle } = await import('../../src/netlink/handle');
  const h = Handle.at(c.path);
  h.ownNetnsFd();
  h.close();
  await assert.rejects(
    a.handle.linkAdd({ kind: 'veth', name: 'h2', peer: { name: 'p2', netns: h } }),
    (e: unknown) => e instanceof CnmdError && e.code === 'CLOSED',
  );
  assert.ok(!a.ipj<{ ifname: string }[]>('link').some((x) => x.ifname === 'h2'), 'nothing made');
});

test('get by name and by index, list (a multi-part dump of 300 links), delete by name and index', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0', mtu: 1400, mac: '02:00:00:00:b0:02', up: true });
  const br = ipLink(a, 'br0');
  const byName = await a.handle.linkGet('br0');
  const byIndex = await a.handle.linkGet(br.ifindex);
  assert.deepEqual(byName, byIndex);
  assert.equal(byName.index, br.ifindex);
  assert.equal(byName.name, 'br0');
  assert.equal(byName.kind, br.linkinfo.info_kind);
  assert.equal(byName.mtu, br.mtu);
  assert.equal(byName.mac, br.address);
  assert.equal(byName.broadcast, br.broadcast);
  assert.equal(byName.txqlen, br.txqlen);
  assert.equal(byName.operstate, br.operstate);
  assert.equal(byName.up, br.flags.includes('UP'));
  const lo = await a.handle.linkGet(1);
  assert.equal(lo.name, 'lo');
  assert.equal(lo.up, true);
  assert.equal(lo.mtu, 65536);

  // 150 veth pairs made at once (more than the request window), then one dump of them all.
  await Promise.all(
    Array.from({ length: 150 }, (_, i) =>
      a.handle.linkAdd({ kind: 'veth', name: `d${i}`, peer: { name: `d${i}p` } }),
    ),
  );
  const ours = await a.handle.linkList();
  const theirs = a.ipj('link');
  assert.equal(ours.length, 302);
  const key = (x: { index: number; name: string; mtu: number; mac?: string }) =>
    `${x.index} ${x.name} ${x.mtu} ${x.mac}`;
  assert.deepEqual(
    ours.map(key).sort(),
    theirs.map((x: any) => key({ index: x.ifindex, name: x.ifname, mtu: x.mtu, mac: x.address })).sort(),
  );
  // Each veth's peer index agrees with ip's.
  const ipByName = new Map(theirs.map((x: any) => [x.ifname, x]));
  for (const x of ours.filter((y) => y.kind === 'veth')) {
    const peerName = (ipByName.get(x.name) as any).link; // same netns: ip names the peer
    assert.equal(x.parentIndex, (ipByName.get(peerName) as any).ifindex, x.name);
  }

  // Delete: a veth by name takes its peer; by index; a bridge.
  await a.handle.linkDel('d0');
  assert.equal(
    a.ipj('link').some((x: any) => x.ifname === 'd0' || x.ifname === 'd0p'),
    false,
  );
  const d1p = ipLink(a, 'd1p').ifindex;
  await a.handle.linkDel(d1p);
  assert.equal(
    a.ipj('link').some((x: any) => x.ifname === 'd1' || x.ifname === 'd1p'),
    false,
  );
  await Promise.all(Array.from({ length: 148 }, (_, i) => a.handle.linkDel(`d${i + 2}`)));
  await a.handle.linkDel('br0');
  assert.deepEqual(ipNames(a), ['lo']);
  assert.deepEqual(
    (await a.handle.linkList()).map((x) => x.name),
    ['lo'],
  );
  await assert.rejects(a.handle.linkDel('br0'), { code: 'NOT_FOUND' });
  await assert.rejects(a.handle.linkGet('br0'), { code: 'NOT_FOUND' });
  await assert.rejects(a.handle.linkGet(br.ifindex), { code: 'NOT_FOUND' });
});

test('ipvlan (l2, l3), 802.1Q/802.1ad vlan and dummy: a typed KERNEL_FEATURE_MISSING naming the CONFIG_ option where the kernel lacks them, nothing created', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  await a.handle.linkAdd({ kind: 'veth', name: 'eth0', up: true, peer: { name: 'eth0p', netns: b.path } });
  const cases = [
    {
      spec: { kind: 'ipvlan' as const, name: 'ipv0', parent: 'eth0', mode: 'l2' as const },
      kconfig: 'CONFIG_IPVLAN',
      check: (x: any) => assert.equal(x.linkinfo.info_data.mode, 'l2'),
    },
    {
      spec: { kind: 'ipvlan' as const, name: 'ipv1', parent: 'eth0', mode: 'l3' as const },
      kconfig: 'CONFIG_IPVLAN',
      check: (x: any) => assert.equal(x.linkinfo.info_data.mode, 'l3'),
    },
    {
      spec: { kind: 'vlan' as const, name: 'eth0.10', parent: 'eth0', id: 10 },
      kconfig: 'CONFIG_VLAN_8021Q',
      check: (x: any) => assert.equal(x.linkinfo.info_data.id, 10),
    },
    {
      spec: { kind: 'vlan' as const, name: 'eth0.20', parent: 'eth0', id: 20, protocol: '802.1ad' as const },
      kconfig: 'CONFIG_VLAN_8021Q',
      check: (x: any) =>
        assert.deepEqual([x.linkinfo.info_data.id, x.linkinfo.info_data.protocol], [20, '802.1ad']),
    },
    {
      spec: { kind: 'dummy' as const, name: 'dm0' },
      kconfig: 'CONFIG_DUMMY',
      check: (x: any) => assert.equal(x.linkinfo.info_kind, 'dummy'),
    },
  ];
  for (const c of cases) {
    const before = a.ipj('link').map((x: any) => `${x.ifindex}:${x.ifname}`);
    const has = kernelHas(c.kconfig);
    if (has === true) {
      // A kernel with the feature (the kernel lane): it is made and reads back.
      await a.handle.linkAdd(c.spec);
      const x = ipLink(a, c.spec.name);
      assert.equal(x.linkinfo.info_kind, c.spec.kind);
      c.check(x);
      await a.handle.linkDel(c.spec.name);
      continue;
    }
    await assert.rejects(a.handle.linkAdd(c.spec), (e: any) => {
      assert.ok(e instanceof CnmdError, String(e));
      assert.equal(e.code, 'KERNEL_FEATURE_MISSING');
      assert.equal(e.op, 'link add');
      assert.equal(e.object, c.spec.name);
      assert.equal(e.errno, 'EOPNOTSUPP');
      assert.equal(e.details.kconfig, c.kconfig);
      assert.match(e.message, new RegExp(`lacks the "${c.spec.kind}" link type \\(${c.kconfig}\\)`));
      assert.match(e.message, /Unknown device type/);
      return true;
    });
    assert.deepEqual(
      a.ipj('link').map((x: any) => `${x.ifindex}:${x.ifname}`),
      before,
      `nothing made for ${c.spec.name}`,
    );
  }
  // Bad input for these kinds is caught before the kernel's answer matters.
  await assert.rejects(a.handle.linkAdd({ kind: 'vlan', name: 'eth0.5000', parent: 'eth0', id: 5000 }), {
    code: 'INVALID_ARGUMENT',
    message: /VLAN id 5000 is outside 0..4094/,
  });
  await assert.rejects(
    a.handle.linkAdd({ kind: 'ipvlan', name: 'ipv9', parent: 'eth0', mode: 'l9' as never }),
    { code: 'INVALID_ARGUMENT', message: /ipvlan mode "l9"/ },
  );
  await assert.rejects(a.handle.linkAdd({ kind: 'ipvlan', name: 'ipv9', parent: 'nope0', mode: 'l2' }), {
    code: 'NOT_FOUND',
  });
  assert.deepEqual(ipNames(a), ['eth0', 'lo']);
});
