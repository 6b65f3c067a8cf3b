// cnmctl against a cnmd in its own netns: network create/ls/inspect/rm/
// connect/disconnect/prune and sandbox create/ls/inspect/rm/exec, with
// Docker's output shapes, `Error response from daemon: ...` and exit 1 on errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { eventually, lab, runIn } from '../lib/fixture';
import { CNMCTL, RunningDaemon, startDaemon } from '../lib/daemon';

interface Run {
  code: number | null;
  out: string;
  err: string;
}

function cnmctl(d: RunningDaemon, ...args: string[]): Run {
  const r = spawnSync(process.execPath, [CNMCTL, '-H', d.hostUri, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, CNMD_HOST: '' },
  });
  if (r.error) throw r.error;
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function cnmctlOk(d: RunningDaemon, ...args: string[]): string {
  const r = cnmctl(d, ...args);
  assert.equal(r.code, 0, `cnmctl ${args.join(' ')} -> ${r.code}\n${r.out}${r.err}`);
  assert.equal(r.err, '', `cnmctl ${args.join(' ')} wrote to stderr`);
  return r.out;
}

/** A command that must fail with the daemon's message on stderr and exit 1. */
function cnmctlFails(d: RunningDaemon, message: RegExp, ...args: string[]): Run {
  const r = cnmctl(d, ...args);
  assert.equal(r.code, 1, `cnmctl ${args.join(' ')} -> ${r.code}\n${r.out}${r.err}`);
  assert.match(r.err, message, `cnmctl ${args.join(' ')}`);
  return r;
}

const dockerMissing =
  spawnSync('docker', ['--version'], { encoding: 'utf8' }).status !== 0
    ? 'the docker CLI is not installed (apt-get install docker.io)'
    : false;

function docker(d: RunningDaemon, ...args: string[]): Run {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: d.base,
    DOCKER_HOST: d.hostUri,
    DOCKER_CONFIG: `${d.base}/docker-config`,
    DOCKER_CLI_HINTS: 'false',
  };
  const r = spawnSync('docker', args, { encoding: 'utf8', env, timeout: 30_000 });
  if (r.error) throw r.error;
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const lines = (s: string) => s.split('\n').filter((l) => l !== '');
const rows = (out: string) =>
  lines(out)
    .slice(1)
    .map((r) => r.split(/ {3,}/));

test('cnmctl network create, ls, inspect, rm and their errors', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const id = cnmctlOk(
    d,
    'network',
    'create',
    '--subnet',
    '10.60.0.0/24',
    '--gateway',
    '10.60.0.1',
    '--ip-range',
    '10.60.0.128/25',
    '--aux-address',
    'nas=10.60.0.5',
    '--label',
    'tier=front',
    '-o',
    'com.docker.network.bridge.enable_icc=false',
    'web',
  ).trim();
  assert.match(id, /^[0-9a-f]{64}$/);
  const v6 = cnmctlOk(d, 'network', 'create', '--ipv6', '--subnet', 'fd60::/64', '--internal', 'v6').trim();
  const nets = new Map(((await d.request('GET', '/networks')).body as any[]).map((n) => [n.Name, n]));
  const short = (n: string) => nets.get(n).Id.slice(0, 12);
  // ls: Docker's table, sorted by name.
  const ls = cnmctlOk(d, 'network', 'ls');
  assert.match(lines(ls)[0], /^NETWORK ID +NAME +DRIVER +SCOPE$/);
  assert.deepEqual(rows(ls), [
    [short('bridge'), 'bridge', 'bridge', 'local'],
    [short('host'), 'host', 'host', 'local'],
    [short('none'), 'none', 'null', 'local'],
    [short('v6'), 'v6', 'bridge', 'local'],
    [short('web'), 'web', 'bridge', 'local'],
  ]);
  assert.deepEqual(
    lines(cnmctlOk(d, 'network', 'ls', '-q')),
    ['bridge', 'host', 'none', 'v6', 'web'].map(short),
  );
  assert.deepEqual(
    lines(cnmctlOk(d, 'network', 'ls', '-q', '--no-trunc')),
    ['bridge', 'host', 'none', 'v6', 'web'].map((n) => nets.get(n).Id),
  );
  assert.deepEqual(
    lines(
      cnmctlOk(
        d,
        'network',
        'ls',
        '--filter',
        'type=custom',
        '--format',
        '{{.Name}} {{.Driver}} {{.Internal}}',
      ),
    ),
    ['v6 bridge true', 'web bridge false'],
  );
  assert.deepEqual(lines(cnmctlOk(d, 'network', 'ls', '-f', 'driver=null', '-q')), [short('none')]);
  assert.deepEqual(lines(cnmctlOk(d, 'network', 'ls', '-f', 'label=tier=front', '--format', '{{.Name}}')), [
    'web',
  ]);
  assert.deepEqual(lines(cnmctlOk(d, 'network', 'ls', '-f', 'name=^w', '--format', '{{.Name}}')), ['web']);
  // inspect: Docker's JSON array; -f templates.
  const [web] = JSON.parse(cnmctlOk(d, 'network', 'inspect', 'web'));
  assert.equal(web.Id, id);
  assert.deepEqual(web.IPAM.Config, [
    {
      Subnet: '10.60.0.0/24',
      IPRange: '10.60.0.128/25',
      Gateway: '10.60.0.1',
      AuxiliaryAddresses: { nas: '10.60.0.5' },
    },
  ]);
  assert.deepEqual(web.Options, { 'com.docker.network.bridge.enable_icc': 'false' });
  assert.deepEqual(web.Labels, { tier: 'front' });
  const [v6net] = JSON.parse(cnmctlOk(d, 'network', 'inspect', v6.slice(0, 12)));
  assert.equal(v6net.EnableIPv6, true);
  assert.equal(v6net.Internal, true);
  assert.deepEqual(
    v6net.IPAM.Config.map((c: any) => c.Subnet),
    ['172.18.0.0/16', 'fd60::/64'],
  );
  assert.equal(
    cnmctlOk(d, 'network', 'inspect', '-f', '{{.Driver}} {{.Scope}} {{json .Labels}}', 'web'),
    'bridge local {"tier":"front"}\n',
  );
  // Kernel: the bridge holds the gateway.
  const [br] = d.host.ipj('addr', 'show', `br-${id.slice(0, 12)}`);
  assert.ok(br.addr_info.some((a: any) => a.local === '10.60.0.1' && a.prefixlen === 24));
  // inspect of a found and a missing network: the found one printed, the error, exit 1.
  const mixed = cnmctlFails(
    d,
    /^Error response from daemon: network nope not found$/m,
    'network',
    'inspect',
    'web',
    'nope',
  );
  assert.deepEqual(
    JSON.parse(mixed.out).map((n: any) => n.Name),
    ['web'],
  );
  // Errors from the daemon: its message after `Error response from daemon: `, exit 1, nothing on stdout.
  for (const [message, args] of [
    [/^Error response from daemon: network with name web already exists$/m, ['network', 'create', 'web']],
    [
      /^Error response from daemon: .*overlaps with 10\.60\.0\.0\/24/m,
      ['network', 'create', '--subnet', '10.60.0.0/16', 'over'],
    ],
    [
      /^Error response from daemon: .*has host bits set/m,
      ['network', 'create', '--subnet', '10.61.0.1/24', 'bits'],
    ],
    [
      /^Error response from daemon: .*"maybe" is not a boolean/m,
      ['network', 'create', '-o', 'com.docker.network.bridge.enable_icc=maybe', 'x'],
    ],
    [/^Error response from daemon: plugin "nope" not found/m, ['network', 'create', '-d', 'nope', 'x']],
    [/^Error response from daemon: network nope not found$/m, ['network', 'rm', 'nope']],
    [/^Error response from daemon: network nope not found$/m, ['network', 'inspect', 'nope']],
    [
      /^Error response from daemon: bridge is a pre-defined network and cannot be removed$/m,
      ['network', 'rm', 'bridge'],
    ],
    [
      /^Error response from daemon: invalid filter 'colour'|^Error response from daemon: filters: invalid filter 'colour'/m,
      ['network', 'ls', '-f', 'colour=red'],
    ],
  ] as [RegExp, string[]][]) {
    const r = cnmctlFails(d, message, ...args);
    if (args[1] !== 'inspect') assert.equal(r.out, '', args.join(' '));
  }
  // No daemon there: says so and how to point at one.
  const away = spawnSync(process.execPath, [CNMCTL, '-H', `unix://${d.base}/nothing.sock`, 'network', 'ls'], {
    encoding: 'utf8',
  });
  assert.equal(away.status, 1);
  assert.match(
    away.stderr,
    /^cnmctl: cannot reach cnmd at unix:\/\/.*nothing\.sock: is the daemon running\? \(set -H or CNMD_HOST\)$/m,
  );
  // Client-side checks name the flag to fix.
  cnmctlFails(
    d,
    /^cnmctl: no matching subnet for gateway 10\.62\.0\.1$/m,
    'network',
    'create',
    '--subnet',
    '10.63.0.0/24',
    '--gateway',
    '10.62.0.1',
    'x',
  );
  cnmctlFails(
    d,
    /^cnmctl: invalid label "oops": want KEY=VALUE$/m,
    'network',
    'create',
    '--label',
    'oops',
    'x',
  );
  assert.deepEqual(lines(cnmctlOk(d, 'network', 'ls', '--format', '{{.Name}}')), [
    'bridge',
    'host',
    'none',
    'v6',
    'web',
  ]);
  // rm: one and several (one missing among them: the others go, exit 1).
  assert.equal(cnmctlOk(d, 'network', 'rm', 'v6'), 'v6\n');
  cnmctlOk(d, 'network', 'create', 'x1');
  const several = cnmctlFails(
    d,
    /^Error response from daemon: network nope not found$/m,
    'network',
    'rm',
    'x1',
    'nope',
    'web',
  );
  assert.equal(several.out, 'x1\nweb\n');
  assert.deepEqual(lines(cnmctlOk(d, 'network', 'ls', '--format', '{{.Name}}')), ['bridge', 'host', 'none']);
  assert.equal(
    d.host.ipj('link').some((x: any) => x.ifname.startsWith('br-')),
    false,
  );
});

test('cnmctl sandbox create/ls/inspect/rm and network connect/disconnect/prune', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const netId = cnmctlOk(d, 'network', 'create', '--subnet', '10.64.0.0/24', 'web').trim();
  const aId = cnmctlOk(
    d,
    'sandbox',
    'create',
    '--name',
    'a',
    '--hostname',
    'alpha',
    '--network',
    'web',
    '--ip',
    '10.64.0.10',
    '--alias',
    'db',
    '--label',
    'role=db',
  ).trim();
  assert.match(aId, /^[0-9a-f]{64}$/);
  // A sandbox on no network at all (the API's; cnmctl's default is bridge): lo only.
  const bRes = await d.request('POST', '/sandboxes', { Name: 'b' });
  assert.equal(bRes.status, 201, JSON.stringify(bRes.body));
  const bId: string = bRes.body.Id;
  // ls: a table with networks and addresses.
  const ls = cnmctlOk(d, 'sandbox', 'ls');
  assert.match(lines(ls)[0], /^SANDBOX ID +NAME +NETWORKS +IPV4$/);
  assert.deepEqual(
    rows(ls).sort(),
    [
      [aId.slice(0, 12), 'a', 'web', '10.64.0.10'],
      [bId.slice(0, 12), 'b', '-', '-'],
    ].sort(),
  );
  // As docker run: no --network joins the default network bridge.
  cnmctlOk(d, 'sandbox', 'create', '--name', 'c');
  const [c] = JSON.parse(cnmctlOk(d, 'sandbox', 'inspect', 'c'));
  assert.deepEqual(Object.keys(c.Networks), ['bridge']);
  assert.match(c.Networks.bridge.IPAddress, /^\d+\.\d+\.\d+\.\d+$/);
  const cAddrs = JSON.parse(runIn(c.SandboxKey, 'ip', ['-j', 'addr', 'show', 'eth0']));
  assert.ok(
    cAddrs[0].addr_info.some((x: any) => x.local === c.Networks.bridge.IPAddress),
    JSON.stringify(cAddrs),
  );
  // --network none: the loopback only.
  cnmctlOk(d, 'sandbox', 'create', '--name', 'lonely', '--network', 'none');
  const [lonely] = JSON.parse(cnmctlOk(d, 'sandbox', 'inspect', 'lonely'));
  assert.deepEqual(Object.keys(lonely.Networks), ['none']);
  assert.deepEqual(
    JSON.parse(runIn(lonely.SandboxKey, 'ip', ['-j', 'link'])).map((x: any) => x.ifname),
    ['lo'],
  );
  cnmctlOk(d, 'sandbox', 'rm', 'lonely');
  assert.match(
    cnmctlOk(d, 'sandbox', 'create', '--help').replace(/\s+/g, ' '),
    /default: the default network "bridge"; "none": loopback only/,
  );
  // --format: a template, json (one object a line) and table.
  assert.deepEqual(
    lines(cnmctlOk(d, 'sandbox', 'ls', '--format', '{{.Name}} {{.Networks}} {{.IPv4}}')).sort(),
    ['a web 10.64.0.10', 'b  ', `c bridge ${c.Networks.bridge.IPAddress}`],
  );
  const json = lines(cnmctlOk(d, 'sandbox', 'ls', '--format', 'json')).map((x) => JSON.parse(x));
  assert.deepEqual(
    json.find((x) => x.Name === 'a'),
    {
      CreatedAt: json.find((x) => x.Name === 'a').CreatedAt,
      Hostname: 'alpha',
      ID: aId.slice(0, 12),
      IPv4: '10.64.0.10',
      IPv6: '',
      Labels: 'role=db',
      Name: 'a',
      Networks: 'web',
      Ports: '',
    },
  );
  assert.match(
    lines(cnmctlOk(d, 'sandbox', 'ls', '--format', 'table {{.Name}}\t{{.Hostname}}'))[0],
    /^NAME +HOSTNAME$/,
  );
  cnmctlFails(d, /template.*Nmae/, 'sandbox', 'ls', '--format', '{{.Nmae}}');
  cnmctlOk(d, 'sandbox', 'rm', 'c');
  assert.deepEqual(
    lines(cnmctlOk(d, 'sandbox', 'ls', '-q')).sort(),
    [aId.slice(0, 12), bId.slice(0, 12)].sort(),
  );
  assert.deepEqual(lines(cnmctlOk(d, 'sandbox', 'ls', '-q', '--no-trunc', '-f', 'network=web')), [aId]);
  // inspect.
  const [a] = JSON.parse(cnmctlOk(d, 'sandbox', 'inspect', 'a'));
  assert.equal(a.Id, aId);
  assert.equal(a.Hostname, 'alpha');
  assert.deepEqual(a.Labels, { role: 'db' });
  assert.equal(a.Networks.web.IPAddress, '10.64.0.10');
  assert.equal(a.Networks.web.Gateway, '10.64.0.1');
  assert.ok(a.Networks.web.Aliases.includes('db'));
  assert.equal(
    cnmctlOk(d, 'sandbox', 'inspect', '-f', '{{.Name}} {{.Hostname}}', aId.slice(0, 12)),
    'a alpha\n',
  );
  assert.ok(fs.existsSync(a.SandboxKey));
  // Refused connects change nothing.
  cnmctlFails(
    d,
    /^Error response from daemon: .*address 10\.99\.0\.1 is not in any subnet of network web/m,
    'network',
    'connect',
    '--ip',
    '10.99.0.1',
    'web',
    'b',
  );
  cnmctlFails(
    d,
    /^Error response from daemon: .*invalid IPv4 address: banana/m,
    'network',
    'connect',
    '--ip',
    'banana',
    'web',
    'b',
  );
  cnmctlFails(
    d,
    /^Error response from daemon: .*user specified IP address is supported only when connecting to networks with user configured subnets/m,
    'network',
    'connect',
    '--ip',
    '172.17.0.9',
    'bridge',
    'b',
  );
  // connect by name, with --ip and --alias; then the network lists it.
  assert.equal(cnmctlOk(d, 'network', 'connect', '--ip', '10.64.0.20', '--alias', 'cache', 'web', 'b'), '');
  const [web] = JSON.parse(cnmctlOk(d, 'network', 'inspect', 'web'));
  assert.deepEqual(web.Containers[bId], {
    Name: 'b',
    EndpointID: web.Containers[bId].EndpointID,
    MacAddress: '02:42:0a:40:00:14',
    IPv4Address: '10.64.0.20/24',
    IPv6Address: '',
  });
  const [b] = JSON.parse(cnmctlOk(d, 'sandbox', 'inspect', 'b'));
  const [eth0] = JSON.parse(runIn(b.SandboxKey, 'ip', ['-j', 'addr', 'show', 'eth0']));
  assert.ok(eth0.addr_info.some((x: any) => x.local === '10.64.0.20' && x.prefixlen === 24));
  assert.ok(b.Networks.web.Aliases.includes('cache'));
  // Errors: connect twice, unknown sandbox, outside the subnet.
  cnmctlFails(
    d,
    /^Error response from daemon: endpoint with name b already exists in network web$/m,
    'network',
    'connect',
    'web',
    'b',
  );
  cnmctlFails(d, /^Error response from daemon: No such sandbox: nope$/m, 'network', 'connect', 'web', 'nope');
  cnmctlFails(
    d,
    /^Error response from daemon: sandbox name "a" is already in use$/m,
    'sandbox',
    'create',
    '--name',
    'a',
  );
  cnmctlFails(
    d,
    /^Error response from daemon: network nope not found$/m,
    'sandbox',
    'create',
    '--name',
    'c',
    '--network',
    'nope',
  );
  cnmctlFails(d, /^Error response from daemon: No such sandbox: nope$/m, 'sandbox', 'inspect', 'nope');
  // disconnect by ids; again is an error.
  assert.equal(cnmctlOk(d, 'network', 'disconnect', netId.slice(0, 12), bId), '');
  await eventually(() =>
    assert.deepEqual(
      JSON.parse(runIn(b.SandboxKey, 'ip', ['-j', 'link'])).map((x: any) => x.ifname),
      ['lo'],
    ),
  );
  cnmctlFails(
    d,
    /^Error response from daemon: sandbox b is not connected to network web$/m,
    'network',
    'disconnect',
    'web',
    'b',
  );
  assert.equal(cnmctlOk(d, 'network', 'disconnect', '-f', 'web', 'gone'), '');
  // rm of a network in use; prune leaves it and the defaults.
  cnmctlFails(
    d,
    /^Error response from daemon: error while removing network: network web id [0-9a-f]{64} has active endpoints$/m,
    'network',
    'rm',
    'web',
  );
  cnmctlOk(d, 'network', 'create', 'p1');
  cnmctlOk(d, 'network', 'create', '--label', 'keep=1', 'p2');
  assert.equal(cnmctlOk(d, 'network', 'prune', '--filter', 'label=keep=1'), 'Deleted Networks:\np2\n\n');
  assert.equal(cnmctlOk(d, 'network', 'prune', '-f'), 'Deleted Networks:\np1\n\n');
  assert.equal(cnmctlOk(d, 'network', 'prune', '-f'), '');
  assert.deepEqual(lines(cnmctlOk(d, 'network', 'ls', '--format', '{{.Name}}')), [
    'bridge',
    'host',
    'none',
    'web',
  ]);
  // sandbox rm: several, one missing among them.
  const rm = cnmctlFails(
    d,
    /^Error response from daemon: No such sandbox: nope$/m,
    'sandbox',
    'rm',
    'a',
    'nope',
    bId,
  );
  assert.equal(rm.out, `a\n${bId}\n`);
  assert.equal(cnmctlOk(d, 'sandbox', 'ls', '-q'), '');
  await eventually(() =>
    assert.deepEqual(d.host.ipj('link', 'show', 'master', `br-${netId.slice(0, 12)}`), []),
  );
  assert.equal(fs.existsSync(a.SandboxKey), false);
  assert.equal(cnmctlOk(d, 'network', 'rm', 'web'), 'web\n');
});

test('cnmctl sandbox exec runs in the sandbox netns with its resolv.conf, hosts and hostname', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  cnmctlOk(d, 'network', 'create', '--subnet', '10.65.0.0/24', 'web');
  cnmctlOk(
    d,
    'sandbox',
    'create',
    '--name',
    's',
    '--hostname',
    'web1',
    '--network',
    'web',
    '--dns',
    '192.0.2.53',
    '--dns',
    '192.0.2.54',
    '--dns-search',
    'example.test',
    '--dns-option',
    'ndots:2',
  );
  const [s] = JSON.parse(cnmctlOk(d, 'sandbox', 'inspect', 's'));
  const hostState = () => ({
    hostname: os.hostname(),
    resolv: fs.readFileSync('/etc/resolv.conf', 'utf8'),
    hosts: fs.readFileSync('/etc/hosts', 'utf8'),
    etcHostname: fs.existsSync('/etc/hostname') ? fs.readFileSync('/etc/hostname', 'utf8') : undefined,
  });
  const before = hostState();
  // resolv.conf: the sandbox's own. On a user-defined network, as Docker: the embedded DNS
  // (127.0.0.11, which forwards to the --dns servers), its --dns-search and --dns-option.
  const resolv = cnmctlOk(d, 'sandbox', 'exec', 's', '--', 'cat', '/etc/resolv.conf');
  assert.equal(resolv, fs.readFileSync(s.ResolvConfPath, 'utf8'));
  assert.deepEqual(
    lines(resolv).filter((x) => !x.startsWith('#')),
    ['nameserver 127.0.0.11', 'search example.test', 'options ndots:2'],
  );
  // On the default bridge (no embedded DNS), the --dns servers themselves.
  cnmctlOk(
    d,
    'sandbox',
    'create',
    '--name',
    'old',
    '--network',
    'bridge',
    '--dns',
    '192.0.2.53',
    '--dns',
    '192.0.2.54',
    '--dns-search',
    'example.test',
    '--dns-option',
    'ndots:2',
  );
  assert.deepEqual(
    lines(cnmctlOk(d, 'sandbox', 'exec', 'old', '--', 'cat', '/etc/resolv.conf')).filter(
      (x) => !x.startsWith('#'),
    ),
    ['nameserver 192.0.2.53', 'nameserver 192.0.2.54', 'search example.test', 'options ndots:2'],
  );
  // hosts: localhost entries and its own address with its hostname.
  const hosts = cnmctlOk(d, 'sandbox', 'exec', 's', '--', 'cat', '/etc/hosts');
  assert.match(hosts, /^127\.0\.0\.1\s+localhost$/m);
  assert.match(hosts, /^10\.65\.0\.2\s+web1$/m);
  assert.equal(hosts, fs.readFileSync(s.HostsPath, 'utf8'));
  // hostname: its own UTS name.
  assert.equal(cnmctlOk(d, 'sandbox', 'exec', 's', '--', 'hostname'), 'web1\n');
  assert.equal(cnmctlOk(d, 'sandbox', 'exec', 's', '--', 'cat', '/etc/hostname'), 'web1\n');
  // ip: its eth0 with its address (the sandbox netns, not the daemon's).
  const addrs = JSON.parse(cnmctlOk(d, 'sandbox', 'exec', 's', '--', 'ip', '-j', 'addr'));
  assert.deepEqual(
    addrs.map((x: any) => x.ifname),
    ['lo', 'eth0'],
  );
  const eth0 = addrs.find((x: any) => x.ifname === 'eth0');
  assert.equal(eth0.address, '02:42:0a:41:00:02');
  assert.ok(eth0.addr_info.some((x: any) => x.local === '10.65.0.2' && x.prefixlen === 24));
  // Flags after -- belong to the command; its exit status is cnmctl's.
  assert.equal(cnmctl(d, 'sandbox', 'exec', 's', '--', 'sh', '-c', 'exit 3').code, 3);
  assert.equal(
    cnmctlOk(d, 'sandbox', 'exec', 's', '--', 'sh', '-c', 'printf "%s\\n" "$1"', 'sh', '-n'),
    '-n\n',
  );
  // A connect later shows in hosts; a sandbox on the default bridge without --dns gets the host's non-loopback servers or Docker's fallback.
  cnmctlOk(d, 'network', 'create', '--subnet', '10.66.0.0/24', 'other');
  cnmctlOk(d, 'network', 'connect', 'other', 's');
  assert.match(cnmctlOk(d, 'sandbox', 'exec', 's', '--', 'cat', '/etc/hosts'), /^10\.66\.0\.2\s+web1$/m);
  cnmctlOk(d, 'sandbox', 'create', '--name', 'plain', '--network', 'bridge');
  const plainResolv = lines(cnmctlOk(d, 'sandbox', 'exec', 'plain', '--', 'cat', '/etc/resolv.conf')).filter(
    (x) => x.startsWith('nameserver'),
  );
  assert.ok(plainResolv.length > 0);
  for (const ns of plainResolv) assert.doesNotMatch(ns, /nameserver (127\.|::1$)/);
  const [plain] = JSON.parse(cnmctlOk(d, 'sandbox', 'inspect', 'plain'));
  assert.equal(cnmctlOk(d, 'sandbox', 'exec', 'plain', '--', 'hostname'), `${plain.Id.slice(0, 12)}\n`);
  // Errors: an unknown sandbox is the daemon's 404.
  cnmctlFails(
    d,
    /^Error response from daemon: No such sandbox: nope$/m,
    'sandbox',
    'exec',
    'nope',
    '--',
    'true',
  );
  // The machine's own files and hostname were never touched.
  assert.deepEqual(hostState(), before);
});

test(
  'cnmctl network ls/inspect/rm/prune print byte for byte what the docker CLI prints',
  { skip: dockerMissing },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    // Names that tell natural from locale order, and a long one that widens the column.
    for (const n of ['n10', 'n2', 'N1', 'b', 'a-b', 'a.b', 'a_b', 'averyveryverylongnetworkname'])
      cnmctlOk(d, 'network', 'create', n);
    cnmctlOk(
      d,
      'network',
      'create',
      '--ipv6',
      '--internal',
      '--label',
      'tier=front',
      '--subnet',
      'fd70::/64',
      'v6',
    );
    cnmctlOk(d, 'sandbox', 'create', '--name', 'a', '--network', 'n2');
    const same = (...args: string[]) => {
      const want = docker(d, ...args);
      const got = cnmctl(d, ...args);
      assert.equal(want.code, 0, `docker ${args.join(' ')}: ${want.err}`);
      assert.equal(got.out, want.out, `cnmctl ${args.join(' ')} differs from docker`);
      assert.equal(got.code, want.code);
    };
    same('network', 'ls');
    same('network', 'ls', '--no-trunc');
    same('network', 'ls', '-q');
    same('network', 'ls', '-q', '--no-trunc');
    same('network', 'ls', '--format', '{{.Name}} {{.Driver}}');
    same('network', 'ls', '--format', '{{.ID}} {{.Name}} {{.IPv6}} {{.Internal}} {{.Scope}} {{.Labels}}');
    same('network', 'ls', '--format', 'table {{.Name}}\t{{.Driver}}\t{{.IPv6}}');
    same('network', 'ls', '--format', 'table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}');
    same('network', 'ls', '--format', '{{.CreatedAt}}');
    same('network', 'ls', '--format', 'json');
    // The docker CLI reads IPv4 from EnableIPv4, which cnmd answers for every network (as dockerd 28).
    for (const line of lines(docker(d, 'network', 'ls', '--format', 'json').out))
      assert.equal(JSON.parse(line).IPv4, 'true', line);
    same('network', 'ls', '--format', '{{.Name}} {{.IPv4}}');
    // A field that does not exist is a template error and a non-zero exit, not `<no value>`.
    const typo = docker(d, 'network', 'ls', '--format', '{{.Nmae}}');
    assert.notEqual(typo.code, 0, typo.out);
    assert.match(typo.err, /template.*Nmae/);
    const typoC = cnmctl(d, 'network', 'ls', '--format', '{{.Nmae}}');
    assert.equal(typoC.code, typo.code, typoC.err);
    assert.equal(typoC.out, '');
    assert.match(typoC.err, /template.*can't evaluate field Nmae|template.*Nmae/);
    same('network', 'ls', '-q', '--format', '{{.Name}}');
    same('network', 'ls', '--filter', 'driver=bridge');
    same('network', 'ls', '--filter', 'type=custom', '--filter', 'name=^n');
    same('network', 'ls', '--filter', 'dangling=true', '--format', '{{.Name}}');
    same('network', 'ls', '--filter', 'label=tier=front');
    same('network', 'inspect', 'v6');
    same('network', 'inspect', 'n2', 'bridge');
    same('network', 'inspect', '-f', '{{.Name}} {{.Driver}} {{.EnableIPv6}} {{.Internal}}', 'v6');
    // Errors: same message on stderr, same exit code.
    for (const args of [
      ['network', 'rm', 'bridge'],
      ['network', 'rm', 'n2'],
      ['network', 'create', 'n2'],
      ['network', 'connect', 'n2', 'a'],
    ]) {
      const want = docker(d, ...args);
      const got = cnmctl(d, ...args);
      assert.equal(got.code, want.code, args.join(' '));
      assert.equal(lines(got.err)[0], lines(want.err)[0], args.join(' '));
    }
    // rm of several and prune print the same; run each on one of two twin sets of networks.
    for (const n of ['r1', 'r2', 'q1', 'q2']) cnmctlOk(d, 'network', 'create', n);
    assert.equal(
      cnmctlOk(d, 'network', 'rm', 'r1', 'r2'),
      docker(d, 'network', 'rm', 'n10', 'N1').out.replace('n10', 'r1').replace('N1', 'r2'),
    );
    const dockerPrune = docker(d, 'network', 'prune', '-f', '--filter', 'label!=tier');
    const pruned = lines(dockerPrune.out).slice(1).sort();
    assert.ok(
      pruned.includes('q1') && pruned.includes('q2') && !pruned.includes('n2') && !pruned.includes('v6'),
      dockerPrune.out,
    );
    for (const n of pruned) cnmctlOk(d, 'network', 'create', n);
    const cnmctlPrune = cnmctlOk(d, 'network', 'prune', '-f', '--filter', 'label!=tier');
    assert.equal(lines(cnmctlPrune)[0], 'Deleted Networks:');
    assert.deepEqual(lines(cnmctlPrune).slice(1).sort(), pruned);
    assert.ok(cnmctlPrune.endsWith('\n\n') && dockerPrune.out.endsWith('\n\n'));
    // Nothing left to prune: both print nothing.
    assert.equal(docker(d, 'network', 'prune', '-f').code, 0);
    same('network', 'prune', '-f');
    same('network', 'ls');
  },
);
