// Plugin fuzz from a seed: every method of cnmd-bridge and cnmd-ipam (and names
// that are not methods) with mutated, ill-typed and raw bodies. Answers are
// 200/400/404/413, errors never carry a JavaScript message, the sockets keep
// answering, and the store, kernel and firewall agree afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { unixRequest } from '../lib/curl';
import { assertInvariants } from '../lib/invariants';
import { chaosRng } from '../lib/seed';
import { hostileValue, mutate, pool } from '../lib/fuzz';

const CALLS = Number(process.env.CHAOS_PLUGIN_CALLS || 500);
const JS_ERROR =
  /Cannot read prop|is not a function|is not defined|undefined \(reading|Maximum call stack|TypeError|RangeError/;

test(`plugin fuzz: ${CALLS} hostile calls answer 200/400/404/413 without JavaScript errors`, async (t) => {
  const r = chaosRng(t);
  const l = await lab(t);
  const d = await startDaemon(t, l, { args: ['--netns-pool-size', '0'] });
  const socks = {
    NetworkDriver: path.join(d.pluginDir, 'cnmd-bridge.sock'),
    IpamDriver: path.join(d.pluginDir, 'cnmd-ipam.sock'),
  };
  const nid = () => r.pick(['a'.repeat(64), 'b'.repeat(64), 'c'.repeat(64)]);
  const eid = () => r.pick(['d'.repeat(64), 'e'.repeat(64)]);
  const pool4 = () => `10.${110 + r.int(4)}.0.0/24`;
  const methods: [keyof typeof socks, string, () => unknown][] = [
    ['NetworkDriver', 'GetCapabilities', () => ({})],
    [
      'NetworkDriver',
      'CreateNetwork',
      () => ({
        NetworkID: nid(),
        Options: { 'com.docker.network.generic': { 'com.docker.network.bridge.name': `brz${r.int(5)}` } },
        IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: pool4(), Gateway: `10.${110 + r.int(4)}.0.1/24` }],
        IPv6Data: [],
      }),
    ],
    ['NetworkDriver', 'DeleteNetwork', () => ({ NetworkID: nid() })],
    [
      'NetworkDriver',
      'CreateEndpoint',
      () => ({
        NetworkID: nid(),
        EndpointID: eid(),
        Interface: { Address: `10.${110 + r.int(4)}.0.${2 + r.int(5)}/24`, MacAddress: '' },
        Options: {},
      }),
    ],
    ['NetworkDriver', 'DeleteEndpoint', () => ({ NetworkID: nid(), EndpointID: eid() })],
    ['NetworkDriver', 'EndpointOperInfo', () => ({ NetworkID: nid(), EndpointID: eid() })],
    [
      'NetworkDriver',
      'Join',
      () => ({ NetworkID: nid(), EndpointID: eid(), SandboxKey: '/var/run/docker/netns/x', Options: {} }),
    ],
    ['NetworkDriver', 'Leave', () => ({ NetworkID: nid(), EndpointID: eid() })],
    [
      'NetworkDriver',
      'ProgramExternalConnectivity',
      () => ({
        NetworkID: nid(),
        EndpointID: eid(),
        Options: {
          'com.docker.network.portmap': [
            { Proto: 6, Port: 80, HostPort: 30000 + r.int(100), HostPortEnd: 0 },
          ],
        },
      }),
    ],
    ['NetworkDriver', 'RevokeExternalConnectivity', () => ({ NetworkID: nid(), EndpointID: eid() })],
    ['NetworkDriver', r.pick(['__proto__', 'constructor', 'toString', 'valueOf', 'Nope', '']), () => ({})],
    ['IpamDriver', 'GetCapabilities', () => ({})],
    ['IpamDriver', 'GetDefaultAddressSpaces', () => ({})],
    [
      'IpamDriver',
      'RequestPool',
      () => ({ AddressSpace: 'LocalDefault', Pool: pool4(), SubPool: '', Options: {}, V6: false }),
    ],
    ['IpamDriver', 'ReleasePool', () => ({ PoolID: `LocalDefault/${pool4()}` })],
    ['IpamDriver', 'RequestAddress', () => ({ PoolID: `LocalDefault/${pool4()}`, Address: '', Options: {} })],
    [
      'IpamDriver',
      'ReleaseAddress',
      () => ({ PoolID: `LocalDefault/${pool4()}`, Address: `10.110.0.${r.int(256)}` }),
    ],
    ['IpamDriver', r.pick(['__proto__', 'hasOwnProperty', 'toString', 'Nope']), () => ({})],
  ];
  const failures: string[] = [];
  const statuses = new Map<number, number>();
  await pool(CALLS, 6, async (i) => {
    const [iface, m, body] = r.pick(methods);
    const b = body();
    const k = r.int(10);
    const opts =
      k < 5
        ? { body: mutate(r, b) }
        : k < 7
          ? { body: b }
          : k < 9
            ? { body: hostileValue(r) }
            : {
                raw: r.pick([
                  JSON.stringify(b).slice(0, 10),
                  r.bytes(40).toString('latin1'),
                  '[[[[[[[[',
                  `"${'x'.repeat(2 << 20)}"`,
                ]),
              };
    const res = await unixRequest(socks[iface], 'POST', `/${iface}.${m}`, { ...opts, maxTime: 20 });
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    const err = String(res.body?.Err ?? res.body?.Error ?? '');
    if (![200, 400, 404, 413].includes(res.status) || JS_ERROR.test(err))
      failures.push(
        `#${i} ${iface}.${m} ${JSON.stringify(opts).slice(0, 300)} -> ${res.status} rc ${res.rc} ${res.text.slice(0, 300)}`,
      );
  });
  t.diagnostic(`statuses ${JSON.stringify([...statuses].sort())}`);
  assert.deepEqual(failures, [], `seed ${r.seed}`);
  for (const sock of Object.values(socks))
    assert.equal((await unixRequest(sock, 'POST', '/Plugin.Activate')).status, 200);
  await assertInvariants(d, { ms: 10_000 });
});
