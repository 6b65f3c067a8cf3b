// README's doc test: its ```sh blocks run in order, word for word, on the built tree,
// in a private network, mount and PID namespace (tmpfs on /run and /var/lib: the
// machine's /run/cnmd and /var/lib/cnmd are never touched; the cnmd a block starts runs
// in that netns and dies with the namespace). A block marked on the line before it
// with `<!-- doctest: skip (reason) -->` is not run and is listed with its reason;
// `<!-- doctest: background (reason) -->` runs in the background (the daemon), and
// the next block waits for the API socket to answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';

const REPO = path.resolve(__dirname, '..', '..', '..');
const README = path.join(REPO, 'README.md');

export interface DocBlock {
  /** 1-based line of the opening fence. */
  line: number;
  code: string;
  mode: 'run' | 'skip' | 'background';
  reason?: string;
}

/** The ```sh blocks of a markdown text, with the doctest marker on the line before each (blank lines between allowed). */
export function shBlocks(markdown: string): DocBlock[] {
  const lines = markdown.split('\n');
  const out: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```sh') continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i].trim() !== '```'; i++) body.push(lines[i]);
    let j = start - 1;
    while (j >= 0 && lines[j].trim() === '') j--;
    const m = j >= 0 ? /^<!--\s*doctest:\s*(skip|background)\s*\((.+)\)\s*-->$/.exec(lines[j].trim()) : null;
    if (j >= 0 && !m && /doctest/.test(lines[j]))
      throw new Error(
        `README.md:${j + 1}: a doctest marker must read <!-- doctest: skip|background (reason) -->`,
      );
    out.push({
      line: start + 1,
      code: body.join('\n'),
      mode: m ? (m[1] as 'skip' | 'background') : 'run',
      reason: m?.[2],
    });
  }
  return out;
}

/** The bash script that runs the blocks: each announced on stderr, the first failure stops it. */
function script(blocks: DocBlock[], logDir: string): string {
  const parts = [
    'set -eo pipefail',
    `cd ${JSON.stringify(REPO)}`,
    // Wait for the daemon a background block started: bounded, on its answer, not a fixed time.
    'cnmd_up() { for _ in $(seq 600); do curl -sf --unix-socket /run/cnmd/cnmd.sock http://cnmd/_ping >/dev/null && return 0; sleep 0.1; done; echo "cnmd did not answer within 60 s" >&2; return 1; }',
    'BG=0',
  ];
  for (const b of blocks) {
    if (b.mode === 'skip') continue;
    parts.push(`echo "::: README.md:${b.line} (${b.mode})" >&2`);
    if (b.mode === 'background') {
      parts.push(`( ${b.code}\n) > ${JSON.stringify(path.join(logDir, `bg-${b.line}.log`))} 2>&1 &`, 'BG=1');
    } else {
      parts.push('if [ "$BG" = 1 ]; then cnmd_up; BG=2; fi', b.code);
    }
  }
  parts.push('echo "::: done" >&2');
  return parts.join('\n');
}

test('README: every sh block runs as written, in order, in a private namespace (or says why it cannot)', async (t) => {
  const blocks = shBlocks(fs.readFileSync(README, 'utf8'));
  assert.ok(blocks.filter((b) => b.mode === 'run').length >= 5, 'README has runnable examples');
  for (const b of blocks.filter((x) => x.mode === 'skip'))
    t.diagnostic(`skipped README.md:${b.line}: ${b.reason} -- ${b.code.split('\n')[0]}`);
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-readme-'));
  t.after(() => fs.rmSync(logDir, { recursive: true, force: true }));
  const scriptPath = path.join(logDir, 'readme.sh');
  fs.writeFileSync(scriptPath, script(blocks, logDir));
  // Private /run and /var/lib (tmpfs), lo up; the PID namespace ends every process at the end.
  const setup = [
    'set -e',
    'mount -t tmpfs tmpfs /run',
    'mount -t tmpfs tmpfs /var/lib',
    'ip link set lo up',
    `exec bash ${JSON.stringify(scriptPath)}`,
  ].join('; ');
  const proc = spawn(
    'unshare',
    ['--net', '--mount', '--pid', '--fork', '--mount-proc', '--propagation', 'private', 'bash', '-c', setup],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CNMD_HOST: '', DOCKER_HOST: '' } },
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
  const last = [...out.matchAll(/^::: (.*)$/gm)].pop()?.[1];
  assert.equal(code, 0, `README block failed: ${last}\n${out.slice(-6000)}\n${bgLogs}`);
  assert.match(out, /^::: done$/m);
  // What the examples print, as README says.
  assert.match(out, /OK(\n|Client:)/, 'curl _ping answered OK');
  assert.match(out, /^80\/tcp -> \[::\]:8080$/m, 'cnmctl port lists the IPv6 binding');
  assert.equal((out.match(/^200$/gm) ?? []).length, 2, 'the sandbox web server answered over IPv4 and IPv6');
  // resolv.conf, then dig +short db: alpha's address from the embedded DNS.
  assert.match(out, /nameserver 127\.0\.0\.11\noptions ndots:0\n\d+\.\d+\.\d+\.\d+\n/);
});
