// Filters are matched as Docker matches them (Go's RE2: linear time), so no
// filter value can stall the daemon: a pathological pattern answers at once,
// and /_ping, the sandboxes' DNS and the plugin sockets keep answering while
// such requests run; SIGTERM stops the daemon even with them in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { lab } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { unixRequest } from '../lib/curl';

const A40 = 'a'.repeat(40);
const evil = {
  networks: { filters: JSON.stringify({ id: { '([0-9a-f]+)+g': true } }) },
  sandboxes: { filters: JSON.stringify({ name: { '(a+)+b': true } }) },
};

function dig(nsPath: string, name: string): Promise<string> {
  return new Promise((resolve) =>
    execFile(
      'nsenter',
      [`--net=${nsPath}`, 'dig', '@127.0.0.11', '+short', '+time=3', '+tries=1', name],
      { encoding: 'utf8' },
      (_e, out) => resolve(out.trim()),
    ),
  );
}

async function setup(t: Parameters<typeof lab>[0]): Promise<{ d: RunningDaemon; key: string; ip: string }> {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  assert.equal((await d.request('POST', '/networks/create', { Name: 'web' })).status, 201);
  assert.equal(
    (await d.request('POST', '/sandboxes', { Name: A40, Networks: [{ Network: 'web' }] })).status,
    201,
  );
  const s1 = await d.request('POST', '/sandboxes', { Name: 's1', Networks: [{ Network: 'web' }] });
  const sb = (await d.request('GET', `/sandboxes/${s1.body.Id}`)).body;
  const ip = (await d.request('GET', `/sandboxes/${A40}`)).body.Networks.web.IPAddress;
  return { d, key: sb.SandboxKey, ip };
}

test('a pathological name/id filter answers at once; ping, DNS and plugins answer meanwhile', async (t) => {
  const { d, key, ip } = await setup(t);
  const started = Date.now();
  const [nets, sbs, ping, name, plugin] = await Promise.all([
    unixRequest(d.sock, 'GET', '/networks', { query: evil.networks, maxTime: 8 }),
    unixRequest(d.sock, 'GET', '/sandboxes', { query: evil.sandboxes, maxTime: 8 }),
    unixRequest(d.sock, 'GET', '/_ping', { maxTime: 8 }),
    dig(key, A40),
    unixRequest(path.join(d.pluginDir, 'cnmd-ipam.sock'), 'POST', '/Plugin.Activate', { maxTime: 8 }),
  ]);
  assert.equal(nets.status, 200, `networks: rc ${nets.rc} ${nets.text}`);
  assert.deepEqual(nets.body, [], 'nothing has a g in its hex id');
  assert.equal(sbs.status, 200, `sandboxes: rc ${sbs.rc} ${sbs.text}`);
  assert.deepEqual(sbs.body, []);
  assert.equal(ping.status, 200);
  assert.equal(name, ip, 'the sandbox DNS answered');
  assert.equal(plugin.status, 200);
  assert.ok(Date.now() - started < 8000, `all answered (${Date.now() - started} ms)`);

  // Docker's semantics hold: exact value, else an unanchored RE2 search; a bad expression matches nothing.
  const names = async (filters: unknown, what = 'networks') => {
    const r = await unixRequest(d.sock, 'GET', `/${what}`, { query: { filters: JSON.stringify(filters) } });
    assert.equal(r.status, 200, r.text);
    return r.body.map((n: any) => n.Name).sort();
  };
  assert.deepEqual(await names({ name: { '^we': true } }), ['web']);
  assert.deepEqual(await names({ name: { 'o[sn]': true } }), ['host', 'none']);
  assert.deepEqual(await names({ name: { '(': true } }), []);
  assert.deepEqual(await names({ name: ['^a{40}$'] }, 'sandboxes'), [A40]);

  // Values that would cost more than a linear bound to compile are refused, saying why.
  for (const [v, want] of [
    ['x'.repeat(1025), /longer than 1024 bytes/],
    ['x{2,1000}'.repeat(20), /too many counted repetitions/],
  ] as const) {
    const r = await unixRequest(d.sock, 'GET', '/networks', {
      query: { filters: JSON.stringify({ name: [v] }) },
    });
    assert.equal(r.status, 400, r.text);
    assert.match(r.body.message, want);
  }
});

test('SIGTERM stops the daemon while pathological filter requests are in flight', async (t) => {
  const { d } = await setup(t);
  const inflight = [1, 2, 3].map(() =>
    unixRequest(d.sock, 'GET', '/networks', { query: evil.networks, maxTime: 5 }),
  );
  await new Promise((r) => setTimeout(r, 50));
  const exit = await Promise.race([
    d.stop(),
    new Promise<string>((r) => setTimeout(() => r('still running after 12 s'), 12_000)),
  ]);
  assert.equal(exit, 0, 'clean exit');
  await Promise.all(inflight);
});
