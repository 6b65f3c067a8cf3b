// Runs inside Debian's kernel under qemu (the kernel lane): the ipvlan driver
// in every mode and flag, 802.1Q parents made and removed by cnmd, VLAN
// isolation and the dummy isolated parent, through a cnmd daemon's API, with
// real traffic and `ip -d link` read back. This machine's own kernel lacks
// IPVLAN, VLAN_8021Q and DUMMY.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, lab, Lab, Ns, runIn } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { ping, roundTrip, serve } from '../lib/probe';
import * as path from 'node:path';
import { dhcpServer } from '../lib/dhcp-server';

async function ok(d: RunningDaemon, method: string, p: string, body?: unknown): Promise<any> {
  const r = await d.request(method, p, body);
  assert.ok(r.status < 300, `${method} ${p} -> ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function sandbox(d: RunningDaemon, name: string, network: string) {
  await ok(d, 'POST', '/sandboxes', { Name: name, Networks: [{ Network: network }] });
  return ok(d, 'GET', `/sandboxes/${name}`);
}

const ipOf = (sb: any, net: string): string => sb.Networks[net].IPAddress;
const sbLink = (sb: any) => JSON.parse(runIn(sb.SandboxKey, 'ip', ['-j', '-d', 'link', 'show', 'eth0']))[0];

/** A veth `name` in the host netns (up), its peer up in `ext`, with extIp on it. */
async function lan(l: Lab, d: RunningDaemon, name: string, extIp?: string): Promise<Ns> {
  const ext = await l.ns(`ext-${name}`);
  d.host.run('ip', ['link', 'add', name, 'type', 'veth', 'peer', 'name', 'uplink']);
  d.host.run('ip', ['link', 'set', 'uplink', 'netns', ext.path]);
  d.host.run('ip', ['link', 'set', name, 'up']);
  ext.run('ip', ['link', 'set', 'uplink', 'up']);
  if (extIp) ext.run('ip', ['addr', 'add', extIp, 'dev', 'uplink']);
  return ext;
}

test('ipvlan: l2, l3 and l3s with each flag, read back with ip -d link, siblings as the flag says', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l, { readyMs: 120_000 });
  let n = 0;
  for (const mode of ['l2', 'l3', 'l3s']) {
    for (const flag of ['bridge', 'private', 'vepa']) {
      n++;
      const parent = `p${n}`;
      const sub = `10.90.${n}`;
      const ext = await lan(l, d, parent, `${sub}.200/24`);
      const name = `${mode}-${flag}`;
      await ok(d, 'POST', '/networks/create', {
        Name: name,
        Driver: 'ipvlan',
        Options: { parent, ipvlan_mode: mode, ipvlan_flag: flag },
        IPAM: { Config: [{ Subnet: `${sub}.0/24`, ...(mode === 'l2' ? { Gateway: `${sub}.200` } : {}) }] },
      });
      const a = await sandbox(d, `a${n}`, name);
      const b = await sandbox(d, `b${n}`, name);
      const link = sbLink(a);
      assert.equal(link.linkinfo.info_kind, 'ipvlan', name);
      assert.equal(link.linkinfo.info_data.mode, mode, name);
      const flagText = JSON.stringify(link.linkinfo.info_data);
      assert.match(flagText, new RegExp(flag), `${name}: ${flagText}`);
      // Every ipvlan child has its parent's MAC.
      assert.equal(link.address, d.host.ipj('link', 'show', parent)[0].address, name);
      const routes = JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', 'route']));
      const dflt = routes.find((r: any) => r.dst === 'default');
      if (mode === 'l2') assert.equal(dflt?.gateway, `${sub}.200`, `${name}: ${JSON.stringify(routes)}`);
      else {
        // Routed: no gateway; the default route is the device.
        assert.ok(dflt && !dflt.gateway && dflt.dev === 'eth0', `${name}: ${JSON.stringify(routes)}`);
        assert.equal(a.Networks[name].Gateway, '', `${name} has no gateway`);
      }
      const siblings = ping(a.SandboxKey, ipOf(b, name), flag === 'bridge' ? 1 : 2);
      assert.equal(siblings, flag === 'bridge', `${name}: siblings ${siblings ? 'talk' : 'do not talk'}`);
      if (mode === 'l2') {
        // The LAN reaches the sandbox at its own address; the server there sees the sandbox's address.
        await serve(t, ext.path, 'tcp', 7100);
        assert.equal(roundTrip(a.SandboxKey, 'tcp', `${sub}.200`, 7100).seenFrom, ipOf(a, name), name);
      }
    }
  }
});

test('802.1Q parents: made when missing, isolated from each other, removed only with the last network and only if cnmd made them', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l, { readyMs: 120_000 });
  // A switch (a plain bridge: tagged frames pass as they are) joins lan0 and one station per VLAN,
  // each in a netns of its own, so each answers on its VLAN only.
  const sw = await l.ns('switch');
  sw.run('ip', ['link', 'add', 'br0', 'type', 'bridge']);
  sw.run('ip', ['link', 'set', 'br0', 'up']);
  d.host.run('ip', ['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'p0']);
  d.host.run('ip', ['link', 'set', 'p0', 'netns', sw.path]);
  d.host.run('ip', ['link', 'set', 'lan0', 'up']);
  sw.run('ip', ['link', 'set', 'p0', 'master', 'br0', 'up']);
  for (const [id, ip] of [
    [10, '192.168.80.200/24'],
    [20, '192.168.80.201/24'],
  ] as const) {
    const st = await l.ns(`station${id}`);
    sw.run('ip', ['link', 'add', `p${id}`, 'type', 'veth', 'peer', 'name', 'e0']);
    sw.run('ip', ['link', 'set', 'e0', 'netns', st.path]);
    sw.run('ip', ['link', 'set', `p${id}`, 'master', 'br0', 'up']);
    st.run('ip', ['link', 'set', 'e0', 'up']);
    st.run('ip', ['link', 'add', `e0.${id}`, 'link', 'e0', 'type', 'vlan', 'id', String(id)]);
    st.run('ip', ['link', 'set', `e0.${id}`, 'up']);
    st.run('ip', ['addr', 'add', ip, 'dev', `e0.${id}`]);
  }
  const net = (name: string, parent: string, driver = 'macvlan') =>
    ok(d, 'POST', '/networks/create', {
      Name: name,
      Driver: driver,
      Options: { parent },
      IPAM: { Config: [{ Subnet: '192.168.80.0/24' }] },
    });
  // The same subnet on both VLANs: isolated by the tag, not the addresses.
  await net('v10', 'lan0.10');
  await net('v20', 'lan0.20', 'ipvlan');
  for (const [name, id] of [
    ['lan0.10', 10],
    ['lan0.20', 20],
  ] as const) {
    const [v] = d.host.ipj('-d', 'link', 'show', name);
    assert.equal(v.linkinfo.info_kind, 'vlan');
    assert.equal(v.linkinfo.info_data.id, id);
    assert.equal(v.linkinfo.info_data.protocol, '802.1Q');
    assert.equal(v.link, 'lan0');
    assert.equal(v.ifalias, 'cnmd:lan:vlan');
  }
  const a = await sandbox(d, 'a', 'v10');
  const b = await sandbox(d, 'b', 'v20');
  assert.equal(ipOf(a, 'v10'), ipOf(b, 'v20'), 'the same address on two VLANs');
  assert.ok(ping(a.SandboxKey, '192.168.80.200'), 'VLAN 10 reaches the LAN on VLAN 10');
  assert.ok(ping(b.SandboxKey, '192.168.80.201'), 'VLAN 20 reaches the LAN on VLAN 20');
  assert.ok(!ping(a.SandboxKey, '192.168.80.201', 2), 'VLAN 10 does not reach VLAN 20');
  assert.ok(!ping(b.SandboxKey, '192.168.80.200', 2), 'VLAN 20 does not reach VLAN 10');
  // A second network on lan0.10 shares the sub-interface; it goes with the last of them.
  await ok(d, 'POST', '/networks/create', {
    Name: 'v10b',
    Driver: 'macvlan',
    Options: { parent: 'lan0.10' },
    IPAM: { Config: [{ Subnet: '192.168.81.0/24' }] },
  });
  await ok(d, 'DELETE', '/sandboxes/a');
  await ok(d, 'DELETE', '/sandboxes/b');
  await ok(d, 'DELETE', '/networks/v10');
  assert.equal(d.host.ipj('link', 'show', 'lan0.10').length, 1, 'lan0.10 stays while v10b uses it');
  await ok(d, 'DELETE', '/networks/v10b');
  await ok(d, 'DELETE', '/networks/v20');
  await eventually(() =>
    assert.deepEqual(
      d.host.ipj('link', 'show', 'type', 'vlan').map((x: any) => x.ifname),
      [],
    ),
  );
  // A sub-interface the user made is used, and never removed.
  d.host.run('ip', ['link', 'add', 'lan0.30', 'link', 'lan0', 'type', 'vlan', 'id', '30']);
  d.host.run('ip', ['link', 'set', 'lan0.30', 'up']);
  await net('v30', 'lan0.30');
  await ok(d, 'DELETE', '/networks/v30');
  assert.equal(d.host.ipj('link', 'show', 'lan0.30').length, 1, "the user's lan0.30 stays");
});

test('no parent: the isolated parent is a dummy dm-<id>, as Docker makes it', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l, { readyMs: 120_000 });
  for (const driver of ['macvlan', 'ipvlan']) {
    const net = await ok(d, 'POST', '/networks/create', {
      Name: driver,
      Driver: driver,
      IPAM: { Config: [{ Subnet: driver === 'macvlan' ? '10.91.0.0/24' : '10.92.0.0/24' }] },
    });
    const [dm] = d.host.ipj('-d', 'link', 'show', `dm-${net.Id.slice(0, 12)}`);
    assert.equal(dm.linkinfo.info_kind, 'dummy');
    const a = await sandbox(d, `a-${driver}`, driver);
    const b = await sandbox(d, `b-${driver}`, driver);
    assert.ok(ping(a.SandboxKey, ipOf(b, driver)), `${driver}: siblings on the isolated parent talk`);
  }
});

test('ipvlan host access: the host reaches its l2 sandboxes through an ipvlan shim', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l, { readyMs: 120_000 });
  await lan(l, d, 'lan0', '192.168.82.200/24');
  const net = await ok(d, 'POST', '/networks/create', {
    Name: 'ha',
    Driver: 'ipvlan',
    Options: { parent: 'lan0', 'cnmd.ipvlan.host_access': 'true' },
    IPAM: { Config: [{ Subnet: '192.168.82.0/24', AuxiliaryAddresses: { host: '192.168.82.250' } }] },
  });
  const [shim] = d.host.ipj('-d', 'link', 'show', `cnh-${net.Id.slice(0, 11)}`);
  assert.equal(shim.linkinfo.info_kind, 'ipvlan');
  const a = await sandbox(d, 'a', 'ha');
  await serve(t, a.SandboxKey, 'tcp', 7000);
  assert.equal(roundTrip(d.host.path, 'tcp', ipOf(a, 'ha'), 7000).seenFrom, '192.168.82.250');
});

test('ipvlan l2 with --ipam-driver dhcp: children sharing the parent MAC get their own leases by client id', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l, { readyMs: 120_000 });
  const ext = await lan(l, d, 'dh0', '10.93.0.1/24');
  const server = await dhcpServer(t, ext, path.join(l.root, 'dnsmasq'), {
    iface: 'uplink',
    range: ['10.93.0.100', '10.93.0.150'],
    router: '10.93.0.1',
    t1: 3,
  });
  await ok(d, 'POST', '/networks/create', {
    Name: 'dh',
    Driver: 'ipvlan',
    Options: { parent: 'dh0' },
    IPAM: { Driver: 'dhcp' },
  });
  const a = await sandbox(d, 'a', 'dh');
  const b = await sandbox(d, 'b', 'dh');
  const parentMac = d.host.ipj('link', 'show', 'dh0')[0].address;
  assert.equal(sbLink(a).address, parentMac);
  assert.equal(sbLink(b).address, parentMac);
  assert.notEqual(ipOf(a, 'dh'), ipOf(b, 'dh'));
  // The server's account: two leases on one MAC, one per client id (cnmd:<endpoint id>).
  const clientId = (sb: any) =>
    ['00', ...Buffer.from(`cnmd:${sb.Networks.dh.EndpointID}`).toString('hex').match(/../g)!].join(':');
  for (const sb of [a, b])
    assert.ok(
      server
        .leases()
        .some((x) => x.ip === ipOf(sb, 'dh') && x.mac === parentMac && x.clientId === clientId(sb)),
      JSON.stringify(server.leases()),
    );
  assert.equal(a.Networks.dh.Gateway, '10.93.0.1');
  assert.ok(ping(ext.path, ipOf(a, 'dh')), 'LAN -> a');
  assert.ok(ping(ext.path, ipOf(b, 'dh')), 'LAN -> b');
  // Renewals reach each child by its address (unicast) and are acknowledged.
  const acks = (ip: string) =>
    server
      .log()
      .split('\n')
      .filter((x) => x.includes('DHCPACK') && x.includes(ip)).length;
  const before = acks(ipOf(a, 'dh'));
  await eventually(() => assert.ok(acks(ipOf(a, 'dh')) > before, 'a renewal of a'), 15_000);
  await ok(d, 'DELETE', '/sandboxes/a');
  await eventually(
    () =>
      assert.ok(
        !server.leases().some((x) => x.ip === ipOf(a, 'dh')),
        `a's lease is gone; the server's log:\n${server.log().split('\n').slice(-15).join('\n')}\n${d
          .logs()
          .split('\n')
          .filter((x) => /dhcp/.test(x))
          .slice(-5)
          .join('\n')}`,
      ),
    10_000,
  );
  assert.ok(
    server.leases().some((x) => x.ip === ipOf(b, 'dh')),
    'b keeps its lease',
  );
});
