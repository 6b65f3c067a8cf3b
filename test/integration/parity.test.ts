// Docker parity points a new user meets first (issue 19): a host address the host
// does not have, messages that name the sandbox, the network and the gateway,
// cnmd's own start-up errors, a sandbox on `none` across a restart, and a stop
// that lets requests in flight finish.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { eventually, lab } from '../lib/fixture';
import { CNMD, restartDaemon, startDaemon } from '../lib/daemon';

test('-p on a host address the host does not have is refused, naming the address; one it has is accepted', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await d.host.handle.addrAdd('lo', '192.0.2.10/32');
  const nat = () =>
    d.host
      .run('iptables-save', ['-t', 'nat'])
      .replace(/^#.*$/gm, '')
      .replace(/\[\d+:\d+\]/g, '');
  const before = nat();
  const r = await d.request('POST', '/sandboxes', {
    Name: 'far',
    Networks: [{ Network: 'bridge' }],
    Ports: ['1.2.3.4:9000:80'],
  });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  assert.match(r.body.message, /host address 1\.2\.3\.4 is not an address of this host/);
  assert.equal(nat(), before, 'no rule applied');
  assert.deepEqual((await d.request('GET', '/sandboxes')).body, [], 'no sandbox left');
  for (const ok of ['192.0.2.10:9000:80', '127.0.0.2:9001:80']) {
    const name = `ok${ok.length}${ok[4]}`;
    const r2 = await d.request('POST', '/sandboxes', {
      Name: name,
      Networks: [{ Network: 'bridge' }],
      Ports: [ok],
    });
    assert.equal(r2.status, 201, `${ok}: ${JSON.stringify(r2.body)}`);
  }
});

test('messages name the sandbox holding a port, the network holding a subnet or address, and the gateway', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  let r = await d.request('POST', '/networks/create', {
    Name: 'web',
    IPAM: { Config: [{ Subnet: '10.71.0.0/24', Gateway: '10.71.0.1' }] },
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await d.request('POST', '/sandboxes', {
    Name: 'first',
    Networks: [{ Network: 'web', IPv4Address: '10.71.0.9' }],
    Ports: ['8080:80'],
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await d.request('POST', '/sandboxes', {
    Name: 'second',
    Networks: [{ Network: 'web' }],
    Ports: ['8080:80'],
  });
  assert.equal(r.status, 409);
  assert.match(
    r.body.message,
    /port 8080\/tcp is already published \(0\.0\.0\.0:8080\/tcp by sandbox "first"\)/,
  );
  r = await d.request('POST', '/networks/create', {
    Name: 'clash',
    IPAM: { Config: [{ Subnet: '10.71.0.128/25' }] },
  });
  assert.equal(r.status, 409);
  assert.match(
    r.body.message,
    /subnet 10\.71\.0\.128\/25 overlaps with 10\.71\.0\.0\/24, the subnet of network "web"/,
  );
  r = await d.request('POST', '/networks/create', {
    Name: 'self',
    IPAM: { Config: [{ Subnet: '10.72.0.0/24' }, { Subnet: '10.72.0.0/25' }] },
  });
  assert.equal(r.status, 409);
  assert.match(
    r.body.message,
    /subnet 10\.72\.0\.0\/25 overlaps with 10\.72\.0\.0\/24, another subnet of this request/,
  );
  r = await d.request('POST', '/sandboxes', {
    Name: 'gw',
    Networks: [{ Network: 'web', IPv4Address: '10.71.0.1' }],
  });
  assert.equal(r.status, 409);
  assert.match(r.body.message, /address 10\.71\.0\.1 is the gateway of network "web" \(10\.71\.0\.0\/24\)/);
  r = await d.request('POST', '/sandboxes', {
    Name: 'dup',
    Networks: [{ Network: 'web', IPv4Address: '10.71.0.9' }],
  });
  assert.equal(r.status, 409);
  assert.match(
    r.body.message,
    /address 10\.71\.0\.9 is already in use in network "web" \(10\.71\.0\.0\/24\) by sandbox "first"/,
  );
  assert.deepEqual(
    (await d.request('GET', '/networks')).body.map((n: any) => n.Name).sort(),
    ['bridge', 'host', 'none', 'web'],
    'the refused networks left nothing',
  );
});

test('cnmd: a bad --log-level is one line and exit 2; a refused start prints its message once, without a stack', async (t) => {
  const bad = spawnSync(process.execPath, [CNMD, '--log-level', 'chatty'], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  assert.equal(bad.status, 2);
  assert.equal(bad.stdout, '');
  assert.equal(
    bad.stderr,
    'cnmd: --log-level "chatty" is not one of trace, debug, info, warn, error, fatal, silent\n',
  );
  const l = await lab(t);
  const d = await startDaemon(t, l);
  // A second daemon on the same roots is refused before it changes anything.
  const second = spawnSync(
    'nsenter',
    [
      `--net=${d.host.path}`,
      process.execPath,
      CNMD,
      '--data-root',
      d.dataRoot,
      '--exec-root',
      d.execRoot,
      '-H',
      `unix://${path.join(d.base, 'two.sock')}`,
      '--plugin-dir',
      path.join(d.base, 'plugins2'),
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  assert.equal(second.status, 1);
  const mentions = second.stderr.split('\n').filter((x) => /another cnmd \(pid \d+\)/.test(x));
  assert.equal(mentions.length, 1, second.stderr);
  assert.match(mentions[0], /^cnmd: /, 'a plain line, not JSON');
  assert.doesNotMatch(second.stderr, /"stack"|\n\s+at /, 'no stack trace');
});

test('a sandbox on none is restored without a rejoin warning', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const r = await d.request('POST', '/sandboxes', { Name: 'quiet', Networks: [{ Network: 'none' }] });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal(await d.stop(), 0);
  const d2 = await restartDaemon(t, l, d);
  const r2 = await d2.request('GET', '/sandboxes/quiet');
  assert.equal(r2.status, 200);
  assert.deepEqual(Object.keys(r2.body.Networks), ['none']);
  assert.match(d2.logs(), /"msg":"cnmd started"/);
  assert.doesNotMatch(d2.logs(), /rejoining/);
});

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

test('SIGTERM: new connections are refused, a request in flight completes, then the daemon exits at once', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const plugin = heldIpam(d.pluginDir);
  await plugin.listen();
  t.after(() => plugin.close());
  const exited = new Promise<number>((resolve) => d.proc.once('exit', () => resolve(Date.now())));
  const inflight = d.request('POST', '/networks/create', { Name: 'held', IPAM: { Driver: 'held' } });
  await plugin.requested; // the API request is being served: cnmd waits on the plugin
  d.proc.kill('SIGTERM');
  await eventually(() => assert.match(d.logs(), /"msg":"stopping"/), 10_000);
  // Stopped accepting: the socket is gone, a new client is refused.
  await eventually(() => assert.equal(fs.existsSync(d.sock), false));
  await assert.rejects(d.request('GET', '/_ping'), /cannot reach cnmd/);
  assert.equal(d.proc.exitCode, null, 'still running while a request is in flight');
  plugin.release();
  const r = await inflight;
  const answered = Date.now();
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const exitAt = await exited;
  assert.equal(d.proc.exitCode, 0, d.logs());
  // Prompt, not a benchmark: well under the ~2 s tail it had, with room for a loaded machine.
  t.diagnostic(`exited ${exitAt - answered} ms after the last answer`);
  assert.ok(exitAt - answered < 1500, `exited ${exitAt - answered} ms after the last answer`);
});
