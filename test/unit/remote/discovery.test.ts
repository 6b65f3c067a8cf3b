// Plugin discovery over real files in temporary directories: sockets (flat and
// nested), .spec (unix and tcp), .json, precedence, and everything refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { CnmdError } from '../../../src/errors';
import { discoverPlugin, parsePluginAddr, validatePluginName } from '../../../src/remote/discovery';

function dirs(t: { after(fn: () => void | Promise<void>): void }) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-disc-'));
  const socketDir = path.join(root, 'run');
  const etc = path.join(root, 'etc');
  const lib = path.join(root, 'lib');
  for (const d of [socketDir, etc, lib]) fs.mkdirSync(d);
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  return { root, socketDir, etc, lib, search: { socketDirs: [socketDir], specDirs: [etc, lib] } };
}

async function listen(t: { after(fn: () => void | Promise<void>): void }, p: string): Promise<void> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(p, resolve));
  t.after(() => new Promise<void>((resolve) => srv.close(() => resolve())));
}

function rejectsWith(p: Promise<unknown>, code: string, ...fragments: RegExp[]) {
  return assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof CnmdError, `not a CnmdError: ${e}`);
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.match(e.message, f);
    return true;
  });
}

test('a socket in the plugin dir is found, flat before nested', async (t) => {
  const d = dirs(t);
  fs.mkdirSync(path.join(d.socketDir, 'nested'));
  await listen(t, path.join(d.socketDir, 'nested', 'nested.sock'));
  assert.deepEqual(await discoverPlugin('nested', d.search), {
    name: 'nested',
    addr: { kind: 'unix', path: path.join(d.socketDir, 'nested', 'nested.sock') },
    source: path.join(d.socketDir, 'nested', 'nested.sock'),
  });
  await listen(t, path.join(d.socketDir, 'nested.sock'));
  assert.deepEqual((await discoverPlugin('nested', d.search)).addr, {
    kind: 'unix',
    path: path.join(d.socketDir, 'nested.sock'),
  });
});

test('a regular file named .sock is not a socket: the spec files are tried next', async (t) => {
  const d = dirs(t);
  fs.writeFileSync(path.join(d.socketDir, 'p.sock'), '');
  fs.writeFileSync(path.join(d.etc, 'p.spec'), 'unix:///run/elsewhere/p.sock\n');
  const loc = await discoverPlugin('p', d.search);
  assert.deepEqual(loc.addr, { kind: 'unix', path: '/run/elsewhere/p.sock' });
  assert.equal(loc.source, path.join(d.etc, 'p.spec'));
});

test('.spec with tcp, in the second spec dir and nested', async (t) => {
  const d = dirs(t);
  fs.mkdirSync(path.join(d.lib, 'tcpplug'));
  fs.writeFileSync(path.join(d.lib, 'tcpplug', 'tcpplug.spec'), '  tcp://192.0.2.10:8080  \n');
  assert.deepEqual((await discoverPlugin('tcpplug', d.search)).addr, {
    kind: 'tcp',
    host: '192.0.2.10',
    port: 8080,
  });
  fs.writeFileSync(path.join(d.etc, 'v6.spec'), 'tcp://[2001:db8::1]:9000');
  assert.deepEqual((await discoverPlugin('v6', d.search)).addr, {
    kind: 'tcp',
    host: '2001:db8::1',
    port: 9000,
  });
});

test('.json with Addr; .spec wins over .json in the same dir, an earlier dir over a later one', async (t) => {
  const d = dirs(t);
  fs.writeFileSync(path.join(d.lib, 'j.json'), JSON.stringify({ Name: 'j', Addr: 'unix:///run/j.sock' }));
  assert.deepEqual((await discoverPlugin('j', d.search)).addr, { kind: 'unix', path: '/run/j.sock' });
  fs.writeFileSync(
    path.join(d.etc, 'j.json'),
    JSON.stringify({ Name: 'j', Addr: 'tcp://127.0.0.1:1234', TLSConfig: null }),
  );
  assert.deepEqual((await discoverPlugin('j', d.search)).addr, {
    kind: 'tcp',
    host: '127.0.0.1',
    port: 1234,
  });
  fs.writeFileSync(path.join(d.etc, 'j.spec'), 'unix:///run/j-spec.sock');
  assert.deepEqual((await discoverPlugin('j', d.search)).addr, { kind: 'unix', path: '/run/j-spec.sock' });
});

test('TLS is refused with a message saying what to do', async (t) => {
  const d = dirs(t);
  fs.writeFileSync(
    path.join(d.etc, 'tls.json'),
    JSON.stringify({ Name: 'tls', Addr: 'tcp://10.0.0.1:443', TLSConfig: { CAFile: '/ca.pem' } }),
  );
  await rejectsWith(
    discoverPlugin('tls', d.search),
    'INVALID_ARGUMENT',
    /tls\.json/,
    /TLSConfig/,
    /does not speak TLS/,
    /unix socket or a plain tcp/,
  );
  fs.writeFileSync(path.join(d.etc, 'tls2.spec'), 'https://10.0.0.1:443');
  await rejectsWith(discoverPlugin('tls2', d.search), 'INVALID_ARGUMENT', /tls2\.spec/, /needs TLS/);
});

test('missing plugin: NOT_FOUND listing every path looked at', async (t) => {
  const d = dirs(t);
  await rejectsWith(
    discoverPlugin('ghost', d.search),
    'NOT_FOUND',
    /plugin "ghost" not found/,
    new RegExp(path.join(d.socketDir, 'ghost.sock').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')),
    /ghost\/ghost\.json/,
    /start the plugin/,
  );
});

test('bad names are refused before any file is touched', async (t) => {
  const d = dirs(t);
  for (const bad of ['', '../etc/passwd', 'a/b', '.hidden', 'a..b', 'sp ace', 'x'.repeat(256), 'nul\0']) {
    assert.throws(
      () => validatePluginName(bad),
      (e: unknown) =>
        e instanceof CnmdError && e.code === 'INVALID_ARGUMENT' && /plugin name/.test(e.message),
      bad,
    );
    await rejectsWith(discoverPlugin(bad, d.search), 'INVALID_ARGUMENT');
  }
  for (const good of ['cnmd-bridge', 'weave', 'my_plugin.v2', 'A1']) validatePluginName(good);
});

test('bad spec content: each message names the file and the expected form', async (t) => {
  const d = dirs(t);
  const cases: [string, string, RegExp][] = [
    ['empty.spec', '  \n', /empty/],
    ['noscheme.spec', '/run/x.sock', /no scheme/],
    ['relative.spec', 'unix://run/x.sock', /absolute/],
    ['noport.spec', 'tcp://10.0.0.1', /port from 1 to 65535/],
    ['bigport.spec', 'tcp://10.0.0.1:70000', /not a valid URL|port from 1 to 65535/],
    ['path.spec', 'tcp://10.0.0.1:80/x', /path/],
    ['two.spec', 'unix:///a.sock unix:///b.sock', /more than one address/],
    ['ftp.spec', 'ftp://10.0.0.1:21', /unsupported protocol "ftp"/],
    ['badjson.json', '{"Addr": ', /not valid JSON/],
    ['noaddr.json', '{"Name": "noaddr"}', /"Addr" is missing/],
    ['array.json', '[]', /JSON object/],
  ];
  for (const [file, content, re] of cases) {
    fs.writeFileSync(path.join(d.etc, file), content);
    const name = file.replace(/\.(spec|json)$/, '');
    await rejectsWith(
      discoverPlugin(name, d.search),
      'INVALID_ARGUMENT',
      new RegExp(`plugin "${name}"`),
      new RegExp(file.replace('.', '\\.')),
      re,
    );
  }
});

test('parsePluginAddr: http:// is plain tcp, as the engine dials it', () => {
  assert.deepEqual(parsePluginAddr('p', 'f', 'http://localhost:8000'), {
    kind: 'tcp',
    host: 'localhost',
    port: 8000,
  });
  assert.deepEqual(parsePluginAddr('p', 'f', 'unix:///run/docker/plugins/../p.sock'), {
    kind: 'unix',
    path: '/run/docker/p.sock',
  });
});
