// Bad input and hostile conditions for the netlink Handle: kernel refusals
// come back typed with their errno; invalid input is refused before anything
// is sent (counted at native.nlSend); bad namespace paths, namespaces deleted
// under a handle and closed handles fail typed, never crash or hang; opening
// and closing handles leaks no file descriptor. Every test works in
// namespaces of its own (lab), never in the machine's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { eventually, fdCount, lab, Ns } from '../lib/fixture';
import { native } from '../../native';
import { CnmdError } from '../../src/errors';
import { Handle } from '../../src/netlink/handle';

/** Rejects with a TIMEOUT-ish failure when p takes longer than ms: "no hang". */
async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (hang)`)), ms);
  });
  try {
    return await Promise.race([p, hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** Netlink messages handed to native.nlSend while fn runs, by message type. */
async function sendsDuring(fn: () => Promise<unknown>): Promise<number[]> {
  const orig = native.nlSend;
  const types: number[] = [];
  native.nlSend = (fd: number, data: Buffer, token: number, flags?: number) => {
    types.push(data.readUInt16LE(4));
    return orig.call(native, fd, data, token, flags);
  };
  try {
    await fn();
  } finally {
    native.nlSend = orig;
  }
  return types;
}

function ipNames(ns: Ns): string[] {
  return ns
    .ipj('link')
    .map((x: any) => x.ifname)
    .sort();
}

test('duplicate link names are ALREADY_EXISTS with errno EEXIST, and nothing else is made', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  await a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'v1' } });
  const before = ipNames(a);
  for (const spec of [
    { kind: 'bridge' as const, name: 'br0' },
    { kind: 'veth' as const, name: 'br0', peer: { name: 'fresh0' } },
    { kind: 'veth' as const, name: 'fresh1', peer: { name: 'v1' } }, // the peer's name is taken
    { kind: 'vxlan' as const, name: 'v0', vni: 5 },
    { kind: 'macvlan' as const, name: 'v1', parent: 'v0' },
  ]) {
    await assert.rejects(a.handle.linkAdd(spec), (e: any) => {
      assert.ok(e instanceof CnmdError, String(e));
      assert.equal(e.code, 'ALREADY_EXISTS');
      assert.equal(e.errno, 'EEXIST');
      assert.equal(e.op, 'link add');
      assert.equal(e.object, spec.name);
      assert.match(e.message, /EEXIST/);
      return true;
    });
  }
  assert.deepEqual(ipNames(a), before, 'no half of a pair left behind');
});

test('a missing device is NOT_FOUND with the errno, for every call that names one', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  const calls: [string, () => Promise<unknown>][] = [
    ['link get', () => a.handle.linkGet('nope0')],
    ['link get', () => a.handle.linkGet(4242)],
    ['link del', () => a.handle.linkDel('nope0')],
    ['link del', () => a.handle.linkDel(4242)],
    ['link set', () => a.handle.linkSet('nope0', { up: true })],
    ['link set', () => a.handle.linkSet(4242, { mtu: 1400 })],
    ['link set', () => a.handle.linkSet('nope0', { name: 'other0' })],
    ['link set', () => a.handle.linkSet('br0', { master: 'nope0' })],
    ['link add', () => a.handle.linkAdd({ kind: 'veth', name: 'v0', master: 'nope0', peer: { name: 'v1' } })],
    ['link add', () => a.handle.linkAdd({ kind: 'macvlan', name: 'mv0', parent: 'nope0' })],
    ['addr add', () => a.handle.addrAdd('nope0', '10.0.0.1/24')],
    ['addr del', () => a.handle.addrDel('nope0', '10.0.0.1/24')],
    ['addr list', () => a.handle.addrList({ link: 'nope0' })],
    ['route add', () => a.handle.routeAdd({ dst: '10.1.0.0/16', dev: 'nope0' })],
    ['neigh add', () => a.handle.neighAdd({ dev: 'nope0', ip: '10.0.0.5', mac: '02:00:00:00:00:05' })],
    ['fdb add', () => a.handle.fdbAdd({ dev: 'nope0', mac: '02:00:00:00:00:05' })],
  ];
  for (const [what, call] of calls) {
    await assert.rejects(call(), (e: any) => {
      assert.ok(e instanceof CnmdError, `${what}: ${e}`);
      assert.equal(e.code, 'NOT_FOUND', `${what}: ${e.message}`);
      assert.equal(e.errno, 'ENODEV', `${what}: ${e.message}`);
      assert.match(e.message, /nope0|4242/);
      return true;
    });
  }
  assert.deepEqual(ipNames(a), ['br0', 'lo']);
  assert.deepEqual(
    a.ipj('addr', 'show', 'dev', 'br0')[0].addr_info.filter((x: any) => x.family === 'inet'),
    [],
  );
});

test('invalid names, addresses, MACs and MTUs are INVALID_ARGUMENT and nothing is sent', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  const br = (await a.handle.linkGet('br0')).index;
  const before = a.run('ip', ['-d', 'addr']);
  const bad: [() => Promise<unknown>, RegExp][] = [
    // names: at most 15 bytes (bytes, not characters), not empty, no '/', ':', whitespace, not . or ..
    [
      () => a.handle.linkAdd({ kind: 'bridge', name: 'a-very-long-name' }),
      /is 16 bytes; Linux allows at most 15/,
    ],
    [() => a.handle.linkAdd({ kind: 'bridge', name: 'αβγδεζηθ' }), /is 16 bytes; Linux allows at most 15/],
    [() => a.handle.linkAdd({ kind: 'bridge', name: '' }), /empty/],
    [() => a.handle.linkAdd({ kind: 'bridge', name: 'bad/name' }), /may not/],
    [() => a.handle.linkAdd({ kind: 'bridge', name: 'bad:name' }), /may not/],
    [() => a.handle.linkAdd({ kind: 'bridge', name: 'bad name' }), /may not/],
    [() => a.handle.linkAdd({ kind: 'bridge', name: '..' }), /may not/],
    [
      () => a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'x'.repeat(16) } }),
      /Linux allows at most 15/,
    ],
    [() => a.handle.linkGet('x'.repeat(16)), /Linux allows at most 15/],
    [() => a.handle.linkDel('x'.repeat(40)), /Linux allows at most 15/],
    [() => a.handle.linkSet(br, { name: 'renamed-too-long' }), /Linux allows at most 15/],
    [() => a.handle.linkSet(br, { name: 'a/b' }), /may not/],
    [
      () => a.handle.linkAdd({ kind: 'wireguard' as never, name: 'wg0' }),
      /link kind "wireguard" is not one of/,
    ],
    // addresses
    [() => a.handle.addrAdd(br, '10.0.0.300/24'), /not an address with prefix/],
    [() => a.handle.addrAdd(br, '10.0.0.1/33'), /not an address with prefix/],
    [() => a.handle.addrAdd(br, 'fe80::zz/64'), /not an address with prefix/],
    [() => a.handle.addrAdd(br, '::1/129'), /not an address with prefix/],
    [() => a.handle.addrAdd(br, '10.0.0.1/'), /not an address with prefix/],
    [() => a.handle.addrAdd(br, '10.0.0.01/24'), /not an address with prefix/],
    [() => a.handle.addrAdd(br, ''), /not an address with prefix/],
    [() => a.handle.addrDel(br, '10.0.0.300/24'), /not an address with prefix/],
    [() => a.handle.addrAdd(0, '10.0.0.1/24'), /link index 0 is not valid/],
    [() => a.handle.routeAdd({ dst: '10.0.0.0/40', dev: br }), /not a CIDR/],
    [() => a.handle.routeAdd({ dst: '10.0.0.0/8', gateway: 'fd00::1' }), /IPv6 but the destination is IPv4/],
    [
      () => a.handle.routeAdd({ dst: '10.0.0.0/8', gateway: '10.0.0.256' }),
      /gateway "10.0.0.256" is not an IP address/,
    ],
    [() => a.handle.neighAdd({ dev: br, ip: '10.0.0.500', mac: '02:00:00:00:00:01' }), /not an IP address/],
    // MACs
    [() => a.handle.linkSet('br0', { mac: '02:00:00:00:00' }), /not a MAC address/],
    [() => a.handle.linkSet('br0', { mac: '02-00-00-00-00-01' }), /not a MAC address/],
    [() => a.handle.linkSet('br0', { mac: 'zz:00:00:00:00:01' }), /not a MAC address/],
    [() => a.handle.linkSet('br0', { mac: '02:00:00:00:00:01:02' }), /not a MAC address/],
    [() => a.handle.linkAdd({ kind: 'bridge', name: 'br1', mac: '2:0:0:0:0:1' }), /not a MAC address/],
    [
      () => a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'v1', mac: 'nope' } }),
      /not a MAC address/,
    ],
    [() => a.handle.neighAdd({ dev: br, ip: '10.0.0.5', mac: 'zz:00:00:00:00:00' }), /not a MAC address/],
    [() => a.handle.fdbAdd({ dev: br, mac: '02:00:00:00:00', master: true }), /not a MAC address/],
    // MTUs
    [() => a.handle.linkSet('br0', { mtu: 10 }), /MTU 10 is outside 68..65535/],
    [() => a.handle.linkSet('br0', { mtu: 67 }), /MTU 67 is outside/],
    [() => a.handle.linkSet('br0', { mtu: 65536 }), /MTU 65536 is outside/],
    [() => a.handle.linkSet('br0', { mtu: 1500.5 }), /MTU 1500.5 is outside/],
    [() => a.handle.linkSet('br0', { mtu: Number.NaN }), /MTU NaN is outside/],
    [() => a.handle.linkSet('br0', { mtu: -1 }), /MTU -1 is outside/],
    [() => a.handle.linkAdd({ kind: 'bridge', name: 'br1', mtu: 67 }), /MTU 67 is outside/],
    [
      () => a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'v1', mtu: 70000 } }),
      /MTU 70000 is outside/,
    ],
  ];
  for (const [call, msg] of bad) {
    const sent = await sendsDuring(() =>
      assert.rejects(call(), (e: any) => {
        assert.ok(e instanceof CnmdError, String(e));
        assert.equal(e.code, 'INVALID_ARGUMENT', `${msg}: ${e.message}`);
        assert.match(e.message, msg);
        return true;
      }),
    );
    assert.deepEqual(sent, [], `nothing sent for ${msg} (${call})`);
  }
  assert.equal(a.run('ip', ['-d', 'addr']), before, 'nothing changed');
});

test('invalid input is refused before a device name is even looked up', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  await a.handle.linkAdd({ kind: 'vxlan', name: 'vx0', vni: 7 });
  const bad: [() => Promise<unknown>, RegExp][] = [
    [() => a.handle.addrAdd('br0', '10.0.0.300/24'), /not an address with prefix/],
    [() => a.handle.addrAdd('nope0', '10.0.0.1/33'), /not an address with prefix/],
    [() => a.handle.routeAdd({ dst: '10.0.0.0/40', dev: 'br0' }), /not a CIDR/],
    [() => a.handle.neighAdd({ dev: 'br0', ip: '10.0.0.5', mac: 'zz:00:00:00:00:00' }), /not a MAC address/],
    [() => a.handle.fdbAdd({ dev: 'vx0', mac: '02:00:00:00:00', dst: '192.0.2.1' }), /not a MAC address/],
    [
      () => a.handle.linkAdd({ kind: 'macvlan', name: 'x'.repeat(16), parent: 'br0' }),
      /Linux allows at most 15/,
    ],
    [
      () => a.handle.linkAdd({ kind: 'veth', name: 'v0', master: 'br0', peer: { name: 'v1', mtu: 10 } }),
      /MTU 10 is outside/,
    ],
    [() => a.handle.linkSet('br0', { name: 'a/b' }), /may not/],
  ];
  for (const [call, msg] of bad) {
    const sent = await sendsDuring(() =>
      assert.rejects(call(), (e: any) => {
        assert.equal(e.code, 'INVALID_ARGUMENT', `${msg}: ${e.message}`);
        assert.match(e.message, msg);
        return true;
      }),
    );
    assert.deepEqual(sent, [], `no request (not even RTM_GETLINK=18) for ${msg}`);
  }
});

test('a link index that is not a positive 32-bit integer is INVALID_ARGUMENT, nothing is sent, and it never lands on another link', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  const before = a.run('ip', ['-d', 'link']);
  for (const idx of [0, -1, 1.5, Number.NaN, Infinity, 2 ** 31, 2 ** 40]) {
    const calls: [string, () => Promise<unknown>][] = [
      ['link get', () => a.handle.linkGet(idx)],
      ['link del', () => a.handle.linkDel(idx)],
      ['link set', () => a.handle.linkSet(idx, { up: false, mtu: 1400 })],
      ['addr add', () => a.handle.addrAdd(idx, '10.0.0.1/24')],
      ['route add', () => a.handle.routeAdd({ dst: '10.1.0.0/16', dev: idx })],
    ];
    for (const [op, call] of calls) {
      const sent = await sendsDuring(() =>
        assert.rejects(call(), (e: any) => {
          assert.ok(e instanceof CnmdError, `${op} ${idx}: not a CnmdError: ${e}`);
          assert.equal(e.code, 'INVALID_ARGUMENT', `${op} ${idx}: ${e.message}`);
          return true;
        }),
      );
      assert.deepEqual(sent, [], `${op} ${idx}: nothing sent`);
    }
  }
  // 1.5 is not "1": loopback was never touched.
  assert.equal(a.run('ip', ['-d', 'link']), before);
});

test('a MAC no link can take (multicast, all zeros) is INVALID_ARGUMENT, never "no such link"', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0', mac: '02:00:00:00:00:01' });
  for (const mac of ['01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00', '33:33:00:00:00:01']) {
    await assert.rejects(a.handle.linkSet('br0', { mac }), (e: any) => {
      assert.equal(e.code, 'INVALID_ARGUMENT', `${mac}: ${e.code} ${e.message}`);
      assert.doesNotMatch(e.message, /no such link/);
      assert.match(e.message, new RegExp(mac));
      return true;
    });
    await assert.rejects(a.handle.linkAdd({ kind: 'bridge', name: 'br1', mac }), {
      code: 'INVALID_ARGUMENT',
    });
  }
  assert.equal(a.ipj('link', 'show', 'dev', 'br0')[0].address, '02:00:00:00:00:01');
  assert.deepEqual(ipNames(a), ['br0', 'lo']);
});

test('netns paths that do not exist or are not network namespaces: typed, no fd leaked, nothing half-made', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const file = path.join(l.root, 'plain-file');
  fs.writeFileSync(file, '');
  const dir = path.join(l.root, 'a-dir');
  fs.mkdirSync(dir);
  const fds = fdCount();
  for (let i = 0; i < 200; i++) {
    assert.throws(
      () => Handle.at('/nonexistent/netns'),
      (e: any) => {
        assert.ok(e instanceof CnmdError);
        assert.equal(e.code, 'NOT_FOUND');
        assert.equal(e.errno, 'ENOENT');
        assert.match(e.message, /\/nonexistent\/netns does not exist/);
        return true;
      },
    );
    assert.throws(() => Handle.at(file), {
      code: 'INVALID_ARGUMENT',
      errno: 'EINVAL',
      message: /is not a network namespace/,
    });
    assert.throws(() => Handle.at(dir), { code: 'INVALID_ARGUMENT', message: /is not a network namespace/ });
    // A namespace file of another kind is not a network namespace either.
    assert.throws(() => Handle.at('/proc/self/ns/uts'), {
      code: 'INVALID_ARGUMENT',
      message: /is not a network namespace/,
    });
  }
  assert.throws(() => l.netns.handle('missing'), { code: 'NOT_FOUND' });
  assert.equal(fdCount(), fds, 'failed opens leak no fd');
  // Paths handed to link calls.
  await assert.rejects(
    a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'v1', netns: '/nonexistent/netns/y' } }),
    { code: 'NOT_FOUND', errno: 'ENOENT' },
  );
  await assert.rejects(
    a.handle.linkAdd({ kind: 'veth', name: 'v0', netns: '/nonexistent/netns/y', peer: { name: 'v1' } }),
    { code: 'NOT_FOUND', errno: 'ENOENT' },
  );
  await assert.rejects(a.handle.linkAdd({ kind: 'veth', name: 'v0', peer: { name: 'v1', netns: file } }), {
    code: 'INVALID_ARGUMENT',
  });
  await a.handle.linkAdd({ kind: 'veth', name: 'v2', peer: { name: 'v3' } });
  await assert.rejects(a.handle.linkSet('v2', { netns: '/nonexistent/netns/z' }), {
    code: 'NOT_FOUND',
    errno: 'ENOENT',
  });
  await assert.rejects(a.handle.linkSet('v2', { netns: file }), { code: 'INVALID_ARGUMENT' });
  assert.deepEqual(ipNames(a), ['lo', 'v2', 'v3'], 'nothing half-made, nothing moved');
  assert.equal(fdCount(), fds, 'the netns fds opened for the link calls are closed');
});

test('a netns deleted under an open handle: the handle goes on in the still-alive namespace, or fails typed; no crash, no hang', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const b = await l.ns('b');
  const c = await l.ns('c');
  const h = Handle.at(a.path);
  t.after(() => h.close());
  await h.xfrmPolicyList(); // this handle's XFRM socket is open before the delete
  const late = Handle.at(c.path); // this one's is not
  t.after(() => late.close());
  // Requests in flight while the file goes.
  const inflight = Array.from({ length: 200 }, () => h.linkGet(1));
  l.netns.delete('a');
  l.netns.delete('c');
  assert.equal(fs.existsSync(a.path), false);
  assert.equal(l.netns.exists('a'), false);
  for (const r of await within(10_000, Promise.all(inflight), 'in-flight requests'))
    assert.equal(r.name, 'lo');
  // The namespace lives while the handle holds it: a veth from it into b proves it.
  await within(
    5000,
    h.linkAdd({ kind: 'veth', name: 'x0', mtu: 1300, peer: { name: 'x1', mtu: 1400, netns: b.path } }),
    'link add',
  );
  const x1 = b.ipj('-d', 'link', 'show', 'dev', 'x1')[0];
  assert.equal(x1.mtu, 1400);
  assert.equal(typeof x1.link_netnsid, 'number', 'its peer lives in another (the orphaned) namespace');
  const x0 = await h.linkGet('x0');
  assert.equal(x0.index, x1.link_index);
  assert.equal(x0.mtu, 1300);
  await within(5000, h.addrAdd('x0', '10.50.0.1/24'), 'addr add');
  assert.deepEqual(
    (await h.addrList({ link: 'x0' })).map((x) => x.cidr),
    ['10.50.0.1/24'],
  );
  await within(
    5000,
    h.xfrmPolicyAdd({ selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32' }, dir: 'out' }),
    'xfrm policy add',
  );
  assert.equal((await h.xfrmPolicyList()).length, 1);
  // A handle that opens its XFRM socket only now: it works, or it fails typed.
  try {
    await within(5000, late.xfrmPolicyList(), 'late xfrm');
  } catch (e) {
    assert.ok(e instanceof CnmdError, String(e));
    assert.equal((e as CnmdError).code, 'NOT_FOUND');
  }
  assert.deepEqual(
    (await within(5000, late.linkList(), 'late link list')).map((x) => x.name),
    ['lo'],
  );
  // New handles at the old path: typed.
  assert.throws(() => Handle.at(a.path), { code: 'NOT_FOUND' });
  assert.throws(() => l.netns.delete('a'), { code: 'NOT_FOUND' });
  // Tear down in the orphaned namespace through the handle; b's end goes with it.
  await h.linkDel('x0');
  await eventually(() =>
    assert.equal(
      b.ipj('link').some((x: any) => x.ifname === 'x1'),
      false,
    ),
  );
});

test('a handle whose netns path is deleted and reused by a new namespace never acts on the new one', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const h = Handle.at(a.path);
  t.after(() => h.close());
  l.netns.delete('a');
  const again = await l.netns.create('a'); // same id, same path, another namespace
  t.after(() => again.handle.close());
  await h.linkAdd({ kind: 'veth', name: 'old0', peer: { name: 'old1' } });
  try {
    await h.xfrmPolicyAdd({ selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32' }, dir: 'out', priority: 42 });
  } catch (e) {
    assert.ok(e instanceof CnmdError, String(e)); // refusing, typed, is fine
  }
  // The new namespace at the path saw nothing of the old handle: no link, no policy.
  assert.deepEqual(ipNames(a), ['lo']);
  assert.equal(
    a.run('ip', ['xfrm', 'policy', 'list']).trim(),
    '',
    'an XFRM policy meant for the old namespace landed in the new one',
  );
  assert.deepEqual(await again.handle.xfrmPolicyList(), []);
  // And the old handle still sees its own namespace's links.
  assert.deepEqual((await h.linkList()).map((x) => x.name).sort(), ['lo', 'old0', 'old1']);
});

test('concurrent dumps on one handle all succeed: the kernel runs one dump per socket at a time, so the handle must not refuse them as CONFLICT/EBUSY', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  // Small dumps, all at once.
  const small = await within(
    10_000,
    Promise.all(
      Array.from({ length: 20 }, () =>
        a.handle.linkList().then(
          (x) => x.length,
          (e) => `${e.code}:${e.errno}`,
        ),
      ),
    ),
    'small dumps',
  );
  assert.deepEqual(small, Array(20).fill(1));
  // Multi-part dumps of several kinds at once, mixed with plain requests.
  await Promise.all(
    Array.from({ length: 100 }, (_, i) =>
      a.handle.linkAdd({ kind: 'veth', name: `d${i}`, peer: { name: `d${i}p` } }),
    ),
  );
  const links = a.ipj('link').length;
  const results = await within(
    20_000,
    Promise.all(
      [
        ...Array.from({ length: 5 }, () => a.handle.linkList().then((x) => x.length)),
        ...Array.from({ length: 3 }, () => a.handle.addrList().then(() => 'addr')),
        ...Array.from({ length: 3 }, () => a.handle.routeList({ table: 0 }).then(() => 'route')),
        ...Array.from({ length: 3 }, () => a.handle.neighList().then(() => 'neigh')),
        ...Array.from({ length: 3 }, () => a.handle.fdbList().then(() => 'fdb')),
        ...Array.from({ length: 10 }, (_, i) => a.handle.linkGet(`d${i}`).then((x) => x.name)),
      ].map((p) => p.catch((e) => `${e.code}:${e.errno}`)),
    ),
    'concurrent dumps',
  );
  assert.deepEqual(results, [
    ...Array(5).fill(links),
    ...Array(3).fill('addr'),
    ...Array(3).fill('route'),
    ...Array(3).fill('neigh'),
    ...Array(3).fill('fdb'),
    ...Array.from({ length: 10 }, (_, i) => `d${i}`),
  ]);
});

test(
  'a request the kernel never answers fails typed TIMEOUT (no hang), and the handle goes on working',
  { timeout: 30_000 },
  async (t) => {
    const l = await lab(t);
    const a = await l.ns('a');
    const orig = native.nlSend;
    let dropped = 0;
    // Lose the next request on its way to the kernel.
    native.nlSend = (fd: number, data: Buffer, token: number, flags?: number) => {
      if (dropped === 0) {
        dropped++;
        return;
      }
      return orig.call(native, fd, data, token, flags);
    };
    const started = Date.now();
    const lost = a.handle.linkGet('lo');
    native.nlSend = orig;
    // Others on the same handle are not held up by it.
    assert.equal((await within(2000, a.handle.linkGet(1), 'a second request')).name, 'lo');
    await assert.rejects(within(20_000, lost, 'the lost request'), (e: any) => {
      assert.ok(e instanceof CnmdError, String(e));
      assert.equal(e.code, 'TIMEOUT');
      assert.equal(e.op, 'link get');
      assert.match(e.message, /no answer from the kernel/);
      return true;
    });
    assert.ok(Date.now() - started >= 5000, 'not before its deadline');
    assert.equal(dropped, 1);
    assert.deepEqual(
      (await a.handle.linkList()).map((x) => x.name),
      ['lo'],
    );
  },
);

test('requests on a closed handle are CLOSED; requests in flight at close are CLOSED too, not left hanging', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const h = Handle.at(a.path);
  await h.xfrmPolicyList();
  // In flight: queued behind the window and on the wire.
  const inflight = Array.from({ length: 300 }, () =>
    h.linkList().then(
      () => 'ok',
      (e) => (e as CnmdError).code,
    ),
  );
  h.close();
  assert.equal(h.closed, true);
  const codes = await within(5000, Promise.all(inflight), 'in-flight at close');
  assert.deepEqual([...new Set(codes)], ['CLOSED']);
  const calls: [string, () => Promise<unknown>][] = [
    ['link get', () => h.linkGet('lo')],
    ['link list', () => h.linkList()],
    ['link add', () => h.linkAdd({ kind: 'bridge', name: 'br0' })],
    ['link set', () => h.linkSet(1, { up: true })],
    ['link del', () => h.linkDel(1)],
    ['addr add', () => h.addrAdd(1, '10.0.0.1/8')],
    ['addr list', () => h.addrList()],
    ['route add', () => h.routeAdd({ dst: '10.0.0.0/8', dev: 1 })],
    ['route list', () => h.routeList()],
    ['neigh list', () => h.neighList()],
    ['fdb list', () => h.fdbList()],
    ['xfrm policy list', () => h.xfrmPolicyList()],
    ['xfrm state list', () => h.xfrmStateList()],
    [
      'xfrm policy add',
      () => h.xfrmPolicyAdd({ selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32' }, dir: 'out' }),
    ],
  ];
  for (const [op, call] of calls) {
    await assert.rejects(within(2000, call(), op), (e: any) => {
      assert.ok(e instanceof CnmdError, `${op}: ${e}`);
      assert.equal(e.code, 'CLOSED', `${op}: ${e.message}`);
      assert.match(e.message, /closed/);
      return true;
    });
  }
  h.close(); // twice is fine
  // A handle that never opened XFRM, closed, does not open it afterwards.
  const g = Handle.at(a.path);
  g.close();
  const fds = fdCount();
  await assert.rejects(g.xfrmStateList(), { code: 'CLOSED' });
  assert.equal(fdCount(), fds);
  // The lab's own handle, closed: same.
  a.handle.close();
  await assert.rejects(a.handle.linkList(), { code: 'CLOSED' });
  assert.deepEqual(ipNames(a), ['lo'], 'nothing reached the kernel');
});

test('10,000 handles opened and closed (some mid-request, some with XFRM open) leak no file descriptor', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const before = fdCount();
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < 10_000; i++) {
    const h = Handle.at(a.path);
    if (i % 500 === 0) await h.xfrmPolicyList(); // a second socket
    if (i % 100 === 0) await h.linkList();
    if (i % 1000 === 7) pending.push(h.linkList().catch((e) => e)); // closed while in flight
    h.close();
  }
  for (const r of await within(10_000, Promise.all(pending), 'requests in flight at close')) {
    assert.ok(Array.isArray(r) || (r instanceof CnmdError && r.code === 'CLOSED'), String(r));
  }
  // Closes are queued behind pending sends on the native I/O thread: let them land (bounded).
  await eventually(() => assert.equal(fdCount(), before), 5000);
  // And the namespace is as it was.
  assert.deepEqual(ipNames(a), ['lo']);
});
