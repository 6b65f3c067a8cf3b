// The plugin sockets against a hostile client: method names that would reach
// Object.prototype, oversized bodies written in full before the answer is read,
// and requests the default IPAM or libnetwork would refuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { unixRequest } from '../lib/curl';

// Python's http.client sends the whole body before it reads the answer: a server that stops
// reading an oversized body (instead of draining it) leaves it blocked until its timeout.
const BIG_BODY_CLIENT = `
import http.client, json, socket, sys, time
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(sys.argv[1])
c = C('plugin', timeout=10)
t = time.time()
try:
    c.request('POST', '/NetworkDriver.CreateNetwork', body=b'{"NetworkID":"' + b'a' * (3 << 20) + b'"}')
    r = c.getresponse()
    print(json.dumps({"status": r.status, "body": r.read().decode(), "s": time.time() - t}))
except Exception as e:
    print(json.dumps({"status": 0, "body": repr(e), "s": time.time() - t}))
`;

test('plugin sockets: no prototype methods, oversized bodies drained and refused 413, IPAM and port checks', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const bridge = path.join(d.pluginDir, 'cnmd-bridge.sock');
  const ipam = path.join(d.pluginDir, 'cnmd-ipam.sock');
  for (const [sock, m] of [
    [bridge, 'NetworkDriver.__proto__'],
    [bridge, 'NetworkDriver.constructor'],
    [bridge, 'NetworkDriver.hasOwnProperty'],
    [ipam, 'IpamDriver.toString'],
    [ipam, 'IpamDriver.__defineGetter__'],
  ]) {
    const r = await unixRequest(sock, 'POST', `/${m}`, { body: {} });
    assert.equal(r.status, 404, `${m}: ${r.text}`);
    assert.match(r.body.Err, /does not implement/);
  }

  const big = await new Promise<any>((resolve) =>
    execFile('python3', ['-c', BIG_BODY_CLIENT, bridge], { encoding: 'utf8' }, (_e, out) =>
      resolve(JSON.parse(out)),
    ),
  );
  assert.equal(big.status, 413, JSON.stringify(big));
  assert.match(big.body, /larger than 1048576 bytes/);
  // The socket still serves.
  assert.equal((await unixRequest(bridge, 'POST', '/Plugin.Activate')).status, 200);

  const pool = await unixRequest(ipam, 'POST', '/IpamDriver.RequestPool', {
    body: { AddressSpace: 'Nope', Pool: '10.80.0.0/24' },
  });
  assert.match(pool.body.Error ?? '', /address space "Nope" is not LocalDefault or GlobalDefault/);
  const rev = await unixRequest(bridge, 'POST', '/NetworkDriver.ProgramExternalConnectivity', {
    body: {
      NetworkID: 'e'.repeat(64),
      EndpointID: 'f'.repeat(64),
      Options: { 'com.docker.network.portmap': [{ Proto: 6, Port: 80, HostPort: 8190, HostPortEnd: 8100 }] },
    },
  });
  assert.match(rev.body.Err ?? '', /reversed range/);
});

test('plugin CreateNetwork: a pool another engine network has is refused; one subnet never sits on two bridges', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const bridge = path.join(d.pluginDir, 'cnmd-bridge.sock');
  const create = (id: string) =>
    unixRequest(bridge, 'POST', '/NetworkDriver.CreateNetwork', {
      body: {
        NetworkID: id,
        Options: {},
        IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '10.110.0.0/24', Gateway: '10.110.0.1/24' }],
      },
    });
  const first = await create('a'.repeat(64));
  assert.equal(first.status, 200, first.text);
  const second = await create('b'.repeat(64));
  assert.match(
    second.body.Err ?? '',
    /pool 10\.110\.0\.0\/24 overlaps 10\.110\.0\.0\/24 of cnmd's engine network a{12}/,
  );
  const holders = (d.host.ipj('-4', 'addr', 'show') as { ifname: string; addr_info: { local: string }[] }[])
    .filter((i) => i.addr_info.some((a) => a.local === '10.110.0.1'))
    .map((i) => i.ifname);
  assert.equal(holders.length, 1, `10.110.0.1 on ${holders.join(', ')}`);
});
