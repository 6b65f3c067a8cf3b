// A bounded number of API connections: a flood of idle connections beyond
// --max-connections is closed at once, so it cannot take the daemon's file
// descriptors, and a sandbox create on an established connection still works
// (the probe's F9: 19,850 idle connections made sandbox create fail with EMFILE).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { execFileSync } from 'node:child_process';
import { eventually, lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';

function request(
  agent: http.Agent,
  sock: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? '' : JSON.stringify(body);
    const req = http.request(
      {
        socketPath: sock,
        agent,
        method,
        path,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) },
      },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: text.startsWith('{') ? JSON.parse(text) : text }),
        );
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

test('connections beyond --max-connections are closed at once; a create on an open one never meets EMFILE', async (t) => {
  const l = await lab(t);
  const CAP = 64;
  const d = await startDaemon(t, l, { args: ['--max-connections', String(CAP), '--netns-pool-size', '4'] });
  assert.equal((await d.request('POST', '/networks/create', { Name: 'web' })).status, 201);
  // An established keep-alive connection, as a client in the middle of its work has.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  assert.equal((await request(agent, d.sock, 'GET', '/_ping')).status, 200);
  // The daemon gets only ~100 fds of headroom: without the cap, the flood below would take them all.
  const pid = d.proc.pid!;
  const limit = fs.readdirSync(`/proc/${pid}/fd`).length + CAP + 100;
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`]);

  const FLOOD = 400;
  let closedByServer = 0;
  const flood: net.Socket[] = [];
  await Promise.all(
    Array.from(
      { length: FLOOD },
      () =>
        new Promise<void>((resolve) => {
          const s = net.connect(d.sock, () => resolve());
          s.on('error', () => resolve());
          s.on('close', () => closedByServer++);
          flood.push(s);
        }),
    ),
  );
  t.after(() => flood.forEach((s) => s.destroy()));
  await eventually(() => assert.ok(closedByServer >= FLOOD - CAP, `closed ${closedByServer} of ${FLOOD}`));
  const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
  assert.ok(fds < limit - 20, `daemon fds ${fds} stay under the limit ${limit}`);

  // Work on the established connection goes on: netns, veth, DNS sockets all need fds.
  for (const name of ['a', 'b', 'c']) {
    const r = await request(agent, d.sock, 'POST', '/sandboxes', {
      Name: name,
      Networks: [{ Network: 'web' }],
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  assert.match(d.logs(), /connection limit reached/);
  for (const s of flood) s.destroy();
  await eventually(async () => assert.equal((await d.request('GET', '/_ping')).status, 200));
});
