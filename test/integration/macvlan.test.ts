// macvlan networks end to end: the parent is a veth in the daemon's "host"
// netns whose peer sits in an "external" netns (the LAN); sandboxes made
// through the API sit on that LAN at their own addresses. Each mode's
// semantics shown with real packets; kernel state read back with `ip -d`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, lab, Lab, Ns, runIn } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { ping, roundTrip, serve } from '../lib/probe';

async function ok(d: RunningDaemon, method: string, p: string, body?: unknown): Promise<any> {
  const r = await d.request(method, p, body);
  assert.ok(r.status < 300, `${method} ${p} -> ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function sandbox(d: RunningDaemon, name: string, network: string, ip?: string) {
  await ok(d, 'POST', '/sandboxes', { Name: name, Networks: [{ Network: network, IPv4Address: ip }] });
  return ok(d, 'GET', `/sandboxes/${name}`);
}

/**
 * A LAN: `lan0` in the host netns, its peer `uplink` in `ext` (up, with
 * extIp on it); with a switch, the peer is instead a port of a bridge in `ext`
 * (hairpin on, for vepa), the bridge holding extIp.
 */
async function lan(
  l: Lab,
  d: RunningDaemon,
  opts: { name?: string; extIp?: string; hairpin?: boolean; extNs?: Ns } = {},
): Promise<Ns> {
  const name = opts.name ?? 'lan0';
  const ext = opts.extNs ?? (await l.ns(`ext-${name}`));
  const peer = `up-${name}`;
  d.host.run('ip', ['link', 'add', name, 'type', 'veth', 'peer', 'name', peer]);
  d.host.run('ip', ['link', 'set', peer, 'netns', ext.path]);
  d.host.run('ip', ['link', 'set', name, 'up']);
  ext.run('ip', ['link', 'set', 'lo', 'up']);
  if (opts.hairpin) {
    ext.run('ip', ['link', 'add', 'sw0', 'type', 'bridge']);
    ext.run('ip', ['link', 'set', peer, 'master', 'sw0', 'up']);
    ext.run('bridge', ['link', 'set', 'dev', peer, 'hairpin', 'on']);
    ext.run('ip', ['link', 'set', 'sw0', 'up']);
    if (opts.extIp) ext.run('ip', ['addr', 'add', opts.extIp, 'dev', 'sw0']);
  } else {
    ext.run('ip', ['link', 'set', peer, 'up']);
    if (opts.extIp) ext.run('ip', ['addr', 'add', opts.extIp, 'dev', peer]);
  }
  return ext;
}

function ipOf(sb: any, net: string): string {
  return sb.Networks[net].IPAddress;
}

function sbLink(sb: any, ifname = 'eth0'): any {
  return JSON.parse(runIn(sb.SandboxKey, 'ip', ['-j', '-d', 'link', 'show', ifname]))[0];
}

test('bridge mode (default): siblings talk, the LAN reaches each at its own address, no NAT', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const ext = await lan(l, d, { extIp: '192.168.50.200/24' });
  const net = await ok(d, 'POST', '/networks/create', {
    Name: 'lan',
    Driver: 'macvlan',
    Options: { parent: 'lan0' },
    IPAM: { Config: [{ Subnet: '192.168.50.0/24', Gateway: '192.168.50.200' }] },
  });
  const a = await sandbox(d, 'a', 'lan');
  const b = await sandbox(d, 'b', 'lan', '192.168.50.77');
  assert.equal(ipOf(b, 'lan'), '192.168.50.77');
  const link = sbLink(a);
  assert.equal(link.linkinfo.info_kind, 'macvlan');
  assert.equal(link.linkinfo.info_data.mode, 'bridge');
  assert.equal(link.address, a.Networks.lan.MacAddress);
  assert.notEqual(link.address, sbLink(b).address);
  const routes = JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', 'route']));
  assert.ok(routes.some((r: any) => r.dst === 'default' && r.gateway === '192.168.50.200'));
  // Siblings on one parent talk inside the kernel in bridge mode.
  await serve(t, b.SandboxKey, 'tcp', 7000);
  assert.equal(roundTrip(a.SandboxKey, 'tcp', ipOf(b, 'lan'), 7000).seenFrom, ipOf(a, 'lan'));
  // The LAN reaches the sandbox at its own address, and sees the sandbox's address as the source.
  await serve(t, ext.path, 'tcp', 7100);
  assert.equal(roundTrip(a.SandboxKey, 'tcp', '192.168.50.200', 7100).seenFrom, ipOf(a, 'lan'));
  assert.equal(roundTrip(ext.path, 'tcp', ipOf(b, 'lan'), 7000).seenFrom, '192.168.50.200');
  // Nothing on the host side: no bridge, no veth per endpoint (cnm0 is the default network's).
  assert.deepEqual(
    d.host
      .ipj('link', 'show')
      .map((x: any) => x.ifname)
      .sort(),
    ['cnm0', 'lan0', 'lo'],
  );
  const inspect = await ok(d, 'GET', `/networks/${net.Id}`);
  assert.equal(inspect.Driver, 'macvlan');
  assert.deepEqual(inspect.Options, { parent: 'lan0' });
  assert.deepEqual(Object.keys(inspect.Containers).length, 2);
  await ok(d, 'DELETE', '/sandboxes/a');
  await ok(d, 'DELETE', '/sandboxes/b');
  await ok(d, 'DELETE', `/networks/${net.Id}`);
  assert.equal(d.host.ipj('link', 'show', 'lan0')[0].ifname, 'lan0', 'the user parent stays');
});

test('private mode: siblings cannot talk; the LAN still reaches each', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const ext = await lan(l, d, { extIp: '192.168.51.200/24' });
  await ok(d, 'POST', '/networks/create', {
    Name: 'priv',
    Driver: 'macvlan',
    Options: { parent: 'lan0', macvlan_mode: 'private' },
    IPAM: { Config: [{ Subnet: '192.168.51.0/24' }] },
  });
  const a = await sandbox(d, 'a', 'priv');
  const b = await sandbox(d, 'b', 'priv');
  // Docker 29 (moby#50929): no --gateway, no gateway and no default route.
  assert.equal(a.Networks.priv.Gateway, '');
  const routes = JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', 'route']));
  assert.ok(!routes.some((r: any) => r.dst === 'default'), JSON.stringify(routes));
  // Unless IPAM is asked for one, as before Docker 29.
  await ok(d, 'POST', '/networks/create', {
    Name: 'auto',
    Driver: 'macvlan',
    Options: { parent: 'lan0', 'cnmd.network.ipam_gateway': 'true' },
    IPAM: { Config: [{ Subnet: '192.168.59.0/24' }] },
  });
  const c = await sandbox(d, 'c', 'auto');
  assert.equal(c.Networks.auto.Gateway, '192.168.59.1');
  assert.equal(sbLink(a).linkinfo.info_data.mode, 'private');
  assert.ok(ping(ext.path, ipOf(a, 'priv')), 'LAN -> a');
  assert.ok(ping(ext.path, ipOf(b, 'priv')), 'LAN -> b');
  assert.ok(!ping(a.SandboxKey, ipOf(b, 'priv'), 2), 'a -> b must not pass in private mode');
});

test('vepa mode: siblings talk only through an external switch that hairpins', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const ext = await lan(l, d, { extIp: '192.168.52.200/24', hairpin: true });
  await ok(d, 'POST', '/networks/create', {
    Name: 'vepa',
    Driver: 'macvlan',
    Options: { parent: 'lan0', macvlan_mode: 'vepa' },
    IPAM: { Config: [{ Subnet: '192.168.52.0/24' }] },
  });
  const a = await sandbox(d, 'a', 'vepa');
  const b = await sandbox(d, 'b', 'vepa');
  assert.equal(sbLink(a).linkinfo.info_data.mode, 'vepa');
  assert.ok(ping(a.SandboxKey, ipOf(b, 'vepa')), 'a -> b through the hairpin');
  // The frames went out to the switch and back: its port learned both MACs.
  const fdb = JSON.parse(ext.run('bridge', ['-j', 'fdb', 'show', 'br', 'sw0']));
  for (const sb of [a, b])
    assert.ok(
      fdb.some((f: any) => f.mac === sb.Networks.vepa.MacAddress),
      `the switch learned ${sb.Networks.vepa.MacAddress}`,
    );
  // Without hairpin the switch does not send frames back out the port they came in on.
  ext.run('bridge', ['link', 'set', 'dev', 'up-lan0', 'hairpin', 'off']);
  runIn(a.SandboxKey, 'ip', ['neigh', 'flush', 'all']);
  assert.ok(!ping(a.SandboxKey, ipOf(b, 'vepa'), 2), 'a -> b without hairpin');
});

test('passthru mode: one endpoint has the parent; a second and a sharing network are refused', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const ext = await lan(l, d, { extIp: '192.168.53.200/24' });
  const parentMac = d.host.ipj('link', 'show', 'lan0')[0].address;
  await ok(d, 'POST', '/networks/create', {
    Name: 'pt',
    Driver: 'macvlan',
    Options: { parent: 'lan0', macvlan_mode: 'passthru' },
    IPAM: { Config: [{ Subnet: '192.168.53.0/24' }] },
  });
  const a = await sandbox(d, 'a', 'pt');
  const link = sbLink(a);
  assert.equal(link.linkinfo.info_data.mode, 'passthru');
  assert.equal(link.address, parentMac, 'a passthru child has its parent MAC');
  assert.ok(ping(ext.path, ipOf(a, 'pt')), 'LAN -> a');
  const second = await d.request('POST', '/sandboxes', { Name: 'b', Networks: [{ Network: 'pt' }] });
  assert.equal(second.status, 409, JSON.stringify(second.body));
  assert.match(second.body.message, /passthru mode, which gives its parent lan0 to one endpoint/);
  const share = await d.request('POST', '/networks/create', {
    Name: 'other',
    Driver: 'macvlan',
    Options: { parent: 'lan0' },
    IPAM: { Config: [{ Subnet: '192.168.54.0/24' }] },
  });
  assert.equal(share.status, 409);
  assert.match(share.body.message, /parent lan0 is in use by passthru network/);
});

test('no parent: an isolated parent owned by the network; siblings talk; removed with it', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const net = await ok(d, 'POST', '/networks/create', {
    Name: 'iso',
    Driver: 'macvlan',
    IPAM: { Config: [{ Subnet: '192.168.55.0/24' }] },
  });
  const dm = `dm-${net.Id.slice(0, 12)}`;
  const [parent] = d.host.ipj('-d', 'link', 'show', dm);
  assert.ok(['dummy', 'veth'].includes(parent.linkinfo.info_kind), parent.linkinfo.info_kind);
  assert.equal(parent.ifalias, `cnmd:lan:iso:${net.Id}`);
  const a = await sandbox(d, 'a', 'iso');
  const b = await sandbox(d, 'b', 'iso');
  assert.equal(a.Networks.iso.Gateway, '', 'an isolated network has no gateway');
  assert.ok(ping(a.SandboxKey, ipOf(b, 'iso')), 'a -> b');
  await ok(d, 'DELETE', '/sandboxes/a');
  await ok(d, 'DELETE', '/sandboxes/b');
  await ok(d, 'DELETE', `/networks/${net.Id}`);
  await eventually(() =>
    assert.deepEqual(
      d.host
        .ipj('link', 'show')
        .map((x: any) => x.ifname)
        .sort(),
      ['cnm0', 'lo'],
    ),
  );
});

test('host access: the host reaches its sandboxes through a shim on the parent, and they reach it; removed with the network', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await lan(l, d, { extIp: '192.168.56.200/24' });
  await lan(l, d, { name: 'lan1', extIp: '192.168.57.200/24' });
  // The classic problem (moby#21735): the host's own address on the parent does not reach the children.
  d.host.run('ip', ['addr', 'add', '192.168.57.1/24', 'dev', 'lan1']);
  await ok(d, 'POST', '/networks/create', {
    Name: 'plain',
    Driver: 'macvlan',
    Options: { parent: 'lan1' },
    IPAM: { Config: [{ Subnet: '192.168.57.0/24', IPRange: '192.168.57.128/25' }] },
  });
  const p = await sandbox(d, 'p', 'plain');
  assert.ok(
    !ping(d.host.path, ipOf(p, 'plain'), 2),
    'without host access the host does not reach its sandbox',
  );
  await ok(d, 'DELETE', '/sandboxes/p');
  await ok(d, 'DELETE', '/networks/plain');
  // Host access where the host routes the subnet itself: only the --ip-range can go through the shim.
  const body = (ipRange?: string) => ({
    Name: 'ranged',
    Driver: 'macvlan',
    Options: { parent: 'lan1', 'cnmd.macvlan.host_access': 'true' },
    IPAM: {
      Config: [
        { Subnet: '192.168.57.0/24', IPRange: ipRange, AuxiliaryAddresses: { host: '192.168.57.250' } },
      ],
    },
  });
  const clash = await d.request('POST', '/networks/create', body());
  assert.equal(clash.status, 409, JSON.stringify(clash.body));
  assert.match(clash.body.message, /the host already routes 192.168.57.0\/24 .*: give --ip-range/);
  assert.equal(d.host.ipj('link', 'show', 'type', 'macvlan').length, 0, 'the refused shim is gone');
  await ok(d, 'POST', '/networks/create', body('192.168.57.128/25'));
  const r = await sandbox(d, 'r', 'ranged');
  assert.ok(ping(d.host.path, ipOf(r, 'ranged')), 'the host reaches the range through the shim');
  await ok(d, 'DELETE', '/sandboxes/r');
  await ok(d, 'DELETE', '/networks/ranged');
  const net = await ok(d, 'POST', '/networks/create', {
    Name: 'ha',
    Driver: 'macvlan',
    Options: { parent: 'lan0', 'cnmd.macvlan.host_access': 'true' },
    IPAM: { Config: [{ Subnet: '192.168.56.0/24', AuxiliaryAddresses: { host: '192.168.56.250' } }] },
  });
  const shim = `cnh-${net.Id.slice(0, 11)}`;
  const [link] = d.host.ipj('-d', 'addr', 'show', shim);
  assert.equal(link.linkinfo.info_kind, 'macvlan');
  assert.equal(link.linkinfo.info_data.mode, 'bridge');
  assert.equal(link.ifalias, `cnmd:lan:shim:${net.Id}`);
  assert.ok(link.addr_info.some((a: any) => a.local === '192.168.56.250' && a.prefixlen === 32));
  assert.ok(
    d.host
      .ipj('route', 'show', 'dev', shim)
      .some((r: any) => r.dst === '192.168.56.0/24' && r.prefsrc === '192.168.56.250'),
  );
  const a = await sandbox(d, 'a', 'ha');
  assert.notEqual(ipOf(a, 'ha'), '192.168.56.250', 'the aux address is not handed out');
  // Host -> sandbox and sandbox -> host, each seeing the other's own address.
  await serve(t, a.SandboxKey, 'tcp', 7000);
  assert.equal(roundTrip(d.host.path, 'tcp', ipOf(a, 'ha'), 7000).seenFrom, '192.168.56.250');
  await serve(t, d.host.path, 'tcp', 7200);
  assert.equal(roundTrip(a.SandboxKey, 'tcp', '192.168.56.250', 7200).seenFrom, ipOf(a, 'ha'));
  await ok(d, 'DELETE', '/sandboxes/a');
  await ok(d, 'DELETE', `/networks/${net.Id}`);
  assert.equal(d.host.ipj('link', 'show').filter((x: any) => x.ifname === shim).length, 0, 'shim removed');
  assert.equal(d.host.ipj('route', 'show', '192.168.56.0/24').length, 0, 'its route too');
});
