// SIGTERM with requests in flight (issue 19): the API and plugin sockets go, every request
// a client had sent gets its answer (no socket hang up, EPIPE or ECONNRESET),
// idle keep-alive connections are closed, and the process exits right after the
// last answer; a client that never reads its answer holds the stop no longer
// than the drain bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { eventually, lab } from '../lib/fixture';
import { spawnSync } from 'node:child_process';
import { CNMD, restartDaemon, startDaemon } from '../lib/daemon';
import { DRAIN_GRACE_MS } from '../../src/http-drain';

/** A remote IPAM plugin whose RequestPool answers only when the test says so: a request held in flight. */
function heldIpam(dir: string) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let arrived!: () => void;
  const requested = new Promise<void>((resolve) => (arrived = resolve));
  const server = http.createServer((req, res) => {
    const answer = (body: unknown) => {
      res.setHeader('Content-Type', 'application/vnd.docker.plugins.v1.1+json');
      res.end(JSON.stringify(body));
    };
    req.resume();
    req.on('end', () => {
      switch (req.url) {
        case '/Plugin.Activate':
          return answer({ Implements: ['IpamDriver'] });
        case '/IpamDriver.GetDefaultAddressSpaces':
          return answer({ LocalDefaultAddressSpace: 'l', GlobalDefaultAddressSpace: 'g' });
        case '/IpamDriver.RequestPool':
          arrived();
          return void released.then(() => answer({ PoolID: 'p1', Pool: '10.78.0.0/24', Data: {} }));
        case '/IpamDriver.RequestAddress':
          return answer({ Address: '10.78.0.1/24', Data: {} });
        default:
          return answer({});
      }
    });
  });
  fs.mkdirSync(dir, { recursive: true });
  const sock = path.join(dir, 'held.sock');
  return {
    requested,
    release,
    listen: () => new Promise<void>((resolve) => server.listen(sock, () => resolve())),
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

type Outcome = { status: number; body: string; at: number } | { error: string; at: number };

/**
 * One request on a connection of its own (or the agent's): `sent` once the whole request is handed to the
 * kernel, `outcome` its answer or the client's error.
 */
function send(sock: string, method: string, p: string, body?: unknown, agent: http.Agent | false = false) {
  const data = body === undefined ? undefined : JSON.stringify(body);
  let sent!: () => void;
  const written = new Promise<void>((resolve) => (sent = resolve));
  const outcome = new Promise<Outcome>((resolve) => {
    const req = http.request(
      {
        socketPath: sock,
        method,
        path: p,
        agent,
        headers: {
          'Content-Type': 'application/json',
          ...(data ? { 'Content-Length': Buffer.byteLength(data) } : {}),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, body: text, at: Date.now() }));
        res.on('error', (e) =>
          resolve({ error: `${(e as NodeJS.ErrnoException).code} ${e.message}`, at: Date.now() }),
        );
      },
    );
    req.on('finish', () => sent());
    req.on('error', (e) => {
      sent();
      resolve({ error: `${(e as NodeJS.ErrnoException).code} ${e.message}`, at: Date.now() });
    });
    req.end(data);
  });
  return { sent: written, outcome };
}

test('SIGTERM: every request sent before it gets its answer, idle connections close, the daemon exits right after the last answer', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const plugin = heldIpam(d.pluginDir);
  await plugin.listen();
  t.after(() => plugin.close());
  let r = await d.request('POST', '/networks/create', {
    Name: 'web',
    IPAM: { Config: [{ Subnet: '10.79.0.0/24' }] },
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  // An idle keep-alive connection (as the docker CLI and the engine keep them): closed by the stop, not waited for.
  const keep = new http.Agent({ keepAlive: true, maxSockets: 1 });
  assert.equal(((await send(d.sock, 'GET', '/_ping', undefined, keep).outcome) as any).status, 200);
  const idle = Object.values(keep.freeSockets).flat()[0]!;
  assert.ok(idle, 'the agent keeps its connection');
  const idleClosed = new Promise<void>((resolve) => idle.once('close', () => resolve()));
  const exited = new Promise<number>((resolve) => d.proc.once('exit', () => resolve(Date.now())));
  // One request held in flight by a plugin, then a burst on connections of their own, every one sent (handed
  // to the kernel: in the accept queue, unread, or being served) before the signal.
  const held = send(d.sock, 'POST', '/networks/create', { Name: 'held', IPAM: { Driver: 'held' } });
  await plugin.requested;
  const burst = [
    ...Array.from({ length: 12 }, (_, i) =>
      send(d.sock, 'POST', '/sandboxes', { Name: `s${i}`, Networks: [{ Network: 'web' }] }),
    ),
    ...Array.from({ length: 4 }, (_, i) => send(d.sock, 'POST', '/networks/create', { Name: `n${i}` })),
    ...Array.from({ length: 12 }, () => send(d.sock, 'GET', '/networks')),
    // The plugin sockets drain the same way (the engine's calls).
    ...['cnmd-bridge', 'cnmd-ipam'].flatMap((p) =>
      Array.from({ length: 4 }, () =>
        send(path.join(d.pluginDir, `${p}.sock`), 'POST', '/Plugin.Activate', {}),
      ),
    ),
  ];
  await Promise.all(burst.map((b) => b.sent));
  d.proc.kill('SIGTERM');
  await eventually(() => assert.match(d.logs(), /"msg":"stopping"/), 10_000);
  // Stopped accepting: the socket is gone, a new client is refused.
  await eventually(() => assert.equal(fs.existsSync(d.sock), false));
  const late = await send(d.sock, 'GET', '/_ping').outcome;
  assert.ok('error' in late && /ENOENT/.test(late.error), JSON.stringify(late));
  await idleClosed;
  // The burst is answered while the held request still keeps the daemon.
  const answers = await Promise.all(burst.map((b) => b.outcome));
  const failed = answers.filter((a) => 'error' in a);
  assert.deepEqual(failed, [], `${failed.length} of ${answers.length} requests got no answer`);
  for (const a of answers as { status: number; body: string }[])
    assert.ok(a.status === 200 || a.status === 201, `${a.status} ${a.body}`);
  assert.equal(d.proc.exitCode, null, 'still running while a request is in flight');
  plugin.release();
  const last = await held.outcome;
  assert.ok('status' in last, JSON.stringify(last));
  assert.equal(last.status, 201, last.body);
  const exitAt = await exited;
  assert.equal(d.proc.exitCode, 0, d.logs());
  // Prompt, not a benchmark: the answer is the last thing before the exit, with room for a loaded machine.
  t.diagnostic(`exited ${exitAt - last.at} ms after the last answer`);
  assert.ok(exitAt - last.at < 1500, `exited ${exitAt - last.at} ms after the last answer`);
  assert.doesNotMatch(d.logs(), /did not finish|are cut/);
  // What was answered is what was done: the next start has every sandbox and network it answered 201 for.
  const d2 = await restartDaemon(t, l, d);
  r = await d2.request('GET', '/sandboxes');
  assert.deepEqual(
    r.body.map((s: any) => s.Name).sort(),
    Array.from({ length: 12 }, (_, i) => `s${i}`).sort(),
  );
  r = await d2.request('GET', '/networks');
  for (const n of ['held', 'n0', 'n1', 'n2', 'n3'])
    assert.ok(
      r.body.some((x: any) => x.Name === n),
      n,
    );
  keep.destroy();
});

test('SIGTERM: a slow reader gets its whole answer; one that never reads holds the stop no longer than the drain bound', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  // An answer larger than the socket buffers: 3 MB of label.
  const blob = 'x'.repeat(3 << 20);
  const r = await d.request('POST', '/sandboxes', {
    Name: 'big',
    Networks: [{ Network: 'none' }],
    Labels: { blob },
  });
  assert.equal(r.status, 201, JSON.stringify(r.body).slice(0, 200));
  // Never reads: a raw connection, paused (it reads up to its high-water mark, then the kernel buffers fill).
  const stuck = net.connect(d.sock);
  await new Promise<void>((resolve) => stuck.once('connect', () => resolve()));
  stuck.on('error', () => undefined); // its connection is cut: the test only holds it
  const stuckClosed = new Promise<void>((resolve) => stuck.once('close', () => resolve()));
  stuck.write('GET /sandboxes/big HTTP/1.1\r\nHost: cnmd\r\n\r\n');
  // Reads slowly: its answer has started, and it reads the rest once the stop has begun.
  let slowRes!: http.IncomingMessage;
  const slowStarted = new Promise<void>((resolve) =>
    http
      .request({ socketPath: d.sock, path: '/sandboxes/big', agent: false }, (res) => {
        slowRes = res;
        res.pause();
        resolve();
      })
      .end(),
  );
  await slowStarted;
  await eventually(() => assert.ok(stuck.readableLength > 0), 10_000);
  const exited = new Promise<number>((resolve) => d.proc.once('exit', () => resolve(Date.now())));
  const signalled = Date.now();
  d.proc.kill('SIGTERM');
  await eventually(() => assert.equal(fs.existsSync(d.sock), false), 5000);
  const slowBody = await new Promise<string>((resolve, reject) => {
    let text = '';
    slowRes.setEncoding('utf8');
    slowRes.on('data', (c) => (text += c));
    slowRes.on('end', () => resolve(text));
    slowRes.on('error', reject);
    slowRes.resume();
  });
  assert.equal(slowRes.statusCode, 200);
  assert.equal(JSON.parse(slowBody).Labels.blob, blob, 'the whole answer');
  assert.equal(d.proc.exitCode, null, 'the answer that is not read keeps it');
  const exitAt = await exited;
  t.diagnostic(`exited ${exitAt - signalled} ms after SIGTERM (bound ${DRAIN_GRACE_MS} ms)`);
  assert.equal(d.proc.exitCode, 0, d.logs());
  assert.ok(exitAt - signalled >= DRAIN_GRACE_MS - 100, 'the answer in flight was given its time');
  assert.ok(exitAt - signalled < DRAIN_GRACE_MS + 4000, `exited ${exitAt - signalled} ms after SIGTERM`);
  const cut = d
    .logs()
    .split('\n')
    .filter((x) => /did not finish within the drain bound/.test(x));
  assert.equal(cut.length, 1, d.logs().slice(-2000));
  assert.equal(JSON.parse(cut[0]).connections, 1);
  stuck.resume(); // what reached its buffers, then the end of a connection that was cut
  await stuckClosed;
  // The bound is in --help.
  const help = spawnSync(process.execPath, [CNMD, '--help'], { encoding: 'utf8' }).stdout;
  assert.match(
    help.replace(/\s+/g, ' '),
    new RegExp(`every request already sent is answered \\(for up to ${DRAIN_GRACE_MS / 1000} s`),
  );
});
