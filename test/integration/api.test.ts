// The Engine-API subset and /sandboxes under bad input: Docker's statuses and
// {"message": ...} bodies, and after every refusal nothing half-made is left
// (API lists, links and firewall of the daemon's netns, sandbox namespaces and
// their links, IPAM allocations). Then routing (/vX.Y, HEAD, 405) and
// concurrency (parallel connects, racing creates).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { eventually, lab, runIn } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { ok } from '../lib/api';

interface RawReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

/** One HTTP request with a body sent byte for byte (malformed JSON included). */
function raw(
  d: RunningDaemon,
  method: string,
  path: string,
  body?: string | object,
  headers: Record<string, string> = {},
): Promise<RawReply> {
  const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: d.sock,
        method,
        path,
        headers: {
          ...(data !== undefined
            ? { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(data)) }
            : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: any;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

function linkNames(out: string): string[] {
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(':')[1].trim())
    .sort();
}

function firewall(d: RunningDaemon): string {
  const clean = (s: string) =>
    s
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .map((l) => l.replace(/\[\d+:\d+\]/g, ''))
      .join('\n');
  return clean(d.host.run('iptables-save', [])) + '\n--- ip6\n' + clean(d.host.run('ip6tables-save', []));
}

function dir(p: string): string[] {
  try {
    return fs.readdirSync(p).sort();
  } catch {
    return [];
  }
}

/** Everything a refused request must leave as it was. */
async function snapshot(d: RunningDaemon): Promise<Record<string, unknown>> {
  const nets = ((await ok(d, 'GET', '/networks')) as any[])
    .map(
      (n) =>
        `${n.Name} ${n.Id} ${n.Driver} ${JSON.stringify(n.IPAM.Config)} ${Object.keys(n.Containers).sort().join(',')}`,
    )
    .sort();
  const sbs = (await ok(d, 'GET', '/sandboxes')) as any[];
  const sandboxes = sbs.map((s) => `${s.Name} ${s.Id} ${JSON.stringify(s.Networks)}`).sort();
  const sandboxLinks = Object.fromEntries(
    sbs
      .filter((s) => !s.HostNetwork)
      .map((s) => [s.Name, linkNames(runIn(s.SandboxKey, 'ip', ['-o', 'link']))]),
  );
  return {
    nets,
    sandboxes,
    sandboxLinks,
    hostLinks: linkNames(d.host.run('ip', ['-o', 'link'])),
    firewall: firewall(d),
    netns: dir(`${d.execRoot}/netns`),
    files: dir(`${d.execRoot}/sandboxes`),
  };
}

/** Sends a bad request, checks Docker's status and {"message"} body, then that nothing changed. */
async function refused(
  d: RunningDaemon,
  before: Record<string, unknown>,
  method: string,
  path: string,
  body: string | object | undefined,
  status: number,
  message: RegExp,
): Promise<void> {
  const what = `${method} ${path} ${typeof body === 'string' ? body : JSON.stringify(body)}`;
  const r = await raw(d, method, path, body);
  assert.equal(r.status, status, `${what} -> ${r.status} ${r.text}`);
  assert.match(String(r.headers['content-type']), /^application\/json/, what);
  assert.deepEqual(Object.keys(r.json ?? {}), ['message'], `${what}: body is {"message"}: ${r.text}`);
  assert.match(r.json.message, message, what);
  await eventually(async () => assert.deepEqual(await snapshot(d), before, `${what} left something behind`));
}

test('network create: bad input gets Docker statuses and messages, and creates nothing', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'taken', IPAM: { Config: [{ Subnet: '10.50.0.0/24' }] } });
  const before = await snapshot(d);
  const create = (body: string | object, status: number, message: RegExp) =>
    refused(d, before, 'POST', '/networks/create', body, status, message);
  const net = '10.52.0.0/24'; // every refusal below that gets as far as IPAM asks for this subnet
  // Malformed or mistyped bodies.
  await create('{"Name":', 400, /request body is not valid JSON/);
  await create('[]', 400, /invalid request body: Expected object, received array/);
  await create('"web"', 400, /invalid request body: Expected object, received string/);
  await create({}, 400, /Name: Name is required/);
  await create({ Name: '' }, 400, /Name: Name is required/);
  await create({ Name: 5 }, 400, /Name: Expected string, received number/);
  await create({ Name: 'x', Internal: 'yes' }, 400, /Internal: Expected boolean, received string/);
  await create({ Name: 'x', EnableIPv6: 'true' }, 400, /EnableIPv6: Expected boolean/);
  await create(
    { Name: 'x', Options: { 'com.docker.network.driver.mtu': 1400 } },
    400,
    /Options\.com\.docker\.network\.driver\.mtu: Expected string, received number/,
  );
  await create({ Name: 'x', Labels: ['a=b'] }, 400, /Labels: Expected object, received array/);
  await create({ Name: 'x', IPAM: { Config: { Subnet: net } } }, 400, /IPAM\.Config: Expected array/);
  await create(
    { Name: 'x', IPAM: { Config: [{ Subnet: 24 }] } },
    400,
    /IPAM\.Config\.0\.Subnet: Expected string/,
  );
  await create({ Name: 'bad name' }, 400, /network name "bad name" is invalid/);
  await create({ Name: '-x' }, 400, /network name "-x" is invalid/);
  await create({ Name: 'x', Scope: 'swarm' }, 400, /scope "swarm" is not supported/);
  await create({ Name: 'x', ConfigOnly: true }, 400, /config-only networks are not supported/);
  // Unknown drivers are 404 (Docker: plugin not found).
  await create({ Name: 'x', Driver: 'nope' }, 404, /plugin "nope" not found/);
  await create({ Name: 'x', IPAM: { Driver: 'nope' } }, 404, /IPAM driver "nope" not found/);
  // A name already taken is 409; a subnet that overlaps a taken one is 403 (Docker's ErrPoolOverlap).
  await create({ Name: 'taken' }, 409, /network with name taken already exists/);
  await create({ Name: 'x', IPAM: { Config: [{ Subnet: '10.50.0.0/16' }] } }, 403, /overlaps/);
  await create({ Name: 'x', IPAM: { Config: [{ Subnet: '10.50.0.128/25' }] } }, 403, /overlaps/);
  await create({ Name: 'x', IPAM: { Config: [{ Subnet: net }, { Subnet: net }] } }, 403, /overlaps/);
  // Bad IPAM config is 400.
  await create(
    { Name: 'x', IPAM: { Config: [{ Subnet: '10.52.0.1/24' }] } },
    400,
    /has host bits set; did you mean 10\.52\.0\.0\/24/,
  );
  await create({ Name: 'x', IPAM: { Config: [{ Subnet: 'banana' }] } }, 400, /banana/);
  await create(
    { Name: 'x', IPAM: { Config: [{ Subnet: net, Gateway: '10.53.0.1' }] } },
    400,
    /gateway 10\.53\.0\.1 is not inside subnet 10\.52\.0\.0\/24/,
  );
  await create(
    { Name: 'x', IPAM: { Config: [{ Subnet: net, IPRange: '10.53.0.0/25' }] } },
    400,
    /10\.53\.0\.0\/25/,
  );
  await create(
    { Name: 'x', IPAM: { Config: [{ Subnet: net, AuxiliaryAddresses: { a: '10.53.0.9' } }] } },
    400,
    /10\.53\.0\.9/,
  );
  // (its own name: see the next test for what this refusal does to the name)
  await create(
    { Name: 'v6', IPAM: { Config: [{ Subnet: 'fd52::/64' }] } },
    400,
    /IPv6 subnet was given without --ipv6 \(EnableIPv6\)/,
  );
  // Bad bridge options are 400 (refused by the driver after IPAM allocated: that must be undone too).
  const opt = (o: Record<string, string>) => ({ Name: 'x', Options: o, IPAM: { Config: [{ Subnet: net }] } });
  await create(
    opt({ 'com.docker.network.bridge.enable_icc': 'maybe' }),
    400,
    /enable_icc: "maybe" is not a boolean/,
  );
  await create(
    opt({ 'com.docker.network.bridge.enable_ip_masquerade': 'yes' }),
    400,
    /enable_ip_masquerade: "yes" is not a boolean/,
  );
  await create(
    opt({ 'com.docker.network.bridge.inhibit_ipv4': '2' }),
    400,
    /inhibit_ipv4: "2" is not a boolean/,
  );
  await create(
    opt({ 'com.docker.network.driver.mtu': '10' }),
    400,
    /mtu: "10" is not an MTU between 68 and 65535/,
  );
  await create(opt({ 'com.docker.network.driver.mtu': 'big' }), 400, /mtu: "big" is not an MTU/);
  await create(
    opt({ 'com.docker.network.bridge.name': 'br-0123456789ab' + 'c' }),
    400,
    /is 16 bytes; Linux allows at most 15/,
  );
  await create(
    opt({ 'com.docker.network.bridge.host_binding_ipv4': '300.1.1.1' }),
    400,
    /not an IPv4 address/,
  );
  // The pre-defined drivers allow one network each (403).
  await create({ Name: 'host2', Driver: 'host' }, 403, /only one instance of "host" network is allowed/);
  await create({ Name: 'none2', Driver: 'null' }, 403, /only one instance of "null" network is allowed/);
  // IPAM gave everything back: the subnet and the name are free.
  const made = await ok(d, 'POST', '/networks/create', {
    Name: 'x',
    IPAM: { Config: [{ Subnet: net, IPRange: '10.52.0.0/25', AuxiliaryAddresses: { a: '10.52.0.9' } }] },
  });
  assert.match(made.Id, /^[0-9a-f]{64}$/);
  const [br] = d.host.ipj('addr', 'show', `br-${made.Id.slice(0, 12)}`);
  assert.ok(
    br.addr_info.some((a: any) => a.local === '10.52.0.1' && a.prefixlen === 24),
    'gateway .1 was not left allocated',
  );
});

test('network create: an IPv6 subnet refused for lack of EnableIPv6 does not keep the name', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const r1 = await d.request('POST', '/networks/create', {
    Name: 'v6',
    IPAM: { Config: [{ Subnet: 'fd52::/64' }] },
  });
  assert.equal(r1.status, 400);
  const r2 = await d.request('POST', '/networks/create', {
    Name: 'v6',
    EnableIPv6: true,
    IPAM: { Config: [{ Subnet: 'fd52::/64' }] },
  });
  assert.equal(r2.status, 201, `the name of a refused create stays reserved: ${JSON.stringify(r2.body)}`);
});

test('inspect, delete, connect and disconnect: bad input gets Docker statuses and changes nothing', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'web', IPAM: { Config: [{ Subnet: '10.54.0.0/24' }] } });
  await ok(d, 'POST', '/networks/create', { Name: 'auto' });
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'web', IPv4Address: '10.54.0.10' }] });
  await ok(d, 'POST', '/sandboxes', { Name: 'b' });
  await ok(d, 'POST', '/sandboxes', { Name: 'h', Networks: [{ Network: 'host' }] });
  const before = await snapshot(d);
  const web = await ok(d, 'GET', '/networks/web');
  const bridge = await ok(d, 'GET', '/networks/bridge');
  // Unknown network or sandbox: 404.
  await refused(d, before, 'GET', '/networks/nope', undefined, 404, /^network nope not found$/);
  await refused(d, before, 'DELETE', '/networks/nope', undefined, 404, /^network nope not found$/);
  await refused(
    d,
    before,
    'POST',
    '/networks/nope/connect',
    { Container: 'b' },
    404,
    /^network nope not found$/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    { Container: 'nope' },
    404,
    /^No such sandbox: nope$/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/nope/disconnect',
    { Container: 'a' },
    404,
    /^network nope not found$/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/disconnect',
    { Container: 'nope' },
    404,
    /^No such sandbox: nope$/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/disconnect',
    { Container: 'b' },
    404,
    /sandbox b is not connected to network web/,
  );
  await refused(d, before, 'GET', '/sandboxes/nope', undefined, 404, /^No such sandbox: nope$/);
  await refused(d, before, 'DELETE', '/sandboxes/nope', undefined, 404, /^No such sandbox: nope$/);
  // Pre-defined networks: 403, by name and by id.
  for (const name of ['bridge', 'host', 'none'])
    await refused(
      d,
      before,
      'DELETE',
      `/networks/${name}`,
      undefined,
      403,
      new RegExp(`^${name} is a pre-defined network and cannot be removed$`),
    );
  await refused(
    d,
    before,
    'DELETE',
    `/networks/${bridge.Id}`,
    undefined,
    403,
    /^bridge is a pre-defined network and cannot be removed$/,
  );
  // A network with endpoints: 403 (Docker's ActiveEndpointsError), and its bridge stays.
  await refused(
    d,
    before,
    'DELETE',
    '/networks/web',
    undefined,
    403,
    new RegExp(`error while removing network: network web id ${web.Id} has active endpoints`),
  );
  assert.equal(d.host.ipj('link', 'show', `br-${web.Id.slice(0, 12)}`).length, 1);
  // Bad connect bodies: 400.
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    '{"Container":',
    400,
    /request body is not valid JSON/,
  );
  await refused(d, before, 'POST', '/networks/web/connect', {}, 400, /Container: Container is required/);
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    { Container: 7 },
    400,
    /Container: Expected string, received number/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    { Container: 'b', EndpointConfig: { Aliases: 'db' } },
    400,
    /EndpointConfig\.Aliases: Expected array/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/disconnect',
    { Container: 'a', Force: 'yes' },
    400,
    /Force: Expected boolean/,
  );
  // Connect twice: 403, as Docker.
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    { Container: 'a' },
    403,
    /^endpoint with name a already exists in network web$/,
  );
  // Static addresses: outside the subnet, on a network without a user subnet: 400; taken: 403.
  const ip = (addr: string) => ({ Container: 'b', EndpointConfig: { IPAMConfig: { IPv4Address: addr } } });
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    ip('10.99.0.5'),
    400,
    /address 10\.99\.0\.5 is not in any subnet of network web \(10\.54\.0\.0\/24\)/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    ip('banana'),
    400,
    /invalid IPv4 address: banana/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    ip('10.54.0.5/24'),
    400,
    /invalid IPv4 address: 10\.54\.0\.5\/24/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    ip('fd54::5'),
    400,
    /invalid IPv4 address: fd54::5/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    { Container: 'b', EndpointConfig: { IPAMConfig: { IPv6Address: '10.54.0.5' } } },
    400,
    /invalid IPv6 address: 10\.54\.0\.5/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    { Container: 'b', EndpointConfig: { IPAMConfig: { IPv6Address: 'fd54::5' } } },
    400,
    /network web has no IPv6/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/auto/connect',
    ip('172.18.0.5'),
    400,
    /user specified IP address is supported only when connecting to networks with user configured subnets/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/bridge/connect',
    ip('172.17.0.5'),
    400,
    /user specified IP address is supported only when connecting to networks with user configured subnets/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    ip('10.54.0.10'),
    403,
    /^ipam request address: Address already in use: 10\.54\.0\.10 in network "web" \(10\.54\.0\.0\/24\) is held by sandbox "/,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    ip('10.54.0.1'),
    403,
    /^ipam request address: Address already in use: 10\.54\.0\.1 is the gateway of network "web"/,
  );
  // Host network and netns sandboxes do not mix: 400 with Docker's wording.
  await refused(
    d,
    before,
    'POST',
    '/networks/host/connect',
    { Container: 'b' },
    400,
    /^network connect: sandbox b: container cannot be disconnected from host network or connected to host network; /,
  );
  await refused(
    d,
    before,
    'POST',
    '/networks/web/connect',
    { Container: 'h' },
    400,
    /^network connect: sandbox h: container sharing network namespace with another container or host cannot be connected to any other network; /,
  );
  // Force-disconnecting a sandbox that is gone is not an error (Docker's --force).
  const forced = await raw(d, 'POST', '/networks/web/disconnect', { Container: 'gone', Force: true });
  assert.equal(forced.status, 200, forced.text);
  // No address leaked: b gets the first free one.
  await ok(d, 'POST', '/networks/web/connect', { Container: 'b' });
  const b = await ok(d, 'GET', '/sandboxes/b');
  assert.equal(b.Networks.web.IPAddress, '10.54.0.2');
});

test('sandbox create: bad input gets Docker statuses and leaves no namespace, files or endpoint', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'web', IPAM: { Config: [{ Subnet: '10.55.0.0/24' }] } });
  await ok(d, 'POST', '/networks/create', { Name: 'other', IPAM: { Config: [{ Subnet: '10.56.0.0/24' }] } });
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'web' }] });
  const before = await snapshot(d);
  const create = (body: string | object, status: number, message: RegExp) =>
    refused(d, before, 'POST', '/sandboxes', body, status, message);
  await create('{', 400, /request body is not valid JSON/);
  await create({ Name: 'b', Bogus: 1 }, 400, /Unrecognized key\(s\) in object: 'Bogus'/);
  await create({ Name: 3 }, 400, /Name: Expected string, received number/);
  await create({ Name: 'b', Networks: [{}] }, 400, /Networks\.0\.Network: Network is required/);
  await create({ Name: 'b', Networks: 'web' }, 400, /Networks: Expected array/);
  await create({ Name: 'b', Labels: { a: 1 } }, 400, /Labels\.a: Expected string/);
  await create({ Name: 'bad name' }, 400, /sandbox name "bad name" is invalid/);
  await create(
    { Name: 'b', Hostname: 'under_score' },
    400,
    /hostname "under_score" is not a valid host name/,
  );
  await create({ Name: 'b', Networks: [{ Network: 'nope' }] }, 404, /^network nope not found$/);
  await create({ Name: 'a' }, 409, /sandbox name "a" is already in use/);
  await create(
    { Name: 'b', Networks: [{ Network: 'web', IPv4Address: '10.99.0.1' }] },
    400,
    /not in any subnet of network web/,
  );
  await create(
    { Name: 'b', Networks: [{ Network: 'web', IPv4Address: 'web1' }] },
    400,
    /invalid IPv4 address: web1/,
  );
  // Fails on the second network, after the first was joined: the first is undone too.
  await create(
    { Name: 'b', Networks: [{ Network: 'web' }, { Network: 'other', IPv4Address: '10.99.0.1' }] },
    400,
    /not in any subnet of network other/,
  );
  await create(
    { Name: 'b', Networks: [{ Network: 'web' }, { Network: 'web' }] },
    403,
    /endpoint with name b already exists in network web/,
  );
  await create(
    { Name: 'b', Networks: [{ Network: 'host' }, { Network: 'web' }] },
    400,
    /sandbox b: container sharing network namespace with another container or host cannot be connected to any other network/,
  );
  // Nothing leaked in IPAM: the next sandbox gets .3 (a has .2).
  await ok(d, 'POST', '/sandboxes', { Name: 'b', Networks: [{ Network: 'web' }, { Network: 'other' }] });
  const b = await ok(d, 'GET', '/sandboxes/b');
  assert.equal(b.Networks.web.IPAddress, '10.55.0.3');
  assert.equal(b.Networks.other.IPAddress, '10.56.0.2');
});

test('filters: bad JSON, unknown keys and bad values are 400; name/id are patterns, labels all must match', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const web = await ok(d, 'POST', '/networks/create', {
    Name: 'web',
    Labels: { tier: 'front', team: 'net' },
  });
  await ok(d, 'POST', '/networks/create', { Name: 'web.old', Labels: { tier: 'front' } });
  await ok(d, 'POST', '/networks/create', { Name: 'webxold', Labels: { tier: 'back' } });
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'webxold' }] });
  const before = await snapshot(d);
  const q = (f: unknown) =>
    `/networks?filters=${encodeURIComponent(typeof f === 'string' ? f : JSON.stringify(f))}`;
  await refused(d, before, 'GET', q('{'), undefined, 400, /filters is not valid JSON/);
  await refused(d, before, 'GET', q('[]'), undefined, 400, /filters must be a JSON object/);
  await refused(d, before, 'GET', q({ name: 'web' }), undefined, 400, /filter 'name' must map to/);
  await refused(d, before, 'GET', q({ nme: { web: true } }), undefined, 400, /invalid filter 'nme'/);
  await refused(
    d,
    before,
    'GET',
    q({ type: { weird: true } }),
    undefined,
    400,
    /invalid filter: 'type'='weird'/,
  );
  await refused(
    d,
    before,
    'GET',
    q({ dangling: { maybe: true } }),
    undefined,
    400,
    /invalid value for filter 'dangling'/,
  );
  await refused(
    d,
    before,
    'GET',
    q({ dangling: { true: true, false: true } }),
    undefined,
    400,
    /more than one value for filter key "dangling"/,
  );
  await refused(
    d,
    before,
    'POST',
    `/networks/prune?filters=${encodeURIComponent('{"driver":{"bridge":true}}')}`,
    undefined,
    400,
    /invalid filter 'driver'/,
  );
  await refused(
    d,
    before,
    'GET',
    `/sandboxes?filters=${encodeURIComponent('{"driver":{"bridge":true}}')}`,
    undefined,
    400,
    /invalid filter 'driver'/,
  );
  const sbNames = async (f: unknown) =>
    ((await ok(d, 'GET', `/sandboxes?filters=${encodeURIComponent(JSON.stringify(f))}`)) as any[]).map(
      (s) => s.Name,
    );
  assert.deepEqual(await sbNames({ name: { '^a$': true } }), ['a']);
  assert.deepEqual(await sbNames({ network: { webxold: true } }), ['a']);
  assert.deepEqual(await sbNames({ network: { web: true } }), []);
  const names = async (f: unknown) => ((await ok(d, 'GET', q(f))) as any[]).map((n) => n.Name).sort();
  // Docker's filters.Args.Match: exact, else a regular expression.
  assert.deepEqual(await names({ name: { web: true } }), ['web', 'web.old', 'webxold']);
  assert.deepEqual(await names({ name: { '^web$': true } }), ['web']);
  assert.deepEqual(await names({ name: { 'web.old': true } }), ['web.old', 'webxold']);
  assert.deepEqual(await names({ name: { '^web\\.old$': true } }), ['web.old']);
  assert.deepEqual(await names({ name: { '^b': true, '^n': true } }), ['bridge', 'none']);
  assert.deepEqual(await names({ name: ['^host$'] }), ['host'], 'the legacy array form');
  assert.deepEqual(
    await names({ name: { '^host$': false } }),
    ['host'],
    "a set's keys count whatever their boolean (Go's Args.Get)",
  );
  assert.deepEqual(await names({ name: { '(': true } }), [], 'an invalid pattern matches nothing');
  assert.deepEqual(await names({ id: { [web.Id.slice(0, 10)]: true } }), ['web']);
  assert.deepEqual(await names({ id: { [`^${web.Id.slice(0, 6)}`]: true } }), ['web']);
  // Labels: all must match (MatchKVList), and only own keys count.
  assert.deepEqual(await names({ label: { tier: true } }), ['web', 'web.old', 'webxold']);
  assert.deepEqual(await names({ label: { 'tier=front': true } }), ['web', 'web.old']);
  assert.deepEqual(await names({ label: { 'tier=front': true, team: true } }), ['web']);
  assert.deepEqual(await names({ label: { toString: true } }), []);
  assert.deepEqual(await names({ driver: { null: true, host: true } }), ['host', 'none']);
  assert.deepEqual(await names({ type: { builtin: true } }), ['bridge', 'host', 'none']);
  assert.deepEqual(await names({ type: { custom: true }, name: { web: true } }), [
    'web',
    'web.old',
    'webxold',
  ]);
  assert.deepEqual(await names({ dangling: { true: true } }), ['web', 'web.old']);
  assert.deepEqual(await names({ dangling: { false: true } }), ['bridge', 'host', 'none', 'webxold']);
  assert.deepEqual(await names({ scope: { local: true }, name: { '^none$': true } }), ['none']);
});

test('routing: /vX.Y prefixes within the supported range, HEAD, 404 and 405', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const plain = await raw(d, 'GET', '/networks');
  const v141 = await raw(d, 'GET', '/v1.41/networks');
  assert.equal(v141.status, 200);
  assert.deepEqual(v141.json, plain.json);
  assert.equal((await raw(d, 'GET', '/v1.24/networks/bridge')).json.Name, 'bridge');
  const made = await raw(d, 'POST', '/v1.41/networks/create', { Name: 'viaprefix' });
  assert.equal(made.status, 201, made.text);
  assert.equal((await raw(d, 'DELETE', '/v1.41/networks/viaprefix')).status, 204);
  // Docker's version middleware wording, 400.
  const tooNew = await raw(d, 'GET', '/v1.99/networks');
  assert.equal(tooNew.status, 400);
  assert.deepEqual(tooNew.json, {
    message: 'client version 1.99 is too new. Maximum supported API version is 1.41',
  });
  const tooOld = await raw(d, 'GET', '/v1.12/networks');
  assert.equal(tooOld.status, 400);
  assert.deepEqual(tooOld.json, {
    message:
      'client version 1.12 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version',
  });
  // HEAD answers as GET without a body.
  const ping = await raw(d, 'HEAD', '/_ping');
  assert.equal(ping.status, 200);
  assert.equal(ping.headers['api-version'], '1.41');
  assert.equal(ping.headers['ostype'], 'linux');
  assert.equal(ping.text, '');
  const headNets = await raw(d, 'HEAD', '/networks');
  assert.equal(headNets.status, 200);
  assert.equal(headNets.text, '');
  assert.equal((await raw(d, 'HEAD', '/networks/nope')).status, 404);
  assert.equal((await raw(d, 'GET', '/_ping')).text, 'OK');
  // Unknown paths 404, known paths with another method 405 (with Allow), both {"message"}.
  const badEscape = await raw(d, 'GET', '/networks/%ZZ');
  assert.equal(badEscape.status, 400);
  assert.match(badEscape.json.message, /path parameter id "%ZZ" is not valid percent-encoding/);
  const nf = await raw(d, 'GET', '/nothing');
  assert.equal(nf.status, 404);
  assert.deepEqual(nf.json, { message: 'page not found: /nothing' });
  for (const [method, p, allow] of [
    ['PUT', '/networks', 'GET, HEAD'],
    ['DELETE', '/networks', 'GET, HEAD'],
    ['POST', '/networks/bridge', 'DELETE, GET, HEAD'],
    ['GET', '/networks/bridge/connect', 'POST'],
    ['PATCH', '/v1.41/sandboxes', 'GET, HEAD, POST'],
  ]) {
    const r = await raw(d, method, p);
    assert.equal(r.status, 405, `${method} ${p}`);
    assert.equal(r.headers['allow'], allow, `${method} ${p}`);
    assert.match(r.json.message, new RegExp(`method ${method} is not allowed on /`));
  }
  const nets = await raw(d, 'GET', '/networks');
  assert.deepEqual(nets.json, plain.json, 'nothing changed');
});

/** Writes a request by hand, in the pieces given with a pause between them, and reads the reply (the daemon answers and keeps the connection). */
function pieces(d: RunningDaemon, parts: string[], pauseMs = 30): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(d.sock);
    let got = '';
    s.setEncoding('utf8');
    s.on('error', reject);
    s.on('data', (c: string) => {
      got += c;
      const head = got.indexOf('\r\n\r\n');
      const len = /content-length: (\d+)/i.exec(got.slice(0, head));
      if (head < 0 || !len || got.length < head + 4 + Number(len[1])) return;
      s.destroy();
      const body = got.slice(head + 4, head + 4 + Number(len[1]));
      resolve({ status: Number(got.slice(9, 12)), json: body ? JSON.parse(body) : undefined });
    });
    s.on('connect', async () => {
      for (const [i, p] of parts.entries()) {
        if (i > 0) await new Promise((r) => setTimeout(r, pauseMs));
        s.write(p);
      }
    });
  });
}

test('request bodies: whole with the headers, in pieces, chunked, or too large', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const post = (body: string, extra = '') =>
    `POST /networks/create HTTP/1.1\r\nHost: cnmd\r\nContent-Type: application/json\r\n${extra}`;
  const whole = JSON.stringify({ Name: 'whole' });
  let r = await pieces(d, [post(whole, `Content-Length: ${whole.length}\r\n\r\n`) + whole]);
  assert.equal(r.status, 201, JSON.stringify(r.json));
  // The body after the headers, and split in the middle: read whole all the same.
  const split = JSON.stringify({ Name: 'split', Labels: { a: 'b' } });
  r = await pieces(d, [
    post(split, `Content-Length: ${split.length}\r\n\r\n`),
    split.slice(0, 9),
    split.slice(9),
  ]);
  assert.equal(r.status, 201, JSON.stringify(r.json));
  // Chunked (no Content-Length).
  const chunked = JSON.stringify({ Name: 'chunked' });
  const hex = (x: string) => Buffer.byteLength(x).toString(16);
  r = await pieces(d, [
    post(chunked, 'Transfer-Encoding: chunked\r\n\r\n'),
    `${hex(chunked.slice(0, 5))}\r\n${chunked.slice(0, 5)}\r\n`,
    `${hex(chunked.slice(5))}\r\n${chunked.slice(5)}\r\n0\r\n\r\n`,
  ]);
  assert.equal(r.status, 201, JSON.stringify(r.json));
  // Bad JSON split in pieces is still a 400 that says so.
  r = await pieces(d, [post('', 'Content-Length: 9\r\n\r\n'), '{"Name":', ' ']);
  assert.equal(r.status, 400);
  assert.match(r.json.message, /request body is not valid JSON/);
  // Over the limit (4 MiB): refused, nothing made.
  const big = JSON.stringify({ Name: 'big', Labels: { a: 'x'.repeat(4 << 20) } });
  r = await pieces(d, [post(big, `Content-Length: ${big.length}\r\n\r\n`) + big]);
  assert.equal(r.status, 400);
  assert.match(r.json.message, /request body is larger than 4194304 bytes/);
  const names = ((await ok(d, 'GET', '/networks')) as { Name: string }[]).map((n) => n.Name).sort();
  assert.deepEqual(names, ['bridge', 'chunked', 'host', 'none', 'split', 'whole']);
  for (const [name, labels] of [
    ['split', { a: 'b' }],
    ['whole', {}],
  ] as const)
    assert.deepEqual((await ok(d, 'GET', `/networks/${name}`)).Labels, labels);
});

test('concurrency: 20 sandboxes connect to one network at once and get 20 distinct addresses', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const net = await ok(d, 'POST', '/networks/create', {
    Name: 'busy',
    IPAM: { Config: [{ Subnet: '10.57.0.0/24' }] },
  });
  const names = Array.from({ length: 20 }, (_, i) => `s${i}`);
  await Promise.all(names.map((n) => ok(d, 'POST', '/sandboxes', { Name: n })));
  const replies = await Promise.all(
    names.map((n) => d.request('POST', '/networks/busy/connect', { Container: n })),
  );
  assert.deepEqual(
    replies.map((r) => r.status),
    names.map(() => 200),
    JSON.stringify(replies.filter((r) => r.status !== 200)),
  );
  const inspect = await ok(d, 'GET', '/networks/busy');
  const addrs = (Object.values(inspect.Containers) as any[]).map((c) => c.IPv4Address);
  assert.equal(addrs.length, 20);
  assert.equal(new Set(addrs).size, 20, `distinct: ${addrs}`);
  for (const a of addrs) assert.match(a, /^10\.57\.0\.(\d+)\/24$/);
  const expected = Array.from({ length: 20 }, (_, i) => `10.57.0.${i + 2}/24`).sort();
  assert.deepEqual([...addrs].sort(), expected, 'the lowest free addresses, no gaps');
  // Each sandbox has its own address on eth0 in the kernel, and a veth on the bridge.
  for (const n of names) {
    const sb = await ok(d, 'GET', `/sandboxes/${n}`);
    const [eth0] = JSON.parse(runIn(sb.SandboxKey, 'ip', ['-j', 'addr', 'show', 'eth0']));
    assert.ok(
      eth0.addr_info.some((x: any) => `${x.local}/${x.prefixlen}` === `${sb.Networks.busy.IPAddress}/24`),
      n,
    );
  }
  assert.equal(d.host.ipj('link', 'show', 'master', `br-${net.Id.slice(0, 12)}`).length, 20);
  // And they all leave at once as well.
  const gone = await Promise.all(
    names.map((n) => d.request('POST', '/networks/busy/disconnect', { Container: n })),
  );
  assert.deepEqual(
    gone.map((r) => r.status),
    names.map(() => 200),
  );
  await eventually(() =>
    assert.deepEqual(d.host.ipj('link', 'show', 'master', `br-${net.Id.slice(0, 12)}`), []),
  );
  assert.deepEqual((await ok(d, 'GET', '/networks/busy')).Containers, {});
});

test('concurrency: racing creates of one name give one 201 and 409s; of one subnet, one 201 and overlap 403s', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const linksBefore = linkNames(d.host.run('ip', ['-o', 'link']));
  const same = await Promise.all(
    Array.from({ length: 10 }, () => d.request('POST', '/networks/create', { Name: 'same' })),
  );
  assert.deepEqual(same.map((r) => r.status).sort(), [201, ...Array(9).fill(409)]);
  for (const r of same.filter((x) => x.status === 409))
    assert.deepEqual(r.body, { message: 'network with name same already exists' });
  const nets = (await ok(d, 'GET', '/networks')) as any[];
  assert.equal(nets.filter((n) => n.Name === 'same').length, 1);
  const winner = same.find((r) => r.status === 201)!.body.Id;
  assert.equal(nets.find((n) => n.Name === 'same').Id, winner);
  assert.deepEqual(
    linkNames(d.host.run('ip', ['-o', 'link'])),
    [...linksBefore, `br-${winner.slice(0, 12)}`].sort(),
    'exactly one new bridge',
  );
  // The losers took no pool: the next automatic network gets the next one.
  assert.equal(nets.find((n) => n.Name === 'same').IPAM.Config[0].Subnet, '172.18.0.0/16');
  const next = await ok(d, 'POST', '/networks/create', { Name: 'next' });
  assert.equal((await ok(d, 'GET', `/networks/${next.Id}`)).IPAM.Config[0].Subnet, '172.19.0.0/16');
  // Different names, one subnet.
  const sub = await Promise.all(
    Array.from({ length: 8 }, (_, i) =>
      d.request('POST', '/networks/create', {
        Name: `sub${i}`,
        IPAM: { Config: [{ Subnet: '10.58.0.0/24' }] },
      }),
    ),
  );
  assert.deepEqual(
    sub.map((r) => r.status).sort(),
    [201, ...Array(7).fill(403)],
    JSON.stringify(sub.map((r) => r.body)),
  );
  for (const r of sub.filter((x) => x.status === 403)) assert.match(r.body.message, /overlaps/);
  const after = (await ok(d, 'GET', '/networks')) as any[];
  assert.equal(after.filter((n) => n.Name.startsWith('sub')).length, 1);
  await eventually(() =>
    assert.equal(linkNames(d.host.run('ip', ['-o', 'link'])).filter((x) => x.startsWith('br-')).length, 3),
  );
});
