// --default-address-pool: dockerd's base=CIDR,size=N, checked before anything
// starts (each refusal names the flag and what to write), and the subnets it yields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveConfig } from '../../../src/config';
import { formatCidr } from '../../../src/net/addr';
import { parsePoolSpec, predefinedSubnets } from '../../../src/ipam/pools';

test('--default-address-pool: parsed as dockerd does, bad base or size refused naming the flag', () => {
  assert.deepEqual(parsePoolSpec('base=10.0.0.0/8,size=24'), { base: '10.0.0.0/8', size: 24 });
  assert.deepEqual(parsePoolSpec('size=64,base=fd00:1::/48'), { base: 'fd00:1::/48', size: 64 });
  const refused: [string, RegExp][] = [
    ['base=10.0.0.0/8', /want both base and size/],
    ['size=24', /want both base and size/],
    ['base=10.0.0.0/8,size=24,mtu=1500', /"mtu=1500" is not base=CIDR or size=N/],
    ['base=10.0.0.0/8,base=11.0.0.0/8,size=24', /base is given twice/],
    ['base=10.0.0.1/8,size=24', /base 10\.0\.0\.1\/8 has host bits set; did you mean 10\.0\.0\.0\/8\?/],
    ['base=10.0.0.0,size=24', /base "10\.0\.0\.0" is not a CIDR/],
    ['base=127.0.0.0/8,size=24', /loopback: no network can use it/],
    ['base=0.0.0.0/0,size=24', /whole address space/],
    ['base=10.0.0.0/16,size=8', /size 8 must be from the base's prefix length \(16\) to 30/],
    ['base=10.0.0.0/8,size=31', /size 31 must be from/],
    ['base=10.0.0.0/8,size=2x', /size "2x" is not a prefix length/],
    ['base=10.0.0.0/8,size=024', /size "024" is not a prefix length/],
  ];
  for (const [spec, why] of refused) {
    assert.throws(
      () => parsePoolSpec(spec),
      (e: Error) => {
        assert.match(
          e.message,
          new RegExp(`^--default-address-pool "${spec.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}": `),
        );
        assert.match(e.message, why);
        return true;
      },
    );
  }
  // Repeatable; the env variable takes them space-separated; the flag wins.
  const c = resolveConfig(
    { defaultAddressPools: 'base=10.0.0.0/8,size=24 base=fd00:7::/48,size=64' },
    { CNMD_DEFAULT_ADDRESS_POOLS: 'base=172.80.0.0/16,size=24' },
  );
  assert.deepEqual(c.defaultAddressPools, [
    { base: '10.0.0.0/8', size: 24 },
    { base: 'fd00:7::/48', size: 64 },
  ]);
  assert.deepEqual(
    resolveConfig({}, { CNMD_DEFAULT_ADDRESS_POOLS: 'base=172.80.0.0/16,size=24' }).defaultAddressPools,
    [{ base: '172.80.0.0/16', size: 24 }],
  );
  assert.deepEqual(resolveConfig({}, {}).defaultAddressPools, []);
  assert.throws(
    () => resolveConfig({ defaultAddressPools: 'base=10.0.0.0/8,size=40' }, {}),
    /--default-address-pool/,
  );
});

test('predefined subnets: given pools replace the local ones of their family only, in order', () => {
  const first = (
    scope: 'local' | 'global',
    v6: boolean,
    pools = [] as { base: string; size: number }[],
    n = 3,
  ) => {
    const out: string[] = [];
    for (const c of predefinedSubnets(scope, v6, pools)) {
      out.push(formatCidr(c));
      if (out.length === n) break;
    }
    return out;
  };
  assert.deepEqual(first('local', false), ['172.17.0.0/16', '172.18.0.0/16', '172.19.0.0/16']);
  const pools = [
    { base: '10.0.0.0/8', size: 24 },
    { base: '192.168.0.0/23', size: 24 },
  ];
  assert.deepEqual(first('local', false, pools), ['10.0.0.0/24', '10.0.1.0/24', '10.0.2.0/24']);
  let n = 0;
  for (const _ of predefinedSubnets('local', false, [pools[1]])) n++;
  assert.equal(n, 2);
  // IPv6 and the global scope keep theirs when only IPv4 pools are given.
  assert.deepEqual(first('local', true, pools, 1), ['fd5c:6e6d:a000::/64']);
  assert.deepEqual(first('global', false, [{ base: '172.80.0.0/16', size: 24 }], 1), ['10.0.0.0/24']);
  assert.deepEqual(first('local', true, [{ base: 'fd00:7::/48', size: 64 }], 2), [
    'fd00:7::/64',
    'fd00:7:0:1::/64',
  ]);
});
