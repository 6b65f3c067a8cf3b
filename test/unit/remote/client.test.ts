// The plugin transport against a deliberately broken plugin: a real HTTP server
// on a unix socket in a temporary directory that hangs, lies, fails, or is not
// there at all. Every error must name the plugin, the method, and what to do.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { CnmdError } from '../../../src/errors';
import { PLUGIN_ACCEPT, PluginClient, isPluginStatus } from '../../../src/remote/client';

type T = { after(fn: () => void | Promise<void>): void };

interface Seen {
  method: string;
  httpMethod: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function tempDir(t: T): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-plug-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `reply` gets the method name ("NetworkDriver.Join") and writes the answer itself, or never. */
async function brokenPlugin(
  t: T,
  reply: (method: string, body: string, res: http.ServerResponse) => void,
  sock?: string,
) {
  const file = sock ?? path.join(tempDir(t), 'broken.sock');
  const seen: Seen[] = [];
  let connections = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const method = (req.url ?? '').slice(1);
      seen.push({ method, httpMethod: req.method ?? '', headers: req.headers, body });
      reply(method, body, res);
    });
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(file, resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { sock: file, seen, server, connections: () => connections };
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/vnd.docker.plugins.v1.1+json' });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function client(t: T, sock: string, opts: { timeoutMs?: number; retryMs?: number } = {}): PluginClient {
  const c = new PluginClient(
    { name: 'broken', addr: { kind: 'unix', path: sock } },
    { timeoutMs: 2000, retryMs: 300, ...opts },
  );
  t.after(() => c.close());
  return c;
}

/** The error is a CnmdError with `code` that names the plugin and the method, plus `fragments`. */
function check(e: unknown, code: string, method: string, ...fragments: RegExp[]): true {
  assert.ok(e instanceof CnmdError, `not a CnmdError: ${e}`);
  assert.equal(e.code, code, e.message);
  assert.match(e.message, /remote plugin "broken" \(unix:\/\//);
  assert.ok(e.message.includes(method), `${e.message} does not name ${method}`);
  assert.equal(e.details.plugin, 'broken');
  assert.equal(e.details.method, method);
  for (const f of fragments) assert.match(e.message, f);
  return true;
}

test('a call is POST /<Method> with the plugin Accept header and a JSON body; no body without arguments', async (t) => {
  const p = await brokenPlugin(t, (m, _b, res) =>
    json(res, 200, m === 'Plugin.Activate' ? { Implements: ['NetworkDriver', 'IpamDriver'] } : { Ok: 1 }),
  );
  const c = client(t, p.sock);
  assert.deepEqual(await c.call('NetworkDriver.CreateNetwork', { NetworkID: 'n1', Options: {} }), { Ok: 1 });
  assert.deepEqual(await c.activate(), ['NetworkDriver', 'IpamDriver']);
  await c.require('IpamDriver');
  assert.equal(p.seen.length, 2, 'activation is cached');
  assert.equal(p.seen[0].httpMethod, 'POST');
  assert.equal(p.seen[0].method, 'NetworkDriver.CreateNetwork');
  assert.equal(p.seen[0].headers.accept, PLUGIN_ACCEPT);
  assert.equal(PLUGIN_ACCEPT, 'application/vnd.docker.plugins.v1.2+json');
  assert.deepEqual(JSON.parse(p.seen[0].body), { NetworkID: 'n1', Options: {} });
  assert.equal(p.seen[1].method, 'Plugin.Activate');
  assert.equal(p.seen[1].body, '');
  assert.equal(p.connections(), 1, 'one kept-alive connection for consecutive calls');
});

test('activation: Implements must be a list; a plugin without the wanted protocol is refused', async (t) => {
  const bad = await brokenPlugin(t, (_m, _b, res) => json(res, 200, { Implements: 'NetworkDriver' }));
  await assert.rejects(client(t, bad.sock).activate(), (e) =>
    check(e, 'MALFORMED_REPLY', 'Plugin.Activate', /Implements/, /must answer/),
  );
  const ipamOnly = await brokenPlugin(t, (_m, _b, res) => json(res, 200, { Implements: ['IpamDriver'] }));
  await assert.rejects(client(t, ipamOnly.sock).require('NetworkDriver'), (e) =>
    check(e, 'PLUGIN_ERROR', 'Plugin.Activate', /implements IpamDriver, not NetworkDriver/),
  );
});

test('(a) a plugin that never answers: TIMEOUT after the deadline, not retried', async (t) => {
  const p = await brokenPlugin(t, () => undefined);
  const c = client(t, p.sock, { timeoutMs: 200, retryMs: 5000 });
  const start = Date.now();
  await assert.rejects(c.call('NetworkDriver.Join', { NetworkID: 'n' }), (e) =>
    check(e, 'TIMEOUT', 'NetworkDriver.Join', /no reply within 0\.2 s/, /check that the plugin is running/),
  );
  const elapsed = Date.now() - start;
  assert.ok(elapsed >= 190 && elapsed < 1500, `took ${elapsed} ms`);
  assert.equal(p.seen.length, 1, 'a request that may have been applied is not sent again');
  // A per-call deadline overrides the client's.
  const s2 = Date.now();
  await assert.rejects(c.call('NetworkDriver.Leave', {}, { timeoutMs: 50 }), (e) =>
    check(e, 'TIMEOUT', 'NetworkDriver.Leave'),
  );
  assert.ok(Date.now() - s2 < 1000);
});

test('(a) a plugin that sends headers then stalls the body is timed out too', async (t) => {
  const p = await brokenPlugin(t, (_m, _b, res) => {
    res.writeHead(200, { 'Content-Length': '100' });
    res.write('{"Err"');
  });
  await assert.rejects(client(t, p.sock, { timeoutMs: 200 }).call('NetworkDriver.CreateEndpoint', {}), (e) =>
    check(e, 'TIMEOUT', 'NetworkDriver.CreateEndpoint'),
  );
});

test('(b) 200 with a body that is not JSON: MALFORMED_REPLY with the body quoted', async (t) => {
  const p = await brokenPlugin(t, (m, _b, res) =>
    json(res, 200, m.endsWith('Array') ? '[1,2]' : '<html>oops</html>'),
  );
  const c = client(t, p.sock);
  await assert.rejects(c.call('NetworkDriver.CreateNetwork', {}), (e) =>
    check(
      e,
      'MALFORMED_REPLY',
      'NetworkDriver.CreateNetwork',
      /not valid JSON/,
      /<html>oops/,
      /fix the plugin/,
    ),
  );
  await assert.rejects(c.call('NetworkDriver.Array', {}), (e) =>
    check(e, 'MALFORMED_REPLY', 'NetworkDriver.Array', /not an object/),
  );
});

test('200 with an empty body or null is an empty reply', async (t) => {
  const p = await brokenPlugin(t, (m, _b, res) => json(res, 200, m === 'A' ? '' : 'null'));
  const c = client(t, p.sock);
  assert.deepEqual(await c.call('A', {}), {});
  assert.deepEqual(await c.call('B', {}), {});
});

test('(c) 500 with {"Err"}: PLUGIN_ERROR carrying the status and the plugin message; raw body otherwise', async (t) => {
  const p = await brokenPlugin(t, (m, _b, res) =>
    m === 'Raw' ? json(res, 503, 'service melted') : json(res, 500, { Err: 'subnet 10.1.0.0/24 overlaps' }),
  );
  const c = client(t, p.sock);
  await assert.rejects(c.call('NetworkDriver.CreateNetwork', {}), (e) => {
    check(
      e,
      'PLUGIN_ERROR',
      'NetworkDriver.CreateNetwork',
      /HTTP 500/,
      /subnet 10\.1\.0\.0\/24 overlaps/,
      /plugin's own message/,
    );
    assert.equal((e as CnmdError).details.status, 500);
    assert.equal((e as CnmdError).details.pluginMessage, 'subnet 10.1.0.0/24 overlaps');
    return true;
  });
  await assert.rejects(c.call('Raw', {}), (e) =>
    check(e, 'PLUGIN_ERROR', 'Raw', /HTTP 503/, /service melted/),
  );
});

test('(d) 200 with a non-empty error field: "Err" for NetworkDriver, "Error" for IpamDriver', async (t) => {
  const p = await brokenPlugin(t, (m, _b, res) =>
    json(
      res,
      200,
      m.startsWith('IpamDriver')
        ? { Error: 'pool exhausted', Address: '' }
        : m.endsWith('Ok')
          ? { Err: '' }
          : { Err: 'no such network n1' },
    ),
  );
  const c = client(t, p.sock);
  await assert.rejects(
    c.call('NetworkDriver.DeleteNetwork', { NetworkID: 'n1' }, { errorField: 'Err' }),
    (e) => check(e, 'PLUGIN_ERROR', 'NetworkDriver.DeleteNetwork', /refused: no such network n1/),
  );
  await assert.rejects(c.call('IpamDriver.RequestAddress', {}, { errorField: 'Error' }), (e) =>
    check(e, 'PLUGIN_ERROR', 'IpamDriver.RequestAddress', /refused: pool exhausted/),
  );
  // The other protocol's field is data, not an error; an empty Err is success.
  assert.deepEqual(await c.call('IpamDriver.RequestAddress', {}, { errorField: 'Err' }), {
    Error: 'pool exhausted',
    Address: '',
  });
  assert.deepEqual(await c.call('NetworkDriver.Ok', {}, { errorField: 'Err' }), { Err: '' });
});

test('(e) 404: a PLUGIN_ERROR the caller can recognise (optional methods)', async (t) => {
  const p = await brokenPlugin(t, (_m, _b, res) => json(res, 404, '404 page not found\n'));
  await assert.rejects(client(t, p.sock).call('NetworkDriver.ProgramExternalConnectivity', {}), (e) => {
    check(
      e,
      'PLUGIN_ERROR',
      'NetworkDriver.ProgramExternalConnectivity',
      /does not implement NetworkDriver\.ProgramExternalConnectivity \(HTTP 404\)/,
    );
    assert.ok(isPluginStatus(e, 404));
    assert.ok(!isPluginStatus(e, 500));
    return true;
  });
});

test('(f) a plugin not listening yet: connect failures are retried until it is', async (t) => {
  const sock = path.join(tempDir(t), 'late.sock');
  const c = client(t, sock, { retryMs: 3000 });
  let started: Promise<unknown> | undefined;
  const timer = setTimeout(() => {
    started = brokenPlugin(t, (_m, _b, res) => json(res, 200, { Implements: ['NetworkDriver'] }), sock);
  }, 250);
  t.after(() => clearTimeout(timer));
  const start = Date.now();
  assert.deepEqual(await c.activate(), ['NetworkDriver']);
  assert.ok(Date.now() - start >= 200);
  await started;
});

test('(f) a plugin that never comes: bounded, and the error says what is missing', async (t) => {
  const dir = tempDir(t);
  const c = client(t, path.join(dir, 'never.sock'), { retryMs: 400 });
  const start = Date.now();
  await assert.rejects(c.call('NetworkDriver.GetCapabilities'), (e) => {
    check(
      e,
      'PLUGIN_ERROR',
      'NetworkDriver.GetCapabilities',
      /never\.sock does not exist/,
      /attempts over/,
      /start the plugin/,
    );
    assert.equal((e as CnmdError).errno, 'ENOENT');
    return true;
  });
  const elapsed = Date.now() - start;
  assert.ok(elapsed < 1500, `took ${elapsed} ms`);

  // A socket file nobody listens on (a plugin that died): ECONNREFUSED, also bounded.
  const p = await brokenPlugin(t, () => undefined);
  const stale = path.join(dir, 'stale.sock');
  fs.linkSync(p.sock, stale);
  p.server.closeAllConnections();
  await new Promise<void>((resolve) => p.server.close(() => resolve()));
  await assert.rejects(client(t, stale, { retryMs: 300 }).call('NetworkDriver.Leave', {}), (e) => {
    check(e, 'PLUGIN_ERROR', 'NetworkDriver.Leave', /nothing accepts connections/, /stale socket/);
    assert.equal((e as CnmdError).errno, 'ECONNREFUSED');
    return true;
  });
});

test('a plugin that closes the connection mid-reply: an error naming a crash, not retried', async (t) => {
  const p = await brokenPlugin(t, (_m, _b, res) => res.socket?.destroy());
  await assert.rejects(client(t, p.sock).call('NetworkDriver.Join', {}), (e) =>
    check(e, 'PLUGIN_ERROR', 'NetworkDriver.Join', /closed the connection|cannot talk/),
  );
  assert.equal(p.seen.length, 1);
});

test('a kept-alive connection the plugin closed in between is replaced transparently', async (t) => {
  const p = await brokenPlugin(t, (_m, _b, res) => json(res, 200, {}));
  const c = client(t, p.sock);
  await c.call('A', {});
  p.server.closeIdleConnections();
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(await c.call('B', {}), {});
  assert.deepEqual(
    p.seen.map((s) => s.method),
    ['A', 'B'],
  );
});
