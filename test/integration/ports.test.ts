// Port publishing end to end: a daemon in its "host" netns with an uplink to an
// "outside" netns; servers in sandboxes; real clients from outside, from the
// host's loopback (the in-daemon proxy), and from another sandbox (hairpin).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { eventually, lab, Lab, type Ns } from '../lib/fixture';
import { CNMCTL, RunningDaemon, restartDaemon, startDaemon } from '../lib/daemon';
import { HOST_IP, OUTSIDE_IP, uplink } from '../lib/uplink';
import { curlIn, reach, roundTrip, serve, serveHttp, unreachablePorts } from '../lib/probe';
import type { TestContext } from 'node:test';

async function setup(t: TestContext, args: string[] = []) {
  const l: Lab = await lab(t);
  const d = await startDaemon(t, l, { args });
  const outside = await l.ns('outside');
  await uplink(d.host, outside);
  const r = await d.request('POST', '/networks/create', {
    Name: 'web',
    IPAM: { Config: [{ Subnet: '10.51.0.0/24' }] },
  });
  assert.equal(r.status, 201);
  return { l, d, outside };
}

/** IPv6 on the uplink: the host is 2001:db8::1, the outside 2001:db8::2. */
async function ipv6Uplink(d: RunningDaemon, outside: Ns): Promise<void> {
  await d.host.handle.addrAdd('uplink', '2001:db8::1/64', { nodad: true });
  await outside.handle.addrAdd('wan', '2001:db8::2/64', { nodad: true });
}

/** Network "dual": 10.54.0.0/24 and fd54::/64. */
async function dualStackNetwork(d: RunningDaemon): Promise<void> {
  const r = await d.request('POST', '/networks/create', {
    Name: 'dual',
    EnableIPv6: true,
    IPAM: { Config: [{ Subnet: '10.54.0.0/24' }, { Subnet: 'fd54::/64' }] },
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
}

async function sandbox(d: RunningDaemon, name: string, ports: string[], network = 'web') {
  const r = await d.request('POST', '/sandboxes', {
    Name: name,
    Networks: [{ Network: network }],
    Ports: ports,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return (await d.request('GET', `/sandboxes/${name}`)).body;
}

/** A table dump without comments and counters, to compare. */
function tables(d: RunningDaemon, cmd: string, args: string[] = []): string {
  return d.host
    .run(cmd, args)
    .replace(/^#.*$/gm, '')
    .replace(/\[\d+:\d+\]/g, '');
}

function nat(d: RunningDaemon): string {
  return tables(d, 'iptables-save', ['-t', 'nat']);
}

test('TCP and UDP from outside through the host address, source preserved; loopback through the proxy; docker-port output', async (t) => {
  const { d, outside } = await setup(t);
  const web = await sandbox(d, 'web1', ['8080:80', '5353:54/udp', '127.0.0.1:9090:90']);
  await serve(t, web.SandboxKey, 'tcp', 80);
  await serve(t, web.SandboxKey, 'udp', 54);
  await serve(t, web.SandboxKey, 'tcp', 90);
  const tcp = roundTrip(outside.path, 'tcp', HOST_IP, 8080);
  assert.ok(tcp.ok, 'outside -> host:8080 -> sandbox:80');
  assert.equal(tcp.seenFrom, OUTSIDE_IP, 'the server sees the real client address (no SNAT)');
  const udp = roundTrip(outside.path, 'udp', HOST_IP, 5353);
  assert.ok(udp.ok, 'UDP outside -> host:5353 -> sandbox:54');
  assert.equal(udp.seenFrom, OUTSIDE_IP);
  assert.ok(reach(d.host.path, 'tcp', '127.0.0.1', 8080), 'host loopback -> proxy -> sandbox:80');
  assert.ok(reach(d.host.path, 'udp', '127.0.0.1', 5353), 'host loopback UDP -> proxy -> sandbox:54');
  assert.ok(reach(d.host.path, 'tcp', '127.0.0.1', 9090), '127.0.0.1-published port from the host itself');
  assert.equal(
    reach(outside.path, 'tcp', HOST_IP, 9090, 800),
    false,
    'a 127.0.0.1-published port is not reachable from outside',
  );
  // Even aiming at the container address directly from outside (routed through the host) is dropped.
  await outside.handle.routeAdd({ dst: '10.51.0.0/24', gateway: HOST_IP });
  assert.equal(
    reach(outside.path, 'tcp', web.Networks.web.IPAddress, 90, 800),
    false,
    'direct access to the container port is dropped (moby#45610)',
  );
  assert.deepEqual(web.Ports['80/tcp'], [
    { HostIp: '0.0.0.0', HostPort: '8080' },
    { HostIp: '::', HostPort: '8080' },
  ]);
  const out = execFileSync(process.execPath, [CNMCTL, '-H', d.hostUri, 'port', 'web1'], { encoding: 'utf8' });
  assert.match(out, /^54\/udp -> 0\.0\.0\.0:5353$/m);
  assert.match(out, /^80\/tcp -> 0\.0\.0\.0:8080$/m);
  assert.match(out, /^90\/tcp -> 127\.0\.0\.1:9090$/m);
  assert.equal(
    execFileSync(process.execPath, [CNMCTL, '-H', d.hostUri, 'port', 'web1', '80'], {
      encoding: 'utf8',
    }).split('\n')[0],
    '0.0.0.0:8080',
  );
  // Removing the sandbox removes exactly its rules.
  const before = await (async () => {
    const x = await sandbox(d, 'other', ['7070:70']);
    return x;
  })();
  assert.ok(before);
  const natWithBoth = nat(d);
  await d.request('DELETE', '/sandboxes/web1');
  const natAfter = nat(d);
  assert.doesNotMatch(natAfter, new RegExp(web.Networks.web.IPAddress.replace(/\./g, '\\.') + '\\b'));
  assert.match(natAfter, /--dport 7070/);
  assert.ok(natWithBoth.length > natAfter.length);
});

test('a 1000-port range: one rule per kind, every port answers, removal leaves nothing', async (t) => {
  const { d, outside } = await setup(t);
  const natBefore = nat(d);
  const sb = await sandbox(d, 'ranger', ['20000-20999:20000-20999']);
  await serve(t, sb.SandboxKey, 'tcp', 20000, 20999);
  const rules = nat(d)
    .split('\n')
    .filter((l) => l.includes('20000:20999'));
  assert.ok(
    rules.length >= 1 && rules.length <= 4,
    `a handful of range rules, not 1000: ${rules.join('\n')}`,
  );
  assert.deepEqual(
    unreachablePorts(outside.path, HOST_IP, 20000, 20999),
    [],
    'every port of the range answers from outside',
  );
  assert.deepEqual(
    unreachablePorts(d.host.path, '127.0.0.1', 20000, 20999),
    [],
    'and through the loopback proxy',
  );
  await d.request('DELETE', '/sandboxes/ranger');
  assert.equal(nat(d), natBefore, 'nat table as before');
});

test('conflicts: a host port published twice, or one a host process listens on, is refused and nothing is half-applied', async (t) => {
  const { d } = await setup(t);
  await sandbox(d, 'first', ['8080:80']);
  const natBefore = nat(d);
  const linksBefore = d.host.ipj('link').length;
  const r = await d.request('POST', '/sandboxes', {
    Name: 'second',
    Networks: [{ Network: 'web' }],
    Ports: ['8081:81', '8080:80'],
  });
  assert.equal(r.status, 409, JSON.stringify(r.body));
  assert.match(r.body.message, /8080/);
  // A process in the host netns holds 6000.
  await serve(t, d.host.path, 'tcp', 6000);
  const r2 = await d.request('POST', '/sandboxes', {
    Name: 'third',
    Networks: [{ Network: 'web' }],
    Ports: ['6000:80'],
  });
  assert.equal(r2.status, 409, JSON.stringify(r2.body));
  assert.match(r2.body.message, /6000/);
  assert.equal(nat(d), natBefore, 'no rule left by the refused sandboxes');
  await eventually(() => assert.equal(d.host.ipj('link').length, linksBefore));
  assert.deepEqual(
    (await d.request('GET', '/sandboxes')).body.map((s: any) => s.Name),
    ['first'],
  );
  const bad = await d.request('POST', '/sandboxes', {
    Name: 'bad',
    Networks: [{ Network: 'web' }],
    Ports: ['70000:80'],
  });
  assert.equal(bad.status, 400);
  assert.match(bad.body.message, /70000/);
});

test('ephemeral host ports come from ip_local_port_range; published ports survive a daemon restart', async (t) => {
  const { l, d, outside } = await setup(t);
  const sb = await sandbox(d, 'eph', ['80']);
  const hostPort = Number(sb.Ports['80/tcp'][0].HostPort);
  const [lo, hi] = d.host
    .run('cat', ['/proc/sys/net/ipv4/ip_local_port_range'])
    .trim()
    .split(/\s+/)
    .map(Number);
  assert.ok(hostPort >= lo && hostPort <= hi, `${hostPort} in ${lo}-${hi}`);
  await serve(t, sb.SandboxKey, 'tcp', 80);
  assert.ok(reach(outside.path, 'tcp', HOST_IP, hostPort));
  const natBefore = nat(d);
  assert.equal(await d.stop(), 0);
  const d2 = await restartDaemon(t, l, d);
  assert.equal(
    nat(d2).replace(/--to-ports \d+/g, ''),
    natBefore.replace(/--to-ports \d+/g, ''),
    'same rules after restart (the proxy port may change)',
  );
  assert.ok(reach(outside.path, 'tcp', HOST_IP, hostPort), 'still published after the restart');
  assert.ok(reach(d2.host.path, 'tcp', '127.0.0.1', hostPort), 'and through the new proxy');
  const again = (await d2.request('GET', '/sandboxes/eph')).body;
  assert.equal(again.Ports['80/tcp'][0].HostPort, String(hostPort));
  // The port stays reserved: another sandbox cannot take it.
  const r = await d2.request('POST', '/sandboxes', {
    Name: 'thief',
    Networks: [{ Network: 'web' }],
    Ports: [`${hostPort}:80`],
  });
  assert.equal(r.status, 409);
});

for (const proxy of ['true', 'false']) {
  test(`hairpin (userland-proxy=${proxy}): another sandbox reaches a published port through the host address; loopback works`, async (t) => {
    const { d, outside } = await setup(t, ['--userland-proxy', proxy]);
    const srv = await sandbox(d, 'srv', ['8080:80']);
    const cli = await sandbox(d, 'cli', []);
    await serve(t, srv.SandboxKey, 'tcp', 80);
    assert.ok(reach(cli.SandboxKey, 'tcp', HOST_IP, 8080), 'sandbox -> host:8080 -> sibling sandbox');
    assert.ok(reach(srv.SandboxKey, 'tcp', HOST_IP, 8080), 'sandbox -> host:8080 -> itself');
    assert.ok(reach(d.host.path, 'tcp', '127.0.0.1', 8080), 'host loopback');
    const fromOutside = roundTrip(outside.path, 'tcp', HOST_IP, 8080);
    assert.ok(fromOutside.ok);
    assert.equal(fromOutside.seenFrom, OUTSIDE_IP, 'external clients keep their address');
  });
}

test('host_binding_ipv4, IPv6 host addresses and a shifted range', async (t) => {
  const { d, outside } = await setup(t);
  await d.host.handle.addrAdd('uplink', '192.0.2.50/24');
  await ipv6Uplink(d, outside);
  let r = await d.request('POST', '/networks/create', {
    Name: 'bound',
    EnableIPv6: true,
    Options: { 'com.docker.network.bridge.host_binding_ipv4': '192.0.2.50' },
    IPAM: { Config: [{ Subnet: '10.52.0.0/24' }, { Subnet: 'fd52::/64' }] },
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await d.request('POST', '/sandboxes', {
    Name: 'b1',
    Networks: [{ Network: 'bound' }],
    Ports: ['8080:80', '[2001:db8::1]:8443:443', '9000-9009:7000-7009'],
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const sb = (await d.request('GET', '/sandboxes/b1')).body;
  await serve(t, sb.SandboxKey, 'tcp', 80);
  await serve(t, sb.SandboxKey, 'tcp', 443);
  await serve(t, sb.SandboxKey, 'tcp', 7000, 7009);
  assert.ok(reach(outside.path, 'tcp', '192.0.2.50', 8080), 'published on host_binding_ipv4');
  assert.equal(reach(outside.path, 'tcp', HOST_IP, 8080, 800), false, 'not on the other host address');
  // IPv6 neighbour discovery on a fresh link can take a moment under load.
  const v6 = await eventually(() => {
    const r = roundTrip(outside.path, 'tcp', '2001:db8::1', 8443, 3000);
    assert.ok(r.ok, 'IPv6 host address');
    return r;
  }, 15_000);
  assert.equal(v6.seenFrom, '2001:db8::2');
  assert.deepEqual(
    unreachablePorts(outside.path, '192.0.2.50', 9000, 9009),
    [],
    'shifted range 9000-9009 -> 7000-7009',
  );
});

test("a range covering the proxy's own listening port is not refused as in use", async (t) => {
  const { d, outside } = await setup(t);
  const line = d.host
    .run('ss', ['-Htln'])
    .split('\n')
    .find((l) => /\s127\.0\.0\.1:\d+\s/.test(l));
  assert.ok(line, 'the proxy listens on loopback');
  const proxyPort = Number(/127\.0\.0\.1:(\d+)/.exec(line!)![1]);
  const first = Math.max(1024, proxyPort - 2);
  const r = await d.request('POST', '/sandboxes', {
    Name: 'around',
    Networks: [{ Network: 'web' }],
    Ports: [`${first}-${first + 4}:${first}-${first + 4}`],
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const sb = (await d.request('GET', '/sandboxes/around')).body;
  await serve(t, sb.SandboxKey, 'tcp', first, first + 4);
  assert.deepEqual(
    unreachablePorts(outside.path, HOST_IP, first, first + 4),
    [],
    'every port, the proxy port included, from outside',
  );
});

for (const proxy of ['true', 'false']) {
  test(`across networks (userland-proxy=${proxy}): a port published on one network is reachable from another through the host's and that network's gateway address, as on Docker's bridge; direct access stays isolated`, async (t) => {
    const { d, outside } = await setup(t, ['--userland-proxy', proxy]);
    const r = await d.request('POST', '/networks/create', {
      Name: 'other',
      IPAM: { Config: [{ Subnet: '10.53.0.0/24', Gateway: '10.53.0.1' }] },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const srv = await sandbox(d, 'srv', ['8080:80']);
    const sibling = await sandbox(d, 'sibling', []);
    const cr = await d.request('POST', '/sandboxes', { Name: 'far', Networks: [{ Network: 'other' }] });
    assert.equal(cr.status, 201, JSON.stringify(cr.body));
    const far = (await d.request('GET', '/sandboxes/far')).body;
    await serve(t, srv.SandboxKey, 'tcp', 80);
    await serve(t, srv.SandboxKey, 'tcp', 81); // not published
    assert.ok(reach(far.SandboxKey, 'tcp', HOST_IP, 8080), 'other network -> host address:8080');
    assert.ok(reach(far.SandboxKey, 'tcp', '10.53.0.1', 8080), 'other network -> its own gateway:8080');
    assert.ok(reach(sibling.SandboxKey, 'tcp', HOST_IP, 8080), 'same network -> host address:8080');
    assert.ok(reach(d.host.path, 'tcp', HOST_IP, 8080), 'host -> its own address:8080');
    assert.ok(reach(d.host.path, 'tcp', '127.0.0.1', 8080), 'host loopback');
    assert.ok(reach(outside.path, 'tcp', HOST_IP, 8080), 'outside -> host address:8080');
    const srvIP = srv.Networks.web.IPAddress;
    assert.equal(
      reach(far.SandboxKey, 'tcp', srvIP, 80, 800),
      false,
      'the other network still cannot reach the container address directly',
    );
    assert.equal(reach(far.SandboxKey, 'tcp', HOST_IP, 8081, 800), false, 'nor a port that is not published');
  });

  test(`across dual-stack networks over IPv6 (userland-proxy=${proxy}): the host's IPv6 address and the other network's IPv6 gateway reach a published port; the container's IPv6 address stays isolated`, async (t) => {
    const { d, outside } = await setup(t, ['--userland-proxy', proxy]);
    await ipv6Uplink(d, outside);
    await dualStackNetwork(d);
    const r = await d.request('POST', '/networks/create', {
      Name: 'other6',
      EnableIPv6: true,
      IPAM: { Config: [{ Subnet: '10.55.0.0/24' }, { Subnet: 'fd55::/64', Gateway: 'fd55::1' }] },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const srv = await sandbox(d, 'srv6', ['8080:80'], 'dual');
    const far = await sandbox(d, 'far6', [], 'other6');
    await serve(t, srv.SandboxKey, 'tcp', 80);
    await serve(t, srv.SandboxKey, 'tcp', 81); // not published
    // IPv6 addresses may still be in duplicate address detection under load: wait for the first answer.
    await eventually(
      () => assert.ok(reach(far.SandboxKey, 'tcp', '2001:db8::1', 8080, 3000), 'host IPv6 address'),
      15_000,
    );
    assert.ok(reach(far.SandboxKey, 'tcp', 'fd55::1', 8080), "the other network's IPv6 gateway");
    assert.ok(reach(outside.path, 'tcp', '2001:db8::1', 8080), 'outside over IPv6');
    const srvIPv6 = srv.Networks.dual.GlobalIPv6Address;
    assert.ok(srvIPv6);
    assert.equal(
      reach(far.SandboxKey, 'tcp', srvIPv6, 80, 800),
      false,
      'the container address stays isolated',
    );
    assert.equal(reach(far.SandboxKey, 'tcp', 'fd55::1', 8081, 800), false, 'nor an unpublished port');
  });
}

test('IPv6 clients (userland-proxy=true): [::1], the host own IPv6 address and an external IPv6 client reach an IPv4-only sandbox through the proxy (also on [::] and one IPv6 address named), a dual-stack one through ip6tables NAT', async (t) => {
  const { d, outside } = await setup(t);
  await ipv6Uplink(d, outside);
  await dualStackNetwork(d);
  const v4only = await sandbox(d, 'v4only', [
    '8080:80',
    '5353:54/udp',
    '[::]:8082:80',
    '[2001:db8::1]:8083:80',
  ]);
  const dr = await d.request('POST', '/sandboxes', {
    Name: 'dual1',
    Networks: [{ Network: 'dual' }],
    Ports: ['8081:80'],
  });
  assert.equal(dr.status, 201, JSON.stringify(dr.body));
  const dual = (await d.request('GET', '/sandboxes/dual1')).body;
  await serveHttp(t, v4only.SandboxKey, 80);
  await serve(t, v4only.SandboxKey, 'udp', 54);
  await serveHttp(t, dual.SandboxKey, 80);
  assert.deepEqual(v4only.Ports['80/tcp'], [
    { HostIp: '0.0.0.0', HostPort: '8080' },
    { HostIp: '::', HostPort: '8080' },
    { HostIp: '::', HostPort: '8082' },
    { HostIp: '2001:db8::1', HostPort: '8083' },
  ]);
  const gw = '10.51.0.1'; // the proxy connects from the host: the sandbox sees its gateway
  assert.equal(
    curlIn(d.host.path, 'http://[::1]:8080/'),
    gw,
    'curl [::1]:8080 -> proxy -> IPv4-only sandbox',
  );
  assert.equal(curlIn(d.host.path, 'http://[::1]:8082/'), gw, 'curl [::1]:8082 (published on [::])');
  assert.equal(curlIn(d.host.path, 'http://[2001:db8::1]:8080/'), gw, "the host's own IPv6 address");
  assert.equal(curlIn(d.host.path, 'http://[2001:db8::1]:8083/'), gw, 'the IPv6 address named in -p');
  assert.equal(curlIn(d.host.path, 'http://[::1]:8083/', 1), undefined, 'but not ::1 for that one');
  assert.equal(curlIn(d.host.path, 'http://127.0.0.1:8082/', 1), undefined, 'nor IPv4 for the [::] one');
  assert.ok(reach(d.host.path, 'udp', '::1', 5353), 'host [::1]:5353/udp -> proxy -> IPv4-only sandbox');
  // An external IPv6 path: neighbour discovery on a fresh link can take a moment under load.
  await eventually(
    () =>
      assert.equal(
        curlIn(outside.path, 'http://[2001:db8::1]:8080/'),
        gw,
        'external IPv6 client -> IPv4-only sandbox',
      ),
    15_000,
  );
  assert.equal(curlIn(outside.path, 'http://[2001:db8::1]:8082/'), gw, 'external IPv6 -> [::]:8082');
  assert.equal(curlIn(outside.path, 'http://[2001:db8::1]:8083/'), gw, 'external IPv6 -> [2001:db8::1]:8083');
  assert.ok(reach(outside.path, 'udp', '2001:db8::1', 5353), 'external IPv6 UDP -> IPv4-only sandbox');
  assert.equal(curlIn(outside.path, 'http://192.0.2.1:8082/', 1), undefined, 'no IPv4 for the [::] binding');
  assert.equal(
    curlIn(d.host.path, 'http://[::1]:8081/'),
    'fd54::1',
    'host [::1]:8081 -> proxy -> the dual-stack sandbox over IPv6',
  );
  // The sandbox's IPv6 address may still be in duplicate address detection: wait for it, as above.
  await eventually(
    () =>
      assert.equal(
        curlIn(outside.path, 'http://[2001:db8::1]:8081/'),
        '2001:db8::2',
        'external IPv6 client -> dual-stack sandbox by ip6tables DNAT, keeping its address (NAT, not the proxy)',
      ),
    15_000,
  );
  // The proxy's own IPv6 listener takes only REDIRECTed connections: straight to its port, dropped.
  const proxyPort = /\[::\]:(\d+)\s/.exec(d.host.run('ss', ['-Htln']))?.[1];
  assert.ok(proxyPort, 'the proxy listens on [::]');
  assert.equal(
    reach(outside.path, 'tcp', '2001:db8::1', Number(proxyPort), 800),
    false,
    'no open port of its own',
  );
  await d.request('DELETE', '/sandboxes/v4only');
  assert.equal(curlIn(d.host.path, 'http://[::1]:8080/', 1), undefined, 'unpublished with the sandbox');
  assert.doesNotMatch(
    d.host.run('ip6tables-save', ['-t', 'nat']),
    /--dport 808[023] /,
    'its IPv6 redirects removed',
  );
});

test('IPv6 without the proxy: an IPv4-only sandbox is IPv4 only, as Docker ([::] not claimed, IPv6 host addresses and [::1] refused, naming the address); a dual-stack one is served to IPv6 clients by NAT', async (t) => {
  const { d, outside } = await setup(t, ['--userland-proxy', 'false']);
  await ipv6Uplink(d, outside);
  const sb = await sandbox(d, 'v4only', ['8080:80']);
  await serveHttp(t, sb.SandboxKey, 80);
  assert.deepEqual(sb.Ports['80/tcp'], [{ HostIp: '0.0.0.0', HostPort: '8080' }]);
  assert.equal(curlIn(outside.path, 'http://192.0.2.1:8080/'), OUTSIDE_IP);
  const out = execFileSync(process.execPath, [CNMCTL, '-H', d.hostUri, 'port', 'v4only'], {
    encoding: 'utf8',
  });
  assert.equal(out, '80/tcp -> 0.0.0.0:8080\n');
  const saved = () => ['iptables-save', 'ip6tables-save'].map((c) => tables(d, c)).join('\n');
  const before = saved();
  for (const [spec, addr] of [
    ['[::]:8082:80', '::'],
    ['[2001:db8::1]:8083:80', '2001:db8::1'],
  ]) {
    const r = await d.request('POST', '/sandboxes', {
      Name: 'v6',
      Networks: [{ Network: 'web' }],
      Ports: [spec],
    });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.match(r.body.message, new RegExp(`host address ${addr.replace(/\./g, '\\.')} cannot be served`));
    assert.match(r.body.message, /no IPv6 address/);
  }
  assert.equal(saved(), before, 'the refused sandboxes left no rule');
  await dualStackNetwork(d);
  const afterNet = saved();
  let r = await d.request('POST', '/sandboxes', {
    Name: 'lo6',
    Networks: [{ Network: 'dual' }],
    Ports: ['[::1]:9002:80'],
  });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  assert.match(r.body.message, /host address ::1 cannot be served: the kernel does not NAT IPv6 loopback/);
  assert.equal(saved(), afterNet, 'nor this one');
  assert.deepEqual(
    ((await d.request('GET', '/sandboxes')).body as any[]).map((s) => s.Name),
    ['v4only'],
    'and no sandbox',
  );
  r = await d.request('POST', '/sandboxes', {
    Name: 'dual1',
    Networks: [{ Network: 'dual' }],
    Ports: ['8081:80'],
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const dual = (await d.request('GET', '/sandboxes/dual1')).body;
  assert.deepEqual(dual.Ports['80/tcp'], [
    { HostIp: '0.0.0.0', HostPort: '8081' },
    { HostIp: '::', HostPort: '8081' },
  ]);
  await serveHttp(t, dual.SandboxKey, 80);
  await eventually(
    () =>
      assert.equal(
        curlIn(outside.path, 'http://[2001:db8::1]:8081/'),
        '2001:db8::2',
        'external IPv6 client -> dual-stack sandbox by ip6tables DNAT',
      ),
    15_000,
  );
  assert.equal(curlIn(outside.path, 'http://192.0.2.1:8081/'), OUTSIDE_IP, 'and IPv4');
});

test('-p on a host address the host does not have is refused through the API and cnmctl, naming the address, with nothing made; addresses it has are published and served', async (t) => {
  const { d, outside } = await setup(t);
  await d.host.handle.addrAdd('uplink', '2001:db8::1/64', { nodad: true });
  const saved = () => ['iptables-save', 'ip6tables-save'].map((c) => tables(d, c)).join('\n');
  const netns = () => {
    const dir = path.join(d.execRoot, 'netns');
    return fs.existsSync(dir)
      ? fs
          .readdirSync(dir)
          .filter((f) => f !== 'default')
          .sort()
      : [];
  };
  const before = { rules: saved(), links: d.host.ipj('link').length, netns: netns() };
  for (const [spec, addr] of [
    ['1.2.3.4:9000:80', '1.2.3.4'],
    ['[2001:db8::99]:9000:80', '2001:db8::99'],
    ['192.0.2.2:9000:80/udp', '192.0.2.2'], // the outside's address, not the host's
  ]) {
    const r = await d.request('POST', '/sandboxes', {
      Name: 'far',
      Networks: [{ Network: 'web' }],
      Ports: ['8080:80', spec],
    });
    assert.equal(r.status, 400, `${spec}: ${JSON.stringify(r.body)}`);
    assert.match(
      r.body.message,
      new RegExp(`host address ${addr.replace(/\./g, '\\.')} is not an address of this host`),
    );
    const cli = spawnSync(
      process.execPath,
      [CNMCTL, '-H', d.hostUri, 'sandbox', 'create', '--name', 'far', '--network', 'web', '-p', spec],
      { encoding: 'utf8' },
    );
    assert.notEqual(cli.status, 0, `cnmctl ${spec} fails`);
    assert.match(
      cli.stderr,
      new RegExp(`host address ${addr.replace(/\./g, '\\.')} is not an address of this host`),
    );
    assert.equal(cli.stdout, '', 'and prints no id');
  }
  assert.equal(saved(), before.rules, 'no rule in either family');
  await eventually(() => assert.equal(d.host.ipj('link').length, before.links, 'no link'));
  assert.deepEqual(netns(), before.netns, 'no sandbox netns');
  assert.deepEqual((await d.request('GET', '/sandboxes')).body, [], 'no sandbox');
  // Nothing reserved: the same host port and the first address go to the next sandbox.
  await d.host.handle.addrAdd('lo', '192.0.2.10/32');
  const ok = await sandbox(d, 'near', [
    '8080:80',
    '192.0.2.10:9000:80',
    '127.0.0.2:9001:80',
    '[2001:db8::1]:9002:80',
  ]);
  assert.equal(ok.Networks.web.IPAddress, '10.51.0.2', 'the refused sandboxes released their address');
  await serve(t, ok.SandboxKey, 'tcp', 80);
  assert.ok(reach(outside.path, 'tcp', HOST_IP, 8080), 'outside -> host:8080');
  assert.ok(reach(d.host.path, 'tcp', '192.0.2.10', 9000), 'a host address on lo');
  assert.ok(
    reach(d.host.path, 'tcp', '127.0.0.2', 9001),
    'a loopback address other than 127.0.0.1 (the proxy)',
  );
  assert.equal(reach(d.host.path, 'tcp', '127.0.0.1', 9001, 800), false, 'only that one');
  assert.ok(reach(d.host.path, 'tcp', '2001:db8::1', 9002), 'an IPv6 host address of an IPv4-only sandbox');
});

test('a publish whose ip6tables half fails leaves neither family, the proxy nor the allocator changed; the same ports publish once ip6tables works again', async (t) => {
  const { d, outside } = await setup(t);
  await ipv6Uplink(d, outside);
  await dualStackNetwork(d);
  // Another writer removes cnmd's IPv6 nat chain behind its back: the daemon's next IPv6 batch fails in
  // ip6tables-restore, after (or before) its IPv4 batch committed.
  const jumps = [
    'PREROUTING -m addrtype --dst-type LOCAL -j CNMD',
    'OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j CNMD',
  ];
  for (const j of jumps) d.host.run('ip6tables', ['-t', 'nat', '-D', ...j.split(' ')]);
  d.host.run('ip6tables', ['-t', 'nat', '-X', 'CNMD']);
  // IPv4 whole; IPv6 by rules: the rollback puts back the chains the batch touched as the daemon knew
  // them, so its own CNMD chain comes back (empty, without the removed jumps).
  // (A table with no rule is left out: the failed batch's raw DROP made nf_tables create the raw table,
  // which the rollback empties but does not remove; empty, it filters nothing.)
  const saved = () =>
    tables(d, 'iptables-save')
      .split(/\n(?=\*)/)
      .filter((t) => / -A |^-A /m.test(t))
      .join('\n') +
    tables(d, 'ip6tables-save')
      .split('\n')
      .filter((x) => x.startsWith('-A '))
      .join('\n');
  const before = saved();
  const udp = () => d.host.run('ss', ['-Huln']);
  const fail = await d.request('POST', '/sandboxes', {
    Name: 'dual1',
    Networks: [{ Network: 'dual' }],
    Ports: ['8081:80', '5301:53/udp'],
  });
  assert.ok(fail.status >= 400, JSON.stringify(fail.body));
  assert.match(
    fail.body.message,
    /ip6tables-restore rejected .*-A CNMD .*rolled back \(ipv4, ipv6\)/,
    'IPv4 had committed and was rolled back',
  );
  assert.equal(saved(), before, 'no rule left in either family');
  assert.doesNotMatch(udp(), /:5301\s/, 'no proxy socket left');
  assert.deepEqual((await d.request('GET', '/sandboxes')).body, []);
  // Repaired: the same host ports are free and served in both families.
  if (!/^:CNMD /m.test(tables(d, 'ip6tables-save', ['-t', 'nat'])))
    d.host.run('ip6tables', ['-t', 'nat', '-N', 'CNMD']);
  for (const j of jumps) d.host.run('ip6tables', ['-t', 'nat', '-A', ...j.split(' ')]);
  const ok = await d.request('POST', '/sandboxes', {
    Name: 'dual1',
    Networks: [{ Network: 'dual' }],
    Ports: ['8081:80', '5301:53/udp'],
  });
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
  const sb = (await d.request('GET', '/sandboxes/dual1')).body;
  await serveHttp(t, sb.SandboxKey, 80);
  assert.equal(curlIn(outside.path, 'http://192.0.2.1:8081/'), OUTSIDE_IP);
  await eventually(
    () => assert.equal(curlIn(outside.path, 'http://[2001:db8::1]:8081/'), '2001:db8::2'),
    15_000,
  );
});
