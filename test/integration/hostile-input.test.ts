// Names and options that reach iptables, the kernel or a container's files are
// validated before anything is made: each refusal is a 4xx naming the option and
// what to fix, and nothing is left half-made (checked with test/lib/invariants).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lab } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { assertInvariants } from '../lib/invariants';

async function refused(d: RunningDaemon, p: string, body: unknown, status: number, want: RegExp) {
  const r = await d.request('POST', p, body);
  assert.equal(r.status, status, `${JSON.stringify(body)} -> ${r.status} ${JSON.stringify(r.body)}`);
  assert.match(r.body.message, want, JSON.stringify(body));
}

const net = (name: string, extra: Record<string, unknown> = {}) => ({ Name: name, ...extra });
const subnet = (s: string) => ({ IPAM: { Config: [{ Subnet: s }] } });

test('bridge names that are iptables patterns or kernel templates, and lax numbers, are refused', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const BR = 'com.docker.network.bridge.name';
  for (const name of ['+', 'br+', 'br*', '-A', '!x', 'br%d', 'éth0', 'a b', 'br/x', 'br:1', 'x'.repeat(16)])
    await refused(
      d,
      '/networks/create',
      net('n', { Options: { [BR]: name } }),
      400,
      new RegExp(`${BR.replace(/\./g, '\\.')}|interface name`),
    );
  const MTU = 'com.docker.network.driver.mtu';
  for (const mtu of ['0x5dc', '1e3', '1500\n', ' 1500', '-1500', '1500.0'])
    await refused(
      d,
      '/networks/create',
      net('n', { Options: { [MTU]: mtu } }),
      400,
      /driver\.mtu.*not an MTU between 68 and 65535 \(a decimal number\)/,
    );
  await refused(
    d,
    '/networks/create',
    net('n', { Options: { 'cnmd.network.embedded_dns': 'maybe' } }),
    400,
    /embedded_dns.*not true or false/,
  );
  for (const s of ['10.0.0.0/024', ' 10.0.0.0/24', '10.0.0.0/24\n'])
    await refused(d, '/networks/create', net('n', subnet(s)), 400, /is not a CIDR/);
  await refused(d, '/networks/create', net('x'.repeat(10_000)), 400, /network name .* is invalid/);
  // Nothing was made: no br0 from the kernel's %d template, no rule with a wildcard.
  await assertInvariants(d);
  assert.doesNotMatch(d.host.run('iptables-save', []), /[-io] \S*[+*%]/);
  // Good values still work, and numbers are read as decimal.
  const ok = await d.request(
    'POST',
    '/networks/create',
    net('good', { Options: { [BR]: 'br-good_1.a', [MTU]: '1400' } }),
  );
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
  assert.equal(d.host.ipj('link', 'show', 'br-good_1.a')[0].mtu, 1400);
  await assertInvariants(d);
});

test('subnets the host routes, and subnets that cannot work, are refused', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  // The daemon's "host": a LAN on h0 with a default route and a route to another network.
  const sh = (c: string) => d.host.run('sh', ['-c', c]);
  sh(
    'ip link add h0 type veth peer name h1 && ip addr add 192.0.2.2/24 dev h0 && ip link set h0 up && ip link set h1 up',
  );
  sh('ip route add default via 192.0.2.1 && ip route add 198.51.100.0/24 via 192.0.2.1');
  for (const s of ['192.0.2.0/24', '192.0.0.0/16', '198.51.100.0/25'])
    await refused(d, '/networks/create', net('n', subnet(s)), 403, /a network the host routes/);
  for (const s of [
    '127.0.0.0/8',
    '224.0.0.0/4',
    '255.255.255.255/32',
    '169.254.0.0/16',
    '0.0.0.0/0',
    '0.0.0.0/1',
  ])
    await refused(d, '/networks/create', net('n', subnet(s)), 400, /no network can use it/);
  for (const s of ['fe80::/64', '::ffff:10.0.0.0/104', '::/0', 'ff00::/8', '::1/128'])
    await refused(
      d,
      '/networks/create',
      net('n', { EnableIPv6: true, ...subnet(s) }),
      400,
      /no network can use it/,
    );
  const ok = await d.request('POST', '/networks/create', net('fine', subnet('10.201.0.0/24')));
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
  // Predefined pools skip the host's routes too; the host's own bridge route is not "the host's".
  const auto = await d.request('POST', '/networks/create', net('auto'));
  assert.equal(auto.status, 201, JSON.stringify(auto.body));
  await assertInvariants(d, { foreignLinks: (n) => n === 'h0' || n === 'h1' });
});

test('DNS settings, hostnames, names and port specs cannot inject resolv.conf lines', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  assert.equal((await d.request('POST', '/networks/create', net('pn', subnet('10.202.0.0/24')))).status, 201);
  const sb = (extra: Record<string, unknown>) => ({ Name: 'dinj', Networks: [{ Network: 'pn' }], ...extra });
  for (const [dns, want] of [
    [{ Servers: ['1.2.3.4\nnameserver 6.6.6.6'] }, /DNS\.Servers.*not an IP address/],
    [{ Servers: ['not-an-ip'] }, /DNS\.Servers/],
    [{ Servers: ['../../etc'] }, /DNS\.Servers/],
    [{ Search: ['ok.example\nnameserver 6.6.6.6'] }, /DNS\.Search.*not a domain name/],
    [{ Search: ['a b'] }, /DNS\.Search/],
    [{ Options: ['ndots:1\noptions evil'] }, /DNS\.Options/],
    [{ Options: ['ndots:1 rotate'] }, /DNS\.Options/],
  ] as const)
    await refused(d, '/sandboxes', sb({ DNS: dns }), 400, want);
  for (const h of ['x..y', 'x.', '-x', 'a_b', 'x'.repeat(64)])
    await refused(d, '/sandboxes', sb({ Hostname: h }), 400, /not a valid host name/);
  await refused(d, '/sandboxes', sb({ Name: 'y'.repeat(10_000) }), 400, /sandbox name .* is invalid/);
  await refused(d, '/sandboxes', sb({ Ports: [' 8088:80'] }), 400, /whitespace/);
  assert.deepEqual((await d.request('GET', '/sandboxes')).body, [], 'nothing half-made');
  await assertInvariants(d);
  // Valid settings are written as given.
  const r = await d.request(
    'POST',
    '/sandboxes',
    sb({
      Hostname: 'web.local',
      DNS: { Servers: ['1.1.1.1'], Search: ['example.com', 'corp.example.'], Options: ['ndots:2', 'rotate'] },
    }),
  );
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const conf = fs.readFileSync(path.join(d.execRoot, 'sandboxes', r.body.Id, 'resolv.conf'), 'utf8');
  assert.match(conf, /^search example\.com corp\.example\.$/m);
  assert.doesNotMatch(conf, /6\.6\.6\.6|evil/);
});

test('none keeps a sandbox alone; connect racing delete answers 404, never 500', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  assert.equal(
    (await d.request('POST', '/networks/create', net('web', subnet('10.203.0.0/24')))).status,
    201,
  );
  assert.equal(
    (await d.request('POST', '/sandboxes', { Name: 'lonely', Networks: [{ Network: 'none' }] })).status,
    201,
  );
  await refused(d, '/networks/web/connect', { Container: 'lonely' }, 400, /private \(none\) mode/);
  await refused(
    d,
    '/sandboxes',
    { Name: 'both', Networks: [{ Network: 'none' }, { Network: 'web' }] },
    400,
    /private \(none\) mode/,
  );
  assert.equal(
    (await d.request('POST', '/sandboxes', { Name: 'onweb', Networks: [{ Network: 'web' }] })).status,
    201,
  );
  await refused(d, '/networks/none/connect', { Container: 'onweb' }, 400, /private \(none\) mode/);

  const seen = new Map<number, number>();
  assert.equal(
    (await d.request('POST', '/networks/create', net('web2', subnet('10.204.0.0/24')))).status,
    201,
  );
  for (let round = 0; round < 12; round++) {
    const name = `race${round}`;
    const made = await d.request('POST', '/sandboxes', { Name: name, Networks: [{ Network: 'web' }] });
    assert.equal(made.status, 201);
    assert.equal((await d.request('POST', '/sandboxes', { Name: `filler${round}` })).status, 201);
    // The filler's connect holds web's lock, so the delete (which needs it: the racer is on web)
    // waits; the racer's connect to web2 finds its sandbox still there and queues behind the
    // delete, which removes it.
    const ops = [d.request('POST', '/networks/web/connect', { Container: `filler${round}` })];
    await new Promise((r) => setTimeout(r, 1));
    ops.push(d.request('DELETE', `/sandboxes/${name}`));
    await new Promise((r) => setTimeout(r, round % 3));
    ops.push(d.request('POST', '/networks/web2/connect', { Container: name }));
    ops.push(d.request('POST', '/networks/web/disconnect', { Container: name }));
    for (const r of await Promise.all(ops)) {
      seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
      assert.ok(r.status < 500, `${r.status} ${JSON.stringify(r.body)}`);
    }
  }
  t.diagnostic(`statuses: ${JSON.stringify([...seen])}`);
  assert.ok((seen.get(404) ?? 0) > 0, 'some calls lost the race and were told 404');
  await assertInvariants(d);
});
