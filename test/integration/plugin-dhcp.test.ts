// cnmd-ipam's dhcp mode through the plugin sockets, as the engine calls them
// (no dockerd: the engine lane's engine-dhcp.test.ts runs the whole flow),
// against Debian's dnsmasq on the parent's LAN: the refusals and rollbacks an
// engine rarely provokes. An offer outside --subnet is refused and given back
// (gone from dnsmasq's lease file), a MAC the lease was not asked with is
// refused, and a daemon SIGKILLed while its probe waits for a silent server
// leaves no probe netns or child behind, its recorded leases intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { eventually, lab } from '../lib/fixture';
import { restartDaemon, RunningDaemon, startDaemon } from '../lib/daemon';
import { dhcpLan } from '../lib/dhcp-server';
import { pluginCall, pluginOk } from '../lib/plugin-call';

const SUBNET = '192.168.62';
const NET1 = 'a'.repeat(64);
const NET2 = 'b'.repeat(64);
const EP1 = 'c'.repeat(64);
const DHCP = { 'cnmd.ipam.mode': 'dhcp', 'cnmd.dhcp.timeout': '6' };

test(
  'cnmd-ipam dhcp mode: refusals and rollbacks through the plugin protocol',
  { timeout: 300_000 },
  async (t) => {
    const l = await lab(t);
    let d: RunningDaemon = await startDaemon(t, l);
    const server = await dhcpLan(t, l, d.host, SUBNET);
    const ipam = () => path.join(d.pluginDir, 'cnmd-ipam.sock');
    const macvlan = () => path.join(d.pluginDir, 'cnmd-macvlan.sock');
    const failed = async (sock: string, method: string, body: unknown, message: RegExp) => {
      const r = await pluginCall(sock, method, body);
      assert.equal(r.status, 200, r.text);
      assert.match(r.body.Err ?? r.body.Error ?? '', message);
    };
    const probeNetns = () =>
      fs.readdirSync(path.join(d.execRoot, 'netns')).filter((x) => x.startsWith('dhcp-'));
    const hostMacvlans = () =>
      d.host.ipj('-d', 'link', 'show').filter((x: any) => x.linkinfo?.info_kind === 'macvlan');
    const network = (id: string, pool: string) =>
      pluginOk(macvlan(), 'NetworkDriver.CreateNetwork', {
        NetworkID: id,
        Options: { 'com.docker.network.generic': { parent: 'lan0' } },
        IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: pool, Gateway: pool }],
      });

    // --subnet that is not the LAN's: the server's offer is refused, and given back.
    const p1 = await pluginOk(ipam(), 'IpamDriver.RequestPool', { Pool: '10.9.9.0/24', Options: DHCP });
    assert.equal(p1.Pool, '10.9.9.0/24');
    assert.equal(p1.Data['com.docker.network.gateway'], '10.9.9.0/24', "the pool's stand-in gateway");
    await network(NET1, '10.9.9.0/24');
    await failed(
      ipam(),
      'IpamDriver.RequestAddress',
      { PoolID: p1.PoolID },
      new RegExp(
        `offered ${SUBNET.replace(/\./g, '\\.')}\\.\\d+/24, outside the network's --subnet 10\\.9\\.9\\.0/24`,
      ),
    );
    await eventually(() => assert.deepEqual(server.leases(), []), 10_000);
    assert.match(server.log(), /DHCPRELEASE/);
    await failed(
      ipam(),
      'IpamDriver.RequestAddress',
      { PoolID: p1.PoolID, Address: '10.9.9.5' },
      /remove --ip/,
    );
    assert.deepEqual(probeNetns(), []);
    assert.deepEqual(hostMacvlans(), []);
    await pluginOk(macvlan(), 'NetworkDriver.DeleteNetwork', { NetworkID: NET1 });
    await pluginOk(ipam(), 'IpamDriver.ReleaseAddress', { PoolID: p1.PoolID, Address: '10.9.9.0' });
    await pluginOk(ipam(), 'IpamDriver.ReleasePool', { PoolID: p1.PoolID });

    // No --subnet: the pool is 0.0.0.0/0 and the address the server's, with its prefix.
    const p2 = await pluginOk(ipam(), 'IpamDriver.RequestPool', { Options: DHCP });
    assert.equal(p2.Pool, '0.0.0.0/0');
    await network(NET2, '0.0.0.0/0');
    const a = (await pluginOk(ipam(), 'IpamDriver.RequestAddress', { PoolID: p2.PoolID })).Address;
    assert.match(a, new RegExp(`^${SUBNET.replace(/\./g, '\\.')}\\.\\d+/24$`));
    const leased = server.leases().find((x) => `${x.ip}/24` === a);
    assert.ok(leased, JSON.stringify(server.leases()));
    // CreateEndpoint: a MAC the lease was not asked with is refused; none given, the lease's is the answer.
    await failed(
      macvlan(),
      'NetworkDriver.CreateEndpoint',
      { NetworkID: NET2, EndpointID: EP1, Interface: { Address: a, MacAddress: '02:00:00:00:00:01' } },
      new RegExp(`--mac-address 02:00:00:00:00:01: the DHCP lease of ${a} was asked with ${leased.mac}`),
    );
    const ep = await pluginOk(macvlan(), 'NetworkDriver.CreateEndpoint', {
      NetworkID: NET2,
      EndpointID: EP1,
      Interface: { Address: a, MacAddress: '' },
    });
    assert.equal(ep.Interface.MacAddress, leased.mac);

    // SIGKILL while a probe waits for a silent server: after the restart no probe is left, and the recorded
    // lease is still released through the restarted daemon.
    await server.stop();
    const pending = pluginCall(ipam(), 'IpamDriver.RequestAddress', { PoolID: p2.PoolID }).catch((e) => e);
    await eventually(() => assert.equal(probeNetns().length, 1), 5000);
    assert.equal(hostMacvlans().length, 0, "the probe's child is in the probe's netns");
    await d.kill();
    await pending;
    d = await restartDaemon(t, l, d);
    // Swept by the start-up recovery (a netns no sandbox owns), its child with it.
    await eventually(() => assert.deepEqual(probeNetns(), []), 10_000);
    assert.deepEqual(hostMacvlans(), []);
    await server.start();
    await pluginOk(macvlan(), 'NetworkDriver.DeleteEndpoint', { NetworkID: NET2, EndpointID: EP1 });
    await pluginOk(ipam(), 'IpamDriver.ReleaseAddress', { PoolID: p2.PoolID, Address: a.split('/')[0] });
    await eventually(() => assert.deepEqual(server.leases(), []), 10_000);
    // An engine gone with a lease held: `network rm --force` removes the network, then gives the lease back.
    const b = (await pluginOk(ipam(), 'IpamDriver.RequestAddress', { PoolID: p2.PoolID })).Address;
    assert.ok(server.leases().some((x) => `${x.ip}/24` === b));
    const rm = await d.request('DELETE', `/networks/${NET2}?force=1`);
    assert.ok(rm.status < 300, JSON.stringify(rm.body));
    const dhcpLog = () =>
      d
        .logs()
        .split('\n')
        .filter((x) => /dhcp/.test(x))
        .slice(-5)
        .join('\n');
    await eventually(() => assert.deepEqual(server.leases(), [], dhcpLog()), 10_000);
    const gone = await pluginCall(ipam(), 'IpamDriver.ReleasePool', { PoolID: p2.PoolID });
    assert.match(gone.body.Error, /is not held through cnmd-ipam/);
    assert.deepEqual(probeNetns(), []);
    assert.deepEqual(hostMacvlans(), []);
  },
);
