// NetnsManager under a private exec-root (the lab's): namespaces as nsfs
// mounts, checked with findmnt and /proc/self/mountinfo, loopback up checked
// with `ip -j`, typed errors for duplicates, missing and invalid ids, and 50
// made at once. Nothing here touches the machine's own namespace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fdCount, lab, mountsUnder, runIn } from '../lib/fixture';
import { CnmdError } from '../../src/errors';
import type { CreatedNetns } from '../../src/netns/netns';

/** The mount at exactly p, per findmnt (undefined if none). */
function findmnt(p: string): { target: string; source: string; fstype: string } | undefined {
  try {
    const out = execFileSync('findmnt', ['-J', '-n', '--mountpoint', p], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return JSON.parse(out).filesystems[0];
  } catch {
    return undefined; // findmnt exits 1 when nothing is mounted there
  }
}
/** mountinfo lines whose mount point is p: [fstype, source]. */
function mountinfo(p: string): string[][] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((line) => line.split(' ')[4] === p)
    .map((line) => {
      const after = line.split(' - ')[1].split(' ');
      return [after[0], after[1]];
    });
}
const ipj = (p: string, ...args: string[]) => JSON.parse(runIn(p, 'ip', ['-j', ...args]) || '[]');

/** Checks that c is a live network namespace with loopback up, and returns its nsfs inode. */
async function assertLiveNetns(c: CreatedNetns): Promise<number> {
  const st = fs.statSync(c.path);
  const m = findmnt(c.path);
  assert.ok(m, `${c.path} is a mount point`);
  assert.equal(m.fstype, 'nsfs');
  assert.equal(m.source, `nsfs[net:[${st.ino}]]`, 'a network namespace, the one the file shows');
  assert.deepEqual(
    mountinfo(c.path).map((x) => x[0]),
    ['nsfs'],
  );
  const [lo] = ipj(c.path, 'link', 'show', 'lo');
  assert.ok(lo.flags.includes('UP'), 'loopback is up');
  assert.ok(lo.flags.includes('LOWER_UP'));
  assert.deepEqual(
    ipj(c.path, 'link').map((x: any) => x.ifname),
    ['lo'],
    'nothing but loopback',
  );
  const lo4 = ipj(c.path, '-4', 'addr', 'show', 'lo')[0].addr_info.map(
    (x: any) => `${x.local}/${x.prefixlen}`,
  );
  assert.deepEqual(lo4, ['127.0.0.1/8'], 'the kernel gave loopback its address when it came up');
  const viaHandle = await c.handle.linkGet('lo');
  assert.equal(viaHandle.up, true);
  assert.equal(viaHandle.index, 1);
  return st.ino;
}

test('create: an nsfs mount under <exec-root>/netns with loopback up, its own namespace; list, exists, handle', async (t) => {
  const l = await lab(t);
  const m = l.netns;
  assert.equal(m.dir, path.join(l.root, 'netns'));
  assert.deepEqual(m.list(), [], 'no netns dir yet: an empty list');
  const c = await m.create('one');
  t.after(() => c.handle.close());
  assert.equal(c.id, 'one');
  assert.equal(c.path, path.join(l.root, 'netns', 'one'));
  assert.equal(m.pathOf('one'), c.path);
  const ino = await assertLiveNetns(c);
  assert.notEqual(ino, fs.statSync('/proc/self/ns/net').ino, "not this process's namespace");
  const d = await m.create('two.b_c-3');
  t.after(() => d.handle.close());
  const ino2 = await assertLiveNetns(d);
  assert.notEqual(ino2, ino, 'each create makes a namespace of its own');
  // A link made in one is not in the other.
  await c.handle.linkAdd({ kind: 'bridge', name: 'br-one' });
  assert.deepEqual(
    ipj(d.path, 'link').map((x: any) => x.ifname),
    ['lo'],
  );
  assert.deepEqual(
    ipj(c.path, 'link')
      .map((x: any) => x.ifname)
      .sort(),
    ['br-one', 'lo'],
  );
  // list, exists
  fs.writeFileSync(path.join(m.dir, 'plain'), ''); // not a netns: left out
  fs.mkdirSync(path.join(m.dir, 'subdir'));
  assert.deepEqual(m.list(), ['one', 'two.b_c-3']);
  assert.equal(m.exists('one'), true);
  assert.equal(m.exists('plain'), false);
  assert.equal(m.exists('missing'), false);
  // handle(id): a new handle inside it
  const h = m.handle('one');
  t.after(() => h.close());
  assert.deepEqual((await h.linkList()).map((x) => x.name).sort(), ['br-one', 'lo']);
  assert.equal(h.nsPath, c.path);
  // 128-character ids are fine.
  const long = await m.create('x'.repeat(128));
  t.after(() => long.handle.close());
  await assertLiveNetns(long);
  assert.deepEqual(m.list(), ['one', 'two.b_c-3', 'x'.repeat(128)]);
});

test('delete removes the mount and the file; the namespace lives on for handles still open', async (t) => {
  const l = await lab(t);
  const m = l.netns;
  const c = await m.create('gone');
  t.after(() => c.handle.close());
  await c.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  m.delete('gone');
  assert.equal(fs.existsSync(c.path), false, 'the file is removed');
  assert.equal(findmnt(c.path), undefined, 'findmnt: no mount');
  assert.deepEqual(mountinfo(c.path), [], 'mountinfo: no mount');
  assert.equal(m.exists('gone'), false);
  assert.deepEqual(m.list(), []);
  // The handle made with it still reaches the namespace.
  assert.deepEqual((await c.handle.linkList()).map((x) => x.name).sort(), ['br0', 'lo']);
  // A second delete, or of one never made: NOT_FOUND with ENOENT.
  assert.throws(
    () => m.delete('gone'),
    (e: any) => {
      assert.ok(e instanceof CnmdError);
      assert.equal(e.code, 'NOT_FOUND');
      assert.equal(e.errno, 'ENOENT');
      assert.equal(e.op, 'netns delete');
      assert.equal(e.object, 'gone');
      return true;
    },
  );
  assert.throws(() => m.delete('never'), { code: 'NOT_FOUND', errno: 'ENOENT' });
  assert.throws(() => m.handle('gone'), { code: 'NOT_FOUND' });
  // The id can be used again, for a new namespace.
  const again = await m.create('gone');
  t.after(() => again.handle.close());
  await assertLiveNetns(again);
  assert.deepEqual(
    (await c.handle.linkList()).map((x) => x.name).sort(),
    ['br0', 'lo'],
    'the old handle is still in the old namespace',
  );
});

test('a second create of the same id is ALREADY_EXISTS and leaves the first intact', async (t) => {
  const l = await lab(t);
  const m = l.netns;
  const c = await m.create('dup');
  t.after(() => c.handle.close());
  const ino = fs.statSync(c.path).ino;
  const fds = fdCount();
  await assert.rejects(m.create('dup'), (e: any) => {
    assert.ok(e instanceof CnmdError);
    assert.equal(e.code, 'ALREADY_EXISTS');
    assert.equal(e.errno, 'EEXIST');
    assert.equal(e.op, 'netns create');
    assert.equal(e.object, 'dup');
    return true;
  });
  // Concurrently, too: exactly one of several wins.
  const race = await Promise.allSettled(Array.from({ length: 8 }, () => m.create('race')));
  const won = race.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<CreatedNetns>[];
  assert.equal(won.length, 1);
  t.after(() => won[0].value.handle.close());
  for (const r of race)
    if (r.status === 'rejected') assert.equal((r.reason as CnmdError).code, 'ALREADY_EXISTS');
  await assertLiveNetns(won[0].value);
  assert.equal(fs.statSync(c.path).ino, ino, 'the first is the same namespace');
  assert.equal(mountinfo(c.path).length, 1, 'not mounted twice');
  await assertLiveNetns(c);
  assert.deepEqual(m.list(), ['dup', 'race']);
  assert.equal(fdCount(), fds + 1, "only the winner's handle is open");
});

test('invalid ids are INVALID_ARGUMENT for every call, and nothing is made anywhere', async (t) => {
  const l = await lab(t);
  const m = l.netns;
  await (await m.create('ok')).handle.close();
  const dirBefore = fs.readdirSync(m.dir).sort();
  const rootBefore = fs.readdirSync(l.root).sort();
  const mountsBefore = mountsUnder(l.root).length;
  for (const id of [
    '../x',
    '',
    'a/b',
    '.',
    '..',
    '.hidden',
    '-dash',
    ' ',
    'a b',
    'x'.repeat(129),
    'a\0b',
    'ü',
    undefined as unknown as string,
    7 as unknown as string,
  ]) {
    const check = (e: any) => {
      assert.ok(e instanceof CnmdError, `${JSON.stringify(id)}: ${e}`);
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, /netns id/);
      return true;
    };
    await assert.rejects(m.create(id), check);
    assert.throws(() => m.delete(id), check);
    assert.throws(() => m.exists(id), check);
    assert.throws(() => m.handle(id), check);
    assert.throws(() => m.pathOf(id), check);
  }
  assert.deepEqual(fs.readdirSync(m.dir).sort(), dirBefore);
  assert.deepEqual(fs.readdirSync(l.root).sort(), rootBefore, 'nothing made beside netns/ (no ../x)');
  assert.equal(mountsUnder(l.root).length, mountsBefore);
  assert.equal(m.exists('ok'), true);
});

test('50 namespaces created concurrently all work, each its own, and all delete cleanly', async (t) => {
  const l = await lab(t);
  const m = l.netns;
  const fds = fdCount();
  const many = await Promise.all(Array.from({ length: 50 }, (_, i) => m.create(`n${i}`)));
  t.after(() => {
    for (const n of many) n.handle.close();
  });
  assert.equal(fdCount(), fds + 50, 'one netlink socket per handle, nothing else left open');
  assert.deepEqual(m.list(), Array.from({ length: 50 }, (_, i) => `n${i}`).sort());
  const inodes = new Set<number>();
  for (const n of many) inodes.add(await assertLiveNetns(n));
  assert.equal(inodes.size, 50, '50 different namespaces');
  // Each handle works, concurrently, in its own namespace only.
  await Promise.all(many.map((n, i) => n.handle.linkAdd({ kind: 'bridge', name: `br${i}`, up: true })));
  await Promise.all(many.map((n, i) => n.handle.addrAdd(`br${i}`, `10.${i}.0.1/24`)));
  for (const [i, n] of many.entries()) {
    assert.deepEqual(
      ipj(n.path, 'link')
        .map((x: any) => x.ifname)
        .sort(),
      [`br${i}`, 'lo'],
    );
    assert.equal(ipj(n.path, '-4', 'addr', 'show', `br${i}`)[0].addr_info[0].local, `10.${i}.0.1`);
  }
  // Delete them all at once.
  for (const n of many) m.delete(n.id);
  assert.deepEqual(m.list(), []);
  for (const n of many) {
    assert.equal(fs.existsSync(n.path), false);
    assert.deepEqual(mountinfo(n.path), []);
  }
  assert.deepEqual(mountsUnder(m.dir), []);
});

test('adopt: a namespace takes a new id, the old path goes, an open handle stays valid', async (t) => {
  const l = await lab(t);
  const m = l.netns;
  const pooled = await m.create('pool-1');
  t.after(() => pooled.handle.close());
  await pooled.handle.linkAdd({ kind: 'bridge', name: 'br0' });
  const ino = fs.statSync(pooled.path).ino;
  const p = m.adopt('sandbox-1', pooled.path);
  assert.equal(p, m.pathOf('sandbox-1'));
  assert.equal(fs.existsSync(pooled.path), false);
  assert.deepEqual(mountinfo(pooled.path), []);
  assert.equal(fs.statSync(p).ino, ino, 'the same namespace under its new name');
  assert.equal(findmnt(p)?.source, `nsfs[net:[${ino}]]`);
  assert.deepEqual(m.list(), ['sandbox-1']);
  assert.deepEqual(
    ipj(p, 'link')
      .map((x: any) => x.ifname)
      .sort(),
    ['br0', 'lo'],
  );
  await pooled.handle.linkAdd({ kind: 'bridge', name: 'br1' });
  assert.deepEqual(
    ipj(p, 'link')
      .map((x: any) => x.ifname)
      .sort(),
    ['br0', 'br1', 'lo'],
  );
  // Adopting onto a taken id, or from a missing path: typed.
  const other = await m.create('other');
  t.after(() => other.handle.close());
  assert.throws(() => m.adopt('other', p), { code: 'ALREADY_EXISTS' });
  assert.throws(
    () => m.adopt('fresh', path.join(m.dir, 'missing')),
    (e: any) => e instanceof CnmdError && e.code === 'NOT_FOUND',
  );
  assert.equal(fs.existsSync(path.join(m.dir, 'fresh')), false, 'no file left for a failed adopt');
  assert.deepEqual(m.list(), ['other', 'sandbox-1']);
});

test('adopt into a netns dir someone removed: the dir is made again, and the adoption holds', async (t) => {
  const l = await lab(t);
  const m = l.netns;
  const { NetnsManager } = await import('../../src/netns/netns');
  const pool = new NetnsManager(path.join(l.root, 'pool-root'));
  const first = await pool.create('pool-a');
  t.after(() => first.handle.close());
  m.adopt('sandbox-a', first.path);
  m.delete('sandbox-a');
  fs.rmdirSync(m.dir);
  const second = await pool.create('pool-b');
  t.after(() => second.handle.close());
  const p = m.adopt('sandbox-b', second.path);
  assert.equal(fs.statSync(m.dir).isDirectory(), true);
  assert.equal(findmnt(p)?.fstype, 'nsfs');
  assert.deepEqual(m.list(), ['sandbox-b']);
  assert.deepEqual(
    ipj(p, 'link').map((x: any) => x.ifname),
    ['lo'],
  );
});

test('a handle that came with an adopted namespace reaches XFRM in that namespace', async (t) => {
  const l = await lab(t);
  const m = l.netns;
  const pooled = await m.create('pool-2');
  t.after(() => pooled.handle.close());
  const p = m.adopt('sandbox-2', pooled.path);
  // NetnsPool hands this handle to the sandbox: every part of it must keep working.
  await pooled.handle.xfrmPolicyAdd({
    selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32' },
    dir: 'out',
    priority: 9,
  });
  assert.match(runIn(p, 'ip', ['xfrm', 'policy', 'list']), /dir out priority 9/);
});

test('an exec-root whose netns dir is not a directory fails typed', async (t) => {
  const l = await lab(t);
  const root = path.join(l.root, 'broken-root');
  fs.mkdirSync(root);
  fs.writeFileSync(path.join(root, 'netns'), 'not a directory');
  const { NetnsManager } = await import('../../src/netns/netns');
  const m = new NetnsManager(root);
  await assert.rejects(m.create('a'), (e: any) => {
    assert.ok(e instanceof CnmdError, `a CnmdError, not ${e?.constructor?.name}: ${e}`);
    return true;
  });
  assert.throws(
    () => m.list(),
    (e: any) => e instanceof CnmdError,
  );
});
