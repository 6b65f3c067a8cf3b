// The daemon process: flags, API socket, version negotiation, clean shutdown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { native } from '../../native';
import { lab } from '../lib/fixture';
import { CNMCTL, CNMD, RunningDaemon, restartDaemon, startDaemon } from '../lib/daemon';

function raw(
  sock: string,
  method: string,
  path: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
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
  // The IPv6 one is on [::] (it serves external IPv6 clients REDIRECTed to it) behind an
  // ip6tables rule that drops every connection to it that was not REDIRECTed.
  const guard = d.host.run('ip6tables-save', ['-t', 'filter']);
  for (const l of listening) {
    const m = /\s(127\.0\.0\.1|\[::1\]|\[::\]):(\d+)\s/.exec(l);
    assert.ok(m, l);
    if (m[1] === '[::]')
      assert.match(
        guard,
        new RegExp(`-A CNMD-PROXY -p tcp -m tcp --dport ${m[2]} -m conntrack ! --ctstate DNAT -j DROP`),
      );
  }
  assert.match(guard, /-A INPUT -j CNMD-PROXY/);
});

test('the docker CLI negotiates its API version with cnmd, and cnmctl version reports both sides', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const out = execFileSync(
    'docker',
    ['version', '--format', '{{.Server.APIVersion}} {{.Client.APIVersion}}'],
    {
      env: { ...process.env, DOCKER_HOST: d.hostUri },
      encoding: 'utf8',
    },
  );
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
  const lines = d
    .logs()
    .trim()
    .split('\n')
    .map((s) => JSON.parse(s));
  assert.ok(
    lines.some((x) => x.msg === 'cnmd started' && x.dataRoot === d.dataRoot && x.execRoot === d.execRoot),
  );
  assert.ok(lines.some((x) => x.msg === 'cnmd stopped'));
  assert.ok(fs.statSync(d.dataRoot).isDirectory());
  assert.ok(fs.statSync(d.execRoot).isDirectory());
});

test('cnmd --help documents every flag; a bad -H is refused with a message', () => {
  const help = execFileSync(process.execPath, [CNMD, '--help'], { encoding: 'utf8' });
  for (const flag of [
    '--data-root',
    '--exec-root',
    '--host',
    '--plugin-dir',
    '--log-level',
    '--resolv-conf',
    '--userland-proxy',
    '--netns-pool-size',
    '--engine-host',
    '--default-address-pool',
    'CNMD_ENGINE_HOST',
    'CNMD_DEFAULT_ADDRESS_POOLS',
    'CNMD_DATA_ROOT',
    'CNMD_HOST',
    'CNMD_NETNS_POOL_SIZE',
  ]) {
    assert.ok(help.includes(flag), `--help mentions ${flag}`);
  }
  const bad = spawnSync(process.execPath, [CNMD, '-H', 'http://nope'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--host "http:\/\/nope" is not unix:\/\/\/path\/to\.sock or tcp:\/\/HOST:PORT/);
  const badPool = spawnSync(process.execPath, [CNMD, '--netns-pool-size', 'lots'], { encoding: 'utf8' });
  assert.equal(badPool.status, 2);
  assert.match(badPool.stderr, /--netns-pool-size "lots" is not a whole number from 0 to 1024/);
  const badEngine = spawnSync(process.execPath, [CNMD, '--engine-host', 'docker.sock:2375'], {
    encoding: 'utf8',
  });
  assert.equal(badEngine.status, 2);
  assert.match(badEngine.stderr, /--engine-host "docker.sock:2375" is not unix:\/\/\/path\/to\/docker\.sock/);
});

test('cnmctl says how to reach the daemon when the socket is missing', () => {
  const r = spawnSync(process.execPath, [CNMCTL, '-H', 'unix:///nonexistent/cnmd.sock', 'version'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cannot reach cnmd at unix:\/\/\/nonexistent\/cnmd\.sock: is the daemon running\?/);
});

/** Runs a second cnmd in d's host netns with the given roots and sockets; resolves with its exit status and stderr. */
function second(
  d: RunningDaemon,
  roots: { dataRoot: string; execRoot: string; sock: string; pluginDir: string },
): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(
      'nsenter',
      [
        `--net=${d.host.path}`,
        process.execPath,
        CNMD,
        '--data-root',
        roots.dataRoot,
        '--exec-root',
        roots.execRoot,
        '-H',
        `unix://${roots.sock}`,
        '--plugin-dir',
        roots.pluginDir,
        '--netns-pool-size',
        '0',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    p.stderr!.on('data', (c) => (stderr += c));
    // A second daemon that started would never exit by itself: the test fails on the timeout, and it is ended.
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.once('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, stderr });
    });
  });
}

/** Whether another process holds the flock on file (taken and released at once here if not). */
function locked(file: string): boolean {
  try {
    native.close(native.lockFile(file));
    return false;
  } catch (e) {
    if ((e as { code?: string }).code === 'EWOULDBLOCK' || (e as { code?: string }).code === 'EAGAIN')
      return true;
    throw e;
  }
}

test('one cnmd per root and socket: a second one on the same roots, socket or plugin dir is refused and the first serves on', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const pid = d.proc.pid!;
  assert.equal(
    fs.readFileSync(path.join(d.execRoot, 'cnmd.pid'), 'utf8'),
    `${pid}\n`,
    'the exec root names the daemon',
  );
  assert.ok(
    locked(path.join(d.dataRoot, 'cnmd.lock')) && locked(path.join(d.execRoot, 'cnmd.pid')),
    'both roots are locked while it runs',
  );
  const sockIno = fs.statSync(d.sock).ino;
  const own = { dataRoot: d.dataRoot, execRoot: d.execRoot, sock: d.sock, pluginDir: d.pluginDir };
  const elsewhere = (tag: string) => {
    const base = fs.mkdtempSync(path.join(l.root, `other-${tag}-`));
    return {
      dataRoot: path.join(base, 'data'),
      execRoot: path.join(base, 'exec'),
      sock: path.join(base, 'cnmd.sock'),
      pluginDir: path.join(base, 'plugins'),
    };
  };
  const stillServing = async (what: string) => {
    assert.equal((await d.request('GET', '/_ping')).status, 200, `${what}: the first daemon still answers`);
    assert.equal(fs.statSync(d.sock).ino, sockIno, `${what}: its socket was not taken`);
    assert.deepEqual(
      fs.readdirSync(d.pluginDir).sort(),
      ['cnmd-bridge.sock', 'cnmd-ipam.sock', 'cnmd-ipvlan.sock', 'cnmd-macvlan.sock', 'cnmd-overlay.sock'],
      `${what}: its plugin sockets are in place`,
    );
  };

  const sameRoots = await second(d, own);
  assert.equal(sameRoots.status, 1);
  assert.match(
    sameRoots.stderr,
    new RegExp(
      `^cnmd: daemon start: another cnmd \\(pid ${pid}\\) is running with --data-root ${d.dataRoot}: stop it first, or give this one its own --data-root, --exec-root and --host$`,
      'm',
    ),
  );
  await stillServing('same roots');

  const sameExecRoot = await second(d, { ...elsewhere('exec'), execRoot: d.execRoot });
  assert.equal(sameExecRoot.status, 1);
  assert.match(
    sameExecRoot.stderr,
    new RegExp(`another cnmd \\(pid ${pid}\\) is running with --exec-root ${d.execRoot}:`),
  );
  await stillServing('same exec root');

  const otherSock = elsewhere('sock');
  const sameSock = await second(d, { ...otherSock, sock: d.sock });
  assert.equal(sameSock.status, 1);
  assert.match(
    sameSock.stderr,
    new RegExp(
      `^cnmd: listen: another process \\(another cnmd\\?\\) is listening on ${d.sock}; stop it first, or choose another --host$`,
      'm',
    ),
  );
  await stillServing('same socket');
  assert.ok(
    !locked(path.join(otherSock.dataRoot, 'cnmd.lock')) && !locked(path.join(otherSock.execRoot, 'cnmd.pid')),
    'the refused daemon released its own roots',
  );

  const otherPlugins = elsewhere('plugins');
  const samePlugins = await second(d, { ...otherPlugins, pluginDir: d.pluginDir });
  assert.equal(samePlugins.status, 1);
  assert.match(
    samePlugins.stderr,
    new RegExp(
      `another process \\(another cnmd\\?\\) is listening on ${d.pluginDir}/cnmd-\\w+\\.sock; stop it first, or choose another --plugin-dir`,
    ),
  );
  assert.equal(fs.existsSync(otherPlugins.sock), false, 'it never listened on its own API socket');
  await stillServing('same plugin dir');

  // Not a socket at all: refused, and the file is left alone.
  const notSock = elsewhere('file');
  fs.writeFileSync(notSock.sock, 'precious\n');
  const onFile = await second(d, notSock);
  assert.equal(onFile.status, 1);
  assert.match(
    onFile.stderr,
    new RegExp(`listen: ${notSock.sock} exists and is not a socket; remove it or choose another --host`),
  );
  assert.equal(fs.readFileSync(notSock.sock, 'utf8'), 'precious\n');

  // Stopped (or killed: the kernel drops a dead process's flock), its roots take a new daemon.
  await d.kill();
  assert.ok(!locked(path.join(d.dataRoot, 'cnmd.lock')), 'a killed daemon holds no lock');
  const again = await restartDaemon(t, l, d);
  assert.equal((await again.request('GET', '/_ping')).status, 200);
  assert.equal(fs.readFileSync(path.join(d.execRoot, 'cnmd.pid'), 'utf8'), `${again.proc.pid}\n`);
  assert.equal(await again.stop(), 0);
});
