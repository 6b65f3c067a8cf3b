// -H tcp:// serves the root-equivalent API only over TLS with client certificates
// (--tlsverify, as dockerd), or in the clear when the operator says --insecure-tcp,
// which is then warned about at every start. Certificates are made here by openssl.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { eventually, lab, Lab, Ns } from '../lib/fixture';
import { CNMD } from '../lib/daemon';

const PORT = 23750;

function daemonArgs(l: Lab, host: Ns, extra: string[]): string[] {
  const base = fs.mkdtempSync(path.join(l.root, 'd-'));
  return [
    `--net=${host.path}`,
    process.execPath,
    CNMD,
    '--data-root',
    path.join(base, 'data'),
    '--exec-root',
    path.join(base, 'exec'),
    '--plugin-dir',
    path.join(base, 'plugins'),
    '--netns-pool-size',
    '0',
    '-H',
    `tcp://127.0.0.1:${PORT}`,
    ...extra,
  ];
}

async function serve(l: Lab, host: Ns, extra: string[]): Promise<{ proc: ChildProcess; logs: () => string }> {
  let out = '';
  const proc = spawn('nsenter', daemonArgs(l, host, extra), { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (c) => (out += c));
  proc.stderr!.on('data', (c) => (out += c));
  l.beforeCleanup(async () => {
    if (proc.exitCode === null) {
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
    }
  });
  await eventually(() => assert.match(out, /api listening/, out), 15_000);
  return { proc, logs: () => out };
}

/** curl inside the daemon's host netns: the HTTP status, or 0 and curl's exit code. */
function curlIn(host: Ns, args: string[]): { status: number; rc: number } {
  const r = spawnSync(
    'nsenter',
    [`--net=${host.path}`, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', ...args],
    { encoding: 'utf8' },
  );
  return { status: Number(r.stdout) || 0, rc: r.status ?? -1 };
}

function makeCerts(dir: string): Record<string, string> {
  const f = (n: string) => path.join(dir, n);
  const sh = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  const key = (n: string) => [
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    f(n),
  ];
  sh(['req', '-x509', ...key('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=cnmd test CA']);
  for (const [name, ext] of [
    ['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth'],
    ['client', 'extendedKeyUsage=clientAuth'],
  ]) {
    fs.writeFileSync(f(`${name}.ext`), ext + '\n');
    sh(['req', ...key(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${name}`]);
    sh([
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f('ca.pem'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-out',
      f(`${name}.pem`),
      '-days',
      '1',
      '-extfile',
      f(`${name}.ext`),
    ]);
  }
  // A client certificate no trusted CA signed.
  sh(['req', '-x509', ...key('rogue.key'), '-out', f('rogue.pem'), '-days', '1', '-subj', '/CN=rogue']);
  return Object.fromEntries(
    ['ca.pem', 'server.pem', 'server.key', 'client.pem', 'client.key', 'rogue.pem', 'rogue.key'].map((n) => [
      n,
      f(n),
    ]),
  );
}

test('-H tcp:// without TLS is refused unless --insecure-tcp, which warns at every start', async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  const r = spawnSync('nsenter', daemonArgs(l, host, []), { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /-H tcp:\/\/127\.0\.0\.1:23750 would serve the API.*--tlsverify.*--insecure-tcp/);
  assert.equal(curlIn(host, [`http://127.0.0.1:${PORT}/_ping`]).status, 0, 'nothing listens');

  const d = await serve(l, host, ['--insecure-tcp']);
  assert.match(d.logs(), /"level":40.*without TLS \(--insecure-tcp\)/);
  assert.equal(curlIn(host, [`http://127.0.0.1:${PORT}/_ping`]).status, 200);
});

test('--tlsverify: only clients with a certificate from --tlscacert get in', async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  const c = makeCerts(fs.mkdtempSync(path.join(l.root, 'certs-')));
  const d = await serve(l, host, [
    '--tlsverify',
    '--tlscacert',
    c['ca.pem'],
    '--tlscert',
    c['server.pem'],
    '--tlskey',
    c['server.key'],
  ]);
  assert.doesNotMatch(d.logs(), /"level":40/, 'no warning with --tlsverify');
  const url = `https://127.0.0.1:${PORT}/_ping`;
  assert.equal(
    curlIn(host, ['--cacert', c['ca.pem'], '--cert', c['client.pem'], '--key', c['client.key'], url]).status,
    200,
  );
  assert.equal(curlIn(host, ['--cacert', c['ca.pem'], url]).status, 0, 'no client certificate: refused');
  assert.equal(
    curlIn(host, ['--cacert', c['ca.pem'], '--cert', c['rogue.pem'], '--key', c['rogue.key'], url]).status,
    0,
    'a certificate from another CA: refused',
  );
  assert.equal(curlIn(host, [`http://127.0.0.1:${PORT}/_ping`]).status, 0, 'no plain HTTP');
  // A network created over TLS is really there.
  const create = spawnSync(
    'nsenter',
    [
      `--net=${host.path}`,
      'curl',
      '-s',
      '--max-time',
      '5',
      '--cacert',
      c['ca.pem'],
      '--cert',
      c['client.pem'],
      '--key',
      c['client.key'],
      '-H',
      'Content-Type: application/json',
      '-d',
      '{"Name":"viatls"}',
      `https://127.0.0.1:${PORT}/networks/create`,
    ],
    { encoding: 'utf8' },
  );
  assert.match(create.stdout, /"Id":"[0-9a-f]{64}"/, create.stdout);
});
