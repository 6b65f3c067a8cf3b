// The invariant checker (test/lib/invariants.ts) holds on a healthy daemon and
// catches each kind of leak when one is planted: a checker that cannot fail
// would make every chaos test that relies on it meaningless.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { assertInvariants, readKernel, readStore, violations } from '../lib/invariants';
import { ok } from '../lib/api';

test('invariant checker: holds on a healthy daemon, names every planted leak', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l, { args: ['--netns-pool-size', '2'] });
  await ok(d, 'POST', '/networks/create', { Name: 'web', IPAM: { Config: [{ Subnet: '10.61.0.0/24' }] } });
  await ok(d, 'POST', '/networks/create', { Name: 'back' });
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'web' }], Ports: ['18080:80'] });
  await ok(d, 'POST', '/sandboxes', { Name: 'b', Networks: [{ Network: 'web' }, { Network: 'back' }] });
  await assertInvariants(d);

  const sh = (line: string) => d.host.run('sh', ['-c', line]);
  const stub = path.join(d.execRoot, 'pool', 'netns', 'stub0');
  const strayNs = path.join(d.execRoot, 'netns', 'deadbeef');
  // Each plant with its removal.
  const plants: [string, string][] = [
    [
      `ip link add plantbr type bridge && ip link set plantbr alias cnmd:net:${'f'.repeat(64)}`,
      'ip link del plantbr',
    ],
    ['ip link add br0 type bridge', 'ip link del br0'],
    [
      'iptables -t nat -A CNMD -p tcp --dport 40000 -j DNAT --to-destination 10.61.0.99:80',
      'iptables -t nat -D CNMD -p tcp --dport 40000 -j DNAT --to-destination 10.61.0.99:80',
    ],
    ['iptables -A CNMD-FORWARD -o br-gone -j ACCEPT', 'iptables -D CNMD-FORWARD -o br-gone -j ACCEPT'],
    [`mkdir -p ${path.dirname(stub)} && : > ${stub}`, `rm ${stub}`],
    [`: > ${strayNs}`, `rm ${strayNs}`],
  ];
  for (const [plant] of plants) sh(plant);
  const v = violations(readStore(d.dataRoot), readKernel(d)).join('\n');
  for (const want of [
    /plantbr \(cnmd:net:f+\) belongs to no record/,
    /link br0 \(bridge\) is not cnmd's/,
    /DNAT to 10\.61\.0\.99 but no endpoint/,
    /names br-gone, no live cnmd bridge/,
    /stub0 is a stub file/,
    /deadbeef belong to no sandbox/,
  ])
    assert.match(v, want);
  for (const [, remove] of plants) sh(remove);
  await assertInvariants(d);

  // Store-side checks, on a copy of the real views with a planted inconsistency each.
  const s = readStore(d.dataRoot);
  const k = readKernel(d);
  const ep = s.endpoints.find((e) => e.ipv4)!;
  const twin = { ...ep, id: 'e'.repeat(64) };
  const web = s.networks.find((n) => n.name === 'web')!;
  const dupNet = { ...web, id: 'd'.repeat(64), name: 'dup' };
  const sv = violations(
    { ...s, endpoints: [...s.endpoints, twin], networks: [...s.networks, dupNet] },
    k,
  ).join('\n');
  assert.match(sv, new RegExp(`address ${ep.ipv4.split('/')[0].replace(/\./g, '\\.')} held by endpoints`));
  assert.match(sv, /network web \(10\.61\.0\.0\/24\) overlaps network dup/);
  const orphan = violations({ ...s, pools: [...s.pools, { id: 'LocalDefault/10.99.0.0/24' }] }, k).join('\n');
  assert.match(orphan, /ipam pool LocalDefault\/10\.99\.0\.0\/24 belongs to no network/);
});
