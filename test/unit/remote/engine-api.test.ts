// inspectEngineNetwork against a stand-in engine on a unix socket: only a 404
// reads as "does not know"; a 200 gives the endpoint ids (joined or not); any
// other reply, a body that does not parse, another network's body, or no answer
// before the signal reads as "cannot tell".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { inspectEngineNetwork } from '../../../src/remote/engine-api';

const ID = 'ab'.repeat(32);

test('inspectEngineNetwork: 404 does not know, 200 lists endpoints, everything else cannot tell', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-engine-api-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let reply: (res: http.ServerResponse) => void = () => undefined;
  const urls: string[] = [];
  const server = http.createServer((req, res) => {
    urls.push(`${req.method} ${req.url}`);
    reply(res);
  });
  const sock = path.join(dir, 'engine.sock');
  await new Promise<void>((r) => server.listen(sock, r));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const addr = { kind: 'unix' as const, path: sock };
  const ask = (ms = 2000) => inspectEngineNetwork(addr, ID, AbortSignal.timeout(ms));
  const json = (status: number, body: unknown) => (res: http.ServerResponse) => {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };

  reply = json(200, {
    Id: ID,
    Containers: {
      ['c'.repeat(64)]: { EndpointID: 'e1'.padEnd(64, '0') },
      ['ep-' + 'e2'.padEnd(64, '0')]: { EndpointID: 'e2'.padEnd(64, '0') },
    },
  });
  const known = await ask();
  assert.equal(known.known, true);
  assert.deepEqual([...(known as { endpoints: Set<string> }).endpoints].sort(), [
    'e1'.padEnd(64, '0'),
    'e2'.padEnd(64, '0'),
  ]);
  assert.deepEqual(urls, [`GET /networks/${ID}`]);
  reply = json(200, { Id: ID, Containers: {} });
  assert.deepEqual(await ask(), { known: true, endpoints: new Set() });

  reply = json(404, { message: `network ${ID} not found` });
  assert.deepEqual(await ask(), { known: false });

  const cannot: [string, (res: http.ServerResponse) => void, RegExp][] = [
    ['a 500', json(500, { message: 'boom' }), /HTTP 500/],
    ['a 409', json(409, { message: 'ambiguous' }), /HTTP 409/],
    ['not JSON', json(200, '<html>'), /does not parse/],
    [
      'another network (matched by name)',
      json(200, { Id: 'cd'.repeat(32), Containers: {} }),
      /does not parse/,
    ],
    ['an endpoint without its id', json(200, { Id: ID, Containers: { x: {} } }), /does not parse/],
    ['silence', () => undefined, /did not answer in time/],
    [
      'a body cut short',
      (res) => {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '100' });
        res.write('{"Id":');
      },
      /did not answer in time|cut short/,
    ],
  ];
  for (const [what, r, why] of cannot) {
    reply = r;
    const a = await ask(300);
    assert.equal(a.known, undefined, what);
    assert.match((a as { reason: string }).reason, why, what);
  }
  const absent = await inspectEngineNetwork(
    { kind: 'unix', path: path.join(dir, 'none.sock') },
    ID,
    AbortSignal.timeout(500),
  );
  assert.equal(absent.known, undefined);
  assert.match((absent as { reason: string }).reason, /ENOENT/);
});
