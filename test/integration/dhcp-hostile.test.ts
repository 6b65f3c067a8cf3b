// --ipam-driver dhcp against a hostile DHCP server on the parent's LAN
// (test/lib/hostile-dhcp.ts): junk before every answer (truncated packets,
// options past the end, wrong xid/chaddr/client id, loopback, multicast and
// broadcast offers, a ~30 KB reply; a flood of OFFERs after it), then an answer whose
// fields are garbage: routers outside the subnet or its broadcast address,
// DNS servers nobody may use, a domain and host name with newlines, a lease
// of 0 s, a mask that is not contiguous; then NAKs during renewal. The
// kernel's state (ip -j), the sandbox's files and the server's own log of
// requests are the observers.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { eventually, lab, runIn, type Lab } from '../lib/fixture';
import { startDaemon, type RunningDaemon } from '../lib/daemon';
import { ok } from '../lib/api';
import { hostileDhcp, type HostileDhcp, type HostileDhcpConfig } from '../lib/hostile-dhcp';
import { pluginCall, pluginOk } from '../lib/plugin-call';

const SUBNET = '192.168.63';

/** lan0 in the daemon's host netns (the parent), its peer in `ext` at .1, the hostile server there handing out .100-.102. */
async function hostileLan(
  t: TestContext,
  l: Lab,
  d: RunningDaemon,
  c: Partial<HostileDhcpConfig>,
): Promise<HostileDhcp> {
  const ext = await l.ns('ext');
  d.host.run('ip', ['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'up-lan0']);
  d.host.run('ip', ['link', 'set', 'up-lan0', 'netns', ext.path]);
  d.host.run('ip', ['link', 'set', 'lan0', 'up']);
  ext.run('ip', ['link', 'set', 'lo', 'up']);
  ext.run('ip', ['addr', 'add', `${SUBNET}.1/24`, 'dev', 'up-lan0']);
  ext.run('ip', ['link', 'set', 'up-lan0', 'up']);
  return hostileDhcp(t, l, ext, 'up-lan0', {
    server: `${SUBNET}.1`,
    pool: [`${SUBNET}.100`, `${SUBNET}.101`, `${SUBNET}.102`],
    mask: '255.255.255.0',
    routers: [`${SUBNET}.1`],
    dns: [],
    ...c,
  });
}

/** A macvlan network `lan` on lan0 addressed by the dhcp IPAM, and sandbox `a` on it. */
async function sandboxOnLan(d: RunningDaemon): Promise<any> {
  await ok(d, 'POST', '/networks/create', {
    Name: 'lan',
    Driver: 'macvlan',
    Options: { parent: 'lan0' },
    IPAM: { Driver: 'dhcp' },
  });
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'lan' }] });
  return ok(d, 'GET', '/sandboxes/a');
}

const DECLINE = 4;
const RELEASE = 7;
const REQUEST = 3;

test('dhcp against a hostile server: junk ignored, garbage fields dropped, a 0 s lease renewed at a bounded pace, NAK answered with a new address', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const server = await hostileLan(t, l, d, {
    routers: ['8.8.8.8', `${SUBNET}.255`, `${SUBNET}.0`, `${SUBNET}.100`, `${SUBNET}.1`],
    dns: ['0.0.0.0', '127.0.0.1', '255.255.255.255', '224.0.0.251', `${SUBNET}.1`],
    domain: 'evil.test\nnameserver 6.6.6.6',
    hostname: 'x\n6.6.6.6 evil',
    lease: 0,
    junk: true,
  });
  const a = await sandboxOnLan(d);
  const addrs = () =>
    (JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', '-4', 'addr', 'show', 'eth0']))[0]?.addr_info ?? []).map(
      (x: any) => `${x.local}/${x.prefixlen}`,
    );
  const dhcpLog = () =>
    d
      .logs()
      .split('\n')
      .filter((x) => /dhcp/.test(x))
      .slice(-6)
      .join('\n');
  const defaultVia = () =>
    JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', '-4', 'route', 'show', 'default'])).map(
      (r: any) => r.gateway,
    );
  assert.deepEqual(addrs(), [`${SUBNET}.100/24`]);
  // Of the routers, the first that can be one: not off-link, not the subnet's broadcast or network address, not ours.
  assert.deepEqual(defaultVia(), [`${SUBNET}.1`]);
  assert.equal(a.Networks.lan.Gateway, `${SUBNET}.1`);
  const files = path.join(d.execRoot, 'sandboxes', a.Id);
  for (const f of ['resolv.conf', 'hosts', 'hostname']) {
    const text = fs.readFileSync(path.join(files, f), 'utf8');
    assert.doesNotMatch(text, /6\.6\.6\.6|evil/, `${f}:\n${text}`);
  }

  // A lease of 0 s is kept as 10 s (renewed at 5 s): renewals come, at a bounded pace.
  // One renewal per xid (a copy resent after 1 s without an answer is the same renewal).
  const renewals = () => {
    const seen = new Set<number>();
    return server
      .requests()
      .filter(
        (r) => r.type === REQUEST && r.ciaddr === `${SUBNET}.100` && !seen.has(r.xid) && !!seen.add(r.xid),
      );
  };
  await eventually(() => assert.ok(renewals().length >= 2, JSON.stringify(renewals())), 20_000);
  const [r1, r2] = renewals();
  assert.ok(r2.at - r1.at >= 4, `renewals ${r2.at - r1.at} s apart`);

  // NAKs during renewal: the endpoint asks the LAN again, and its new address replaces the old one.
  server.set({ renew: 'nak' });
  await eventually(() => assert.deepEqual(addrs(), [`${SUBNET}.101/24`], dhcpLog()), 30_000);
  server.set({ renew: 'ack' });
  // The same router list: .100 is no longer the endpoint's own address, so it is the first that can be a router.
  await eventually(() => assert.deepEqual(defaultVia(), [`${SUBNET}.100`]));
  const b = await ok(d, 'GET', '/sandboxes/a');
  assert.equal(b.Networks.lan.IPAddress, `${SUBNET}.101`);
  assert.match(fs.readFileSync(path.join(files, 'hosts'), 'utf8'), new RegExp(`${SUBNET}\\.101`));
  assert.equal((await d.request('GET', '/_ping')).status, 200);
  assert.equal((await d.request('DELETE', '/sandboxes/a')).status, 204);
  await eventually(() => assert.ok(server.requests().some((r) => r.type === RELEASE)), 5000);
});

test('dhcp: a server that gives one address to two endpoints is declined, and the second endpoint refused with nothing left', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const server = await hostileLan(t, l, d, { sameAddress: true, lease: 600 });
  const a = await sandboxOnLan(d);
  assert.equal(a.Networks.lan.IPAddress, `${SUBNET}.100`);
  // Not a hex name: a GET by name must never match a's id by prefix (as 'b' does one time in 16).
  const r = await d.request('POST', '/sandboxes', { Name: 'second', Networks: [{ Network: 'lan' }] });
  assert.equal(r.status, 409, JSON.stringify(r.body));
  assert.match(
    r.body.message,
    new RegExp(
      `offered ${SUBNET}\\.100/24, which endpoint ${a.Networks.lan.EndpointID.slice(0, 12)} of network lan holds \\(declined twice\\): fix the server`,
    ),
  );
  // The server's account: two DECLINEs of .100, from a client id that is not a's.
  const declines = server.requests().filter((x) => x.type === DECLINE);
  assert.equal(declines.length, 2, JSON.stringify(server.requests()));
  for (const x of declines) assert.equal(x.requested, `${SUBNET}.100`);
  assert.equal((await d.request('GET', '/sandboxes/second')).status, 404);
  assert.deepEqual(
    (await d.request('GET', '/sandboxes')).body.map((x: any) => x.Name),
    ['a'],
  );
  // a keeps its address; b left no interface in the host netns.
  assert.deepEqual(
    JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', '-4', 'addr', 'show', 'eth0']))[0].addr_info.map(
      (x: any) => x.local,
    ),
    [`${SUBNET}.100`],
  );
  assert.deepEqual(
    d.host.ipj('-d', 'link', 'show').filter((x: any) => x.linkinfo?.info_kind === 'macvlan'),
    [],
  );
});

test("cnmd-ipam dhcp mode against a hostile server: a duplicate address refused and declined; a renewal answered with another address keeps the container's own", async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const server = await hostileLan(t, l, d, { sameAddress: true, lease: 0 });
  const ipam = path.join(d.pluginDir, 'cnmd-ipam.sock');
  const macvlan = path.join(d.pluginDir, 'cnmd-macvlan.sock');
  const NET = 'e'.repeat(64);
  const EP = 'f'.repeat(64);
  const pool = await pluginOk(ipam, 'IpamDriver.RequestPool', {
    Options: { 'cnmd.ipam.mode': 'dhcp', 'cnmd.dhcp.timeout': '6' },
  });
  await pluginOk(macvlan, 'NetworkDriver.CreateNetwork', {
    NetworkID: NET,
    Options: { 'com.docker.network.generic': { parent: 'lan0' } },
    IPv4Data: [{ Pool: pool.Pool, Gateway: pool.Data['com.docker.network.gateway'] }],
  });
  const address = (await pluginOk(ipam, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID })).Address;
  assert.equal(address, `${SUBNET}.100/24`);
  const dup = await pluginCall(ipam, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID });
  assert.match(
    dup.body.Error ?? '',
    /offered 192\.168\.63\.100\/24, which it leased to another endpoint of this network already \(declined\)/,
  );
  assert.equal(
    server.requests().filter((x) => x.type === DECLINE && x.requested === `${SUBNET}.100`).length,
    1,
  );
  assert.deepEqual(
    fs.readdirSync(path.join(d.execRoot, 'netns')).filter((x) => x.startsWith('dhcp-')),
    [],
    'no probe left',
  );

  // The container, as the engine makes it; its lease (0 s: kept as 10 s) renewed from its netns.
  const ep = await pluginOk(macvlan, 'NetworkDriver.CreateEndpoint', {
    NetworkID: NET,
    EndpointID: EP,
    Interface: { Address: address, MacAddress: '' },
  });
  const ns = await l.ns('c1');
  const join = await pluginOk(macvlan, 'NetworkDriver.Join', {
    NetworkID: NET,
    EndpointID: EP,
    SandboxKey: ns.path,
  });
  d.host.run('ip', ['link', 'set', join.InterfaceName.SrcName, 'netns', ns.path]);
  ns.run('ip', ['link', 'set', join.InterfaceName.SrcName, 'name', 'eth0']);
  ns.run('ip', ['link', 'set', 'eth0', 'address', ep.Interface.MacAddress]);
  ns.run('ip', ['addr', 'add', address, 'dev', 'eth0']);
  ns.run('ip', ['link', 'set', 'eth0', 'up']);
  const renewals = () => server.requests().filter((x) => x.type === REQUEST && x.ciaddr === `${SUBNET}.100`);
  await eventually(() => assert.ok(renewals().length >= 1), 20_000);
  // Renewals answered with .101: the container keeps .100, and .100 is what is asked for again.
  server.set({ renew: 'other' });
  const before = renewals().length;
  await eventually(() => assert.ok(renewals().length >= before + 2, JSON.stringify(renewals())), 30_000);
  assert.match(
    d.logs(),
    /dhcp renewal answered with another address: 192\.168\.63\.100 stays on the container/,
  );
  server.set({ renew: 'ack' });

  await pluginOk(macvlan, 'NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP });
  ns.run('ip', ['link', 'del', 'eth0']);
  await pluginOk(macvlan, 'NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP });
  await pluginOk(ipam, 'IpamDriver.ReleaseAddress', { PoolID: pool.PoolID, Address: `${SUBNET}.100` });
  assert.ok(server.requests().some((x) => x.type === RELEASE && x.ciaddr === `${SUBNET}.100`));
  await pluginOk(macvlan, 'NetworkDriver.DeleteNetwork', { NetworkID: NET });
  await pluginOk(ipam, 'IpamDriver.ReleasePool', { PoolID: pool.PoolID });
});
