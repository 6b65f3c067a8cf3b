// cnmd's plugin sockets spoken to as the Docker engine speaks to them: the
// engine's call order (IPAM pool and gateway, CreateNetwork, CreateEndpoint,
// Join, ProgramExternalConnectivity, Leave, DeleteEndpoint, DeleteNetwork),
// with the engine's own part done here (move SrcName into a container netns,
// rename, address, route), proven with ip -j, iptables-save and packets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';
import { eventually, lab, Lab, Ns, runIn } from '../lib/fixture';
import { CNMCTL, RunningDaemon, restartDaemon, startDaemon } from '../lib/daemon';
import { HOST_IP, OUTSIDE_IP, uplink } from '../lib/uplink';
import { ping, roundTrip, serve } from '../lib/probe';
import { assertInvariants, readStore } from '../lib/invariants';

import { pluginCall as call, pluginOk as ok } from '../lib/plugin-call';

/** iptables-save and ip6tables-save of the daemon's netns. */
function save(d: RunningDaemon): string {
  return ['iptables-save', 'ip6tables-save'].map((c) => d.host.run(c, [])).join('\n');
}

async function setup(t: TestContext) {
  const l: Lab = await lab(t);
  const d = await startDaemon(t, l);
  const bridgeSock = path.join(d.pluginDir, 'cnmd-bridge.sock');
  const ipamSock = path.join(d.pluginDir, 'cnmd-ipam.sock');
  return { l, d, bridgeSock, ipamSock };
}

const NET_ID = 'a1'.repeat(32);
const epId = (n: number) => `e${n}`.padEnd(64, '0');

/** What the engine does after Join: the interface into its sandbox, renamed, addressed, routed. */
async function engineSide(host: Ns, box: Ns, srcName: string, ifname: string, cidr: string, gateway: string) {
  await host.handle.linkSet(srcName, { netns: box.path });
  await box.handle.linkSet(srcName, { name: ifname });
  await box.handle.addrAdd(ifname, cidr);
  await box.handle.linkSet(ifname, { up: true });
  await box.handle.routeAdd({ gateway, dev: ifname });
}

/** IPAM pool + gateway + network, as `docker network create -d cnmd-bridge --ipam-driver cnmd-ipam --subnet` does. */
async function createNetwork(
  bridgeSock: string,
  ipamSock: string,
  subnet: string,
  generic: Record<string, string> = {},
) {
  const caps = await ok(ipamSock, 'IpamDriver.GetCapabilities');
  assert.equal(caps.RequiresMACAddress, false);
  const spaces = await ok(ipamSock, 'IpamDriver.GetDefaultAddressSpaces');
  assert.equal(spaces.LocalDefaultAddressSpace, 'LocalDefault');
  const pool = await ok(ipamSock, 'IpamDriver.RequestPool', {
    AddressSpace: 'LocalDefault',
    Pool: subnet,
    SubPool: '',
    Options: {},
    V6: false,
  });
  assert.equal(pool.Pool, subnet);
  const gw = await ok(ipamSock, 'IpamDriver.RequestAddress', {
    PoolID: pool.PoolID,
    Address: '',
    Options: { RequestAddressType: 'com.docker.network.gateway' },
  });
  assert.equal(gw.Address, subnet.replace(/0\/(\d+)$/, '1/$1'));
  await ok(bridgeSock, 'NetworkDriver.GetCapabilities');
  await ok(bridgeSock, 'NetworkDriver.CreateNetwork', {
    NetworkID: NET_ID,
    Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': generic },
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: subnet, Gateway: gw.Address, AuxAddresses: {} }],
    IPv6Data: [],
  });
  return { poolId: pool.PoolID as string, gateway: (gw.Address as string).split('/')[0] };
}

async function endpoint(ipamSock: string, bridgeSock: string, poolId: string, n: number) {
  const a = await ok(ipamSock, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: {} });
  const created = await ok(bridgeSock, 'NetworkDriver.CreateEndpoint', {
    NetworkID: NET_ID,
    EndpointID: epId(n),
    Interface: { Address: a.Address, AddressIPv6: '', MacAddress: '' },
    Options: {},
  });
  return { address: a.Address as string, mac: created.Interface?.MacAddress as string };
}

test('plugin sockets: Activate on each; the engine call order makes a bridge, veths it can move, ports, and undoes all of it', async (t) => {
  const { l, d, bridgeSock, ipamSock } = await setup(t);
  assert.deepEqual((await ok(bridgeSock, 'Plugin.Activate')).Implements, ['NetworkDriver']);
  assert.deepEqual((await ok(ipamSock, 'Plugin.Activate')).Implements, ['IpamDriver']);
  assert.deepEqual(await ok(bridgeSock, 'NetworkDriver.GetCapabilities'), {
    Scope: 'local',
    ConnectivityScope: 'local',
  });

  const { poolId, gateway } = await createNetwork(bridgeSock, ipamSock, '10.77.0.0/24', {
    'com.docker.network.bridge.name': 'brplug0',
  });
  const br = d.host.ipj('-d', 'link', 'show', 'brplug0')[0];
  assert.equal(br.linkinfo.info_kind, 'bridge', '-o com.docker.network.bridge.name reached the driver');
  assert.ok(
    d.host
      .ipj('addr', 'show', 'brplug0')[0]
      .addr_info.some((a: any) => a.local === '10.77.0.1' && a.prefixlen === 24),
  );

  const boxes: Ns[] = [];
  const eps: { address: string; mac: string }[] = [];
  for (const n of [1, 2]) {
    const ep = await endpoint(ipamSock, bridgeSock, poolId, n);
    assert.match(
      ep.mac,
      /^02:42:0a:4d:00:0[23]$/,
      'the MAC the driver filled (the engine gave none), derived from the IPv4 address',
    );
    const join = await ok(bridgeSock, 'NetworkDriver.Join', {
      NetworkID: NET_ID,
      EndpointID: epId(n),
      SandboxKey: `/var/run/docker/netns/box${n}`,
      Options: {},
    });
    assert.equal(join.Gateway, gateway, 'Join returns the gateway: the engine adds no docker_gwbridge');
    assert.equal(join.InterfaceName.DstPrefix, 'eth');
    const src = d.host.ipj('-d', 'link', 'show', join.InterfaceName.SrcName)[0];
    assert.equal(
      src.linkinfo.info_kind,
      'veth',
      'SrcName is a veth left in the daemon netns for the engine to move',
    );
    assert.equal(src.address, ep.mac);
    const hostSide = d.host
      .ipj('link', 'show', 'master', 'brplug0')
      .find((x: any) => x.ifname.startsWith('veth'));
    assert.ok(hostSide, 'its peer is a port of the bridge');
    const box = await l.ns(`box${n}`);
    await engineSide(d.host, box, join.InterfaceName.SrcName, 'eth0', ep.address, gateway);
    boxes.push(box);
    eps.push(ep);
  }
  assert.ok(
    ping(boxes[0].path, eps[1].address.split('/')[0]),
    'container 1 reaches container 2 over the plugin-made bridge',
  );

  // Published ports through the port-publishing code: the engine's -p 8080:80.
  const outside = await l.ns('outside');
  await uplink(d.host, outside);
  const portmap = [
    { Proto: 6, IP: eps[0].address.split('/')[0], Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 },
  ];
  await ok(bridgeSock, 'NetworkDriver.ProgramExternalConnectivity', {
    NetworkID: NET_ID,
    EndpointID: epId(1),
    Options: {
      'com.docker.network.portmap': portmap,
      'com.docker.network.endpoint.exposedports': [{ Proto: 6, Port: 80 }],
    },
  });
  await serve(t, boxes[0].path, 'tcp', 80);
  const rt = roundTrip(outside.path, 'tcp', HOST_IP, 8080);
  assert.ok(rt.ok, 'outside -> host:8080 -> container:80');
  assert.equal(rt.seenFrom, OUTSIDE_IP);
  assert.ok(
    roundTrip(d.host.path, 'tcp', '127.0.0.1', 8080).ok,
    'from the host itself (loopback, through the proxy)',
  );
  const info = await ok(bridgeSock, 'NetworkDriver.EndpointOperInfo', {
    NetworkID: NET_ID,
    EndpointID: epId(1),
  });
  assert.equal(info.Value['com.docker.network.endpoint.macaddress'], eps[0].mac);
  assert.equal(info.Value['com.docker.network.portmap'][0].HostPort, 8080);

  // cnmctl shows the engine's network (named by its id prefix) and refuses to remove it.
  const ls = execFileSync(process.execPath, [CNMCTL, '-H', d.hostUri, 'network', 'ls'], { encoding: 'utf8' });
  assert.match(ls, new RegExp(`^${NET_ID.slice(0, 12)}\\s+${NET_ID.slice(0, 12)}\\s+bridge\\s+local$`, 'm'));
  const rm = await d.request('DELETE', `/networks/${NET_ID.slice(0, 12)}`);
  assert.equal(rm.status, 403);
  assert.match(rm.body.message, /docker network rm/);
  const inspect = (await d.request('GET', `/networks/${NET_ID}`)).body;
  assert.equal(Object.keys(inspect.Containers).length, 2);

  // Teardown in the engine's order.
  await ok(bridgeSock, 'NetworkDriver.RevokeExternalConnectivity', {
    NetworkID: NET_ID,
    EndpointID: epId(1),
  });
  assert.doesNotMatch(d.host.run('iptables-save', ['-t', 'nat']), /--dport 8080/);
  for (const n of [1, 2]) {
    await ok(bridgeSock, 'NetworkDriver.Leave', { NetworkID: NET_ID, EndpointID: epId(n) });
    await ok(bridgeSock, 'NetworkDriver.DeleteEndpoint', { NetworkID: NET_ID, EndpointID: epId(n) });
    await ok(ipamSock, 'IpamDriver.ReleaseAddress', {
      PoolID: poolId,
      Address: eps[n - 1].address.split('/')[0],
    });
  }
  await eventually(() => assert.deepEqual(d.host.ipj('link', 'show', 'master', 'brplug0'), []));
  await ok(bridgeSock, 'NetworkDriver.DeleteNetwork', { NetworkID: NET_ID });
  await ok(ipamSock, 'IpamDriver.ReleaseAddress', { PoolID: poolId, Address: gateway });
  await ok(ipamSock, 'IpamDriver.ReleasePool', { PoolID: poolId });
  assert.equal(
    d.host.ipj('link', 'show').filter((x: any) => x.ifname === 'brplug0').length,
    0,
    'bridge removed',
  );
  assert.doesNotMatch(d.host.run('iptables-save', []), /brplug0/);
  // The pool is free again: a second RequestPool for it succeeds.
  const again = await ok(ipamSock, 'IpamDriver.RequestPool', { Pool: '10.77.0.0/24', V6: false });
  await ok(ipamSock, 'IpamDriver.ReleasePool', { PoolID: again.PoolID });
});

test('plugin objects survive a cnmd SIGKILL: restored, connectivity kept, pools still held, then removable', async (t) => {
  const { l, d, bridgeSock, ipamSock } = await setup(t);
  const { poolId, gateway } = await createNetwork(bridgeSock, ipamSock, '10.78.0.0/24');
  const boxes: Ns[] = [];
  const eps: { address: string }[] = [];
  for (const n of [1, 2]) {
    const ep = await endpoint(ipamSock, bridgeSock, poolId, n);
    const join = await ok(bridgeSock, 'NetworkDriver.Join', {
      NetworkID: NET_ID,
      EndpointID: epId(n),
      SandboxKey: `/run/box${n}`,
      Options: {},
    });
    const box = await l.ns(`kbox${n}`);
    await engineSide(d.host, box, join.InterfaceName.SrcName, 'eth0', ep.address, gateway);
    boxes.push(box);
    eps.push(ep);
  }
  await ok(bridgeSock, 'NetworkDriver.ProgramExternalConnectivity', {
    NetworkID: NET_ID,
    EndpointID: epId(1),
    Options: {
      'com.docker.network.portmap': [
        {
          Proto: 6,
          IP: eps[0].address.split('/')[0],
          Port: 80,
          HostIP: '',
          HostPort: 8081,
          HostPortEnd: 8081,
        },
      ],
    },
  });
  await serve(t, boxes[0].path, 'tcp', 80);
  await d.kill();
  const d2 = await restartDaemon(t, l, d);
  assert.ok(
    ping(boxes[1].path, eps[0].address.split('/')[0]),
    'containers still reach each other after the restart',
  );
  assert.ok(
    roundTrip(d2.host.path, 'tcp', '127.0.0.1', 8081).ok,
    'the published port works after the restart',
  );
  const ls = execFileSync(
    process.execPath,
    [CNMCTL, '-H', d2.hostUri, 'network', 'ls', '--format', '{{.ID}}'],
    { encoding: 'utf8' },
  );
  assert.match(ls, new RegExp(NET_ID.slice(0, 12)));
  // The engine's pool was not swept: cnmd's own IPAM will not hand it out.
  const taken = await call(ipamSock, 'IpamDriver.RequestPool', { Pool: '10.78.0.0/24', V6: false });
  assert.equal(taken.status, 200);
  assert.match(taken.body.Error, /10\.78\.0\.0\/24/);
  const own = await d2.request('POST', '/networks/create', {
    Name: 'mine',
    IPAM: { Config: [{ Subnet: '10.78.0.0/24' }] },
  });
  assert.equal(own.status, 403, JSON.stringify(own.body));
  // And the engine can finish its work on the restored objects.
  await ok(bridgeSock, 'NetworkDriver.RevokeExternalConnectivity', {
    NetworkID: NET_ID,
    EndpointID: epId(1),
  });
  for (const n of [1, 2]) {
    await ok(bridgeSock, 'NetworkDriver.Leave', { NetworkID: NET_ID, EndpointID: epId(n) });
    await ok(bridgeSock, 'NetworkDriver.DeleteEndpoint', { NetworkID: NET_ID, EndpointID: epId(n) });
  }
  await ok(bridgeSock, 'NetworkDriver.DeleteNetwork', { NetworkID: NET_ID });
  await ok(ipamSock, 'IpamDriver.ReleasePool', { PoolID: poolId });
  await eventually(() =>
    assert.equal(
      d2.host
        .ipj('link', 'show')
        .filter((x: any) => x.ifname.startsWith('veth') || x.ifname.startsWith('cnmd')).length,
      0,
    ),
  );
});

test('plugin bad input: the protocol error field says what to fix, and cnmd keeps serving', async (t) => {
  const { d, bridgeSock, ipamSock } = await setup(t);
  const unknownNet = await call(bridgeSock, 'NetworkDriver.CreateEndpoint', {
    NetworkID: 'f'.repeat(64),
    EndpointID: epId(1),
    Interface: { Address: '10.1.0.2/24' },
  });
  assert.equal(unknownNet.status, 200);
  assert.match(unknownNet.body.Err, /network f{64} not found/);
  const unknownEp = await call(bridgeSock, 'NetworkDriver.Join', {
    NetworkID: 'f'.repeat(64),
    EndpointID: 'x',
    SandboxKey: '/x',
  });
  assert.match(unknownEp.body.Err, /not found/);
  // The sandbox's path is kept and opened later: only a clean absolute path is taken.
  for (const key of [
    '',
    'var/run/docker/netns/x',
    '/var/run/docker/netns/../../../etc/passwd',
    '/x//y',
    '/x/',
    '/x\nnameserver 1.2.3.4',
    `/${'x'.repeat(5000)}`,
  ]) {
    const bad = await call(bridgeSock, 'NetworkDriver.Join', {
      NetworkID: NET_ID,
      EndpointID: epId(1),
      SandboxKey: key,
    });
    assert.ok(bad.body.Err, `SandboxKey ${JSON.stringify(key.slice(0, 60))} is refused`);
    assert.match(
      bad.body.Err,
      key ? /SandboxKey .* is not a clean absolute path/ : /SandboxKey: must be the sandbox netns path/,
    );
  }
  const badJson = await call(bridgeSock, 'NetworkDriver.CreateNetwork', undefined, '{"NetworkID": ');
  assert.equal(badJson.status, 400);
  assert.match(badJson.body.Err, /not JSON/);
  const missing = await call(bridgeSock, 'NetworkDriver.CreateNetwork', { IPv4Data: [] });
  assert.equal(missing.status, 400);
  assert.match(missing.body.Err, /NetworkID is missing/);
  const badPool = await call(bridgeSock, 'NetworkDriver.CreateNetwork', {
    NetworkID: NET_ID,
    IPv4Data: [{ Pool: 'banana' }],
  });
  assert.match(badPool.body.Err, /Pool "banana" is not an IPv4 CIDR/);
  const noV4 = await call(bridgeSock, 'NetworkDriver.CreateNetwork', { NetworkID: NET_ID, IPv4Data: [] });
  assert.match(noV4.body.Err, /IPv4Data is empty/);
  const wrongIface = await call(ipamSock, 'NetworkDriver.CreateNetwork', { NetworkID: NET_ID });
  assert.equal(wrongIface.status, 404);
  assert.match(
    wrongIface.body.Err,
    /cnmd-ipam does not implement NetworkDriver\.CreateNetwork: it implements IpamDriver only/,
  );
  const unknownMethod = await call(bridgeSock, 'NetworkDriver.Frobnicate', {});
  assert.equal(unknownMethod.status, 404);
  const pool = await ok(ipamSock, 'IpamDriver.RequestPool', { Pool: '10.79.0.0/24' });
  const taken = await call(ipamSock, 'IpamDriver.RequestPool', { Pool: '10.79.0.0/24' });
  assert.equal(taken.status, 200);
  assert.ok(taken.body.Error, 'IPAM errors come in the Error field');
  assert.match(taken.body.Error, /10\.79\.0\.0\/24/);
  const outside = await call(ipamSock, 'IpamDriver.RequestAddress', {
    PoolID: pool.PoolID,
    Address: '10.80.0.5',
  });
  assert.match(outside.body.Error, /outside/);
  const noPool = await call(ipamSock, 'IpamDriver.RequestAddress', { PoolID: 'nope' });
  assert.match(noPool.body.Error, /not held through cnmd-ipam/);
  const ipamBadJson = await call(ipamSock, 'IpamDriver.RequestPool', undefined, '[[[');
  assert.equal(ipamBadJson.status, 400);
  assert.ok(ipamBadJson.body.Err && ipamBadJson.body.Error);
  const badPorts = await call(bridgeSock, 'NetworkDriver.ProgramExternalConnectivity', {
    NetworkID: NET_ID,
    EndpointID: epId(1),
    Options: { 'com.docker.network.portmap': [{ Proto: 99, Port: 80 }] },
  });
  assert.ok(badPorts.body.Err);
  // Nothing half-made: no network record, no bridge, and the daemon still answers both sockets.
  assert.equal((await d.request('GET', `/networks/${NET_ID}`)).status, 404);
  await createNetwork(bridgeSock, ipamSock, '10.81.0.0/24');
  assert.equal((await d.request('GET', `/networks/${NET_ID}`)).status, 200);
  const dup = await call(bridgeSock, 'NetworkDriver.CreateNetwork', {
    NetworkID: NET_ID,
    IPv4Data: [{ Pool: '10.82.0.0/24', Gateway: '10.82.0.1/24' }],
  });
  assert.match(dup.body.Err, /already exists/);
});

test("plugin pools against cnmd's networks: RequestPool and the engine IPAM's CreateNetwork refuse an overlap, both ways", async (t) => {
  const { d, bridgeSock, ipamSock } = await setup(t);
  const pn = await d.request('POST', '/networks/create', {
    Name: 'pn',
    IPAM: { Config: [{ Subnet: '10.66.0.0/24' }] },
  });
  assert.equal(pn.status, 201);
  // cnmd-ipam: the same subnet, and one inside it.
  for (const Pool of ['10.66.0.0/24', '10.66.0.128/25']) {
    const r = await call(ipamSock, 'IpamDriver.RequestPool', { AddressSpace: 'LocalDefault', Pool });
    assert.match(r.body.Error, /overlaps with 10\.66\.0\.0\/24/, Pool);
  }
  // The engine's own IPAM chose it: CreateNetwork names the overlap, and makes no bridge.
  const bridgesBefore = d.host.ipj('link', 'show', 'type', 'bridge').length;
  const clash = await call(bridgeSock, 'NetworkDriver.CreateNetwork', {
    NetworkID: NET_ID,
    Options: {},
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '10.66.0.0/24', Gateway: '10.66.0.1/24' }],
    IPv6Data: [],
  });
  assert.match(clash.body.Err, /pool 10\.66\.0\.0\/24 overlaps 10\.66\.0\.0\/24 of cnmd's network pn/);
  assert.equal(d.host.ipj('link', 'show', 'type', 'bridge').length, bridgesBefore, 'no bridge made');
  const holders = d.host
    .ipj('addr', 'show', 'type', 'bridge')
    .filter((l: any) => l.addr_info.some((a: any) => a.local === '10.66.0.1'));
  assert.equal(holders.length, 1, 'one bridge holds 10.66.0.1');
  assert.equal((await d.request('GET', `/networks/${NET_ID}`)).status, 404);
  // A pool the engine's IPAM chose elsewhere is taken for cnmd's own networks from then on.
  await ok(bridgeSock, 'NetworkDriver.CreateNetwork', {
    NetworkID: NET_ID,
    Options: {},
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '10.67.0.0/24', Gateway: '10.67.0.1/24' }],
    IPv6Data: [],
  });
  const mine = await d.request('POST', '/networks/create', {
    Name: 'mine',
    IPAM: { Config: [{ Subnet: '10.67.0.0/16' }] },
  });
  assert.equal(mine.status, 403);
  assert.match(mine.body.message, /overlaps with 10\.67\.0\.0\/24, the subnet of a Docker engine network/);
  const viaIpam = await call(ipamSock, 'IpamDriver.RequestPool', { Pool: '10.67.0.0/24' });
  assert.match(viaIpam.body.Error, /overlaps with 10\.67\.0\.0\/24/);
});

test('plugin CreateEndpoint: an address (or the gateway) or a MAC another endpoint holds is refused', async (t) => {
  const { d, bridgeSock, ipamSock } = await setup(t);
  await createNetwork(bridgeSock, ipamSock, '10.70.0.0/24');
  const create = (n: number, Address: string, MacAddress = '') =>
    call(bridgeSock, 'NetworkDriver.CreateEndpoint', {
      NetworkID: NET_ID,
      EndpointID: epId(n),
      Interface: { Address, AddressIPv6: '', MacAddress },
      Options: {},
    });
  const first = await create(1, '10.70.0.5/24', '02:42:0a:46:00:55');
  assert.ok(!first.body.Err, first.text);
  const sameIp = await create(2, '10.70.0.5/24');
  assert.match(sameIp.body.Err, /address 10\.70\.0\.5 is already in use by endpoint e1/);
  const gateway = await create(2, '10.70.0.1/24');
  assert.match(gateway.body.Err, /address 10\.70\.0\.1 is already in use by the gateway/);
  const sameMac = await create(2, '10.70.0.6/24', '02:42:0A:46:00:55');
  assert.match(sameMac.body.Err, /MAC address 02:42:0A:46:00:55 is already in use by endpoint e1/);
  // Refused ones left nothing: one endpoint, one veth.
  assert.deepEqual(
    readStore(d.dataRoot).engineEndpoints.map((e) => e.id),
    [epId(1)],
  );
  assert.equal(d.host.ipj('link', 'show', 'type', 'veth').length, 0, 'no veth before a join');
  // Once the holder is gone, the address is free again.
  await ok(bridgeSock, 'NetworkDriver.DeleteEndpoint', { NetworkID: NET_ID, EndpointID: epId(1) });
  const again = await create(2, '10.70.0.5/24', '02:42:0a:46:00:55');
  assert.ok(!again.body.Err, again.text);
});

test('an engine network whose engine is gone: refused to cnmctl network rm, removed whole by --force after a restart', async (t) => {
  const { l, d: d0, bridgeSock, ipamSock } = await setup(t);
  let d = d0;
  const { poolId } = await createNetwork(bridgeSock, ipamSock, '10.84.0.0/24', {
    'com.docker.network.bridge.name': 'brgone0',
  });
  const ep = await endpoint(ipamSock, bridgeSock, poolId, 1);
  const join = await ok(bridgeSock, 'NetworkDriver.Join', {
    NetworkID: NET_ID,
    EndpointID: epId(1),
    SandboxKey: '/var/run/docker/netns/gone1',
    Options: {},
  });
  const box = await l.ns('gone1');
  await engineSide(d.host, box, join.InterfaceName.SrcName, 'eth0', ep.address, '10.84.0.1');
  await ok(bridgeSock, 'NetworkDriver.ProgramExternalConnectivity', {
    NetworkID: NET_ID,
    EndpointID: epId(1),
    Options: {
      'com.docker.network.portmap': [
        { Proto: 6, IP: ep.address.split('/')[0], Port: 80, HostIP: '', HostPort: 8484, HostPortEnd: 8484 },
      ],
    },
  });
  assert.match(d.host.run('iptables-save', ['-t', 'nat']), /--dport 8484 -j DNAT/);
  // The engine removes its container and network while cnmd is down, and never calls again.
  await d.kill();
  d = await restartDaemon(t, l, d);
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [CNMCTL, '-H', d.hostUri, 'network', 'rm', ...args, NET_ID], {
      encoding: 'utf8',
    });
  const refused = cli();
  assert.match(refused.stderr, /created by the Docker engine.*cnmctl network rm --force/);
  assert.equal((await d.request('GET', `/networks/${NET_ID}`)).status, 200, 'still there');
  const forced = cli('--force');
  assert.equal(forced.status, 0, forced.stderr);
  // Nothing of it is left: network, endpoint, bridge, veths, rules, pool lease.
  assert.equal((await d.request('GET', `/networks/${NET_ID}`)).status, 404);
  const links = d.host.ipj('link').map((x: any) => x.ifname);
  assert.ok(!links.includes('brgone0'), `bridge gone: ${links.join(' ')}`);
  assert.deepEqual(d.host.ipj('link', 'show', 'type', 'veth'), [], 'no veth left');
  assert.ok(!JSON.parse(runIn(box.path, 'ip', ['-j', 'link'])).some((x: any) => x.ifname === 'eth0'));
  assert.doesNotMatch(save(d), /brgone0|8484|10\.84\.0\./, 'no rule of it');
  const store = readStore(d.dataRoot);
  assert.deepEqual([store.engineNetworks, store.engineEndpoints, store.leases], [[], [], []]);
  assert.ok(!store.pools.some((p) => p.pool === '10.84.0.0/24'), 'its pool is free');
  await assertInvariants(d);
  // The subnet can be used again.
  const again = await call(ipamSock, 'IpamDriver.RequestPool', { Pool: '10.84.0.0/24' });
  assert.equal(again.body.Pool, '10.84.0.0/24', again.text);
});

test('--engine-host: an engine that is absent, silent or failing keeps the engine network; one that answers 404 removes it', async (t) => {
  const { l, d: d0, bridgeSock, ipamSock } = await setup(t);
  let d = d0;
  const { poolId } = await createNetwork(bridgeSock, ipamSock, '10.85.0.0/24', {
    'com.docker.network.bridge.name': 'brask0',
  });
  await endpoint(ipamSock, bridgeSock, poolId, 1);
  // A stand-in engine on a unix socket: silent (accepts, never answers), or answering with a status.
  let mode: 'silent' | number = 'silent';
  const asked: string[] = [];
  const engine = http.createServer((req, res) => {
    asked.push(`${req.method} ${req.url}`);
    if (mode === 'silent') return;
    res.writeHead(mode, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ message: mode === 404 ? `network ${NET_ID} not found` : 'engine trouble' }));
  });
  const sock = path.join(l.root, 'engine.sock');
  await new Promise<void>((resolve) => engine.listen(sock, resolve));
  t.after(() => {
    engine.closeAllConnections();
    engine.close();
  });
  const restart = async (engineHost: string) => {
    await d.stop();
    d = await restartDaemon(t, l, d, ['--engine-host', engineHost]);
    return d.logs();
  };
  const kept = async (why: RegExp, logs: string) => {
    assert.equal((await d.request('GET', `/networks/${NET_ID}`)).status, 200);
    assert.ok(
      d.host.ipj('link').some((x: any) => x.ifname === 'brask0'),
      'bridge kept',
    );
    assert.match(logs, /cannot tell whether the engine still knows this network: kept/);
    assert.match(logs, why);
  };
  // Silent: the start waits out its bound (5 s), then serves, the network kept.
  await kept(/did not answer in time/, await restart(`unix://${sock}`));
  assert.deepEqual(asked, [`GET /networks/${NET_ID}`]);
  assert.equal(readStore(d.dataRoot).engineEndpoints.length, 1, 'its endpoint kept');
  await kept(/ENOENT/, await restart(`unix://${path.join(l.root, 'no-engine.sock')}`));
  mode = 500;
  await kept(/HTTP 500/, await restart(`unix://${sock}`));
  // 404: the engine does not know it; everything of it goes, the pool too.
  mode = 404;
  const logs = await restart(`unix://${sock}`);
  assert.match(logs, /engine network removed: the engine does not know it/);
  assert.equal((await d.request('GET', `/networks/${NET_ID}`)).status, 404);
  assert.ok(!d.host.ipj('link').some((x: any) => x.ifname === 'brask0'), 'bridge removed');
  assert.doesNotMatch(save(d), /brask0|10\.85\.0\./, 'no rule of it');
  const store = readStore(d.dataRoot);
  assert.deepEqual([store.engineNetworks, store.engineEndpoints], [[], []]);
  assert.ok(!store.leases.some((x: any) => x.pool === '10.85.0.0/24'), 'its pool lease released');
  await assertInvariants(d);
});
