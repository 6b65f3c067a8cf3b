// Docker 28's bridge gateway modes (com.docker.network.bridge.gateway_mode_ipv4 / _ipv6) end to
// end: a daemon in its "host" netns with an uplink to an "outside" netns that routes the container
// subnets through the host (direct routing), real packets both ways in both families, and the rules
// read back with iptables-save / ip6tables-save. Parity is with moby's source (daemon/libnetwork/
// drivers/bridge/internal/iptabler, docs/design-notes.md "Gateway modes"): the engine lane's dockerd
// is Debian's 20.10, which predates the modes, so no side-by-side run with a real dockerd here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import type { TestContext } from 'node:test';
import { eventually, lab } from '../lib/fixture';
import { CNMCTL, RunningDaemon, restartDaemon, startDaemon } from '../lib/daemon';
import { ping, reach, roundTrip, serve } from '../lib/probe';
import { HOST6, HOST_IP, OUTSIDE6, OUTSIDE_IP, uplink } from '../lib/uplink';
import { docker, dockerMissing, dockerOk } from '../lib/docker-cli';
import { pluginCall, pluginOk } from '../lib/plugin-call';

const V4 = 'com.docker.network.bridge.gateway_mode_ipv4';
const V6 = 'com.docker.network.bridge.gateway_mode_ipv6';

async function setup(t: TestContext) {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const outside = await l.ns('outside');
  await uplink(d.host, outside, { ipv6: true });
  return { l, d, outside };
}

/**
 * Dual-stack network `name` on 10.7<n>.0.0/24 and fd7<n>::/64, which the outside routes through
 * the host (as a LAN neighbour with a static route would): nothing on the host itself does.
 */
async function network(
  d: RunningDaemon,
  outside: { handle: RunningDaemon['host']['handle'] },
  name: string,
  n: number,
  options: Record<string, string>,
  internal = false,
): Promise<string> {
  const r = await d.request('POST', '/networks/create', {
    Name: name,
    EnableIPv6: true,
    Internal: internal,
    Options: options,
    IPAM: { Config: [{ Subnet: `10.7${n}.0.0/24` }, { Subnet: `fd7${n}::/64` }] },
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  if (!internal) {
    await outside.handle.routeAdd({ dst: `10.7${n}.0.0/24`, gateway: HOST_IP });
    await outside.handle.routeAdd({ dst: `fd7${n}::/64`, gateway: HOST6 });
  }
  return r.body.Id;
}

async function sandbox(d: RunningDaemon, name: string, network: string, ports: string[] = []) {
  const r = await d.request('POST', '/sandboxes', {
    Name: name,
    Networks: [{ Network: network }],
    Ports: ports,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const sb = (await d.request('GET', `/sandboxes/${name}`)).body;
  const ep = sb.Networks[network];
  return { key: sb.SandboxKey as string, v4: ep.IPAddress as string, v6: ep.GlobalIPv6Address as string, sb };
}

/**
 * The first TCP round trip to ip:port from ns, waited for (bounded): the neighbours on the way may
 * still be resolving under load. Resolves with what the server saw.
 */
function firstRoundTrip(ns: string, ip: string, port: number, what: string) {
  return eventually(() => {
    const x = roundTrip(ns, 'tcp', ip, port);
    assert.ok(x.ok, what);
    return x;
  }, 10_000);
}

const bridgeOf = (id: string) => `br-${id.slice(0, 12)}`;

/** The rules of one bridge, both families, without counters: `ipv4 -t filter -A CNMD ...`. */
function rulesOf(d: RunningDaemon, br: string): string[] {
  const out: string[] = [];
  for (const [family, cmd] of [
    ['ipv4', 'iptables-save'],
    ['ipv6', 'ip6tables-save'],
  ] as const) {
    let table = '';
    for (const line of d.host.run(cmd, []).split('\n')) {
      if (line.startsWith('*')) table = line.slice(1);
      if (line.startsWith('-A ') && new RegExp(`\\b${br}\\b`).test(line))
        out.push(`${family} -t ${table} ${line}`);
    }
  }
  return out;
}

function cnmdRules(d: RunningDaemon): string {
  return ['iptables-save', 'ip6tables-save']
    .map((cmd) =>
      d.host
        .run(cmd, [])
        .split('\n')
        .filter((l) => l.startsWith('-A ') || l.startsWith(':CNMD'))
        // The proxy's own listening ports change each start.
        .map((l) =>
          l
            .replace(/--to-ports \d+/, '--to-ports P')
            .replace(/-A CNMD-PROXY -p tcp -m tcp --dport \d+/, '-A CNMD-PROXY -p tcp -m tcp --dport P'),
        )
        .join('\n'),
    )
    .join('\n');
}

test('nat-unprotected: any port of a sandbox is reachable by direct routing; on a nat network beside it the same port is dropped; both masquerade their way out', async (t) => {
  const { d, outside } = await setup(t);
  const natId = await network(d, outside, 'natnet', 1, {});
  const unId = await network(d, outside, 'unprot', 2, { [V4]: 'nat-unprotected', [V6]: 'nat-unprotected' });
  const a = await sandbox(d, 'a', 'natnet', ['8090:80']);
  const b = await sandbox(d, 'b', 'unprot');
  for (const s of [a, b]) await serve(t, s.key, 'tcp', 80);
  await serve(t, outside.path, 'tcp', 7000);

  // Unpublished port 80, straight at the sandbox's address: the server sees the outside's own address.
  // (Bounded wait for the first: the neighbours on the way may still be resolving under load.)
  for (const ip of [b.v4, b.v6]) {
    const r = await firstRoundTrip(outside.path, ip, 80, `outside -> ${ip}:80 (nat-unprotected)`);
    assert.equal(r.seenFrom, ip.includes(':') ? OUTSIDE6 : OUTSIDE_IP);
  }
  // The nat network drops it (moby's default DROP after the published ports' ACCEPTs), even published
  // (Docker 28.2's raw-table DROP of direct access): a published port is at the host's addresses.
  assert.equal(roundTrip(outside.path, 'tcp', HOST_IP, 8090).seenFrom, OUTSIDE_IP);
  for (const ip of [a.v4, a.v6])
    assert.equal(reach(outside.path, 'tcp', ip, 80, 800), false, `${ip}:80 (nat)`);
  // Both masquerade: the outside sees the host's address.
  for (const s of [a, b]) {
    assert.equal(roundTrip(s.key, 'tcp', OUTSIDE_IP, 7000).seenFrom, HOST_IP);
    assert.equal(roundTrip(s.key, 'tcp', OUTSIDE6, 7000).seenFrom, HOST6);
  }

  const [natBr, unBr] = [bridgeOf(natId), bridgeOf(unId)];
  const nat = rulesOf(d, natBr);
  const un = rulesOf(d, unBr);
  for (const family of ['ipv4', 'ipv6']) {
    assert.ok(nat.includes(`${family} -t filter -A CNMD ! -i ${natBr} -o ${natBr} -j DROP`), family);
    assert.ok(un.includes(`${family} -t filter -A CNMD ! -i ${unBr} -o ${unBr} -j ACCEPT`), family);
  }
  assert.ok(un.includes(`ipv4 -t nat -A POSTROUTING -s 10.72.0.0/24 ! -o ${unBr} -j MASQUERADE`));
  assert.ok(un.includes(`ipv6 -t nat -A POSTROUTING -s fd72::/64 ! -o ${unBr} -j MASQUERADE`));
  // Only those two lines tell the networks apart.
  const rename = (rules: string[], from: string) =>
    rules.map((r) =>
      r
        .replaceAll(from, 'BR')
        .replace(/10\.7\d\./g, '10.7X.')
        .replace(/fd7\d::/g, 'fd7X::'),
    );
  assert.deepEqual(
    rename(un, unBr).filter((r) => !rename(nat, natBr).includes(r)),
    ['ipv4 -t filter -A CNMD ! -i BR -o BR -j ACCEPT', 'ipv6 -t filter -A CNMD ! -i BR -o BR -j ACCEPT'],
  );
});

test('routed: published container ports (and ping) reachable at the sandbox address, unpublished ones and the host port not; no masquerade either way; other networks route in; restart and removal', async (t) => {
  const { l, d, outside } = await setup(t);
  const id = await network(d, outside, 'routed', 3, { [V4]: 'routed', [V6]: 'routed' });
  const natId = await network(d, outside, 'natnet', 4, {});
  const r = await sandbox(d, 'r', 'routed', ['8080:80']);
  const n = await sandbox(d, 'n', 'natnet', ['8081:81']);
  await serve(t, r.key, 'tcp', 80, 81);
  await serve(t, n.key, 'tcp', 81, 82);
  await serve(t, outside.path, 'tcp', 7000);
  // Docker's view of a routed binding: no host port.
  assert.deepEqual(r.sb.Ports['80/tcp'], [
    { HostIp: '0.0.0.0', HostPort: '' },
    { HostIp: '::', HostPort: '' },
  ]);

  for (const ip of [r.v4, r.v6])
    await eventually(() => assert.ok(reach(outside.path, 'tcp', ip, 80), `outside -> ${ip}:80`), 10_000);
  const check = () => {
    for (const [ip, from] of [
      [r.v4, OUTSIDE_IP],
      [r.v6, OUTSIDE6],
    ]) {
      const got = roundTrip(outside.path, 'tcp', ip, 80);
      assert.ok(got.ok, `outside -> ${ip}:80 (published, routed)`);
      assert.equal(got.seenFrom, from, 'the sandbox sees the outside address');
      assert.equal(reach(outside.path, 'tcp', ip, 81, 800), false, `${ip}:81 is not published`);
      assert.ok(ping(outside.path, ip), `ping ${ip}`);
    }
    // No DNAT: the host port is not used.
    assert.equal(reach(outside.path, 'tcp', HOST_IP, 8080, 800), false, 'host port 8080 is not published');
    // Out: not masqueraded, in both families.
    assert.equal(roundTrip(r.key, 'tcp', OUTSIDE_IP, 7000).seenFrom, r.v4);
    assert.equal(roundTrip(r.key, 'tcp', OUTSIDE6, 7000).seenFrom, r.v6);
    // From the nat network: the routed sandbox's published port at its own address (moby 28's INC
    // rules for routed networks), not its unpublished one; the other way round stays isolated.
    // (The nat network masquerades what leaves its bridge, as Docker's `-s subnet ! -o br`: the
    // routed sandbox sees its own gateway.)
    assert.equal(roundTrip(n.key, 'tcp', r.v4, 80).seenFrom, '10.73.0.1');
    assert.equal(reach(n.key, 'tcp', r.v4, 81, 800), false);
    assert.equal(reach(r.key, 'tcp', n.v4, 81, 800), false, 'nat network isolated from the routed one');
  };
  check();

  const br = bridgeOf(id);
  const rules = rulesOf(d, br);
  assert.ok(!rules.some((x) => x.includes('MASQUERADE')), 'no MASQUERADE for a routed network');
  assert.ok(!rules.some((x) => x.includes('-j DNAT')), 'no DNAT for a routed binding');
  assert.ok(!rules.some((x) => x.includes('-t raw')), 'no direct-access DROP');
  for (const [family, cidr, icmp] of [
    ['ipv4', `${r.v4}/32`, 'icmp'],
    ['ipv6', `${r.v6}/128`, 'ipv6-icmp'],
  ]) {
    const mine = rules.filter((x) => x.startsWith(`${family} -t filter -A CNMD `));
    assert.deepEqual(mine, [
      `${family} -t filter -A CNMD -d ${cidr} ! -i ${br} -o ${br} -p tcp -m tcp --dport 80 -j ACCEPT`,
      `${family} -t filter -A CNMD -o ${br} -p ${icmp} -j ACCEPT`,
      `${family} -t filter -A CNMD ! -i ${br} -o ${br} -j DROP`,
    ]);
    assert.ok(
      rules.includes(
        `${family} -t filter -A CNMD-ISOLATION-STAGE-1 -i ${br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
      ),
    );
    assert.ok(rules.includes(`${family} -t filter -A CNMD-ISOLATION-STAGE-2 -o ${br} -j CNMD`));
  }

  // SIGKILLed and restarted: the same rules (counters aside), the same behaviour.
  const before = cnmdRules(d);
  await d.kill();
  const d2 = await restartDaemon(t, l, d);
  assert.equal(cnmdRules(d2), before);
  check();

  // Removal leaves no rule naming either bridge or address.
  for (const s of ['r', 'n']) assert.equal((await d2.request('DELETE', `/sandboxes/${s}`)).status, 204);
  for (const x of ['routed', 'natnet'])
    assert.equal((await d2.request('DELETE', `/networks/${x}`)).status, 204);
  const after = cnmdRules(d2);
  for (const gone of [br, bridgeOf(natId), '10.73.', 'fd73:', '10.74.', 'fd74:'])
    assert.ok(!after.includes(gone), gone);
});

test('isolated (--internal only): the bridge has no address in either family, its sandboxes still talk to each other', async (t) => {
  const { d, outside } = await setup(t);
  const id = await network(d, outside, 'iso', 5, { [V4]: 'isolated', [V6]: 'isolated' }, true);
  const br = bridgeOf(id);
  const a = await sandbox(d, 'a', 'iso');
  const b = await sandbox(d, 'b', 'iso');
  await serve(t, b.key, 'tcp', 80);
  const addrs = JSON.parse(d.host.run('ip', ['-j', 'addr', 'show', 'dev', br]));
  assert.deepEqual(addrs[0].addr_info, [], 'no IPv4, IPv6 or link-local address on the bridge');
  assert.equal(roundTrip(a.key, 'tcp', b.v4, 80).seenFrom, a.v4);
  assert.equal(roundTrip(a.key, 'tcp', b.v6, 80).seenFrom, a.v6);
  // No way out, and nothing of the host to reach on the bridge.
  assert.equal(reach(a.key, 'tcp', HOST_IP, 22, 500), false);
  // The rules are an internal network's (IPv6's let bridged neighbour discovery through), as iptables-save prints them.
  assert.deepEqual(rulesOf(d, br).sort(), [
    `ipv4 -t filter -A CNMD-FORWARD -i ${br} -o ${br} -j ACCEPT`,
    `ipv4 -t filter -A CNMD-ISOLATION-STAGE-1 ! -d 10.75.0.0/24 -i ${br} -j DROP`,
    `ipv4 -t filter -A CNMD-ISOLATION-STAGE-1 ! -s 10.75.0.0/24 -o ${br} -j DROP`,
    `ipv6 -t filter -A CNMD-FORWARD -i ${br} -o ${br} -j ACCEPT`,
    `ipv6 -t filter -A CNMD-ISOLATION-STAGE-1 ! -d fd75::/64 -i ${br} ! -o ${br} -j DROP`,
    `ipv6 -t filter -A CNMD-ISOLATION-STAGE-1 ! -s fd75::/64 ! -i ${br} -o ${br} -j DROP`,
  ]);
  // No gateway taken from IPAM either (Docker's GetSkipGwAlloc): inspect shows none, .1 is a sandbox's.
  const iso = (await d.request('GET', '/networks/iso')).body;
  assert.deepEqual(
    iso.IPAM.Config.map((c: { Gateway?: string }) => c.Gateway ?? ''),
    ['', ''],
  );
  assert.equal(a.v4, '10.75.0.1');
  // IPv4 only isolated: the IPv6 gateway stays on the bridge.
  const id2 = await network(d, outside, 'iso4', 6, { [V4]: 'isolated' }, true);
  const info = JSON.parse(d.host.run('ip', ['-j', 'addr', 'show', 'dev', bridgeOf(id2)]))[0].addr_info;
  assert.ok(!info.some((x: { family: string }) => x.family === 'inet'), 'no IPv4 address');
  assert.ok(
    info.some((x: { local: string }) => x.local === 'fd76::1'),
    'the IPv6 gateway is there',
  );
  const iso4 = (await d.request('GET', '/networks/iso4')).body;
  assert.deepEqual(
    iso4.IPAM.Config.map((c: { Gateway?: string }) => c.Gateway ?? ''),
    ['', 'fd76::1'],
  );
});

test('bad values refused through the API and cnmctl, naming the option and the allowed values; nothing made', async (t) => {
  const { d } = await setup(t);
  const linksBefore = d.host.run('ip', ['-o', 'link']).split('\n').length;
  const rulesBefore = cnmdRules(d);
  const create = (options: Record<string, string>, internal = false) =>
    d.request('POST', '/networks/create', { Name: 'x', Internal: internal, Options: options });
  for (const key of [V4, V6]) {
    for (const bad of ['', 'NAT', 'direct', 'routed ']) {
      const r = await create({ [key]: bad });
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match(
        r.body.message,
        new RegExp(
          `option ${key}: .* is not a gateway mode \\(use nat, nat-unprotected, routed, isolated\\)`,
        ),
      );
    }
    const r = await create({ [key]: 'isolated' });
    assert.equal(r.status, 400);
    assert.match(r.body.message, /gateway mode 'isolated' can only be used for an internal network/);
  }
  const unknown = await create({ 'com.docker.network.bridge.enable_iptables': 'false' });
  assert.equal(unknown.status, 400);
  assert.match(
    unknown.body.message,
    /option com\.docker\.network\.bridge\.enable_iptables is not supported by cnmd's bridge driver/,
  );
  // cnmctl says the same.
  const cli = spawnSync(
    process.execPath,
    [CNMCTL, '-H', d.hostUri, 'network', 'create', '-o', `${V4}=routd`, 'y'],
    {
      encoding: 'utf8',
    },
  );
  assert.notEqual(cli.status, 0);
  assert.match(cli.stderr, /is not a gateway mode \(use nat, nat-unprotected, routed, isolated\)/);
  // A good one is accepted, and inspect shows the options as given.
  const ok = spawnSync(
    process.execPath,
    [CNMCTL, '-H', d.hostUri, 'network', 'create', '-o', `${V4}=routed`, '-o', `${V6}=nat-unprotected`, 'z'],
    { encoding: 'utf8' },
  );
  assert.equal(ok.status, 0, ok.stderr);
  const shown = JSON.parse(
    execFileSync(process.execPath, [CNMCTL, '-H', d.hostUri, 'network', 'inspect', 'z'], {
      encoding: 'utf8',
    }),
  );
  assert.deepEqual(shown[0].Options, { [V4]: 'routed', [V6]: 'nat-unprotected' });
  assert.equal((await d.request('DELETE', '/networks/z')).status, 204);
  await eventually(() => assert.equal(d.host.run('ip', ['-o', 'link']).split('\n').length, linksBefore));
  assert.equal(cnmdRules(d), rulesBefore);
});

test(
  'the docker CLI on cnmd socket: -o gateway_mode_ipv4=routed makes a routed network (inspect shows it), a bad value and an unknown bridge key get Docker-style errors naming the option',
  { skip: dockerMissing },
  async (t) => {
    const { d } = await setup(t);
    const made = docker(d, ['network', 'create', '--subnet', '10.77.0.0/24', '-o', `${V4}=routed`, 'r']);
    assert.equal(made.code, 0, made.err);
    const inspected = JSON.parse(dockerOk(d, ['network', 'inspect', 'r']));
    assert.deepEqual(inspected[0].Options, { [V4]: 'routed' });
    const br = bridgeOf(inspected[0].Id);
    const rules = rulesOf(d, br);
    assert.ok(rules.includes(`ipv4 -t filter -A CNMD -o ${br} -p icmp -j ACCEPT`));
    assert.ok(!rules.some((r) => r.includes('MASQUERADE')));
    const bad = docker(d, ['network', 'create', '-o', `${V6}=nat-protected`, 'b']);
    assert.notEqual(bad.code, 0);
    assert.match(
      bad.err,
      /option com\.docker\.network\.bridge\.gateway_mode_ipv6: "nat-protected" is not a gateway mode/,
    );
    const unknown = docker(d, [
      'network',
      'create',
      '-o',
      'com.docker.network.bridge.enable_iptables=false',
      'u',
    ]);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.err, /option com\.docker\.network\.bridge\.enable_iptables is not supported/);
    dockerOk(d, ['network', 'rm', 'r']);
    assert.deepEqual(rulesOf(d, br), []);
  },
);

test('the engine plugin: options in com.docker.network.generic select the mode; bad ones are the CreateNetwork error', async (t) => {
  const { d } = await setup(t);
  const sock = path.join(d.pluginDir, 'cnmd-bridge.sock');
  const id = 'b2'.repeat(32);
  const create = (generic: Record<string, string>, internal = false) =>
    pluginCall(sock, 'NetworkDriver.CreateNetwork', {
      NetworkID: id,
      Options: { 'com.docker.network.generic': generic, 'com.docker.network.internal': internal },
      IPv4Data: [
        { AddressSpace: 'LocalDefault', Pool: '10.78.0.0/24', Gateway: '10.78.0.1/24', AuxAddresses: {} },
      ],
      IPv6Data: [],
    });
  for (const [generic, internal, why] of [
    [
      { [V4]: 'natural' },
      false,
      /option com\.docker\.network\.bridge\.gateway_mode_ipv4: "natural" is not a gateway mode \(use nat, nat-unprotected, routed, isolated\)/,
    ],
    [{ [V4]: 'isolated' }, false, /gateway mode 'isolated' can only be used for an internal network/],
    [{ 'com.docker.network.bridge.enable_iptables': 'false' }, false, /enable_iptables is not supported/],
  ] as const) {
    const r = await create(generic, internal);
    assert.match(String(r.body.Err), why);
  }
  await pluginOk(sock, 'NetworkDriver.CreateNetwork', {
    NetworkID: id,
    Options: { 'com.docker.network.generic': { [V4]: 'nat-unprotected' } },
    IPv4Data: [
      { AddressSpace: 'LocalDefault', Pool: '10.78.0.0/24', Gateway: '10.78.0.1/24', AuxAddresses: {} },
    ],
    IPv6Data: [],
  });
  const br = bridgeOf(id);
  assert.ok(rulesOf(d, br).includes(`ipv4 -t filter -A CNMD ! -i ${br} -o ${br} -j ACCEPT`));
  await pluginOk(sock, 'NetworkDriver.DeleteNetwork', { NetworkID: id });
  assert.deepEqual(rulesOf(d, br), []);
});

test('trusted_host_interfaces: a port published on 127.0.0.1 is reachable at the sandbox address through a trusted interface only', async (t) => {
  const { d, outside } = await setup(t);
  const trustId = await network(d, outside, 'trust', 7, {
    'com.docker.network.bridge.trusted_host_interfaces': 'vxlan.1:uplink',
  });
  await network(d, outside, 'plain', 8, {});
  const a = await sandbox(d, 'a', 'trust', ['127.0.0.1:8080:80']);
  const b = await sandbox(d, 'b', 'plain', ['127.0.0.1:8081:80']);
  for (const s of [a, b]) await serve(t, s.key, 'tcp', 80);
  const r = await firstRoundTrip(
    outside.path,
    a.v4,
    80,
    'outside -> trusted network sandbox:80 through uplink',
  );
  assert.equal(r.seenFrom, OUTSIDE_IP);
  assert.equal(
    reach(outside.path, 'tcp', b.v4, 80, 800),
    false,
    'dropped without the option (moby/moby#45610)',
  );
  const br = bridgeOf(trustId);
  assert.deepEqual(
    d.host
      .run('iptables-save', ['-t', 'raw'])
      .split('\n')
      .filter((l) => l.includes(`-d ${a.v4}/32`)),
    [
      `-A PREROUTING -d ${a.v4}/32 -i vxlan.1 -j ACCEPT`,
      `-A PREROUTING -d ${a.v4}/32 -i uplink -j ACCEPT`,
      `-A PREROUTING -d ${a.v4}/32 ! -i ${br} -j DROP`,
    ],
  );
  assert.equal((await d.request('DELETE', '/sandboxes/a')).status, 204);
  assert.ok(
    !d.host.run('iptables-save', ['-t', 'raw']).includes(`${a.v4}/32`),
    'the sandbox took its raw rules along',
  );
});

test("mixed per family, Docker's example: IPv6 routed, IPv4 nat; -p 8080:80 is host port 8080 on IPv4 and the sandbox's port 80 on IPv6", async (t) => {
  const { l, d, outside } = await setup(t);
  await network(d, outside, 'mixed', 9, { [V6]: 'routed' });
  const s = await sandbox(d, 's', 'mixed', ['8080:80']);
  await serve(t, s.key, 'tcp', 80, 81);
  assert.deepEqual(s.sb.Ports['80/tcp'], [
    { HostIp: '0.0.0.0', HostPort: '8080' },
    { HostIp: '::', HostPort: '' },
  ]);
  const check = async () => {
    const v6 = await firstRoundTrip(outside.path, s.v6, 80, 'outside -> [sandbox]:80 over IPv6 (routed)');
    assert.equal(v6.seenFrom, OUTSIDE6);
    assert.equal(
      roundTrip(outside.path, 'tcp', HOST_IP, 8080).seenFrom,
      OUTSIDE_IP,
      'IPv4 through the host port',
    );
    assert.equal(reach(outside.path, 'tcp', HOST6, 8080, 800), false, 'no IPv6 host port');
    assert.equal(reach(outside.path, 'tcp', s.v4, 80, 800), false, 'IPv4 (nat): not at the sandbox address');
    assert.equal(reach(outside.path, 'tcp', s.v6, 81, 800), false, 'IPv6: unpublished port');
    assert.equal(roundTrip(s.key, 'tcp', OUTSIDE_IP, 7000).seenFrom, HOST_IP, 'IPv4 out: masqueraded');
    assert.equal(roundTrip(s.key, 'tcp', OUTSIDE6, 7000).seenFrom, s.v6, 'IPv6 out: its own address');
  };
  await serve(t, outside.path, 'tcp', 7000);
  await check();
  // The same after a SIGKILL and restart (the split bindings are restored as recorded).
  await d.kill();
  const d2 = await restartDaemon(t, l, d);
  assert.deepEqual((await d2.request('GET', '/sandboxes/s')).body.Ports['80/tcp'], s.sb.Ports['80/tcp']);
  await check();
});
