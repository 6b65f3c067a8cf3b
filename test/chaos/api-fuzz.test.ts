// API fuzzing from a seed: bad JSON, wrong types, hostile names, filters and
// options, 8 requests at a time. Every answer is 2xx or 4xx (never a 5xx),
// /_ping answers throughout, and afterwards store, kernel and firewall agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { unixRequest } from '../lib/curl';
import { assertInvariants } from '../lib/invariants';
import { chaosRng } from '../lib/seed';
import { HOSTILE_STRINGS, hostileValue, mutate, pool } from '../lib/fuzz';

const REQUESTS = Number(process.env.CHAOS_API_REQUESTS || 600);

test(`API fuzz: ${REQUESTS} hostile requests answer 2xx/4xx, ping stays up, invariants hold`, async (t) => {
  const r = chaosRng(t);
  const l = await lab(t);
  const d = await startDaemon(t, l, { args: ['--netns-pool-size', '4'] });
  assert.equal(
    (
      await d.request('POST', '/networks/create', {
        Name: 'web',
        IPAM: { Config: [{ Subnet: '10.70.0.0/24' }] },
      })
    ).status,
    201,
  );
  assert.equal(
    (await d.request('POST', '/sandboxes', { Name: 's1', Networks: [{ Network: 'web' }] })).status,
    201,
  );
  const names = ['f1', 'f2', 'f3', 'web', 's1', 'bridge', 'none', 'host'];
  const subnet = () => `10.${71 + r.int(8)}.${r.int(4)}.0/24`;
  const templates: [string, () => string, () => unknown][] = [
    [
      'POST',
      () => '/networks/create',
      () => ({
        Name: r.pick(names),
        Driver: r.pick(['bridge', 'bridge', 'null', 'nope']),
        Options: {
          'com.docker.network.bridge.name': `brf${r.int(9)}`,
          'com.docker.network.driver.mtu': '1400',
        },
        IPAM: { Config: [{ Subnet: subnet(), Gateway: undefined }] },
        Labels: { a: 'b' },
      }),
    ],
    [
      'POST',
      () => '/sandboxes',
      () => ({
        Name: r.pick(names),
        Hostname: 'h1',
        Networks: [{ Network: r.pick(names), Aliases: ['x'] }],
        DNS: { Servers: ['1.1.1.1'], Search: ['example.com'], Options: ['ndots:1'] },
        Ports: [`${20000 + r.int(50)}:80`],
        Labels: {},
      }),
    ],
    [
      'POST',
      () => `/networks/${r.pick(names)}/connect`,
      () => ({
        Container: r.pick(names),
        EndpointConfig: { IPAMConfig: { IPv4Address: `10.70.0.${r.int(300)}` }, Aliases: ['y'] },
      }),
    ],
    [
      'POST',
      () => `/networks/${r.pick(names)}/disconnect`,
      () => ({ Container: r.pick(names), Force: r.next() < 0.5 }),
    ],
    ['DELETE', () => `/sandboxes/${encodeURIComponent(r.pick(names))}`, () => undefined],
    ['DELETE', () => `/networks/${encodeURIComponent(r.pick(names))}`, () => undefined],
    ['GET', () => `/networks/${encodeURIComponent(r.pick([...names, ...HOSTILE_STRINGS]))}`, () => undefined],
    ['POST', () => '/networks/prune', () => undefined],
  ];
  const failures: string[] = [];
  const statuses = new Map<number, number>();
  let pings = 0;
  await pool(REQUESTS, 8, async (i) => {
    const kind = r.int(10);
    let method: string;
    let path: string;
    let opts: Parameters<typeof unixRequest>[3] = { maxTime: 20 };
    if (kind < 2) {
      // Filters: hostile keys and values, both shapes.
      method = 'GET';
      path = r.pick(['/networks', '/sandboxes', '/v1.41/networks']);
      const key = r.pick([
        'name',
        'id',
        'label',
        'driver',
        'dangling',
        'type',
        'network',
        'scope',
        '__proto__',
        'x',
      ]);
      const value = r.pick(HOSTILE_STRINGS);
      const filters =
        r.next() < 0.8
          ? JSON.stringify(r.next() < 0.5 ? { [key]: { [value]: true } } : { [key]: [value] })
          : (JSON.stringify(hostileValue(r)) ?? '');
      opts = { ...opts, query: { filters } };
    } else if (kind < 3) {
      // Raw bodies: truncated, binary, deeply nested.
      const [m, p, body] = r.pick(templates);
      method = m === 'GET' ? 'POST' : m;
      path = p();
      const text = JSON.stringify(body() ?? { Name: 'x' });
      opts = {
        ...opts,
        raw: r.pick([
          text.slice(0, r.int(text.length)),
          r.bytes(1 + r.int(64)).toString('latin1'),
          '['.repeat(5000),
          '{"Name":' + '['.repeat(100000),
          '',
        ]),
      };
    } else {
      const [m, p, body] = r.pick(templates);
      method = m;
      path = p();
      const b = body();
      if (b !== undefined) opts = { ...opts, body: r.next() < 0.75 ? mutate(r, b) : b };
    }
    const res = await unixRequest(d.sock, method, path, opts);
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    if (res.status === 0 || res.status >= 500)
      failures.push(
        `#${i} ${method} ${path} ${JSON.stringify(opts).slice(0, 300)} -> ${res.status} rc ${res.rc} ${res.text.slice(0, 300)}`,
      );
    if (i % 50 === 0) {
      const ping = await unixRequest(d.sock, 'GET', '/_ping', { maxTime: 3 });
      if (ping.status !== 200) failures.push(`#${i}: /_ping -> ${ping.status} rc ${ping.rc}`);
      pings++;
    }
  });
  t.diagnostic(`statuses ${JSON.stringify([...statuses].sort())}; ${pings} pings`);
  assert.deepEqual(failures, [], `seed ${r.seed}`);
  await assertInvariants(d, { ms: 10_000 });
});
