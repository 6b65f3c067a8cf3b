// --ipam-driver dhcp on macvlan networks against a real DHCP server: Debian's
// dnsmasq in an "external" netns on the parent's LAN. The server's own lease
// file and log are the independent account of what cnmd's client did: which
// MAC and client id hold which address, renewals, releases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { eventually, lab, Lab, runIn } from '../lib/fixture';
import { CNMCTL, RunningDaemon, startDaemon } from '../lib/daemon';
import { ok } from '../lib/api';
import { ping } from '../lib/probe';
import { dhcpLan, DhcpServer, DhcpServerOptions } from '../lib/dhcp-server';

const SUBNET = '192.168.60';

/** The LAN (dhcpLan): dnsmasq in `ext` also the DNS server, naming a printer. */
function lan(t: any, l: Lab, d: RunningDaemon, o: Partial<DhcpServerOptions> = {}): Promise<DhcpServer> {
  return dhcpLan(t, l, d.host, SUBNET, {
    hostAddress: true,
    dns: [`${SUBNET}.1`],
    hosts: { 'printer.lan.test': `${SUBNET}.9` },
    ...o,
  });
}

function cnmctl(d: RunningDaemon, ...args: string[]) {
  return spawnSync(process.execPath, [CNMCTL, '-H', d.hostUri, ...args], {
    encoding: 'utf8',
    timeout: 60_000,
  });
}

async function sandbox(d: RunningDaemon, name: string, network: string) {
  await ok(d, 'POST', '/sandboxes', { Name: name, Networks: [{ Network: network }] });
  return ok(d, 'GET', `/sandboxes/${name}`);
}

const acksFor = (server: DhcpServer, mac: string) =>
  server
    .log()
    .split('\n')
    .filter((x) => x.includes('DHCPACK') && x.includes(mac)).length;

test('dhcp: address, gateway and DNS from the LAN server; renewed at T1; released on removal', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const server = await lan(t, l, d, { t1: 3 });
  const made = cnmctl(
    d,
    'network',
    'create',
    '-d',
    'macvlan',
    '-o',
    'parent=lan0',
    '--ipam-driver',
    'dhcp',
    'lan',
  );
  assert.equal(made.status, 0, made.stderr);
  const a = await sandbox(d, 'a', 'lan');
  const b = await sandbox(d, 'b', 'lan');
  const ipA = a.Networks.lan.IPAddress;
  const macA = a.Networks.lan.MacAddress;
  assert.match(ipA, /^192\.168\.60\.(1[0-4]\d|150)$/, 'an address of the server range');
  assert.notEqual(ipA, b.Networks.lan.IPAddress);
  assert.equal(a.Networks.lan.Gateway, `${SUBNET}.1`);
  // The server's account: a's MAC and client id (cnmd:<endpoint id>) hold a's address.
  const lease = server.leases().find((x) => x.ip === ipA);
  assert.ok(lease, JSON.stringify(server.leases()));
  assert.equal(lease.mac, macA);
  assert.equal(
    lease.clientId,
    ['00', ...Buffer.from(`cnmd:${a.Networks.lan.EndpointID}`).toString('hex').match(/../g)!].join(':'),
  );
  // The kernel's: the address on eth0 with the server's prefix, the default route through its router.
  const addrs = JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', '-4', 'addr', 'show', 'eth0']))[0].addr_info;
  assert.deepEqual(
    addrs.map((x: any) => `${x.local}/${x.prefixlen}`),
    [`${ipA}/24`],
  );
  const routes = JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', 'route']));
  assert.ok(
    routes.some((r: any) => r.dst === 'default' && r.gateway === `${SUBNET}.1`),
    JSON.stringify(routes),
  );
  // The server's DNS is the sandbox's upstream: a name only it knows resolves through 127.0.0.11.
  const dig = runIn(a.SandboxKey, 'dig', [
    '+short',
    '+time=2',
    '+tries=2',
    '@127.0.0.11',
    'printer.lan.test',
  ]);
  assert.equal(dig.trim(), `${SUBNET}.9`);
  // On the LAN at its own address.
  assert.ok(ping(server.ns.path, ipA), 'LAN -> a');
  // Renewed at T1 (3 s): the server acknowledges again and moves the lease's expiry.
  const firstExpiry = lease.expiry;
  const acks = acksFor(server, macA);
  await eventually(() => {
    assert.ok(acksFor(server, macA) > acks, 'a renewal acknowledged by the server');
    assert.ok(server.leases().find((x) => x.ip === ipA)!.expiry > firstExpiry, 'expiry moved');
  }, 15_000);
  // Removal gives the address back: the server logs the release and drops the lease. The server's
  // ARP entry gone first (leases outlive ARP entries): the release still leaves before the netns goes.
  runIn(a.SandboxKey, 'ip', ['neigh', 'flush', 'all']);
  await ok(d, 'DELETE', '/sandboxes/a');
  await eventually(() => {
    assert.match(server.log(), new RegExp(`DHCPRELEASE\\(up-lan0\\) ${ipA.replace(/\./g, '\\.')} ${macA}`));
    assert.ok(!server.leases().some((x) => x.ip === ipA), JSON.stringify(server.leases()));
  }, 5000);
  // A network connect (not only sandbox create) leases too, and a disconnect releases.
  await ok(d, 'POST', '/sandboxes', { Name: 'c' });
  await ok(d, 'POST', '/networks/lan/connect', { Container: 'c' });
  const c = await ok(d, 'GET', '/sandboxes/c');
  const ipC = c.Networks.lan.IPAddress;
  assert.ok(server.leases().some((x) => x.ip === ipC && x.mac === c.Networks.lan.MacAddress));
  await ok(d, 'POST', '/networks/lan/disconnect', { Container: 'c' });
  await eventually(() => assert.ok(!server.leases().some((x) => x.ip === ipC)), 5000);
});

test('dhcp: the same address after a SIGKILL and restart, re-requested from the server', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const server = await lan(t, l, d);
  await ok(d, 'POST', '/networks/create', {
    Name: 'lan',
    Driver: 'macvlan',
    Options: { parent: 'lan0' },
    IPAM: { Driver: 'dhcp' },
  });
  const a = await sandbox(d, 'a', 'lan');
  const ip = a.Networks.lan.IPAddress;
  const mac = a.Networks.lan.MacAddress;
  await d.kill();
  const acks = acksFor(server, mac);
  const d2 = await startDaemon(t, l, { hostNs: d.host, base: d.base });
  // The recorded lease is asked for again at start: the server acknowledges the same address.
  await eventually(() => assert.ok(acksFor(server, mac) > acks, 'a request after the restart'), 15_000);
  const again = await ok(d2, 'GET', '/sandboxes/a');
  assert.equal(again.Networks.lan.IPAddress, ip);
  assert.ok(server.leases().some((x) => x.ip === ip && x.mac === mac));
  const addrs = JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', '-4', 'addr', 'show', 'eth0']))[0].addr_info;
  assert.deepEqual(
    addrs.map((x: any) => x.local),
    [ip],
  );
  await ok(d2, 'DELETE', '/sandboxes/a');
  await eventually(() => assert.ok(!server.leases().some((x) => x.ip === ip)), 5000);
});

test('dhcp: no server answering is a clear error at attach, and a logged warning at renewal', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const server = await lan(t, l, d, { t1: 2 });
  await ok(d, 'POST', '/networks/create', {
    Name: 'lan',
    Driver: 'macvlan',
    Options: { parent: 'lan0' },
    // Above dnsmasq's ping check of an address before it offers it (up to 3 s).
    IPAM: { Driver: 'dhcp', Options: { 'cnmd.dhcp.timeout': '6' } },
  });
  const a = await sandbox(d, 'a', 'lan');
  const ip = a.Networks.lan.IPAddress;
  await server.stop();
  // Renewals go unanswered: warned about, and the address stays.
  await eventually(
    () => assert.match(d.logs(), /dhcp renewal: no DHCP server answered on parent lan0/),
    20_000,
  );
  const addrs = JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', '-4', 'addr', 'show', 'eth0']))[0].addr_info;
  assert.deepEqual(
    addrs.map((x: any) => x.local),
    [ip],
  );
  // An attach: refused after the bounded wait, naming the parent; nothing is left of the sandbox.
  // (Named with a non-hex letter: 'b' alone is a prefix of a's id one time in 16, and GET matches id prefixes.)
  const r = await d.request('POST', '/sandboxes', { Name: 'bx', Networks: [{ Network: 'lan' }] });
  assert.equal(r.status, 503, JSON.stringify(r.body));
  assert.match(r.body.message, /dhcp on parent lan0: no DHCP server answered in 6 s/);
  assert.equal((await d.request('GET', '/sandboxes/bx')).status, 404);
  const eps = (await ok(d, 'GET', '/networks/lan')).Containers;
  assert.equal(Object.keys(eps).length, 1);
  // The server back: the next renewal is answered, the same address kept.
  await server.start();
  await eventually(() => assert.ok(server.leases().some((x) => x.ip === ip)), 20_000);
});

test('dhcp: refused with a message where endpoints are not on a LAN, or with pool settings', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  d.host.run('ip', ['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan0p']);
  d.host.run('ip', ['link', 'set', 'lan0', 'up']);
  const refused = async (body: any, message: RegExp) => {
    const r = await d.request('POST', '/networks/create', { Name: 'x', ...body });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.match(r.body.message, message);
  };
  const dhcp = { Driver: 'dhcp' };
  await refused({ Driver: 'bridge', IPAM: dhcp }, /--ipam-driver dhcp: bridge endpoints are not on a LAN/);
  await refused(
    { Driver: 'macvlan', IPAM: dhcp },
    /--ipam-driver dhcp: a macvlan network without -o parent=/,
  );
  await refused(
    { Driver: 'ipvlan', Options: { parent: 'lan0', ipvlan_mode: 'l3' }, IPAM: dhcp },
    /--ipam-driver dhcp: ipvlan_mode l3 routes, and no LAN broadcast reaches its endpoints: use ipvlan_mode l2/,
  );
  await refused(
    {
      Driver: 'macvlan',
      Options: { parent: 'lan0' },
      IPAM: { ...dhcp, Config: [{ Subnet: '10.9.0.0/24' }] },
    },
    /the LAN's DHCP server gives the subnet.*remove --subnet/,
  );
  await refused(
    { Driver: 'macvlan', Options: { parent: 'lan0' }, EnableIPv6: true, IPAM: dhcp },
    /IPv4 addresses only .*remove --ipv6/,
  );
  await refused(
    {
      Driver: 'macvlan',
      Options: { parent: 'lan0' },
      IPAM: { ...dhcp, Options: { 'cnmd.dhcp.timeout': '0' } },
    },
    /ipam option cnmd.dhcp.timeout: "0" is not a number of seconds/,
  );
  await refused(
    { Driver: 'macvlan', Options: { parent: 'lan0' }, IPAM: { ...dhcp, Options: { lease: '1' } } },
    /ipam option lease is not a dhcp option/,
  );
  // Nothing was recorded: the name is free.
  assert.equal((await d.request('GET', '/networks/x')).status, 404);
});
