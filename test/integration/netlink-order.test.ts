// Requests reach the kernel in the order they were made, across sockets: the
// bridge driver makes a veth on the sandbox's socket and, without waiting,
// names its host side on the host's socket. The I/O thread here pauses 20 ms
// after each send before its bookkeeping (CNMD_TEST_IO_LAG_US, as a thread
// preempted at that point would), which is when a FIFO of ready sockets let the
// host socket's request overtake the sandbox socket's (ENODEV in ~1 of 5000
// attaches under load).
import '../lib/io-lag';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab } from '../lib/fixture';
import { NETLINK_ROUTE } from '../../native';
import { NetlinkSocket } from '../../src/netlink/socket';
import { RTM_GETLINK, RTM_NEWLINK } from '../../src/netlink/rtnl/constants';
import { decodeLink, encodeLinkDump } from '../../src/netlink/rtnl/link';

test('a request on one socket made right after one on another is handled after it, even when the I/O thread lags', async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  const sb = await l.ns('sb');
  for (let i = 0; i < 3; i++) {
    // A request on the sandbox's socket: its answer comes while the I/O thread still lags behind it.
    await sb.handle.linkSet('lo', { up: true });
    const made = sb.handle.linkAdd({
      kind: 'veth',
      name: `eth${i}`,
      peer: { name: `hv${i}`, netns: host.path },
    });
    const named = host.handle.linkSet(`hv${i}`, { up: true, alias: `peer of eth${i}` });
    const [a, b] = await Promise.allSettled([made, named]);
    assert.equal(a.status, 'fulfilled', `link add: ${a.status === 'rejected' ? a.reason : ''}`);
    assert.equal(
      b.status,
      'fulfilled',
      `link set by name right after: ${b.status === 'rejected' ? b.reason : ''}`,
    );
    const [link] = host.ipj<{ ifname: string; flags: string[]; ifalias?: string }[]>(
      'link',
      'show',
      `hv${i}`,
    );
    assert.equal(link.ifalias, `peer of eth${i}`);
    assert.ok(link.flags.includes('UP'));
  }
});

test('a send the kernel refuses (EMSGSIZE) fails that request only, through the I/O thread, and the socket goes on', async (t) => {
  const l = await lab(t);
  const ns = await l.ns('a');
  const sock = NetlinkSocket.open(NETLINK_ROUTE, ns.path);
  t.after(() => sock.close());
  // Larger than the socket's send buffer (8 MiB at most): sendto fails before the kernel parses anything.
  await assert.rejects(
    sock.request(RTM_NEWLINK, 0, new Uint8Array(12 << 20), { op: 'oversized' }),
    (e: unknown) => /EMSGSIZE/.test(String((e as { errno?: string }).errno ?? e)),
  );
  const replies = await sock.request(RTM_GETLINK, 0, encodeLinkDump(), { op: 'link list', dump: true });
  const names = replies.map((m) => decodeLink(m.payload).name);
  assert.ok(names.includes('lo'), `the same socket answers afterwards: ${names.join(' ')}`);
});
