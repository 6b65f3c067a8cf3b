// The stock docker CLI (28.x) pointed at cnmd with DOCKER_HOST: every
// `docker network` subcommand, its output and exit code as Docker prints them,
// and the kernel state behind it read back with ip and iptables-save.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, lab, runIn } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { ok } from '../lib/api';
import { docker as dockerRun, dockerMissing, dockerOk as dockerRunOk } from '../lib/docker-cli';

const docker = (d: RunningDaemon, ...args: string[]) => dockerRun(d, args);
const dockerOk = (d: RunningDaemon, ...args: string[]) => dockerRunOk(d, args);

const lines = (s: string) => s.split('\n').filter((l) => l !== '');

/** Parses `docker network ls` table output: header, then ID NAME DRIVER SCOPE rows. */
function table(out: string): string[][] {
  const [header, ...rows] = lines(out);
  assert.match(header, /^NETWORK ID +NAME +DRIVER +SCOPE$/);
  return rows.map((r) => r.split(/ {3,}/));
}

test(
  'docker network ls: default networks, a created one, -q, --no-trunc, --filter, --format',
  { skip: dockerMissing },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const byName = async () => new Map(((await ok(d, 'GET', '/networks')) as any[]).map((n) => [n.Name, n]));
    let nets = await byName();
    // Exactly Docker's table: sorted by name, 12-hex ids.
    assert.deepEqual(table(dockerOk(d, 'network', 'ls')), [
      [nets.get('bridge').Id.slice(0, 12), 'bridge', 'bridge', 'local'],
      [nets.get('host').Id.slice(0, 12), 'host', 'host', 'local'],
      [nets.get('none').Id.slice(0, 12), 'none', 'null', 'local'],
    ]);
    const webId = dockerOk(
      d,
      'network',
      'create',
      '--label',
      'tier=front',
      '--label',
      'team=net',
      'web',
    ).trim();
    assert.match(webId, /^[0-9a-f]{64}$/);
    dockerOk(d, 'network', 'create', '--internal', 'app.1');
    dockerOk(d, 'network', 'create', '--label', 'tier=back', 'appx1');
    nets = await byName();
    const short = (n: string) => nets.get(n).Id.slice(0, 12);
    assert.equal(nets.get('web').Id, webId);
    const all = ['app.1', 'appx1', 'bridge', 'host', 'none', 'web'];
    assert.deepEqual(
      table(dockerOk(d, 'network', 'ls')).map((r) => r[1]),
      all,
    );
    assert.deepEqual(
      table(dockerOk(d, 'network', 'ls')).find((r) => r[1] === 'web'),
      [short('web'), 'web', 'bridge', 'local'],
    );
    // The header keeps Docker's column widths (tabwriter: min 10, padding 3).
    assert.equal(lines(dockerOk(d, 'network', 'ls'))[0], 'NETWORK ID     NAME      DRIVER    SCOPE');
    assert.deepEqual(lines(dockerOk(d, 'network', 'ls', '-q')), all.map(short));
    assert.deepEqual(
      table(dockerOk(d, 'network', 'ls', '--no-trunc')).map((r) => r[0]),
      all.map((n) => nets.get(n).Id),
    );
    assert.deepEqual(
      lines(dockerOk(d, 'network', 'ls', '-q', '--no-trunc')),
      all.map((n) => nets.get(n).Id),
    );
    // Filters (server side, Docker's semantics).
    const names = (...args: string[]) =>
      lines(dockerOk(d, 'network', 'ls', '--format', '{{.Name}}', ...args));
    assert.deepEqual(names('--filter', 'driver=bridge'), ['app.1', 'appx1', 'bridge', 'web']);
    assert.deepEqual(names('--filter', 'driver=null'), ['none']);
    assert.deepEqual(names('--filter', 'name=web'), ['web']);
    assert.deepEqual(names('--filter', 'name=app'), ['app.1', 'appx1']);
    assert.deepEqual(
      names('--filter', 'name=app.1'),
      ['app.1', 'appx1'],
      'name filters are regular expressions',
    );
    assert.deepEqual(names('--filter', 'name=^app\\.1$'), ['app.1']);
    assert.deepEqual(
      names('--filter', 'name=^b', '--filter', 'name=^h'),
      ['bridge', 'host'],
      'several values of one key: any',
    );
    assert.deepEqual(names('--filter', 'type=custom'), ['app.1', 'appx1', 'web']);
    assert.deepEqual(names('--filter', 'type=builtin'), ['bridge', 'host', 'none']);
    assert.deepEqual(names('--filter', 'label=tier'), ['appx1', 'web']);
    assert.deepEqual(names('--filter', 'label=tier=front'), ['web']);
    assert.deepEqual(
      names('--filter', 'label=tier', '--filter', 'label=team=net'),
      ['web'],
      'label filters: all',
    );
    assert.deepEqual(names('--filter', `id=${webId.slice(0, 8)}`), ['web']);
    assert.deepEqual(names('--filter', 'scope=local', '--filter', 'driver=host'), ['host']);
    assert.deepEqual(names('--filter', 'dangling=true'), ['app.1', 'appx1', 'web']);
    assert.deepEqual(
      lines(dockerOk(d, 'network', 'ls', '-q', '--filter', 'type=custom')),
      ['app.1', 'appx1', 'web'].map(short),
    );
    // --format with the CLI's network fields.
    assert.deepEqual(lines(dockerOk(d, 'network', 'ls', '--format', '{{.Name}} {{.Driver}}')), [
      'app.1 bridge',
      'appx1 bridge',
      'bridge bridge',
      'host host',
      'none null',
      'web bridge',
    ]);
    assert.deepEqual(
      lines(
        dockerOk(
          d,
          'network',
          'ls',
          '--filter',
          'type=custom',
          '--format',
          '{{.Name}} {{.Internal}} {{.IPv6}} {{.Scope}}',
        ),
      ),
      ['app.1 true false local', 'appx1 false false local', 'web false false local'],
    );
    assert.equal(
      dockerOk(d, 'network', 'ls', '--filter', 'name=^web$', '--format', '{{.Labels}}')
        .trim()
        .split(',')
        .sort()
        .join(','),
      'team=net,tier=front',
    );
    assert.equal(
      dockerOk(d, 'network', 'ls', '--filter', 'name=^web$', '--format', '{{.Label "tier"}} {{.ID}}').trim(),
      `front ${short('web')}`,
    );
    // CreatedAt: the CLI parsed cnmd's Created (an unparsable one prints 0001-01-01).
    const created = dockerOk(
      d,
      'network',
      'ls',
      '--filter',
      'name=^web$',
      '--format',
      '{{.CreatedAt}}',
    ).trim();
    assert.match(created, new RegExp(`^${new Date().getUTCFullYear()}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d`));
    assert.deepEqual(
      JSON.parse(dockerOk(d, 'network', 'ls', '--filter', 'name=^web$', '--format', 'json')).Name,
      'web',
    );
    // Errors: a bad filter is the daemon's 400, printed by the CLI.
    const bad = docker(d, 'network', 'ls', '--filter', 'type=weird');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /^Error response from daemon: .*invalid filter: 'type'='weird'/);
    const badKey = docker(d, 'network', 'ls', '--filter', 'colour=red');
    assert.equal(badKey.code, 1);
    assert.match(badKey.err, /^Error response from daemon: .*invalid filter 'colour'/);
  },
);

test(
  'docker network create with IPAM, IPv6, internal, -o and labels; inspect shows it as Docker does',
  { skip: dockerMissing },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const id = dockerOk(
      d,
      'network',
      'create',
      '--subnet',
      '10.40.0.0/24',
      '--gateway',
      '10.40.0.254',
      '--ip-range',
      '10.40.0.128/25',
      '--aux-address',
      'printer=10.40.0.10',
      '-o',
      'com.docker.network.bridge.enable_icc=false',
      '--label',
      'tier=front',
      '--label',
      'team=net',
      'web',
    ).trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    const [web] = JSON.parse(dockerOk(d, 'network', 'inspect', 'web'));
    assert.equal(web.Name, 'web');
    assert.equal(web.Id, id);
    assert.equal(web.Driver, 'bridge');
    assert.equal(web.Scope, 'local');
    assert.equal(web.Internal, false);
    assert.equal(web.EnableIPv6, false);
    assert.equal(web.Attachable, false);
    assert.equal(web.IPAM.Driver, 'default');
    assert.deepEqual(web.IPAM.Config, [
      {
        Subnet: '10.40.0.0/24',
        IPRange: '10.40.0.128/25',
        Gateway: '10.40.0.254',
        AuxiliaryAddresses: { printer: '10.40.0.10' },
      },
    ]);
    assert.deepEqual(web.Options, { 'com.docker.network.bridge.enable_icc': 'false' });
    assert.deepEqual(web.Labels, { tier: 'front', team: 'net' });
    assert.deepEqual(web.Containers, {});
    assert.ok(!Number.isNaN(Date.parse(web.Created)));
    // Inspect by id, by id prefix, and with -f, as Docker resolves them.
    assert.equal(JSON.parse(dockerOk(d, 'network', 'inspect', id.slice(0, 12)))[0].Name, 'web');
    assert.equal(
      dockerOk(
        d,
        'network',
        'inspect',
        '-f',
        '{{.Name}} {{.Driver}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}',
        id,
      ),
      'web bridge 10.40.0.0/24 10.40.0.254\n',
    );
    assert.equal(dockerOk(d, 'network', 'inspect', '-f', '{{index .Labels "tier"}}', 'web'), 'front\n');
    // Kernel: the bridge holds the gateway; icc=false is a DROP between its ports.
    const bridge = `br-${id.slice(0, 12)}`;
    const [br] = d.host.ipj('-d', 'addr', 'show', bridge);
    assert.equal(br.linkinfo.info_kind, 'bridge');
    assert.ok(br.addr_info.some((a: any) => a.local === '10.40.0.254' && a.prefixlen === 24));
    assert.match(
      d.host.run('iptables-save', ['-t', 'filter']),
      new RegExp(`-i ${bridge} -o ${bridge} -j DROP`),
    );
    // IPv6: an automatic IPv4 pool next to the given IPv6 subnet.
    const v6id = dockerOk(d, 'network', 'create', '--ipv6', '--subnet', 'fd40::/64', 'v6').trim();
    const [v6] = JSON.parse(dockerOk(d, 'network', 'inspect', 'v6'));
    assert.equal(v6.EnableIPv6, true);
    assert.deepEqual(v6.IPAM.Config, [
      { Subnet: '172.18.0.0/16', Gateway: '172.18.0.1' },
      { Subnet: 'fd40::/64', Gateway: 'fd40::1' },
    ]);
    const [br6] = d.host.ipj('addr', 'show', `br-${v6id.slice(0, 12)}`);
    assert.ok(br6.addr_info.some((a: any) => a.local === 'fd40::1' && a.prefixlen === 64));
    assert.ok(br6.addr_info.some((a: any) => a.local === '172.18.0.1' && a.prefixlen === 16));
    // Internal: no MASQUERADE for its subnet.
    dockerOk(d, 'network', 'create', '--internal', '--subnet', '10.41.0.0/24', 'priv');
    const [priv] = JSON.parse(dockerOk(d, 'network', 'inspect', 'priv'));
    assert.equal(priv.Internal, true);
    assert.doesNotMatch(d.host.run('iptables-save', ['-t', 'nat']), /10\.41\.0\.0\/24.*MASQUERADE/);
    assert.match(
      d.host.run('iptables-save', ['-t', 'nat']),
      /-s 10\.40\.0\.0\/24 ! -o br-[0-9a-f]{12} -j MASQUERADE/,
    );
    // Several at once, in the order asked.
    assert.deepEqual(
      JSON.parse(dockerOk(d, 'network', 'inspect', 'priv', 'web', 'none')).map((n: any) => n.Name),
      ['priv', 'web', 'none'],
    );
    // Errors the daemon refuses, printed by the CLI with exit 1; nothing is made.
    const links = d.host
      .ipj('link')
      .map((x: any) => x.ifname)
      .sort();
    for (const [args, message] of [
      [['web'], /^Error response from daemon: network with name web already exists$/m],
      [['--subnet', '10.40.0.0/16', 'over'], /^Error response from daemon: .*overlaps/m],
      [['--subnet', '10.42.0.1/24', 'hostbits'], /^Error response from daemon: .*has host bits set/m],
      [['-d', 'nope', 'x'], /^Error response from daemon: plugin "nope" not found/m],
      [
        ['-o', 'com.docker.network.driver.mtu=10', 'x'],
        /^Error response from daemon: .*is not an MTU between 68 and 65535/m,
      ],
      [
        ['-o', 'com.docker.network.bridge.enable_icc=maybe', 'x'],
        /^Error response from daemon: .*"maybe" is not a boolean/m,
      ],
      [
        ['-d', 'host', 'host2'],
        /^Error response from daemon: only one instance of "host" network is allowed$/m,
      ],
      // Checked by the CLI itself, before any request.
      [
        ['--subnet', '10.43.0.0/24', '--gateway', '10.44.0.1', 'x'],
        /no matching subnet for gateway 10\.44\.0\.1/,
      ],
    ] as [string[], RegExp][]) {
      const r = docker(d, 'network', 'create', ...args);
      assert.equal(r.code, 1, `create ${args.join(' ')}: ${r.out}${r.err}`);
      assert.match(r.err, message);
      assert.equal(r.out, '');
    }
    assert.deepEqual(
      d.host
        .ipj('link')
        .map((x: any) => x.ifname)
        .sort(),
      links,
    );
    assert.deepEqual(lines(dockerOk(d, 'network', 'ls', '--format', '{{.Name}}')), [
      'bridge',
      'host',
      'none',
      'priv',
      'v6',
      'web',
    ]);
    // Inspect of a missing network: Docker prints [] and the error, exit 1.
    const missing = docker(d, 'network', 'inspect', 'nope');
    assert.equal(missing.code, 1);
    assert.equal(missing.out.trim(), '[]');
    assert.match(missing.err, /Error response from daemon: network nope not found/);
  },
);

test(
  'docker network connect and disconnect, by name and by id, with --ip and --alias; inspect Containers',
  { skip: dockerMissing },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const netId = dockerOk(
      d,
      'network',
      'create',
      '--ipv6',
      '--subnet',
      '10.45.0.0/24',
      '--subnet',
      'fd45::/64',
      'web',
    ).trim();
    const a = (await ok(d, 'POST', '/sandboxes', { Name: 'a', Hostname: 'alpha' })).Id;
    const b = (await ok(d, 'POST', '/sandboxes', { Name: 'b' })).Id;
    // By sandbox name, with a static address and an alias.
    assert.equal(
      dockerOk(
        d,
        'network',
        'connect',
        '--ip',
        '10.45.0.50',
        '--ip6',
        'fd45::50',
        '--alias',
        'db',
        '--alias',
        'primary',
        'web',
        'a',
      ),
      '',
    );
    // By sandbox id and network id prefix.
    assert.equal(dockerOk(d, 'network', 'connect', netId.slice(0, 12), b), '');
    const [web] = JSON.parse(dockerOk(d, 'network', 'inspect', 'web'));
    assert.deepEqual(Object.keys(web.Containers).sort(), [a, b].sort());
    const ca = web.Containers[a];
    const cb = web.Containers[b];
    assert.equal(ca.Name, 'a');
    assert.match(ca.EndpointID, /^[0-9a-f]{64}$/);
    assert.equal(ca.MacAddress, '02:42:0a:2d:00:32');
    assert.equal(ca.IPv4Address, '10.45.0.50/24');
    assert.equal(ca.IPv6Address, 'fd45::50/64');
    assert.equal(cb.Name, 'b');
    assert.equal(cb.IPv4Address, '10.45.0.2/24', 'the first free address');
    assert.equal(cb.IPv6Address, 'fd45::2/64');
    assert.equal(cb.MacAddress, '02:42:0a:2d:00:02');
    assert.notEqual(ca.EndpointID, cb.EndpointID);
    // A sandbox joined through cnmd's /sandboxes API shows the same way.
    const c = (
      await ok(d, 'POST', '/sandboxes', {
        Name: 'c',
        Networks: [{ Network: 'web', IPv4Address: '10.45.0.70' }],
      })
    ).Id;
    const cc = JSON.parse(dockerOk(d, 'network', 'inspect', 'web'))[0].Containers[c];
    assert.deepEqual(cc, {
      Name: 'c',
      EndpointID: cc.EndpointID,
      MacAddress: '02:42:0a:2d:00:46',
      IPv4Address: '10.45.0.70/24',
      IPv6Address: 'fd45::3/64',
    });
    assert.match(cc.EndpointID, /^[0-9a-f]{64}$/);
    assert.equal(
      dockerOk(d, 'network', 'inspect', '-f', `{{range .Containers}}{{.Name}} {{end}}`, 'web')
        .trim()
        .split(' ')
        .sort()
        .join(' '),
      'a b c',
    );
    await ok(d, 'DELETE', '/sandboxes/c');
    // The sandbox API agrees, aliases included.
    const sa = await ok(d, 'GET', '/sandboxes/a');
    assert.equal(sa.Networks.web.EndpointID, ca.EndpointID);
    assert.deepEqual(sa.Networks.web.Aliases.filter((x: string) => x === 'db' || x === 'primary').sort(), [
      'db',
      'primary',
    ]);
    assert.deepEqual(sa.Networks.web.IPAMConfig, { IPv4Address: '10.45.0.50', IPv6Address: 'fd45::50' });
    // The kernel: eth0 in the sandbox's netns holds the address and MAC; the default route goes via the gateway.
    const [eth0] = JSON.parse(runIn(sa.SandboxKey, 'ip', ['-j', 'addr', 'show', 'eth0']));
    assert.equal(eth0.address, '02:42:0a:2d:00:32');
    assert.ok(eth0.addr_info.some((x: any) => x.local === '10.45.0.50' && x.prefixlen === 24));
    assert.ok(eth0.addr_info.some((x: any) => x.local === 'fd45::50' && x.prefixlen === 64));
    assert.ok(
      JSON.parse(runIn(sa.SandboxKey, 'ip', ['-j', 'route'])).some(
        (r: any) => r.dst === 'default' && r.gateway === '10.45.0.1',
      ),
    );
    assert.equal(d.host.ipj('link', 'show', 'master', `br-${netId.slice(0, 12)}`).length, 2);
    // Errors: twice, unknown sandbox, unknown network, address outside the subnet: exit 1 with the daemon's message.
    for (const [args, message] of [
      [['web', 'a'], /^Error response from daemon: endpoint with name a already exists in network web$/m],
      [['web', 'nope'], /^Error response from daemon: No such sandbox: nope$/m],
      [['nope', 'a'], /^Error response from daemon: network nope not found$/m],
      [
        ['bridge', 'a', '--ip', '172.17.0.9'],
        /user specified IP address is supported only when connecting to networks with user configured subnets/,
      ],
    ] as [string[], RegExp][]) {
      const r = docker(d, 'network', 'connect', ...args);
      assert.equal(r.code, 1, `connect ${args.join(' ')}`);
      assert.match(r.err, message);
    }
    // Disconnect by name, then by ids.
    assert.equal(dockerOk(d, 'network', 'disconnect', 'web', 'a'), '');
    await eventually(() =>
      assert.deepEqual(
        JSON.parse(runIn(sa.SandboxKey, 'ip', ['-j', 'link'])).map((x: any) => x.ifname),
        ['lo'],
      ),
    );
    assert.deepEqual(Object.keys(JSON.parse(dockerOk(d, 'network', 'inspect', 'web'))[0].Containers), [b]);
    assert.equal(dockerOk(d, 'network', 'disconnect', netId, b.slice(0, 12)), '');
    assert.deepEqual(JSON.parse(dockerOk(d, 'network', 'inspect', 'web'))[0].Containers, {});
    await eventually(() =>
      assert.deepEqual(d.host.ipj('link', 'show', 'master', `br-${netId.slice(0, 12)}`), []),
    );
    const again = docker(d, 'network', 'disconnect', 'web', 'a');
    assert.equal(again.code, 1);
    assert.match(again.err, /^Error response from daemon: sandbox a is not connected to network web$/m);
    // --force of a sandbox that does not exist succeeds, as Docker's does.
    assert.equal(docker(d, 'network', 'disconnect', '--force', 'web', 'gone').code, 0);
    // The static address went back to the pool.
    dockerOk(d, 'network', 'connect', '--ip', '10.45.0.50', 'web', 'b');
    assert.equal(
      JSON.parse(dockerOk(d, 'network', 'inspect', 'web'))[0].Containers[b].IPv4Address,
      '10.45.0.50/24',
    );
  },
);

test('docker network rm: one, several, in use, pre-defined, missing', { skip: dockerMissing }, async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const ids: Record<string, string> = {};
  for (const n of ['x1', 'x2', 'x3', 'x4', 'used']) ids[n] = dockerOk(d, 'network', 'create', n).trim();
  const bridgeOf = (n: string) => `br-${ids[n].slice(0, 12)}`;
  const hasLink = (name: string) => d.host.ipj('link').some((x: any) => x.ifname === name);
  assert.ok(hasLink(bridgeOf('x1')));
  assert.equal(dockerOk(d, 'network', 'rm', 'x1'), 'x1\n');
  assert.equal(hasLink(bridgeOf('x1')), false);
  assert.equal(dockerOk(d, 'network', 'rm', 'x2', ids.x3.slice(0, 12)), `x2\n${ids.x3.slice(0, 12)}\n`);
  assert.equal(hasLink(bridgeOf('x2')) || hasLink(bridgeOf('x3')), false);
  // In use: refused with the endpoints named; the bridge stays.
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'used' }] });
  const inUse = docker(d, 'network', 'rm', 'used');
  assert.equal(inUse.code, 1);
  assert.equal(inUse.out, '');
  assert.match(
    inUse.err,
    new RegExp(
      `^Error response from daemon: error while removing network: network used id ${ids.used} has active endpoints$`,
      'm',
    ),
  );
  assert.ok(hasLink(bridgeOf('used')));
  // Pre-defined: Docker's wording, each one; cnm0 stays.
  for (const n of ['bridge', 'host', 'none']) {
    const r = docker(d, 'network', 'rm', n);
    assert.equal(r.code, 1, n);
    assert.match(
      r.err,
      new RegExp(`^Error response from daemon: ${n} is a pre-defined network and cannot be removed$`, 'm'),
    );
  }
  assert.ok(hasLink('cnm0'));
  // Several with failures among them: the others go, exit 1.
  const mixed = docker(d, 'network', 'rm', 'nope', 'x4', 'bridge');
  assert.equal(mixed.code, 1);
  assert.equal(mixed.out, 'x4\n');
  assert.match(mixed.err, /^Error response from daemon: network nope not found$/m);
  assert.match(
    mixed.err,
    /^Error response from daemon: bridge is a pre-defined network and cannot be removed$/m,
  );
  assert.equal(hasLink(bridgeOf('x4')), false);
  // -f ignores missing networks (the CLI's own logic on the daemon's 404).
  assert.equal(docker(d, 'network', 'rm', '-f', 'nope').code, 0);
  assert.deepEqual(lines(dockerOk(d, 'network', 'ls', '--format', '{{.Name}}')), [
    'bridge',
    'host',
    'none',
    'used',
  ]);
  // Once the sandbox is gone, the network can go.
  await ok(d, 'DELETE', '/sandboxes/a');
  assert.equal(dockerOk(d, 'network', 'rm', 'used'), 'used\n');
  assert.equal(hasLink(bridgeOf('used')), false);
});

test(
  'docker network prune -f removes only unused custom networks and prints them',
  { skip: dockerMissing },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const ids: Record<string, string> = {};
    for (const [n, ...args] of [['u1'], ['u2', '--label', 'keep=yes'], ['u3', '--label', 'team=a'], ['used']])
      ids[n] = dockerOk(d, 'network', 'create', ...args, n).trim();
    await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'used' }] });
    const firewallBefore = d.host.run('iptables-save', ['-t', 'nat']);
    assert.match(firewallBefore, new RegExp(`br-${ids.u1.slice(0, 12)}`));
    // Filters: label!= keeps the labelled one.
    const filtered = dockerOk(
      d,
      'network',
      'prune',
      '-f',
      '--filter',
      'label!=keep=yes',
      '--filter',
      'label=team=a',
    );
    assert.equal(filtered, 'Deleted Networks:\nu3\n\n');
    const out = dockerOk(d, 'network', 'prune', '-f');
    const [head, ...deleted] = lines(out);
    assert.equal(head, 'Deleted Networks:');
    assert.deepEqual(deleted.sort(), ['u1', 'u2']);
    assert.deepEqual(lines(dockerOk(d, 'network', 'ls', '--format', '{{.Name}}')), [
      'bridge',
      'host',
      'none',
      'used',
    ]);
    // Their bridges and firewall rules went with them; the used one and cnm0 stayed.
    const links = d.host.ipj('link').map((x: any) => x.ifname);
    for (const n of ['u1', 'u2', 'u3']) assert.ok(!links.includes(`br-${ids[n].slice(0, 12)}`), n);
    assert.ok(links.includes(`br-${ids.used.slice(0, 12)}`));
    assert.ok(links.includes('cnm0'));
    const nat = d.host.run('iptables-save', ['-t', 'nat']);
    for (const n of ['u1', 'u2', 'u3']) assert.doesNotMatch(nat, new RegExp(`br-${ids[n].slice(0, 12)}`), n);
    // Nothing left to prune: the CLI prints nothing.
    assert.equal(dockerOk(d, 'network', 'prune', '-f').trim(), '');
    // An unsupported filter is the daemon's 400.
    const bad = docker(d, 'network', 'prune', '-f', '--filter', 'driver=bridge');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /^Error response from daemon: .*invalid filter 'driver'/m);
  },
);

test(
  'docker network create -d macvlan / -d ipvlan: options, IPv6, inspect with its containers; errors as Docker prints them',
  { skip: dockerMissing },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    d.host.run('ip', ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
    d.host.run('ip', ['link', 'set', 'eth0', 'up']);
    const id = dockerOk(
      d,
      'network',
      'create',
      '-d',
      'macvlan',
      '--subnet',
      '192.168.50.0/24',
      '--gateway',
      '192.168.50.1',
      '--ip-range',
      '192.168.50.64/26',
      '--aux-address',
      'host=192.168.50.250',
      '--ipv6',
      '--subnet',
      'fd00:50::/64',
      '-o',
      'parent=eth0',
      '-o',
      'macvlan_mode=bridge',
      '-o',
      'cnmd.macvlan.host_access=true',
      'lan',
    ).trim();
    await ok(d, 'POST', '/sandboxes', { Name: 'web', Networks: [{ Network: 'lan' }] });
    const [lan] = JSON.parse(dockerOk(d, 'network', 'inspect', 'lan'));
    assert.equal(lan.Id, id);
    assert.equal(lan.Driver, 'macvlan');
    assert.equal(lan.Scope, 'local');
    assert.equal(lan.EnableIPv6, true);
    assert.deepEqual(lan.Options, {
      parent: 'eth0',
      macvlan_mode: 'bridge',
      'cnmd.macvlan.host_access': 'true',
    });
    assert.deepEqual(lan.IPAM.Config[0], {
      Subnet: '192.168.50.0/24',
      IPRange: '192.168.50.64/26',
      Gateway: '192.168.50.1',
      AuxiliaryAddresses: { host: '192.168.50.250' },
    });
    assert.equal(lan.IPAM.Config[1].Subnet, 'fd00:50::/64');
    assert.equal(lan.IPAM.Config[1].Gateway, undefined, 'no IPv6 gateway without --gateway (Docker 29)');
    const [c] = Object.values(lan.Containers) as any[];
    assert.equal(c.Name, 'web');
    assert.match(c.IPv4Address, /^192\.168\.50\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\/24$/);
    assert.match(c.IPv6Address, /^fd00:50::[0-9a-f]+\/64$/);
    assert.match(c.MacAddress, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    assert.match(dockerOk(d, 'network', 'ls', '--filter', 'driver=macvlan'), /lan +macvlan +local/);
    // A bad mode, as Docker prints a daemon error: on stderr, exit code 1.
    const bad = docker(
      d,
      'network',
      'create',
      '-d',
      'macvlan',
      '-o',
      'parent=eth0',
      '-o',
      'macvlan_mode=bridged',
      'bad',
    );
    assert.equal(bad.code, 1);
    assert.match(
      bad.err,
      /option macvlan_mode: "bridged" is not a macvlan mode \(use bridge, private, vepa, passthru\)/,
    );
    const iv = docker(
      d,
      'network',
      'create',
      '-d',
      'ipvlan',
      '--subnet',
      '192.168.51.0/24',
      '-o',
      'parent=eth0',
      'iv',
    );
    assert.equal(iv.code, 1);
    assert.match(
      iv.err,
      /parent eth0 carries macvlan network [0-9a-f]{12}; macvlan and ipvlan networks cannot share a parent/,
    );
    // --ipam-driver dhcp: the LAN's server decides (dhcp.test.ts leases through it); bridge refuses it.
    dockerOk(d, 'network', 'create', '-d', 'macvlan', '--ipam-driver', 'dhcp', '-o', 'parent=eth0', 'office');
    const [office] = JSON.parse(dockerOk(d, 'network', 'inspect', 'office'));
    assert.equal(office.IPAM.Driver, 'dhcp');
    assert.deepEqual(office.IPAM.Config, []);
    const br = docker(d, 'network', 'create', '--ipam-driver', 'dhcp', 'br');
    assert.equal(br.code, 1);
    assert.match(br.err, /--ipam-driver dhcp: bridge endpoints are not on a LAN of their own/);
  },
);
