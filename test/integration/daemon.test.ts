// The daemon process: flags, API socket, version negotiation, clean shutdown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { execFileSync, spawnSync } from 'node:child_process';
import { lab } from '../lib/fixture';
import { CNMCTL, CNMD, startDaemon } from '../lib/daemon';

function raw(sock: string, method: string, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, method, path }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('cnmd answers /_ping and /version on its socket, with and without a version prefix', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const ping = await raw(d.sock, 'GET', '/_ping');
  assert.equal(ping.status, 200);
  assert.equal(ping.body, 'OK');
  assert.equal(ping.headers['api-version'], '1.41');
  assert.equal(ping.headers['ostype'], 'linux');
  const head = await raw(d.sock, 'HEAD', '/_ping');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  assert.equal(head.headers['api-version'], '1.41');
  for (const p of ['/version', '/v1.41/version', '/v1.24/version']) {
    const v = await raw(d.sock, 'GET', p);
    assert.equal(v.status, 200, p);
    const body = JSON.parse(v.body);
    assert.equal(body.ApiVersion, '1.41');
    assert.equal(body.MinAPIVersion, '1.24');
    assert.equal(body.Os, 'linux');
    assert.match(body.Version, /^\d+\.\d+\.\d+/);
  }
  const missing = await raw(d.sock, 'GET', '/nope');
  assert.equal(missing.status, 404);
  assert.match(JSON.parse(missing.body).message, /not found/);
  const wrongMethod = await raw(d.sock, 'POST', '/_ping');
  assert.equal(wrongMethod.status, 405);
  // The socket is 0660 and lives where -H said.
  assert.equal(fs.statSync(d.sock).mode & 0o777, 0o660);
  // No API on TCP: the only TCP listeners are the port proxy's, on loopback.
  const listening = d.host.run('ss', ['-Htln']).trim().split('\n').filter(Boolean);
  assert.ok(listening.length <= 2, listening.join('\n'));
  for (const l of listening) assert.match(l, /\s(127\.0\.0\.1|\[::1\]):\d+\s/);
});

test('the docker CLI negotiates its API version with cnmd, and cnmctl version reports both sides', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const out = execFileSync('docker', ['version', '--format', '{{.Server.APIVersion}} {{.Client.APIVersion}}'], {
    env: { ...process.env, DOCKER_HOST: d.hostUri },
    encoding: 'utf8',
  });
  assert.equal(out.trim(), '1.41 1.41');
  const ctl = execFileSync(process.execPath, [CNMCTL, '-H', d.hostUri, 'version'], { encoding: 'utf8' });
  assert.match(ctl, /Server:\n Version: +\d+\.\d+\.\d+/);
  assert.match(ctl, /API version: 1\.41/);
});

test('SIGTERM stops cnmd cleanly: exit 0, socket removed, structured logs', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const code = await d.stop();
  assert.equal(code, 0);
  assert.equal(fs.existsSync(d.sock), false);
  const lines = d.logs().trim().split('\n').map((s) => JSON.parse(s));
  assert.ok(lines.some((x) => x.msg === 'cnmd started' && x.dataRoot === d.dataRoot && x.execRoot === d.execRoot));
  assert.ok(lines.some((x) => x.msg === 'cnmd stopped'));
  assert.ok(fs.statSync(d.dataRoot).isDirectory());
  assert.ok(fs.statSync(d.execRoot).isDirectory());
});

test('cnmd --help documents every flag; a bad -H is refused with a message', () => {
  const help = execFileSync(process.execPath, [CNMD, '--help'], { encoding: 'utf8' });
  for (const flag of ['--data-root', '--exec-root', '--host', '--plugin-dir', '--log-level', '--resolv-conf', '--userland-proxy', '--netns-pool-size', 'CNMD_DATA_ROOT', 'CNMD_HOST', 'CNMD_NETNS_POOL_SIZE']) {
    assert.ok(help.includes(flag), `--help mentions ${flag}`);
  }
  const bad = spawnSync(process.execPath, [CNMD, '-H', 'http://nope'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--host "http:\/\/nope" is not unix:\/\/\/path\/to\.sock or tcp:\/\/HOST:PORT/);
  const badPool = spawnSync(process.execPath, [CNMD, '--netns-pool-size', 'lots'], { encoding: 'utf8' });
  assert.equal(badPool.status, 2);
  assert.match(badPool.stderr, /--netns-pool-size "lots" is not a whole number from 0 to 1024/);
});

test('cnmctl says how to reach the daemon when the socket is missing', () => {
  const r = spawnSync(process.execPath, [CNMCTL, '-H', 'unix:///nonexistent/cnmd.sock', 'version'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cannot reach cnmd at unix:\/\/\/nonexistent\/cnmd\.sock: is the daemon running\?/);
});
