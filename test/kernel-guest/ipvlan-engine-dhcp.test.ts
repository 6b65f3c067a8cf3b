// Runs inside Debian's kernel under qemu (the kernel lane; this machine's
// kernel lacks IPVLAN): cnmd-ipvlan with cnmd-ipam's dhcp mode through the
// plugin sockets, the test doing what the engine does (it moves the link into
// a netns of its own, names and addresses it), against dnsmasq. ipvlan
// children share the parent's MAC: the probe's leases and the containers'
// renewals are told apart by their client ids.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { ping } from '../lib/probe';
import { dhcpLan } from '../lib/dhcp-server';
import { pluginOk } from '../lib/plugin-call';

const SUBNET = '10.94.0';
const NET = 'd'.repeat(64);

test('cnmd-ipvlan l2 with cnmd-ipam dhcp mode: a lease per endpoint on the parent MAC, renewed from the container, released', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l, { readyMs: 120_000 });
  const server = await dhcpLan(t, l, d.host, SUBNET, { t1: 3 });
  const ipam = `${d.pluginDir}/cnmd-ipam.sock`;
  const ipvlan = `${d.pluginDir}/cnmd-ipvlan.sock`;
  const pool = await pluginOk(ipam, 'IpamDriver.RequestPool', {
    Options: { 'cnmd.ipam.mode': 'dhcp', 'cnmd.dhcp.timeout': '20' },
  });
  await pluginOk(ipvlan, 'NetworkDriver.CreateNetwork', {
    NetworkID: NET,
    Options: { 'com.docker.network.generic': { parent: 'lan0', ipvlan_mode: 'l2' } },
    IPv4Data: [{ Pool: pool.Pool, Gateway: pool.Data['com.docker.network.gateway'] }],
  });
  const parentMac = d.host.ipj('link', 'show', 'lan0')[0].address;
  // Two containers, as the engine makes them: address, endpoint, join, then the link moved in and configured.
  const containers = [];
  for (const name of ['c1', 'c2']) {
    const id = name.repeat(32);
    const address = (await pluginOk(ipam, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID })).Address;
    const ep = await pluginOk(ipvlan, 'NetworkDriver.CreateEndpoint', {
      NetworkID: NET,
      EndpointID: id,
      Interface: { Address: address, MacAddress: '' },
    });
    assert.equal(ep.Interface, null, 'ipvlan: the MAC is the parent’s, none to fill');
    const ns = await l.ns(name);
    const join = await pluginOk(ipvlan, 'NetworkDriver.Join', {
      NetworkID: NET,
      EndpointID: id,
      SandboxKey: ns.path,
    });
    assert.equal(join.Gateway, `${SUBNET}.1`, "the lease's router");
    d.host.run('ip', ['link', 'set', join.InterfaceName.SrcName, 'netns', ns.path]);
    ns.run('ip', ['link', 'set', join.InterfaceName.SrcName, 'name', 'eth0']);
    ns.run('ip', ['addr', 'add', address, 'dev', 'eth0']);
    ns.run('ip', ['link', 'set', 'eth0', 'up']);
    ns.run('ip', ['route', 'add', 'default', 'via', join.Gateway]);
    containers.push({ id, ns, ip: address.split('/')[0] });
  }
  const [c1, c2] = containers;
  assert.notEqual(c1.ip, c2.ip);
  const clientIds = new Set<string>();
  for (const c of containers) {
    const lease = server.leases().find((x) => x.ip === c.ip);
    assert.ok(lease, JSON.stringify(server.leases()));
    assert.equal(lease.mac, parentMac, "an ipvlan child's MAC is its parent's");
    assert.match(lease.clientId, /^00:63:6e:6d:64:3a/);
    clientIds.add(lease.clientId);
  }
  assert.equal(clientIds.size, 2, 'one client id per endpoint');
  assert.ok(ping(server.ns.path, c1.ip), 'LAN -> c1');
  // Renewed from c1's own interface (T1 3 s): more ACKs for its address.
  const acks = (ip: string) =>
    server
      .log()
      .split('\n')
      .filter((x) => x.includes('DHCPACK') && x.includes(ip)).length;
  const before = acks(c1.ip);
  await eventually(() => assert.ok(acks(c1.ip) > before, 'a renewal of c1'), 30_000);
  // c1 goes as the engine takes it down: leave, its netns gone, delete, release.
  await pluginOk(ipvlan, 'NetworkDriver.Leave', { NetworkID: NET, EndpointID: c1.id });
  c1.ns.run('ip', ['link', 'del', 'eth0']);
  await pluginOk(ipvlan, 'NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: c1.id });
  await pluginOk(ipam, 'IpamDriver.ReleaseAddress', { PoolID: pool.PoolID, Address: c1.ip });
  await eventually(
    () => assert.ok(!server.leases().some((x) => x.ip === c1.ip), JSON.stringify(server.leases())),
    20_000,
  );
  assert.ok(
    server.leases().some((x) => x.ip === c2.ip),
    'c2 keeps its lease',
  );
  await pluginOk(ipvlan, 'NetworkDriver.Leave', { NetworkID: NET, EndpointID: c2.id });
  c2.ns.run('ip', ['link', 'del', 'eth0']);
  await pluginOk(ipvlan, 'NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: c2.id });
  await pluginOk(ipam, 'IpamDriver.ReleaseAddress', { PoolID: pool.PoolID, Address: c2.ip });
  await eventually(() => assert.deepEqual(server.leases(), []), 20_000);
  await pluginOk(ipvlan, 'NetworkDriver.DeleteNetwork', { NetworkID: NET });
  await pluginOk(ipam, 'IpamDriver.ReleasePool', { PoolID: pool.PoolID });
});
