// Docker parity points a new user meets first (issue 19): a host address the host
// does not have, messages that name the sandbox, the network and the gateway,
// cnmd's own start-up errors and a sandbox on `none` across a restart (the stop
// that lets requests in flight finish: daemon-stop.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { lab } from '../lib/fixture';
import { CNMD, restartDaemon, startDaemon } from '../lib/daemon';

test('-p on a host address the host does not have is refused, naming the address; one it has is accepted', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await d.host.handle.addrAdd('lo', '192.0.2.10/32');
  const nat = () =>
    d.host
      .run('iptables-save', ['-t', 'nat'])
      .replace(/^#.*$/gm, '')
      .replace(/\[\d+:\d+\]/g, '');
  const before = nat();
  const r = await d.request('POST', '/sandboxes', {
    Name: 'far',
    Networks: [{ Network: 'bridge' }],
    Ports: ['1.2.3.4:9000:80'],
  });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  assert.match(r.body.message, /host address 1\.2\.3\.4 is not an address of this host/);
  assert.equal(nat(), before, 'no rule applied');
  assert.deepEqual((await d.request('GET', '/sandboxes')).body, [], 'no sandbox left');
  for (const ok of ['192.0.2.10:9000:80', '127.0.0.2:9001:80']) {
    const name = `ok${ok.length}${ok[4]}`;
    const r2 = await d.request('POST', '/sandboxes', {
      Name: name,
      Networks: [{ Network: 'bridge' }],
      Ports: [ok],
    });
    assert.equal(r2.status, 201, `${ok}: ${JSON.stringify(r2.body)}`);
  }
});

test('messages name the sandbox holding a port, the network holding a subnet or address, and the gateway', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  let r = await d.request('POST', '/networks/create', {
    Name: 'web',
    IPAM: { Config: [{ Subnet: '10.71.0.0/24', Gateway: '10.71.0.1' }] },
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await d.request('POST', '/sandboxes', {
    Name: 'first',
    Networks: [{ Network: 'web', IPv4Address: '10.71.0.9' }],
    Ports: ['8080:80'],
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await d.request('POST', '/sandboxes', {
    Name: 'second',
    Networks: [{ Network: 'web' }],
    Ports: ['8080:80'],
  });
  assert.equal(r.status, 409);
  assert.match(
    r.body.message,
    /port 8080\/tcp is already published \(0\.0\.0\.0:8080\/tcp by sandbox "first"\)/,
  );
  r = await d.request('POST', '/networks/create', {
    Name: 'clash',
    IPAM: { Config: [{ Subnet: '10.71.0.128/25' }] },
  });
  assert.equal(r.status, 403);
  assert.match(
    r.body.message,
    /^ipam request pool: Pool overlaps with other one on this address space: subnet 10\.71\.0\.128\/25 overlaps with 10\.71\.0\.0\/24, the subnet of network "web"/,
  );
  r = await d.request('POST', '/networks/create', {
    Name: 'self',
    IPAM: { Config: [{ Subnet: '10.72.0.0/24' }, { Subnet: '10.72.0.0/25' }] },
  });
  assert.equal(r.status, 403);
  assert.match(
    r.body.message,
    /^network create self: Pool overlaps with other one on this address space: subnet 10\.72\.0\.0\/25 overlaps with 10\.72\.0\.0\/24, another subnet of this request/,
  );
  r = await d.request('POST', '/sandboxes', {
    Name: 'gw',
    Networks: [{ Network: 'web', IPv4Address: '10.71.0.1' }],
  });
  assert.equal(r.status, 403);
  assert.match(
    r.body.message,
    /^ipam request address: Address already in use: 10\.71\.0\.1 is the gateway of network "web" \(10\.71\.0\.0\/24\); choose another address$/,
  );
  r = await d.request('POST', '/sandboxes', {
    Name: 'dup',
    Networks: [{ Network: 'web', IPv4Address: '10.71.0.9' }],
  });
  assert.equal(r.status, 403);
  assert.match(
    r.body.message,
    /^ipam request address: Address already in use: 10\.71\.0\.9 in network "web" \(10\.71\.0\.0\/24\) is held by sandbox "first"$/,
  );
  assert.deepEqual(
    (await d.request('GET', '/networks')).body.map((n: any) => n.Name).sort(),
    ['bridge', 'host', 'none', 'web'],
    'the refused networks left nothing',
  );
});

test('cnmd: a bad flag value is one line naming the flag and what it takes, exit 2; a refused start prints its message once, without a stack', async (t) => {
  const l = await lab(t);
  const ns = await l.ns('flags');
  // In a netns of its own with private roots: a value wrongly accepted starts nothing on this machine.
  const cnmd = (...args: string[]) =>
    spawnSync(
      'nsenter',
      [
        `--net=${ns.path}`,
        process.execPath,
        CNMD,
        '--data-root',
        path.join(l.root, 'flags-data'),
        '--exec-root',
        path.join(l.root, 'flags-exec'),
        '--plugin-dir',
        path.join(l.root, 'flags-plugins'),
        '-H',
        `unix://${path.join(l.root, 'flags.sock')}`,
        ...args,
      ],
      { encoding: 'utf8', timeout: 20_000 },
    );
  const bad = cnmd('--log-level', 'chatty');
  assert.equal(bad.status, 2);
  assert.equal(bad.stdout, '');
  assert.equal(
    bad.stderr,
    'cnmd: --log-level "chatty" is not one of trace, debug, info, warn, error, fatal, silent\n',
  );
  for (const [flag, value, allowed] of [
    ['--userland-proxy', 'maybe', /is not true or false/],
    ['--netns-pool-size', '-1', /is not a whole number from 0 to 1024/],
    ['--vxlan-port', '99999', /is not a UDP port from 1024 to 49151/],
    ['--max-connections', '0', /is not a whole number from 1 to \d+/],
    ['--cluster-ttl', 'abc', /is not a whole number of seconds from 2 to 3600/],
    ['--encryption-key-rotation', '5q', /is not a duration from 2s to 365d/],
    ['--default-address-pool', 'base=foo', /want both base and size/],
  ] as [string, string, RegExp][]) {
    const r = cnmd(flag, value);
    assert.equal(r.status, 2, `${flag} ${value}: ${r.stderr}`);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    assert.ok(r.stderr.startsWith(`cnmd: ${flag} "${value}"`), r.stderr);
    assert.match(r.stderr, allowed);
  }
  assert.deepEqual(
    fs.readdirSync(l.root).filter((x) => x.startsWith('flags')),
    [],
    'nothing made',
  );
  const d = await startDaemon(t, l);
  // A second daemon on the same roots is refused before it changes anything.
  const second = spawnSync(
    'nsenter',
    [
      `--net=${d.host.path}`,
      process.execPath,
      CNMD,
      '--data-root',
      d.dataRoot,
      '--exec-root',
      d.execRoot,
      '-H',
      `unix://${path.join(d.base, 'two.sock')}`,
      '--plugin-dir',
      path.join(d.base, 'plugins2'),
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  assert.equal(second.status, 1);
  const mentions = second.stderr.split('\n').filter((x) => /another cnmd \(pid \d+\)/.test(x));
  assert.equal(mentions.length, 1, second.stderr);
  assert.match(mentions[0], /^cnmd: /, 'a plain line, not JSON');
  assert.doesNotMatch(second.stderr, /"stack"|\n\s+at /, 'no stack trace');
});

test('a sandbox on none is restored without a rejoin warning', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const r = await d.request('POST', '/sandboxes', { Name: 'quiet', Networks: [{ Network: 'none' }] });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal(await d.stop(), 0);
  const d2 = await restartDaemon(t, l, d);
  const r2 = await d2.request('GET', '/sandboxes/quiet');
  assert.equal(r2.status, 200);
  assert.deepEqual(Object.keys(r2.body.Networks), ['none']);
  assert.match(d2.logs(), /"msg":"cnmd started"/);
  assert.doesNotMatch(d2.logs(), /rejoining/);
});
