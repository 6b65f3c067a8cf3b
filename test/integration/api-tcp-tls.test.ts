// -H tcp:// serves the root-equivalent API only over TLS with client certificates
// (--tlsverify, as dockerd), or in the clear when the operator says --insecure-tcp,
// which is then warned about at every start. Certificates are made here by openssl.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { eventually, lab, Lab, Ns } from '../lib/fixture';
import { CNMCTL, CNMD } from '../lib/daemon';

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

/** cnmctl inside the daemon's host netns, with only the env given (no inherited CNMD_HOST/DOCKER_*). */
function cnmctlIn(host: Ns, args: string[], env: Record<string, string> = {}) {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(CNMD_|DOCKER_)/.test(k)),
  ) as Record<string, string>;
  return spawnSync('nsenter', [`--net=${host.path}`, process.execPath, CNMCTL, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...clean, HOME: '/nonexistent', ...env },
  });
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
  // cnmctl: plain tcp:// works; TLS against it says the daemon does not speak TLS there.
  const tcp = `tcp://127.0.0.1:${PORT}`;
  const plain = cnmctlIn(host, ['-H', tcp, 'network', 'ls', '-q']);
  assert.equal(plain.status, 0, plain.stderr);
  const c = makeCerts(fs.mkdtempSync(path.join(l.root, 'certs-')));
  const wrong = cnmctlIn(host, ['-H', tcp, '--tlsverify', '--tlscacert', c['ca.pem'], 'network', 'ls']);
  assert.equal(wrong.status, 1);
  assert.match(
    wrong.stderr,
    /cannot reach cnmd at tcp:\/\/127\.0\.0\.1:23750: the daemon does not speak TLS there/,
  );
});

test('a TLS file that is missing or is not the certificate and its key refuses the start before anything is made', async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  const c = makeCerts(fs.mkdtempSync(path.join(l.root, 'certs-')));
  const missing = path.join(l.root, 'nope.pem');
  for (const [files, message] of [
    [
      ['--tlscert', missing, '--tlskey', c['server.key']],
      new RegExp(`^cnmd: .*--tlscert ${missing}: ENOENT`),
    ],
    [
      // The client's key with the server's certificate: not its key.
      ['--tlscert', c['server.pem'], '--tlskey', c['client.key']],
      /^cnmd: .*--tlscert .*server\.pem, --tlskey .*client\.key, --tlscacert .*ca\.pem: .*key values mismatch; give the server's PEM certificate and its private key, and the CA of client certificates\n$/,
    ],
    [
      ['--tlscert', c['server.pem'], '--tlskey', c['ca.pem']],
      /^cnmd: .*--tlskey .*ca\.pem, --tlscacert .*: .*; give the server's PEM certificate and its private key/,
    ],
  ] as [string[], RegExp][]) {
    const args = daemonArgs(l, host, ['--tlsverify', '--tlscacert', c['ca.pem'], ...files]);
    const r = spawnSync('nsenter', args, { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    assert.match(r.stderr, message);
    // Nothing made: no roots, no bridge, no rules.
    const dataRoot = args[args.indexOf('--data-root') + 1];
    assert.equal(fs.existsSync(dataRoot), false, dataRoot);
    assert.deepEqual(
      host.ipj('link').map((x: any) => x.ifname),
      ['lo'],
    );
    assert.doesNotMatch(host.run('iptables-save', []), /CNMD/);
  }
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

test('cnmctl over TLS: --tlsverify with the flags or DOCKER_HOST/DOCKER_TLS_VERIFY/DOCKER_CERT_PATH; a wrong CA, a missing or rogue client certificate and plain HTTP refused with what to fix', async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  const c = makeCerts(fs.mkdtempSync(path.join(l.root, 'certs-')));
  await serve(l, host, [
    '--tlsverify',
    '--tlscacert',
    c['ca.pem'],
    '--tlscert',
    c['server.pem'],
    '--tlskey',
    c['server.key'],
  ]);
  const tcp = `tcp://127.0.0.1:${PORT}`;
  const flags = [
    '--tlsverify',
    '--tlscacert',
    c['ca.pem'],
    '--tlscert',
    c['client.pem'],
    '--tlskey',
    c['client.key'],
  ];
  const made = cnmctlIn(host, ['-H', tcp, ...flags, 'network', 'create', 'viacli']);
  assert.equal(made.status, 0, made.stderr);
  assert.match(made.stdout, /^[0-9a-f]{64}$/m);
  // The docker CLI's env: DOCKER_CERT_PATH holds ca.pem, cert.pem, key.pem.
  const certDir = fs.mkdtempSync(path.join(l.root, 'docker-certs-'));
  fs.copyFileSync(c['ca.pem'], path.join(certDir, 'ca.pem'));
  fs.copyFileSync(c['client.pem'], path.join(certDir, 'cert.pem'));
  fs.copyFileSync(c['client.key'], path.join(certDir, 'key.pem'));
  const env = { DOCKER_HOST: tcp, DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certDir };
  const ls = cnmctlIn(host, ['network', 'ls', '--format', '{{.Name}}'], env);
  assert.equal(ls.status, 0, ls.stderr);
  assert.match(ls.stdout, /^viacli$/m, 'the network made over TLS, listed over TLS');
  // CNMD_HOST wins over DOCKER_HOST.
  const other = cnmctlIn(host, ['network', 'ls'], { ...env, CNMD_HOST: 'unix:///nonexistent/cnmd.sock' });
  assert.match(other.stderr, /cannot reach cnmd at unix:\/\/\/nonexistent\/cnmd\.sock/);

  const refused = (args: string[], e: Record<string, string>, why: RegExp) => {
    const r = cnmctlIn(host, ['-H', tcp, ...args, 'network', 'ls'], e);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stdout}`);
    assert.match(r.stderr, /^cnmctl: cannot reach cnmd at tcp:\/\/127\.0\.0\.1:23750: /);
    assert.match(r.stderr, why);
  };
  // A CA that did not sign the daemon's certificate.
  refused(
    ['--tlsverify', '--tlscacert', c['rogue.pem'], '--tlscert', c['client.pem'], '--tlskey', c['client.key']],
    {},
    /the daemon's certificate is not trusted \(self-signed certificate in certificate chain\): --tlscacert .*rogue\.pem is not the CA that signed it/,
  );
  // No client certificate, or one from another CA: the daemon refuses the handshake.
  const empty = fs.mkdtempSync(path.join(l.root, 'no-certs-'));
  refused(
    ['--tlsverify', '--tlscacert', c['ca.pem']],
    { DOCKER_CERT_PATH: empty },
    /the daemon refused the TLS handshake .*wants a client certificate signed by its --tlscacert/,
  );
  refused(
    ['--tlsverify', '--tlscacert', c['ca.pem'], '--tlscert', c['rogue.pem'], '--tlskey', c['rogue.key']],
    {},
    /the daemon refused the TLS handshake/,
  );
  // Plain HTTP to a TLS daemon.
  refused([], {}, /no HTTP answer .*use --tlsverify with --tlscacert, --tlscert, --tlskey/);
  // Files that are not there, said before connecting.
  const missing = cnmctlIn(host, ['-H', tcp, '--tlsverify', 'network', 'ls'], { DOCKER_CERT_PATH: empty });
  assert.equal(missing.status, 1);
  assert.match(
    missing.stderr,
    /--tlsverify needs the CA that signed the daemon's certificate: .*ca\.pem does not exist/,
  );
  const noKey = cnmctlIn(host, ['-H', tcp, ...flags.slice(0, 5), 'network', 'ls']);
  assert.match(noKey.stderr, /a client certificate needs both files/);
});
