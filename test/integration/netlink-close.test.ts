// A netlink socket's fd number is reused by the next socket opened once the
// I/O thread has closed it. Nothing of the old socket may reach the new one,
// and nothing may close the new one by the old number.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { lab } from '../lib/fixture';
import { NETLINK_ROUTE, NativeError, SOL_SOCKET, SO_SNDBUF, native } from '../../native';
import { NetlinkSocket } from '../../src/netlink/socket';
import { RTM_GETLINK } from '../../src/netlink/rtnl/constants';
import { encodeLinkDump } from '../../src/netlink/rtnl/link';

/** Spins (synchronously: the event loop must not run meanwhile) until the I/O thread has closed fd. */
function waitClosed(fd: number): void {
  const deadline = Date.now() + 10_000;
  while (fs.existsSync(`/proc/self/fd/${fd}`)) {
    if (Date.now() > deadline) throw new Error(`fd ${fd} still open after 10 s`);
  }
}

/** A raw watched netlink socket in nsPath whose sends of more than ~4 KiB fail (EMSGSIZE) on the I/O thread. */
function smallSocket(nsPath: string, seen: string[], name: string): number {
  const [fd] = native.socketsAt(nsPath, [NetlinkSocket.spec(NETLINK_ROUTE)]);
  native.setsockoptInt(fd, SOL_SOCKET, SO_SNDBUF, 1);
  native.bindNetlink(fd, 0);
  native.nlWatch(fd, (err, _msgs, token) => {
    if (err) seen.push(`${name} ${err.code} token ${token}`);
  });
  return fd;
}

test('a send error of a closed socket never reaches the socket that got its fd number', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const seen: string[] = [];
  const big = Buffer.alloc(64 * 1024);
  big.writeUInt32LE(big.length, 0);
  // In one synchronous stretch, so the event loop cannot deliver the old error
  // in between: the old socket's send fails on the I/O thread and is queued for
  // the loop, the old socket is closed, and a new one takes its number.
  const old = smallSocket(a.path, seen, 'old');
  native.nlSend(old, big, 7);
  native.nlClose(old);
  waitClosed(old);
  const fresh = smallSocket(a.path, seen, 'new');
  t.after(() => native.nlClose(fresh));
  assert.equal(fresh, old, 'the new socket got the old one fd number (the case under test)');
  // The new socket's own failure is queued behind the old one's: once it is seen, so would the old one be.
  native.nlSend(fresh, big, 9);
  native.nlRef(fresh, true);
  await new Promise<void>((resolve) => {
    const poll = setInterval(() => {
      if (seen.length === 0) return;
      clearInterval(poll);
      resolve();
    }, 5);
  });
  native.nlRef(fresh, false);
  assert.deepEqual(seen, ['new EMSGSIZE token 9']);
});

test('a closed socket fd number taken by a new socket: the new one answers, and a stale close of the number is refused', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const first = NetlinkSocket.open(NETLINK_ROUTE, a.path);
  const fd = (first as unknown as { fd: number }).fd;
  // Closed with a dump in flight: its replies and its close race the next socket's start.
  const pending = first.request(RTM_GETLINK, 0, encodeLinkDump(), { op: 'link list', dump: true });
  first.close();
  await assert.rejects(pending, { code: 'CLOSED' });
  waitClosed(fd);
  const second = NetlinkSocket.open(NETLINK_ROUTE, a.path);
  t.after(() => second.close());
  assert.equal((second as unknown as { fd: number }).fd, fd, 'the new socket got the old fd number');
  // A stale close of the number (a double close somewhere) would take the live socket: refused.
  assert.throws(
    () => native.close(fd),
    (e: NativeError) => e.code === 'EBUSY',
  );
  const replies = await Promise.all(
    Array.from({ length: 8 }, () =>
      second.request(RTM_GETLINK, 0, encodeLinkDump(), { op: 'link list', dump: true }),
    ),
  );
  for (const r of replies) assert.equal(r.length, 1, 'one link (lo) in a fresh netns, every time');
});

test('a netlink socket opened without CAP_NET_ADMIN works: EPERM from the FORCE buffer options falls back to the plain ones', () => {
  // A process as nobody, without capabilities, in a netns of its own (unshare makes it; setpriv drops the rest).
  const script = [
    `const { Handle } = require(${JSON.stringify(require.resolve('../../src/netlink/handle'))});`,
    'const h = Handle.at(null);',
    'h.linkList().then((l) => {',
    '  process.stdout.write(JSON.stringify({ links: l.map((x) => x.name) }));',
    '  h.close();',
    '}, (e) => { console.error(e.stack); process.exit(1); });',
  ].join('\n');
  const r = spawnSync(
    'unshare',
    [
      '--net',
      'setpriv',
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      '--inh-caps=-all',
      process.execPath,
      '-e',
      script,
    ],
    { encoding: 'utf8', timeout: 30_000 },
  );
  assert.equal(r.status, 0, `unprivileged open failed: ${r.stderr}`);
  // Its own netns holds loopback only: the dump ran through the socket the constructor set up.
  assert.deepEqual(JSON.parse(r.stdout), { links: ['lo'] });
});
