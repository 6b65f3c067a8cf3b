// Encrypted overlay networks (issue 17) on this machine's kernel, which lacks
// ESP and GCM: `-o encrypted` is refused with KERNEL_FEATURE_MISSING naming
// the kernel options, and nothing is made (no record in etcd, no netns, no
// vxlan device, no IPAM pool); a plain overlay on the same hosts still works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { clusterLab, etcdAddr, hostAddr6 } from '../lib/cluster';
import { eventually, runIn } from '../lib/fixture';
import { meshOf, network } from '../lib/overlay-cluster';
import { ping } from '../lib/probe';
import { capture } from '../lib/wire';
import { kernelHas } from '../lib/kernel';
import { docker, dockerMissing } from '../lib/docker-cli';

function kernelLacksEsp(): boolean {
  return kernelHas('CONFIG_INET_ESP') === false && kernelHas('CONFIG_CRYPTO_GCM') === false;
}

test('-o encrypted on a kernel without ESP/GCM: KERNEL_FEATURE_MISSING naming the options, nothing made; a plain overlay still works', async (t) => {
  // The premise, checked rather than assumed: on a kernel with ESP this test would prove nothing.
  assert.ok(kernelLacksEsp(), 'this test needs a kernel without CONFIG_INET_ESP and CONFIG_CRYPTO_GCM');
  // With the cluster secret and its ring: the kernel is what refuses.
  const c = await clusterLab(t, { hosts: 2, secret: true });
  const d = await c.startDaemon(0);
  await c.startDaemon(1);
  const etcdKeys = () =>
    c.etcd[0].ns
      .run('etcdctl', [
        `--endpoints=http://${etcdAddr(1)}:2379`,
        'get',
        '--prefix',
        '--keys-only',
        '/cnmd/v1/networks/',
      ])
      .split('\n')
      .filter(Boolean);
  const overlayNetns = (i: number) => {
    const dir = path.join(c.daemons[i].execRoot, 'overlay', 'netns');
    return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  };
  const vxlans = (i: number) =>
    JSON.parse(c.hosts[i].run('ip', ['-j', 'link', 'show', 'type', 'vxlan']) || '[]').map(
      (l: any) => l.ifname,
    );

  for (const value of ['', 'true']) {
    const r = await d.request('POST', '/networks/create', {
      Name: 'secret',
      Driver: 'overlay',
      Options: { encrypted: value },
      IPAM: { Config: [{ Subnet: '10.70.0.0/24' }] },
    });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.match(r.body.message, /network create secret: encrypted overlay networks need IPsec ESP/);
    assert.match(r.body.message, /CONFIG_INET_ESP/);
    assert.match(r.body.message, /CONFIG_CRYPTO_GCM/);
    assert.doesNotMatch(
      r.body.message,
      /CONFIG_XFRM_USER|CONFIG_CRYPTO_SEQIV/,
      'only what is missing is named',
    );
  }
  const bad = await d.request('POST', '/networks/create', {
    Name: 'secret',
    Driver: 'overlay',
    Options: { encrypted: 'maybe' },
  });
  assert.equal(bad.status, 400);
  assert.match(bad.body.message, /option encrypted: "maybe" is not true or false/);

  // The stock docker CLI on cnmd's socket gets the same refusal, as Docker prints a daemon's error.
  if (dockerMissing) throw new Error(dockerMissing);
  for (const o of ['encrypted', 'encrypted=true']) {
    const cli = docker(d, [
      'network',
      'create',
      '-d',
      'overlay',
      '-o',
      o,
      '--subnet',
      '10.70.0.0/24',
      'secret',
    ]);
    assert.equal(cli.code, 1, `docker network create -o ${o}: ${cli.out}${cli.err}`);
    assert.equal(cli.out, '');
    assert.match(
      cli.err,
      /^Error response from daemon: network create secret: encrypted overlay networks need IPsec ESP with AES-GCM, which this kernel lacks: CONFIG_INET_ESP, CONFIG_CRYPTO_GCM not set; run a kernel built with them \(or load their modules\)$/m,
    );
  }
  const gone = docker(d, ['network', 'inspect', 'secret']);
  assert.equal(gone.code, 1);
  assert.match(gone.err, /network secret not found/);

  // Nothing half-made, on either host: no record, no netns (the probe's scratch netns included), no vxlan device,
  // no XFRM guard policy, no firewall rule for it.
  assert.deepEqual(etcdKeys(), []);
  for (const i of [0, 1]) {
    assert.equal(c.hosts[i].run('ip', ['xfrm', 'policy']).trim(), '', `host ${i + 1} XFRM policies`);
    assert.equal(c.hosts[i].run('ip', ['xfrm', 'state']).trim(), '', `host ${i + 1} XFRM states`);
    for (const save of ['iptables-save', 'ip6tables-save'])
      assert.doesNotMatch(c.hosts[i].run(save, []), /CNMD-ENCRYPTED|u32/, `host ${i + 1} ${save}`);
  }
  assert.equal((await d.request('GET', '/networks/secret')).status, 404);
  assert.equal((await c.daemons[1].request('GET', '/networks/secret')).status, 404);
  for (const i of [0, 1]) {
    assert.deepEqual(overlayNetns(i), [], `host ${i + 1} overlay netns`);
    assert.deepEqual(vxlans(i), [], `host ${i + 1} vxlan devices`);
  }

  // A plain overlay on the same hosts: made, and its subnet was not held by the refused one.
  const ok = await d.request('POST', '/networks/create', {
    Name: 'plain',
    Driver: 'overlay',
    Options: { encrypted: 'false' },
    IPAM: { Config: [{ Subnet: '10.70.0.0/24' }] },
  });
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
  assert.equal(etcdKeys().length, 1);
  assert.equal(overlayNetns(0).length, 1);
});

test('an IPv6 underlay on a kernel without ESP/GCM: a plain overlay crosses it (VXLAN over IPv6 on the wire); -o encrypted refused naming CONFIG_INET6_ESP, nothing made', async (t) => {
  assert.ok(kernelLacksEsp(), 'this test needs a kernel without CONFIG_INET_ESP and CONFIG_CRYPTO_GCM');
  const c = await clusterLab(t, { hosts: 2, secret: true, underlay6: true });
  const d = await c.startDaemon(0, ['--cluster-advertise', hostAddr6(1)]);
  await c.startDaemon(1, ['--cluster-advertise', hostAddr6(2)]);
  const plain = await network(d, 'p6', '10.71.0.0/24');
  const sbs = await meshOf(c, plain, 'p6', { hosts: 2, vtep: hostAddr6 });
  const cap = await capture(t, c.underlay.path, 'br0', 'udp port 4789');
  await eventually(() => assert.ok(ping(sbs[0].key, sbs[1].ip), 'p6 1 -> 2'));
  await eventually(() =>
    assert.match(
      cap.text(),
      new RegExp(
        `${hostAddr6(1)}\\.\\d+ > ${hostAddr6(2)}\\.4789: (?:\\[bad udp cksum [^\\]]*\\] )?VXLAN[^\\n]*vni ${plain.vni}\\b`,
      ),
    ),
  );
  await cap.stop();
  // The overlay's MTU: the underlay's 1500 minus VXLAN over IPv6 (70).
  const mtu = JSON.parse(runIn(sbs[0].key, 'ip', ['-j', 'link', 'show', 'eth0']))[0].mtu;
  assert.equal(mtu, 1430);

  const r = await d.request('POST', '/networks/create', {
    Name: 'secret6',
    Driver: 'overlay',
    Options: { encrypted: '' },
    IPAM: { Config: [{ Subnet: '10.72.0.0/24' }] },
  });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  assert.match(
    r.body.message,
    /^network create secret6: encrypted overlay networks need IPsec ESP with AES-GCM, which this kernel lacks: .*CONFIG_INET6_ESP/,
  );
  assert.match(r.body.message, /CONFIG_CRYPTO_GCM/);
  assert.doesNotMatch(r.body.message, /CONFIG_INET_ESP\b/, 'the IPv4 option is not what this VTEP needs');
  assert.equal((await d.request('GET', '/networks/secret6')).status, 404);
  for (const i of [0, 1]) {
    assert.equal(c.hosts[i].run('ip', ['xfrm', 'policy']).trim(), '', `host ${i + 1} XFRM policies`);
    for (const save of ['iptables-save', 'ip6tables-save'])
      assert.doesNotMatch(c.hosts[i].run(save, []), /CNMD-ENCRYPTED/, `host ${i + 1} ${save}`);
  }
});
