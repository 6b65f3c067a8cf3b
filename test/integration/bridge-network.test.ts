// Bridge networks end to end: a cnmd in its own "host" netns, sandboxes made
// through its API, real packets between them, kernel state read back with ip
// and iptables-save.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, lab } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { ping, reach, serve } from '../lib/probe';
import { uplink } from '../lib/uplink';
import { ok } from '../lib/api';

async function sandbox(
  d: RunningDaemon,
  name: string,
  networks: string[],
  extra: Record<string, unknown> = {},
) {
  await ok(d, 'POST', '/sandboxes', {
    Name: name,
    Networks: networks.map((n) => ({ Network: n })),
    ...extra,
  });
  return ok(d, 'GET', `/sandboxes/${name}`);
}

function ipOf(sb: any, net: string): string {
  return sb.Networks[net].IPAddress;
}

test('two sandboxes on one bridge exchange TCP and UDP; inspect shows both', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const net = await ok(d, 'POST', '/networks/create', {
    Name: 'web',
    IPAM: { Config: [{ Subnet: '10.31.0.0/24' }] },
  });
  const a = await sandbox(d, 'a', ['web']);
  const b = await sandbox(d, 'b', ['web']);
  assert.equal(ipOf(a, 'web'), '10.31.0.2');
  assert.equal(ipOf(b, 'web'), '10.31.0.3');
  assert.equal(a.Networks.web.MacAddress, '02:42:0a:1f:00:02');
  assert.equal(a.Networks.web.Gateway, '10.31.0.1');
  // Kernel state, read back independently.
  const bridge = `br-${net.Id.slice(0, 12)}`;
  const [br] = d.host.ipj('-d', 'link', 'show', bridge);
  assert.equal(br.linkinfo.info_kind, 'bridge');
  assert.ok(
    d.host
      .ipj('addr', 'show', bridge)[0]
      .addr_info.some((x: any) => x.local === '10.31.0.1' && x.prefixlen === 24),
  );
  const ports = d.host.ipj('link', 'show', 'master', bridge).map((x: any) => x.ifname);
  assert.equal(ports.length, 2);
  assert.ok(ports.every((p: string) => /^veth[0-9a-f]{11}$/.test(p)));
  const eth0 = JSON.parse(
    l.netns &&
      require('node:child_process').execFileSync(
        'nsenter',
        [`--net=${a.SandboxKey}`, 'ip', '-j', 'addr', 'show', 'eth0'],
        { encoding: 'utf8' },
      ),
  )[0];
  assert.equal(eth0.address, '02:42:0a:1f:00:02');
  assert.ok(eth0.addr_info.some((x: any) => x.local === '10.31.0.2' && x.prefixlen === 24));
  const routes = JSON.parse(
    require('node:child_process').execFileSync('nsenter', [`--net=${a.SandboxKey}`, 'ip', '-j', 'route'], {
      encoding: 'utf8',
    }),
  );
  assert.ok(routes.some((r: any) => r.dst === 'default' && r.gateway === '10.31.0.1' && r.dev === 'eth0'));
  // Packets.
  await serve(t, b.SandboxKey, 'tcp', 7000);
  await serve(t, b.SandboxKey, 'udp', 7001);
  assert.ok(reach(a.SandboxKey, 'tcp', ipOf(b, 'web'), 7000), 'TCP a -> b');
  assert.ok(reach(a.SandboxKey, 'udp', ipOf(b, 'web'), 7001), 'UDP a -> b');
  // Network inspect lists the sandboxes under Containers, as Docker does.
  const inspect = await ok(d, 'GET', '/networks/web');
  const containers = Object.values(inspect.Containers) as any[];
  assert.deepEqual(containers.map((c) => c.Name).sort(), ['a', 'b']);
  assert.deepEqual(containers.map((c) => c.IPv4Address).sort(), ['10.31.0.2/24', '10.31.0.3/24']);
  assert.deepEqual(inspect.IPAM.Config, [{ Subnet: '10.31.0.0/24', Gateway: '10.31.0.1' }]);
  // Teardown removes the veths, then the bridge.
  await ok(d, 'DELETE', '/sandboxes/a');
  await ok(d, 'DELETE', '/sandboxes/b');
  await eventually(() => assert.deepEqual(d.host.ipj('link', 'show', 'master', bridge), []));
  await ok(d, 'DELETE', '/networks/web');
  assert.deepEqual(
    d.host.ipj('link', 'show', 'type', 'bridge').filter((x: any) => x.ifname === bridge),
    [],
  );
});

test('sandboxes on two bridge networks cannot reach each other; icc=false blocks traffic inside a network', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'n1', IPAM: { Config: [{ Subnet: '10.32.1.0/24' }] } });
  await ok(d, 'POST', '/networks/create', { Name: 'n2', IPAM: { Config: [{ Subnet: '10.32.2.0/24' }] } });
  await ok(d, 'POST', '/networks/create', {
    Name: 'quiet',
    Options: { 'com.docker.network.bridge.enable_icc': 'false' },
    IPAM: { Config: [{ Subnet: '10.32.3.0/24' }] },
  });
  const a = await sandbox(d, 'a', ['n1']);
  const b = await sandbox(d, 'b', ['n2']);
  const q1 = await sandbox(d, 'q1', ['quiet']);
  const q2 = await sandbox(d, 'q2', ['quiet']);
  await serve(t, b.SandboxKey, 'tcp', 7000);
  await serve(t, q2.SandboxKey, 'tcp', 7000);
  assert.ok(ping(a.SandboxKey, '10.32.1.1'), 'a reaches its own gateway');
  assert.equal(reach(a.SandboxKey, 'tcp', ipOf(b, 'n2'), 7000, 800), false, 'n1 -> n2 is isolated');
  assert.equal(reach(q1.SandboxKey, 'tcp', ipOf(q2, 'quiet'), 7000, 800), false, 'icc=false blocks q1 -> q2');
  const filter = d.host.run('iptables-save', ['-t', 'filter']);
  assert.match(
    filter,
    /-A CNMD-ISOLATION-STAGE-1 -i br-[0-9a-f]{12} ! -o br-[0-9a-f]{12} -m conntrack ! --ctstate DNAT -j CNMD-ISOLATION-STAGE-2/,
  );
  assert.match(filter, /-i br-[0-9a-f]{12} -o br-[0-9a-f]{12} -j DROP/);
});

test('masquerade lets a sandbox reach an outside netns; an internal network has no egress', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const outside = await l.ns('outside');
  // The "uplink": host 192.0.2.1 <-> outside 192.0.2.2.
  await uplink(d.host, outside);
  await serve(t, outside.path, 'tcp', 8080);
  await ok(d, 'POST', '/networks/create', { Name: 'pub', IPAM: { Config: [{ Subnet: '10.33.0.0/24' }] } });
  await ok(d, 'POST', '/networks/create', {
    Name: 'priv',
    Internal: true,
    IPAM: { Config: [{ Subnet: '10.34.0.0/24' }] },
  });
  const p = await sandbox(d, 'p', ['pub']);
  const i = await sandbox(d, 'i', ['priv']);
  assert.ok(reach(p.SandboxKey, 'tcp', '192.0.2.2', 8080), 'masqueraded sandbox reaches outside');
  assert.equal(reach(i.SandboxKey, 'tcp', '192.0.2.2', 8080, 800), false, 'internal network has no egress');
  const routes = JSON.parse(
    require('node:child_process').execFileSync('nsenter', [`--net=${i.SandboxKey}`, 'ip', '-j', 'route'], {
      encoding: 'utf8',
    }),
  );
  assert.ok(!routes.some((r: any) => r.dst === 'default'), 'no default route on an internal network');
  const nat = d.host.run('iptables-save', ['-t', 'nat']);
  assert.match(nat, /-s 10\.33\.0\.0\/24 ! -o br-[0-9a-f]{12} -j MASQUERADE/);
  assert.doesNotMatch(nat, /10\.34\.0\.0\/24/);
});

test('IPv6 dual stack and MTU', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', {
    Name: 'dual',
    EnableIPv6: true,
    Options: { 'com.docker.network.driver.mtu': '1400' },
    IPAM: { Config: [{ Subnet: '10.35.0.0/24' }, { Subnet: 'fd35::/64' }] },
  });
  const a = await sandbox(d, 'a', ['dual']);
  const b = await sandbox(d, 'b', ['dual']);
  assert.equal(a.Networks.dual.GlobalIPv6Address, 'fd35::2');
  assert.equal(b.Networks.dual.GlobalIPv6Address, 'fd35::3');
  assert.equal(a.Networks.dual.IPv6Gateway, 'fd35::1');
  assert.ok(ping(a.SandboxKey, 'fd35::3'), 'ping6 a -> b');
  assert.ok(ping(a.SandboxKey, 'fd35::1'), 'ping6 a -> gateway');
  await serve(t, b.SandboxKey, 'tcp', 7000);
  assert.ok(reach(a.SandboxKey, 'tcp', 'fd35::3', 7000), 'TCP over IPv6');
  const [eth0] = JSON.parse(
    require('node:child_process').execFileSync(
      'nsenter',
      [`--net=${a.SandboxKey}`, 'ip', '-j', 'link', 'show', 'eth0'],
      { encoding: 'utf8' },
    ),
  );
  assert.equal(eth0.mtu, 1400);
  // An endpoint with IPv6 has its link-local address too (sandboxes make interfaces without one).
  const [addrs] = JSON.parse(
    require('node:child_process').execFileSync(
      'nsenter',
      [`--net=${a.SandboxKey}`, 'ip', '-j', '-6', 'addr', 'show', 'eth0'],
      { encoding: 'utf8' },
    ),
  );
  assert.ok(
    addrs.addr_info.some((x: any) => x.scope === 'link' && /^fe80::/.test(x.local)),
    JSON.stringify(addrs.addr_info),
  );
  assert.ok(addrs.addr_info.some((x: any) => x.local === 'fd35::2' && x.prefixlen === 64));
  const net = await ok(d, 'GET', '/networks/dual');
  const [br] = d.host.ipj('link', 'show', `br-${net.Id.slice(0, 12)}`);
  assert.equal(br.mtu, 1400);
  // The host side is a bridge port: up, on the bridge, with no address of its own, not even an IPv6 link-local.
  const veth = `veth${a.Networks.dual.EndpointID.slice(0, 11)}`;
  const [port] = d.host.ipj('-d', 'link', 'show', veth);
  assert.equal(port.inet6_addr_gen_mode, 'none');
  assert.ok(port.flags.includes('UP'));
  assert.equal(port.master, `br-${net.Id.slice(0, 12)}`);
  assert.deepEqual(
    d.host.ipj('addr', 'show', veth).flatMap((x: any) => x.addr_info),
    [],
  );
  const routes6 = JSON.parse(
    require('node:child_process').execFileSync(
      'nsenter',
      [`--net=${a.SandboxKey}`, 'ip', '-j', '-6', 'route'],
      { encoding: 'utf8' },
    ),
  );
  assert.ok(routes6.some((r: any) => r.dst === 'default' && r.gateway === 'fd35::1'));
});

test('a failed connect leaves kernel, firewall, store and IPAM as they were', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'tiny', IPAM: { Config: [{ Subnet: '10.36.0.0/30' }] } });
  await sandbox(d, 'one', ['tiny']); // takes the only free address, .2
  const linksBefore = d.host
    .ipj('link')
    .map((x: any) => x.ifname)
    .sort();
  const natBefore = d.host.run('iptables-save', ['-t', 'nat']).replace(/^#.*$/gm, '');
  const r = await d.request('POST', '/sandboxes', { Name: 'two', Networks: [{ Network: 'tiny' }] });
  assert.equal(r.status, 409);
  assert.match(r.body.message, /no available IPv4 addresses in 10\.36\.0\.0\/30/);
  await eventually(() =>
    assert.deepEqual(
      d.host
        .ipj('link')
        .map((x: any) => x.ifname)
        .sort(),
      linksBefore,
    ),
  );
  assert.equal(d.host.run('iptables-save', ['-t', 'nat']).replace(/^#.*$/gm, ''), natBefore);
  assert.deepEqual(
    (await ok(d, 'GET', '/sandboxes')).map((s: any) => s.Name),
    ['one'],
  );
  // The netns of the failed sandbox is gone too.
  const fs = require('node:fs');
  assert.equal(fs.readdirSync(`${d.execRoot}/netns`).length, 1);
  // And the address is still free for the next one once "one" leaves.
  await ok(d, 'DELETE', '/sandboxes/one');
  const again = await sandbox(d, 'two', ['tiny']);
  assert.equal(ipOf(again, 'tiny'), '10.36.0.2');
});
