// The examples keep working: the walkthrough runs against a daemon in its own netns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';

const root = path.resolve(__dirname, '..', '..', '..');

test('examples/walkthrough.sh: two networks, three sandboxes, the expected reachability, nothing left', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const r = spawnSync(
    'nsenter',
    [`--net=${d.host.path}`, 'bash', path.join(root, 'examples', 'walkthrough.sh')],
    {
      cwd: root,
      env: { ...process.env, CNMD_HOST: d.hostUri },
      encoding: 'utf8',
      timeout: 120_000,
    },
  );
  assert.equal(r.status, 0, `walkthrough failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /tour-alice -> 10\.90\.1\.3: reachable/);
  assert.match(r.stdout, /tour-bob -> 10\.90\.2\.3: reachable/);
  assert.match(r.stdout, /tour-alice -> 10\.90\.2\.3: blocked/);
  assert.match(r.stdout, /tour-carol -> 10\.90\.1\.2: blocked/);
  assert.match(r.stdout, /eth0@if\d+ +UP +10\.90\.1\.3\/24/);
  assert.match(r.stdout, /eth1@if\d+ +UP +10\.90\.2\.2\/24/);
  const nets = (await d.request('GET', '/networks')).body.map((n: any) => n.Name).sort();
  assert.deepEqual(nets, ['bridge', 'host', 'none']);
  assert.deepEqual((await d.request('GET', '/sandboxes')).body, []);
});
