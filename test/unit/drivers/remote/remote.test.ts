// RemoteDriver and RemoteIpam against a fake but real plugin: an HTTP server on
// a unix socket in a temporary plugin dir, found by discovery. Only the parts
// that need no network namespace: request bodies exactly as libnetwork sends
// them, reply checks, rollbacks on the plugin, 404 handling, restore.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { CnmdError } from '../../../../src/errors';
import type { Handle } from '../../../../src/netlink/handle';
import { RemoteDriver } from '../../../../drivers/remote/remote';
import type { EndpointSpec, NetworkSpec } from '../../../../drivers/driver';
import { RemoteIpam } from '../../../../src/ipam/remote';
import { PluginClient } from '../../../../src/remote/client';

type T = { after(fn: () => void | Promise<void>): void };
type Reply = { status?: number; body?: unknown } | undefined;

interface Call {
  method: string;
  body: unknown;
}

/**
 * A plugin named `name` in a fresh plugin dir. `answer` returns the reply for a
 * method; undefined means {} with 200. Activation and capabilities have defaults.
 */
async function fakePlugin(
  t: T,
  name: string,
  implementsWhat: string[],
  answer: (method: string, body: any) => Reply = () => undefined,
) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-fake-'));
  const calls: Call[] = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const method = (req.url ?? '').slice(1);
      const body = raw === '' ? undefined : JSON.parse(raw);
      calls.push({ method, body });
      let r = answer(method, body);
      if (r === undefined && method === 'Plugin.Activate') r = { body: { Implements: implementsWhat } };
      if (r === undefined && method === 'NetworkDriver.GetCapabilities')
        r = { body: { Scope: 'local', ConnectivityScope: 'global' } };
      res.writeHead(r?.status ?? 200, { 'Content-Type': 'application/vnd.docker.plugins.v1.1+json' });
      res.end(typeof r?.body === 'string' ? r.body : JSON.stringify(r?.body ?? {}));
    });
  });
  await new Promise<void>((resolve) => server.listen(path.join(dir, `${name}.sock`), resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) =>
      server.close(() => {
        fs.rmSync(dir, { recursive: true, force: true });
        resolve();
      }),
    );
  });
  const dirs = { socketDirs: [dir], specDirs: [] };
  /** Calls after activation and capabilities, the ones a test is about. */
  const after = () =>
    calls.filter((c) => c.method !== 'Plugin.Activate' && !c.method.endsWith('GetCapabilities'));
  return { dirs, calls, after };
}

// Kernel work is never reached in these tests: a join without InterfaceName touches no link.
const noKernel = {} as Handle;

async function driver(
  t: T,
  answer?: (method: string, body: any) => Reply,
  implementsWhat = ['NetworkDriver'],
) {
  const p = await fakePlugin(t, 'fakenet', implementsWhat, answer);
  const d = await RemoteDriver.load('fakenet', {
    dirs: p.dirs,
    host: noKernel,
    client: { timeoutMs: 2000, retryMs: 200 },
  });
  t.after(() => d.close());
  return { d, ...p };
}

async function ipam(t: T, answer?: (method: string, body: any) => Reply) {
  const p = await fakePlugin(t, 'fakeipam', ['IpamDriver'], answer);
  const i = await RemoteIpam.load('fakeipam', { dirs: p.dirs, client: { timeoutMs: 2000, retryMs: 200 } });
  t.after(() => i.close());
  return { i, ...p };
}

function isError(code: string, ...fragments: RegExp[]) {
  return (e: unknown) => {
    assert.ok(e instanceof CnmdError, `not a CnmdError: ${e}`);
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.match(e.message, f);
    return true;
  };
}

const NET: NetworkSpec = {
  id: 'n1',
  name: 'web',
  options: { 'com.example.mtu': '1400', foo: 'bar' },
  ipv4: [{ pool: '10.1.0.0/24', gateway: '10.1.0.1/24', auxAddresses: { host1: '10.1.0.5/24' } }],
  ipv6: [{ addressSpace: 'MySpace', pool: 'fd00:1::/64', gateway: 'fd00:1::1/64', auxAddresses: {} }],
  enableIPv6: true,
  internal: false,
};

const EP: EndpointSpec = {
  networkId: 'n1',
  endpointId: 'e1',
  address: '10.1.0.2/24',
  options: { 'com.example.x': 'y' },
};

test('load: discovery, Plugin.Activate, GetCapabilities; capabilities follow the plugin', async (t) => {
  const { d, calls } = await driver(t);
  assert.equal(d.name, 'fakenet');
  assert.deepEqual(
    calls.map((c) => c.method),
    ['Plugin.Activate', 'NetworkDriver.GetCapabilities'],
  );
  assert.equal(calls[1].body, undefined, 'GetCapabilities has no body');
  assert.deepEqual(d.capabilities(), { scope: 'local', connectivityScope: 'global', portMapping: true });
});

test('load refuses a plugin that is not a NetworkDriver, or answers a bad Scope', async (t) => {
  const p = await fakePlugin(t, 'onlyipam', ['IpamDriver']);
  await assert.rejects(
    RemoteDriver.load('onlyipam', { dirs: p.dirs, host: noKernel }),
    isError(
      'PLUGIN_ERROR',
      /remote plugin "onlyipam"/,
      /Plugin\.Activate/,
      /implements IpamDriver, not NetworkDriver/,
    ),
  );
  const q = await fakePlugin(t, 'badscope', ['NetworkDriver'], (m) =>
    m.endsWith('GetCapabilities') ? { body: { Scope: 'cluster' } } : undefined,
  );
  await assert.rejects(
    RemoteDriver.load('badscope', { dirs: q.dirs, host: noKernel }),
    isError(
      'MALFORMED_REPLY',
      /remote plugin "badscope"/,
      /NetworkDriver\.GetCapabilities/,
      /Scope: expected "local" or "global", got "cluster"/,
      /fix the plugin/,
    ),
  );
  await assert.rejects(
    RemoteDriver.load('absent', { dirs: q.dirs, host: noKernel }),
    isError('NOT_FOUND', /plugin "absent" not found/),
  );
});

test('createNetwork sends libnetwork CreateNetworkRequest exactly', async (t) => {
  const { d, after } = await driver(t);
  await d.createNetwork(NET);
  assert.deepEqual(after(), [
    {
      method: 'NetworkDriver.CreateNetwork',
      body: {
        NetworkID: 'n1',
        Options: {
          'com.docker.network.generic': { 'com.example.mtu': '1400', foo: 'bar' },
          'com.docker.network.enable_ipv6': true,
          'com.docker.network.internal': false,
        },
        IPv4Data: [
          {
            AddressSpace: 'LocalDefault',
            Pool: '10.1.0.0/24',
            Gateway: '10.1.0.1/24',
            AuxAddresses: { host1: '10.1.0.5/24' },
          },
        ],
        IPv6Data: [{ AddressSpace: 'MySpace', Pool: 'fd00:1::/64', Gateway: 'fd00:1::1/64' }],
      },
    },
  ]);
  await d.createNetwork({
    ...NET,
    id: 'n2',
    options: {},
    ipv4: [{ pool: '10.2.0.0/24' }],
    ipv6: [],
    enableIPv6: false,
    internal: true,
  });
  assert.deepEqual(after()[1].body, {
    NetworkID: 'n2',
    Options: {
      'com.docker.network.generic': {},
      'com.docker.network.enable_ipv6': false,
      'com.docker.network.internal': true,
    },
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '10.2.0.0/24' }],
    IPv6Data: [],
  });
  await d.deleteNetwork('n2');
  assert.deepEqual(after()[2], { method: 'NetworkDriver.DeleteNetwork', body: { NetworkID: 'n2' } });
});

test('a plugin error on CreateNetwork (200 with Err) fails the call with its message', async (t) => {
  const { d } = await driver(t, (m) =>
    m === 'NetworkDriver.CreateNetwork' ? { body: { Err: 'bridge name taken' } } : undefined,
  );
  await assert.rejects(
    d.createNetwork(NET),
    isError('PLUGIN_ERROR', /remote plugin "fakenet"/, /NetworkDriver\.CreateNetwork/, /bridge name taken/),
  );
});

test('createEndpoint: the request carries every Interface field; the plugin may fill the empty ones', async (t) => {
  const { d, after } = await driver(t, (m) =>
    m === 'NetworkDriver.CreateEndpoint'
      ? { body: { Interface: { MacAddress: '02:AA:BB:CC:DD:EE', AddressIPv6: 'fd00:1::99/64' } } }
      : undefined,
  );
  const info = await d.createEndpoint(EP);
  assert.deepEqual(info, { mac: '02:aa:bb:cc:dd:ee', addressIPv6: 'fd00:1::99/64' });
  assert.deepEqual(after(), [
    {
      method: 'NetworkDriver.CreateEndpoint',
      body: {
        NetworkID: 'n1',
        EndpointID: 'e1',
        Interface: { Address: '10.1.0.2/24', AddressIPv6: '', MacAddress: '' },
        Options: { 'com.example.x': 'y' },
      },
    },
  ]);
});

test('createEndpoint: an empty or null Interface in the reply changes nothing', async (t) => {
  const { d } = await driver(t, (m) =>
    m === 'NetworkDriver.CreateEndpoint' ? { body: { Interface: null } } : undefined,
  );
  assert.deepEqual(await d.createEndpoint(EP), {});
  assert.deepEqual(await d.createEndpoint({ ...EP, endpointId: 'e2', mac: '02:42:0a:01:00:03' }), {});
});

test('createEndpoint: overwriting a field cnmd set is refused, the endpoint deleted on the plugin once', async (t) => {
  const { d, after } = await driver(t, (m) =>
    m === 'NetworkDriver.CreateEndpoint' ? { body: { Interface: { Address: '10.1.0.77/24' } } } : undefined,
  );
  await assert.rejects(
    d.createEndpoint(EP),
    isError(
      'MALFORMED_REPLY',
      /remote plugin "fakenet"/,
      /NetworkDriver\.CreateEndpoint/,
      /Interface\.Address/,
      /"10\.1\.0\.77\/24" but cnmd sent "10\.1\.0\.2\/24"/,
      /may only fill fields sent empty/,
      /called NetworkDriver\.DeleteEndpoint to roll back/,
    ),
  );
  // The controller undoes the failed step too: the plugin must not see a second DeleteEndpoint.
  await d.deleteEndpoint('n1', 'e1');
  assert.deepEqual(
    after().map((c) => c.method),
    ['NetworkDriver.CreateEndpoint', 'NetworkDriver.DeleteEndpoint'],
  );
  assert.deepEqual(after()[1].body, { NetworkID: 'n1', EndpointID: 'e1' });
  // A later deleteEndpoint of the same id is a real one again.
  await d.deleteEndpoint('n1', 'e1');
  assert.equal(after().length, 3);
});

test('createEndpoint: malformed fills are refused (wrong family, bad MAC)', async (t) => {
  let iface: unknown = {};
  const { d } = await driver(t, (m) =>
    m === 'NetworkDriver.CreateEndpoint' ? { body: { Interface: iface } } : undefined,
  );
  iface = { AddressIPv6: '10.1.0.9/24' };
  await assert.rejects(
    d.createEndpoint(EP),
    isError('MALFORMED_REPLY', /Interface\.AddressIPv6/, /not an IPv6 address/),
  );
  iface = { MacAddress: 'zz:zz' };
  await assert.rejects(
    d.createEndpoint(EP),
    isError('MALFORMED_REPLY', /Interface\.MacAddress/, /not a MAC address/),
  );
});

test('join without an interface: JoinInfo from the reply, routes mapped; bad replies roll back with Leave', async (t) => {
  let reply: unknown = {};
  const { d, after } = await driver(t, (m) => (m === 'NetworkDriver.Join' ? { body: reply } : undefined));
  await d.createEndpoint(EP);
  reply = {
    InterfaceName: null,
    Gateway: '10.1.0.1',
    GatewayIPv6: 'fd00:1::1',
    StaticRoutes: [
      { Destination: '192.168.0.0/16', RouteType: 0, NextHop: '10.1.0.254' },
      { Destination: '172.30.0.0/16', RouteType: 1, NextHop: '' },
    ],
    DisableGatewayService: true,
  };
  const sb = { id: 'sb1', key: '/run/cnmd/netns/sb1', handle: noKernel, ifname: 'eth0' };
  assert.deepEqual(await d.join('n1', 'e1', sb, { 'com.example.j': 1 }), {
    gateway: '10.1.0.1',
    gatewayIPv6: 'fd00:1::1',
    staticRoutes: [
      { destination: '192.168.0.0/16', routeType: 0, nextHop: '10.1.0.254' },
      { destination: '172.30.0.0/16', routeType: 1 },
    ],
    disableGatewayService: true,
  });
  assert.deepEqual(after()[1], {
    method: 'NetworkDriver.Join',
    body: {
      NetworkID: 'n1',
      EndpointID: 'e1',
      SandboxKey: '/run/cnmd/netns/sb1',
      Options: { 'com.example.j': 1 },
    },
  });
  await d.leave('n1', 'e1');
  assert.deepEqual(after()[2], {
    method: 'NetworkDriver.Leave',
    body: { NetworkID: 'n1', EndpointID: 'e1' },
  });

  for (const [bad, re] of [
    [{ Gateway: '10.1.0.1/24' }, /Gateway: "10\.1\.0\.1\/24" is not a plain IPv4 address/],
    [{ StaticRoutes: [{ Destination: '10.0.0.0/8', RouteType: 2 }] }, /StaticRoutes\[0\]\.RouteType/],
    [{ StaticRoutes: [{ Destination: '10.0.0.0/8', RouteType: 0 }] }, /StaticRoutes\[0\]\.NextHop/],
    [{ InterfaceName: { SrcName: '../etc' } }, /InterfaceName\.SrcName/],
  ] as [unknown, RegExp][]) {
    reply = bad;
    const before = after().length;
    await assert.rejects(
      d.join('n1', 'e1', sb, {}),
      isError(
        'MALFORMED_REPLY',
        /remote plugin "fakenet"/,
        /NetworkDriver\.Join/,
        re,
        /called NetworkDriver\.Leave to roll back/,
      ),
    );
    await d.leave('n1', 'e1'); // the controller's undo: no second Leave
    assert.deepEqual(
      after()
        .slice(before)
        .map((c) => c.method),
      ['NetworkDriver.Join', 'NetworkDriver.Leave'],
    );
  }
});

test('join of an endpoint the driver does not know fails before calling the plugin', async (t) => {
  const { d, after } = await driver(t);
  await assert.rejects(
    d.join('n1', 'nope', { id: 's', key: '/x', handle: noKernel, ifname: 'eth0' }, {}),
    isError('NOT_FOUND', /endpoint nope is not known/),
  );
  assert.equal(after().length, 0);
});

test('restore rebuilds endpoints from the specs without calling the plugin', async (t) => {
  const { d, after } = await driver(t, (m) =>
    m === 'NetworkDriver.Join' ? { body: { Gateway: '10.1.0.1' } } : undefined,
  );
  await d.restore([NET], [EP, { networkId: 'n1', endpointId: 'e9', options: {} }]);
  assert.equal(after().length, 0);
  const info = await d.join('n1', 'e9', { id: 's', key: '/x', handle: noKernel, ifname: 'eth1' }, {});
  assert.equal(info.gateway, '10.1.0.1');
});

test('programExternalConnectivity: Docker portmap and exposed ports; 404 means unsupported, not failure', async (t) => {
  let status = 200;
  const { d, after } = await driver(t, (m) =>
    m.endsWith('ExternalConnectivity') ? { status, body: status === 200 ? {} : { Err: 'nope' } } : undefined,
  );
  const bindings = [
    { proto: 'tcp' as const, hostIP: '', hostPort: 8080, containerPort: 80 },
    { proto: 'udp' as const, hostIP: '127.0.0.1', hostPort: 0, containerPort: 53 },
    {
      proto: 'tcp' as const,
      hostIP: '',
      hostPort: 9000,
      hostPortEnd: 9001,
      containerPort: 90,
      containerPortEnd: 91,
    },
    { proto: 'sctp' as const, hostIP: '2001:db8::1', hostPort: 7000, hostPortEnd: 7010, containerPort: 70 },
    { proto: 'tcp' as const, hostIP: '10.0.0.1', hostPort: 8081, containerPort: 80 },
  ];
  assert.deepEqual(await d.programExternalConnectivity('n1', 'e1', { portBindings: bindings }), bindings);
  assert.deepEqual(after()[0], {
    method: 'NetworkDriver.ProgramExternalConnectivity',
    body: {
      NetworkID: 'n1',
      EndpointID: 'e1',
      Options: {
        'com.docker.network.portmap': [
          { Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 },
          { Proto: 17, IP: '', Port: 53, HostIP: '127.0.0.1', HostPort: 0, HostPortEnd: 0 },
          { Proto: 6, IP: '', Port: 90, HostIP: '', HostPort: 9000, HostPortEnd: 9000 },
          { Proto: 6, IP: '', Port: 91, HostIP: '', HostPort: 9001, HostPortEnd: 9001 },
          { Proto: 132, IP: '', Port: 70, HostIP: '2001:db8::1', HostPort: 7000, HostPortEnd: 7010 },
          { Proto: 6, IP: '', Port: 80, HostIP: '10.0.0.1', HostPort: 8081, HostPortEnd: 8081 },
        ],
        'com.docker.network.endpoint.exposedports': [
          { Proto: 6, Port: 80 },
          { Proto: 17, Port: 53 },
          { Proto: 6, Port: 90 },
          { Proto: 6, Port: 91 },
          { Proto: 132, Port: 70 },
        ],
      },
    },
  });
  await d.programExternalConnectivity('n1', 'e1', {});
  assert.deepEqual((after()[1].body as { Options: unknown }).Options, {
    'com.docker.network.portmap': [],
    'com.docker.network.endpoint.exposedports': [],
  });

  status = 404;
  assert.deepEqual(await d.programExternalConnectivity('n1', 'e1', { portBindings: bindings }), []);
  await d.revokeExternalConnectivity('n1', 'e1');
  status = 500;
  await assert.rejects(
    d.programExternalConnectivity('n1', 'e1', { portBindings: bindings }),
    isError('PLUGIN_ERROR', /NetworkDriver\.ProgramExternalConnectivity/, /HTTP 500/, /nope/),
  );
  await assert.rejects(
    d.revokeExternalConnectivity('n1', 'e1'),
    isError('PLUGIN_ERROR', /NetworkDriver\.RevokeExternalConnectivity/, /nope/),
  );
  assert.deepEqual(after().find((c) => c.method === 'NetworkDriver.RevokeExternalConnectivity')?.body, {
    NetworkID: 'n1',
    EndpointID: 'e1',
  });
});

test('cleanupNetwork: a plugin that does not know the network is fine; an unreachable one is reported', async (t) => {
  const { d } = await driver(t, (m) =>
    m === 'NetworkDriver.DeleteNetwork' ? { status: 500, body: { Err: 'network n1 not found' } } : undefined,
  );
  await d.cleanupNetwork(NET);
  const gone = new RemoteDriver({
    client: new PluginClient(
      { name: 'gone', addr: { kind: 'unix', path: '/nonexistent/gone.sock' } },
      { retryMs: 100 },
    ),
    host: noKernel,
  });
  t.after(() => gone.close());
  await assert.rejects(
    gone.cleanupNetwork(NET),
    isError('PLUGIN_ERROR', /remote plugin "gone"/, /gone\.sock does not exist/),
  );
});

// ---- IPAM ----

test('RemoteIpam: address spaces, pools and addresses with libnetwork request bodies', async (t) => {
  const { i, after } = await ipam(t, (m, b) => {
    switch (m) {
      case 'IpamDriver.GetDefaultAddressSpaces':
        return {
          body: { LocalDefaultAddressSpace: 'plugin-local', GlobalDefaultAddressSpace: 'plugin-global' },
        };
      case 'IpamDriver.RequestPool':
        return {
          body: {
            PoolID: `pool-${b.Pool || 'auto'}`,
            Pool: b.V6 ? 'fd00:7::/64' : b.Pool || '10.7.0.0/16',
            Data: { 'com.docker.network.gateway': '10.7.0.1/16' },
          },
        };
      case 'IpamDriver.RequestAddress':
        return { body: { Address: b.Address ? `${b.Address}/16` : '10.7.0.2/16', Data: {} } };
      default:
        return undefined;
    }
  });
  assert.equal(i.name, 'fakeipam');
  assert.deepEqual(await i.defaultAddressSpaces(), { local: 'plugin-local', global: 'plugin-global' });
  const pool = await i.requestPool({ options: { 'com.example.o': '1' } });
  assert.deepEqual(pool, {
    poolId: 'pool-auto',
    pool: '10.7.0.0/16',
    data: { 'com.docker.network.gateway': '10.7.0.1/16' },
  });
  await i.requestPool({ addressSpace: 'other', pool: '10.8.0.0/16', subPool: '10.8.1.0/24' });
  await i.requestPool({ v6: true });
  assert.equal(await i.requestAddress('pool-auto', undefined, { gateway: true }), '10.7.0.2/16');
  assert.equal(await i.requestAddress('pool-auto', '10.7.0.50/16', { serial: true }), '10.7.0.50/16');
  assert.equal(await i.requestAddress('pool-auto', '10.7.0.51'), '10.7.0.51/16');
  await i.releaseAddress('pool-auto', '10.7.0.50/16');
  await i.releasePool('pool-auto');
  assert.deepEqual(after(), [
    { method: 'IpamDriver.GetDefaultAddressSpaces', body: undefined },
    {
      method: 'IpamDriver.RequestPool',
      body: {
        AddressSpace: 'plugin-local',
        Pool: '',
        SubPool: '',
        Options: { 'com.example.o': '1' },
        V6: false,
      },
    },
    {
      method: 'IpamDriver.RequestPool',
      body: { AddressSpace: 'other', Pool: '10.8.0.0/16', SubPool: '10.8.1.0/24', Options: {}, V6: false },
    },
    {
      method: 'IpamDriver.RequestPool',
      body: { AddressSpace: 'plugin-local', Pool: '', SubPool: '', Options: {}, V6: true },
    },
    {
      method: 'IpamDriver.RequestAddress',
      body: {
        PoolID: 'pool-auto',
        Address: '',
        Options: { RequestAddressType: 'com.docker.network.gateway' },
      },
    },
    {
      method: 'IpamDriver.RequestAddress',
      body: {
        PoolID: 'pool-auto',
        Address: '10.7.0.50',
        Options: { 'com.docker.network.ipam.serial': 'true' },
      },
    },
    { method: 'IpamDriver.RequestAddress', body: { PoolID: 'pool-auto', Address: '10.7.0.51', Options: {} } },
    { method: 'IpamDriver.ReleaseAddress', body: { PoolID: 'pool-auto', Address: '10.7.0.50' } },
    { method: 'IpamDriver.ReleasePool', body: { PoolID: 'pool-auto' } },
  ]);
});

test('RemoteIpam: errors come from "Error" in 200 replies; Err in a non-200 body too', async (t) => {
  const { i } = await ipam(t, (m) => {
    if (m === 'IpamDriver.RequestPool')
      return { body: { Error: 'pool 10.1.0.0/24 overlaps with pool-3', PoolID: '', Pool: '' } };
    if (m === 'IpamDriver.RequestAddress') return { status: 500, body: { Err: 'no addresses left' } };
    if (m === 'IpamDriver.ReleasePool') return { status: 500, body: { Error: 'unknown pool' } };
    return undefined;
  });
  await assert.rejects(
    i.requestPool({ addressSpace: 'x', pool: '10.1.0.0/24' }),
    isError(
      'PLUGIN_ERROR',
      /remote plugin "fakeipam"/,
      /IpamDriver\.RequestPool/,
      /pool 10\.1\.0\.0\/24 overlaps with pool-3/,
    ),
  );
  await assert.rejects(
    i.requestAddress('p'),
    isError('PLUGIN_ERROR', /IpamDriver\.RequestAddress/, /HTTP 500/, /no addresses left/),
  );
  await assert.rejects(
    i.releasePool('p'),
    isError('PLUGIN_ERROR', /IpamDriver\.ReleasePool/, /unknown pool/),
  );
});

test('RemoteIpam: unusable replies are given back to the plugin before failing', async (t) => {
  let pool = '10.9.0.0/16';
  let addr: unknown = '10.9.0.3/16';
  const { i, after } = await ipam(t, (m) => {
    if (m === 'IpamDriver.RequestPool') return { body: { PoolID: 'p9', Pool: pool } };
    if (m === 'IpamDriver.RequestAddress') return { body: { Address: addr } };
    return undefined;
  });
  await assert.rejects(
    i.requestPool({ addressSpace: 's', v6: true }),
    isError(
      'MALFORMED_REPLY',
      /IpamDriver\.RequestPool/,
      /Pool 10\.9\.0\.0\/16 is IPv4, but an IPv6 pool was requested/,
      /released/,
      /fix the plugin/,
    ),
  );
  assert.deepEqual(after().at(-1), { method: 'IpamDriver.ReleasePool', body: { PoolID: 'p9' } });
  pool = 'garbage';
  await assert.rejects(
    i.requestPool({ addressSpace: 's' }),
    isError('MALFORMED_REPLY', /Pool is "garbage", expected a CIDR/),
  );
  await assert.rejects(
    i.requestAddress('p9', '10.9.0.7'),
    isError(
      'MALFORMED_REPLY',
      /IpamDriver\.RequestAddress/,
      /asked for 10\.9\.0\.7, the plugin gave 10\.9\.0\.3\/16/,
    ),
  );
  assert.deepEqual(after().at(-1), {
    method: 'IpamDriver.ReleaseAddress',
    body: { PoolID: 'p9', Address: '10.9.0.3' },
  });
  addr = '10.9.0.3';
  await assert.rejects(i.requestAddress('p9'), isError('MALFORMED_REPLY', /not an address with a prefix/));
  addr = '';
  await assert.rejects(i.requestAddress('p9'), isError('MALFORMED_REPLY', /no Address in the reply/));
});

test('RemoteIpam.load refuses a plugin that is not an IpamDriver', async (t) => {
  const p = await fakePlugin(t, 'netonly', ['NetworkDriver']);
  await assert.rejects(
    RemoteIpam.load('netonly', { dirs: p.dirs }),
    isError('PLUGIN_ERROR', /implements NetworkDriver, not IpamDriver/),
  );
});
