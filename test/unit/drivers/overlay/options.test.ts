// The overlay driver's pure parts: the peer set it is handed (validation,
// canonical forms, clashes, the local VTEP) and its options.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { desiredEntries, OverlayPeer } from '../../../../drivers/overlay/peers';
import {
  overlayMtu,
  parseEncrypted,
  parseOverlayConfig,
  parseVni,
  OPT,
} from '../../../../drivers/overlay/options';
import { encryptionKconfig, unsetOptions } from '../../../../drivers/overlay/kernel-probe';
import { CnmdError } from '../../../../src/errors';

const peer = (n: number, vtep = '192.0.2.2'): OverlayPeer => ({
  endpointId: `e${n}`,
  address: `10.0.0.${n}/24`,
  mac: `02:42:0a:00:00:${n.toString(16).padStart(2, '0')}`,
  vtep,
});

test("desired entries: one neighbour and one FDB entry per remote peer, in the kernel's spelling; local peers left out", () => {
  const dups: string[] = [];
  const want = desiredEntries(
    [
      peer(2),
      {
        ...peer(3),
        mac: '02:42:0A:00:00:03',
        address: '10.0.0.3',
        address6: 'FD00:0:0::3/64',
        vtep: '2001:db8:0::9',
      },
      peer(4, '192.0.2.1'),
    ],
    '192.0.2.1',
    (what) => dups.push(what),
  );
  assert.deepEqual(
    [...want.neigh],
    [
      ['10.0.0.2', '02:42:0a:00:00:02'],
      ['10.0.0.3', '02:42:0a:00:00:03'],
      ['fd00::3', '02:42:0a:00:00:03'],
    ],
  );
  assert.deepEqual(
    [...want.fdb],
    [
      ['02:42:0a:00:00:02', '192.0.2.2'],
      ['02:42:0a:00:00:03', '2001:db8::9'],
    ],
  );
  assert.deepEqual(dups, []);
});

test('desired entries: two peers claiming one address keep the lower endpoint id, whatever the order given', () => {
  const a = { ...peer(2), endpointId: 'a' };
  const b = { ...peer(2), endpointId: 'b', mac: '02:00:00:00:00:09', vtep: '192.0.2.3' };
  for (const list of [
    [a, b],
    [b, a],
  ]) {
    const dropped: string[] = [];
    const want = desiredEntries(list, undefined, (_w, _k, d) => dropped.push(d.endpointId));
    assert.equal(want.neigh.get('10.0.0.2'), a.mac);
    assert.deepEqual(dropped, ['b']);
  }
});

test('desired entries: a malformed peer refuses the whole set, naming the peer and the field', () => {
  const bad: [Partial<OverlayPeer>, RegExp][] = [
    [{ mac: '01:00:5e:00:00:01' }, /peer e2: "01:00:5e:00:00:01" is not a unicast MAC/],
    [{ mac: '00:00:00:00:00:00' }, /not a unicast MAC/],
    [{ mac: 'zz' }, /not a unicast MAC/],
    [{ vtep: '192.0.2.2/24' }, /VTEP "192.0.2.2\/24" is not an IP address/],
    [{ vtep: 'host2' }, /VTEP "host2"/],
    [{ address: '10.0.0.2/33' }, /address "10.0.0.2\/33" is not an IP address/],
    [{ address: '10.0.0.256' }, /address "10.0.0.256"/],
    [{ address6: 'fd00::zz' }, /address6 "fd00::zz"/],
  ];
  for (const [change, msg] of bad)
    assert.throws(
      () => desiredEntries([peer(3), { ...peer(2), ...change }], undefined, () => undefined),
      (e: unknown) => e instanceof CnmdError && e.code === 'INVALID_ARGUMENT' && msg.test(e.message),
      JSON.stringify(change),
    );
});

test('options: VNI 1..16777215, one decimal; MTU from the underlay family; one subnet per family', () => {
  assert.equal(parseVni('x', '4096'), 4096);
  assert.equal(parseVni('x', '16777215'), 16777215);
  for (const bad of ['0', '16777216', '-1', '12,13', 'abc', '1e3'])
    assert.throws(
      () => parseVni('x', bad),
      (e: unknown) => e instanceof CnmdError && e.code === 'INVALID_ARGUMENT',
    );
  assert.throws(() => parseVni('x', undefined), /--cluster-store/);
  assert.equal(overlayMtu(1500, '192.0.2.1'), 1450);
  assert.equal(overlayMtu(1500, '2001:db8::1'), 1430);
  const spec = {
    id: 'a'.repeat(64),
    name: 'n',
    options: { [OPT.vni]: '4338' },
    ipv4: [{ pool: '10.0.0.0/24' }],
    ipv6: [],
    enableIPv6: false,
    internal: false,
  };
  const c = parseOverlayConfig(spec);
  assert.deepEqual(
    [c.bridgeName, c.vxlanName, c.netnsId],
    ['ov-0010f2', 'vx-0010f2', `ov-${'a'.repeat(64)}`],
  );
  assert.throws(
    () => parseOverlayConfig({ ...spec, ipv4: [{ pool: '10.0.0.0/24' }, { pool: '10.1.0.0/24' }] }),
    /one IPv4 and at most one IPv6 subnet/,
  );
  assert.throws(
    () => parseOverlayConfig({ ...spec, options: { ...spec.options, [OPT.mtu]: '100' } }),
    /underlay MTU/,
  );
});

test('-o encrypted: empty/true/1 encrypt, false/0 do not, anything else is refused; absent is plain', () => {
  const op = 'network create';
  for (const v of ['', 'true', 'TRUE', '1']) assert.equal(parseEncrypted(op, { encrypted: v }), true, v);
  for (const v of ['false', '0']) assert.equal(parseEncrypted(op, { encrypted: v }), false, v);
  assert.equal(parseEncrypted(op, {}), false);
  assert.throws(
    () => parseEncrypted(op, { encrypted: 'yes please' }),
    /option encrypted: "yes please" is not true or false/,
  );
});

test('kernel config: the encryption options not set are named, =y and =m count as set', () => {
  const config = [
    'CONFIG_XFRM_USER=y',
    '# CONFIG_INET_ESP is not set',
    'CONFIG_CRYPTO_SEQIV=m',
    'CONFIG_NETFILTER_XT_MATCH_POLICY=y',
  ].join('\n');
  assert.deepEqual(unsetOptions(config, encryptionKconfig(false)), ['CONFIG_INET_ESP', 'CONFIG_CRYPTO_GCM']);
  assert.deepEqual(encryptionKconfig(true)[1], 'CONFIG_INET6_ESP');
});
