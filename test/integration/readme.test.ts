// README's doc test (integration lane): its ```sh blocks run in order, word for word, on
// the built tree, in a private network, mount and PID namespace: tmpfs on /run and
// /var/lib (the machine's /run/cnmd and /var/lib/cnmd are never touched), an overlay on
// /usr/local/bin (the quick start's links land in it, not on the machine), root's default
// PATH, and the cnmd a block starts runs in that netns and dies with the namespace.
// Markers and the script: test/lib/readme.ts. Blocks marked `engine` run in the engine
// lane (test/engine/readme.test.ts); `skip` ones are listed here with their reasons.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { README, blocksScript, lastBlock, shBlocks } from '../lib/readme';

/** Debian's PATH for root (login shells), and the directory of the node running the tests. */
const ROOT_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** The CNMD chains README's firewall paragraph lists, by family and table. */
function readmeChains(markdown: string): {
  v4: Map<string, string[]>;
  v6: Map<string, string[]>;
  all: string[];
} {
  const para = markdown.split(/\n\s*\n/).find((p) => p.includes('Firewall rules follow'));
  assert.ok(para, 'README has the firewall paragraph ("Firewall rules follow ...")');
  const names = (s: string) => [...new Set([...s.matchAll(/`(CNMD[A-Z0-9-]*)`/g)].map((m) => m[1]))].sort();
  const at = (phrase: string) => {
    const i = para.indexOf(phrase);
    assert.ok(i >= 0, `the firewall paragraph says "${phrase}"`);
    return i;
  };
  const filter = names(para.slice(at('in the filter table'), at('in the nat table')));
  const nat = names(para.slice(at('in the nat table'), at('ip6tables has the same chains')));
  const filter6 = names(para.slice(at('ip6tables has the same chains'), at('See them')));
  return {
    v4: new Map([
      ['filter', filter],
      ['nat', nat],
    ]),
    v6: new Map([
      ['filter', [...new Set([...filter, ...filter6])].sort()],
      ['nat', nat],
    ]),
    all: names(para),
  };
}

/** CNMD chains per table in iptables-save output. */
function savedChains(save: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let table = '';
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    const m = /^:(CNMD[A-Z0-9-]*) /.exec(line);
    if (m) out.set(table, [...(out.get(table) ?? []), m[1]].sort());
  }
  return out;
}

test('README: every sh block runs as written, in order, in a private namespace (or says where it runs)', async (t) => {
  const markdown = fs.readFileSync(README, 'utf8');
  const blocks = shBlocks(markdown);
  const here = blocks.filter((b) => b.mode === 'run' || b.mode === 'background');
  assert.ok(here.filter((b) => b.mode === 'run').length >= 5, 'README has runnable examples');
  for (const b of blocks.filter((x) => x.mode === 'skip' || x.mode === 'engine'))
    t.diagnostic(
      `not run here: README.md:${b.line} (${b.mode === 'engine' ? 'engine lane' : 'skip'}): ${b.reason} -- ${b.code.split('\n')[0]}`,
    );
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-readme-'));
  t.after(() => fs.rmSync(logDir, { recursive: true, force: true }));
  const whichFile = path.join(logDir, 'which');
  const saveFile = path.join(logDir, 'iptables-save');
  const scriptPath = path.join(logDir, 'readme.sh');
  fs.writeFileSync(
    scriptPath,
    blocksScript(here, logDir, [
      // Read back once every block ran: where the commands came from, and the chains that exist.
      `command -v cnmd cnmctl > ${JSON.stringify(whichFile)}`,
      `iptables-save > ${JSON.stringify(saveFile)}`,
      `ip6tables-save > ${JSON.stringify(saveFile + '6')}`,
    ]),
  );
  const ov = path.join(logDir, 'usr-local-bin');
  fs.mkdirSync(ov);
  const linkedBefore = fs.existsSync('/usr/local/bin/cnmd') || fs.existsSync('/usr/local/bin/cnmctl');
  // Private /run, /var/lib and /usr/local/bin (an overlay whose changes live in a tmpfs);
  // lo up; the PID namespace ends every process at the end.
  const setup = [
    'set -e',
    'mount -t tmpfs tmpfs /run',
    'mount -t tmpfs tmpfs /var/lib',
    `mount -t tmpfs tmpfs ${JSON.stringify(ov)}`,
    `mkdir ${JSON.stringify(ov + '/upper')} ${JSON.stringify(ov + '/work')}`,
    `mount -t overlay overlay -o lowerdir=/usr/local/bin,upperdir=${ov}/upper,workdir=${ov}/work /usr/local/bin`,
    'ip link set lo up',
    `exec bash ${JSON.stringify(scriptPath)}`,
  ].join('; ');
  const pathDirs = [...ROOT_PATH];
  if (!pathDirs.includes(path.dirname(process.execPath))) pathDirs.push(path.dirname(process.execPath));
  const proc = spawn(
    'unshare',
    ['--net', '--mount', '--pid', '--fork', '--mount-proc', '--propagation', 'private', 'bash', '-c', setup],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PATH: pathDirs.join(':'), CNMD_HOST: '', DOCKER_HOST: '' },
    },
  );
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)));
  const bgLogs = fs
    .readdirSync(logDir)
    .filter((f) => f.startsWith('bg-'))
    .map((f) => `--- ${f}\n${fs.readFileSync(path.join(logDir, f), 'utf8').slice(-4000)}`)
    .join('\n');
  assert.equal(code, 0, `README block failed: ${lastBlock(out)}\n${out.slice(-6000)}\n${bgLogs}`);
  assert.match(out, /^::: done$/m);

  // The quick start's links made cnmd and cnmctl commands, and only inside the namespace.
  assert.equal(fs.readFileSync(whichFile, 'utf8'), '/usr/local/bin/cnmd\n/usr/local/bin/cnmctl\n');
  if (!linkedBefore)
    assert.ok(
      !fs.existsSync('/usr/local/bin/cnmd') && !fs.existsSync('/usr/local/bin/cnmctl'),
      "the machine's /usr/local/bin is untouched",
    );

  // What the examples print, as README says.
  assert.match(out, /OK(\n|Client:)/, 'curl _ping answered OK');
  assert.match(out, /^80\/tcp -> \[::\]:8080$/m, 'cnmctl port lists the IPv6 binding');
  assert.equal((out.match(/^200$/gm) ?? []).length, 2, 'the sandbox web server answered over IPv4 and IPv6');
  // sandbox ls: plain joined the default network bridge (172.17.0.0/16 in the empty netns), alone none.
  assert.match(out, /^plain\s+bridge\s+172\.17\.0\.\d+\s*$/m, 'a sandbox without --network is on bridge');
  assert.match(out, /^alone\s+none\s*$/m, '--network none: no address');
  // resolv.conf, then dig +short db: alpha's address from the embedded DNS.
  assert.match(out, /nameserver 127\.0\.0\.11\noptions ndots:0\n\d+\.\d+\.\d+\.\d+\n/);

  // The API example: the sandbox made through /sandboxes, the filtered list, the refused removal.
  assert.match(out, /^\{"Id":"[0-9a-f]{64}"\}$/m, 'POST /sandboxes answered its id');
  assert.match(out, /^\[\{"Name":"apinet",/m, 'GET /networks?filters= listed apinet alone first');
  assert.match(out, /has active endpoints"\}\n403$/m, 'DELETE of a network in use: 403 with the reason');

  // The chains README lists are the chains the running daemon made, family by family, table by table.
  const listed = readmeChains(markdown);
  for (const [family, file, want] of [
    ['iptables', saveFile, listed.v4],
    ['ip6tables', saveFile + '6', listed.v6],
  ] as const) {
    const saved = savedChains(fs.readFileSync(file, 'utf8'));
    for (const table of ['filter', 'nat'])
      assert.deepEqual(
        saved.get(table) ?? [],
        want.get(table),
        `README lists the ${family} ${table} chains that exist`,
      );
    for (const [table, chains] of saved)
      for (const c of chains)
        assert.ok(listed.all.includes(c), `README's firewall paragraph names ${family} ${table} chain ${c}`);
  }
});
