// XFRM on this kernel: policies (marks, reqid templates, priorities, every
// direction) read back with `ip xfrm policy`; ESP/GCM states refused with a
// typed error naming what the kernel lacks (the kernel lane proves them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab } from '../lib/fixture';

const MARK = { value: 0xd0c4e3, mask: 0xffffffff };

test('policies: add, get, list, delete, flush with marks, templates and priorities', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  for (const dir of ['out', 'in', 'fwd'] as const) {
    await a.handle.xfrmPolicyAdd({
      selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32', proto: 'udp', dport: 4789 },
      dir,
      priority: 100,
      mark: MARK,
      templates: [{ src: '10.0.0.1', dst: '10.0.0.2', proto: 'esp', mode: 'transport', reqid: 7 }],
    });
  }
  await a.handle.xfrmPolicyAdd({ selector: { src: '10.1.0.0/16', dst: '10.2.0.0/16' }, dir: 'out', action: 'block', priority: 5 });
  const text = a.run('ip', ['xfrm', 'policy', 'list']);
  for (const dir of ['out', 'in', 'fwd']) {
    assert.match(text, new RegExp(`src 10\\.0\\.0\\.1/32 dst 10\\.0\\.0\\.2/32 proto udp dport 4789\\s+dir ${dir} priority 100`));
  }
  assert.match(text, /mark 0xd0c4e3\/0xffffffff/);
  assert.match(text, /tmpl src 10\.0\.0\.1 dst 10\.0\.0\.2\s+proto esp reqid 7 mode transport/);
  assert.match(text, /src 10\.1\.0\.0\/16 dst 10\.2\.0\.0\/16\s+dir out action block priority 5/);
  const list = await a.handle.xfrmPolicyList();
  assert.equal(list.length, 4);
  const got = await a.handle.xfrmPolicyGet({ selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32', proto: 'udp', dport: 4789 }, dir: 'in', mark: MARK });
  assert.equal(got.dir, 'in');
  assert.equal(got.priority, 100);
  assert.deepEqual(got.mark, MARK);
  assert.equal(got.templates[0].reqid, 7);
  assert.equal(got.selector.dport, 4789);
  // The mark is part of the identity: without it the policy is not found.
  await assert.rejects(a.handle.xfrmPolicyGet({ selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32', proto: 'udp', dport: 4789 }, dir: 'in' }), { code: 'NOT_FOUND' });
  await assert.rejects(a.handle.xfrmPolicyAdd({ selector: { src: '10.1.0.0/16', dst: '10.2.0.0/16' }, dir: 'out', priority: 5 }), { code: 'ALREADY_EXISTS' });
  await a.handle.xfrmPolicyDel({ selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32', proto: 'udp', dport: 4789 }, dir: 'fwd', mark: MARK });
  assert.equal((await a.handle.xfrmPolicyList()).length, 3);
  assert.doesNotMatch(a.run('ip', ['xfrm', 'policy', 'list']), /dir fwd/);
  await a.handle.xfrmPolicyFlush();
  assert.equal(a.run('ip', ['xfrm', 'policy', 'list']).trim(), '');
  await assert.rejects(a.handle.xfrmPolicyAdd({ selector: { src: '10.0.0.1/33', dst: '10.0.0.2/32' }, dir: 'out' }), { code: 'INVALID_ARGUMENT' });
  await assert.rejects(a.handle.xfrmPolicyAdd({ selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32' }, dir: 'sideways' as never }), { code: 'INVALID_ARGUMENT' });
});

test('ESP states with rfc4106(gcm(aes)): a typed error naming the missing kernel feature, and nothing added', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await assert.rejects(
    a.handle.xfrmStateAdd({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      spi: 0x100,
      proto: 'esp',
      reqid: 7,
      aead: { name: 'rfc4106(gcm(aes))', key: '0x' + '11'.repeat(20), icvBits: 64 },
      mark: MARK,
    }),
    (e: any) => {
      assert.equal(e.code, 'KERNEL_FEATURE_MISSING');
      assert.equal(e.op, 'xfrm state add');
      assert.match(e.message, /this kernel lacks (IPsec ESP \(CONFIG_INET_ESP\)|the crypto algorithm rfc4106\(gcm\(aes\)\) \(CONFIG_CRYPTO_GCM\))/);
      return true;
    },
  );
  await assert.rejects(
    a.handle.xfrmStateAdd({ src: '10.0.0.1', dst: '10.0.0.2', spi: 0x101, proto: 'esp', auth: { name: 'hmac(sha256)', key: '0x' + '22'.repeat(32) }, crypt: { name: 'cbc(aes)', key: '0x' + '33'.repeat(16) } }),
    { code: 'KERNEL_FEATURE_MISSING', message: /CONFIG_INET_ESP/ },
  );
  assert.equal(a.run('ip', ['xfrm', 'state', 'list']).trim(), '');
  assert.deepEqual(await a.handle.xfrmStateList(), []);
  await a.handle.xfrmStateFlush(); // flush works whatever the kernel lacks
  await assert.rejects(a.handle.xfrmStateAdd({ src: '10.0.0.1', dst: '10.0.0.2', spi: 0, aead: { name: 'rfc4106(gcm(aes))', key: '00', icvBits: 64 } }), { code: 'INVALID_ARGUMENT', message: /SPI 0/ });
  await assert.rejects(a.handle.xfrmStateAdd({ src: '10.0.0.1', dst: 'fd00::2', spi: 1, aead: { name: 'rfc4106(gcm(aes))', key: '00', icvBits: 64 } }), { code: 'INVALID_ARGUMENT', message: /different families/ });
});
