// Bad input and hostile conditions for the netlink and netns layers: typed
// errors with the errno, nothing sent for invalid input, no crash, no hang,
// no leaked file descriptors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { eventually, fdCount, lab } from '../lib/fixture';
import { Handle } from '../../src/netlink/handle';
import { NetnsManager } from '../../src/netns/netns';

test('kernel refusals come back typed with the errno: duplicate name, missing device', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  await assert.rejects(a.handle.linkAdd({ kind: 'bridge', name: 'br0' }), { code: 'ALREADY_EXISTS', errno: 'EEXIST', op: 'link add', object: 'br0' });
  for (const call of [
    () => a.handle.linkGet('nope0'),
    () => a.handle.linkDel('nope0'),
    () => a.handle.linkSet('nope0', { up: true }),
    () => a.handle.addrAdd('nope0', '10.0.0.1/24'),
    () => a.handle.linkGet(4242),
  ]) {
    await assert.rejects(call(), (e: any) => {
      assert.equal(e.code, 'NOT_FOUND');
      assert.match(e.errno, /^E(NODEV|NOENT)$/);
      assert.match(e.message, /nope0|4242/);
      return true;
    });
  }
});

test('invalid input is refused before anything is sent', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  const before = a.run('ip', ['-d', 'addr']);
  const bad: [() => Promise<unknown>, RegExp][] = [
    [() => a.handle.linkAdd({ kind: 'bridge', name: 'a-very-long-name0' }), /is 17 bytes; Linux allows at most 15/],
    [() => a.handle.linkAdd({ kind: 'bridge', name: 'bad/name' }), /may not/],
    [() => a.handle.linkAdd({ kind: 'bridge', name: '' }), /empty/],
    [() => a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'x'.repeat(16) } }), /Linux allows at most 15/],
    [() => a.handle.linkAdd({ kind: 'wireguard' as never, name: 'wg0' }), /not one of/],
    [() => a.handle.addrAdd('br0', '10.0.0.300/24'), /not an address with prefix/],
    [() => a.handle.addrAdd('br0', '10.0.0.1/33'), /not an address with prefix/],
    [() => a.handle.addrAdd('br0', 'fe80::zz/64'), /not an address with prefix/],
    [() => a.handle.linkSet('br0', { mac: '02:00:00:00:00' }), /not a MAC address/],
    [() => a.handle.linkSet('br0', { mtu: 10 }), /MTU 10 is outside/],
    [() => a.handle.routeAdd({ dst: '10.0.0.0/40', dev: 'br0' }), /not a CIDR/],
    [() => a.handle.routeAdd({ dst: '10.0.0.0/8', gateway: 'fd00::1' }), /IPv6 but the destination is IPv4/],
    [() => a.handle.neighAdd({ dev: 'br0', ip: '10.0.0.5', mac: 'zz:00:00:00:00:00' }), /not a MAC address/],
  ];
  for (const [call, msg] of bad) {
    await assert.rejects(call(), (e: any) => {
      assert.equal(e.code, 'INVALID_ARGUMENT', String(e));
      assert.match(e.message, msg);
      return true;
    });
  }
  assert.equal(a.run('ip', ['-d', 'addr']), before, 'nothing changed');
});

test('netns paths that do not exist, or are not namespaces, are refused typed', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  assert.throws(() => Handle.at('/nonexistent/netns/x'), { code: 'NOT_FOUND', message: /does not exist/ });
  const file = path.join(l.root, 'plain-file');
  fs.writeFileSync(file, '');
  assert.throws(() => Handle.at(file), { code: 'INVALID_ARGUMENT', message: /is not a network namespace/ });
  await assert.rejects(a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'v1', netns: '/nonexistent/netns/y' } }), { code: 'NOT_FOUND' });
  await assert.rejects(a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'v1', netns: file } }), { code: 'INVALID_ARGUMENT' });
  assert.ok(!a.ipj('link').some((x: any) => x.ifname === 'v0'), 'nothing half-created');
});

test('a netns deleted under an open handle: the namespace lives on for the handle; closed handles fail typed', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const h = Handle.at(a.path);
  l.netns.delete('a');
  assert.equal(fs.existsSync(a.path), false);
  // The kernel keeps the namespace alive while our socket holds it: requests still work.
  await h.linkAdd({ kind: 'bridge', name: 'br0' });
  assert.equal((await h.linkGet('br0')).kind, 'bridge');
  h.close();
  await assert.rejects(h.linkGet('br0'), { code: 'CLOSED' });
  a.handle.close();
  await assert.rejects(a.handle.linkList(), { code: 'CLOSED' });
  assert.throws(() => Handle.at(a.path), { code: 'NOT_FOUND' });
});

test('10,000 handles opened and closed leak no file descriptor', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const before = fdCount();
  for (let i = 0; i < 10_000; i++) {
    const h = Handle.at(a.path);
    if (i % 1000 === 0) await h.linkList();
    h.close();
  }
  // Closes are queued behind pending sends on the I/O thread: let them land.
  await eventually(() => assert.equal(fdCount(), before), 5000);
});

test('NetnsManager: create, list, exists, delete; duplicates, missing ids and bad ids are typed; 50 at once', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-test-nsm-'));
  const m = new NetnsManager(root);
  t.after(() => {
    for (const id of m.list()) m.delete(id);
    fs.rmSync(root, { recursive: true, force: true });
  });
  const c = await m.create('one');
  assert.equal(c.path, path.join(root, 'netns', 'one'));
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  assert.ok(mounts.split('\n').some((line) => line.split(' ')[4] === c.path && line.includes('nsfs')), 'a netns mount');
  const lo = (await c.handle.linkGet('lo'));
  assert.ok(lo.up, 'loopback is up');
  c.handle.close();
  await assert.rejects(m.create('one'), { code: 'ALREADY_EXISTS' });
  for (const bad of ['../x', '', 'a/b', '.hidden']) await assert.rejects(m.create(bad), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => m.delete('missing'), { code: 'NOT_FOUND' });
  const many = await Promise.all(Array.from({ length: 50 }, (_, i) => m.create(`n${i}`)));
  for (const n of many) {
    assert.ok((await n.handle.linkGet(1)).up);
    n.handle.close();
  }
  assert.equal(m.list().length, 51);
  assert.ok(m.exists('n7'));
  m.delete('one');
  assert.equal(fs.existsSync(c.path), false);
  assert.equal(m.exists('one'), false);
});
