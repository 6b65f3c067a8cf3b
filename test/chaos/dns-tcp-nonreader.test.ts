// DNS over TCP has backpressure: a sandbox that pipelines queries and never
// reads the answers cannot grow the daemon's memory past a fixed bound, and
// other sandboxes keep being answered meanwhile (the probe's F4: 153 MB -> 3.4 GB).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { rss, tcpQueryFlood } from '../lib/dns-clients';

const SECS = Number(process.env.CHAOS_DNS_FLOOD_SECS || 30);

function dig(nsPath: string, name: string, tcp = false): Promise<string> {
  return new Promise((resolve) =>
    execFile(
      'nsenter',
      [
        `--net=${nsPath}`,
        'dig',
        '@127.0.0.11',
        '+short',
        '+time=2',
        '+tries=2',
        ...(tcp ? ['+tcp'] : []),
        name,
      ],
      { encoding: 'utf8' },
      (_e, out) => resolve(out.trim()),
    ),
  );
}

test(`a non-reading DNS-over-TCP client for ${SECS} s: daemon RSS grows < 20 MB, others answered`, async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  assert.equal((await d.request('POST', '/networks/create', { Name: 'web' })).status, 201);
  const mk = async (name: string) => {
    const r = await d.request('POST', '/sandboxes', { Name: name, Networks: [{ Network: 'web' }] });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return (await d.request('GET', `/sandboxes/${name}`)).body;
  };
  const flooder = await mk('flooder');
  const other = await mk('other');
  const flooderIp = flooder.Networks.web.IPAddress;
  assert.equal(await dig(other.SandboxKey, 'flooder', true), flooderIp);
  // V8 sizes its heap to the allocation rate: any busy daemon, answering clients that do read,
  // settles ~50 MB above an idle one (measured). A reading flood first; the bound checked is
  // what a client that never reads adds on top (before the fix: +937 MB in 20 s).
  await tcpQueryFlood(flooder.SandboxKey, 'other', { conns: 8, secs: 8, read: true });
  const pid = d.proc.pid!;
  const before = rss(pid);
  let peak = before;
  let answered = 0;
  let asked = 0;
  const flood = tcpQueryFlood(flooder.SandboxKey, 'other', { conns: 8, secs: SECS, read: false });
  let done = false;
  void flood.finally(() => (done = true));
  const samples: number[] = [];
  while (!done) {
    samples.push(Math.round((rss(pid) - before) / 2 ** 20));
    peak = Math.max(peak, rss(pid));
    asked++;
    if ((await dig(other.SandboxKey, 'flooder', asked % 2 === 0)) === flooderIp) answered++;
    await new Promise((r) => setTimeout(r, 500));
  }
  const { sent, closed } = await flood;
  peak = Math.max(peak, rss(pid));
  const growth = (peak - before) / 2 ** 20;
  t.diagnostic(
    `sent ${(sent / 2 ** 20).toFixed(1)} MiB; server closed ${closed} connections; RSS ${(before / 2 ** 20).toFixed(0)} MB, peak +${growth.toFixed(1)} MB; other sandbox answered ${answered}/${asked}; RSS growth MB ${samples.join(' ')}`,
  );
  assert.ok(sent > 1 << 20, `the client did send (${sent} bytes)`);
  assert.ok(growth < 20, `daemon RSS grew ${growth.toFixed(1)} MB`);
  assert.equal(answered, asked, 'the other sandbox was answered every time (UDP and TCP)');
  if (SECS >= 15) assert.ok(closed >= 8, `stalled connections are closed by the daemon (${closed} closes)`);
  // And the flooder's own resolver still answers afterwards.
  assert.equal(await dig(flooder.SandboxKey, 'other'), other.Networks.web.IPAddress);
});
