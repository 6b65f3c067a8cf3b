// examples/cluster-walkthrough.sh keeps working: two hosts and etcd on one machine, an
// overlay network across them, sandboxes reaching each other by name, nothing left after.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';

const root = path.resolve(__dirname, '..', '..', '..');

test('examples/cluster-walkthrough.sh: a network made on h1 is on h2, pings by name across hosts, nothing left', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-walk-'));
  try {
    const r = spawnSync('bash', [path.join(root, 'examples', 'cluster-walkthrough.sh')], {
      cwd: root,
      env: { ...process.env, WORKDIR: work },
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(r.status, 0, `walkthrough failed:\n${r.stdout}\n${r.stderr}`);
    const ids = [...r.stdout.matchAll(/ {2}h[12]: ([0-9a-f]{64}) .*10\.77\.0\.0\/24.* vni=4096/g)].map(
      (m) => m[1],
    );
    assert.equal(ids.length, 2, r.stdout);
    assert.equal(ids[0], ids[1]);
    assert.match(r.stdout, /bytes from walk-h2\.walk-ov \(10\.77\.0\.\d+\)/);
    assert.match(r.stdout, /bytes from walk-h1\.walk-ov \(10\.77\.0\.\d+\)/);
    assert.match(r.stderr, /has active endpoints on hosts .*192\.0\.2\.\d\).*192\.0\.2\.\d\)/);
    assert.match(r.stdout, /h2 networks: bridge host none/);
  } finally {
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    fs.rmSync(work, { recursive: true, force: true });
    assert.doesNotMatch(left, /^cw-/m, 'the walkthrough left namespaces');
  }
});
