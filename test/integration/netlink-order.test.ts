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

test('a request on one socket made right after one on another is handled after it, even when the I/O thread lags', async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  const sb = await l.ns('sb');
  for (let i = 0; i < 3; i++) {
    // A request on the sandbox's socket: its answer comes while the I/O thread still lags behind it.
    await sb.handle.linkSet('lo', { up: true });
    const made = sb.handle.linkAdd({ kind: 'veth', name: `eth${i}`, peer: { name: `hv${i}`, netns: host.path } });
    const named = host.handle.linkSet(`hv${i}`, { up: true, alias: `peer of eth${i}` });
    const [a, b] = await Promise.allSettled([made, named]);
    assert.equal(a.status, 'fulfilled', `link add: ${a.status === 'rejected' ? a.reason : ''}`);
    assert.equal(b.status, 'fulfilled', `link set by name right after: ${b.status === 'rejected' ? b.reason : ''}`);
    const [link] = host.ipj<{ ifname: string; flags: string[]; ifalias?: string }[]>('link', 'show', `hv${i}`);
    assert.equal(link.ifalias, `peer of eth${i}`);
    assert.ok(link.flags.includes('UP'));
  }
});
