// examples/engine-walkthrough.sh keeps working: run against a cnmd and a real
// engine in their own netns, it shows what it promises and leaves nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { assertNothingLeft, startEngine } from '../lib/engine';

const root = path.resolve(__dirname, '..', '..', '..');

test(
  'examples/engine-walkthrough.sh: names, a published port, connect/disconnect, and a clean end',
  { timeout: 300_000 },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const e = await startEngine(t, l, { hostNs: d.host, pluginDir: d.pluginDir, tag: 'walk' });
    const r = spawnSync(
      'nsenter',
      [`--net=${d.host.path}`, 'bash', path.join(root, 'examples', 'engine-walkthrough.sh')],
      {
        cwd: root,
        env: { ...process.env, DOCKER_HOST: e.host, CNMD_HOST: d.hostUri, IMAGE: e.image },
        encoding: 'utf8',
        timeout: 240_000,
      },
    );
    assert.equal(r.status, 0, `walkthrough failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /1 packets transmitted, 1 packets received/);
    assert.match(r.stdout, /127\.0\.0\.1:18080 -> walk-web:80: HTTP 200/);
    assert.match(r.stdout, /eth1\s+inet 10\.92\.0\.\d+\/24/, 'connected: a second interface');
    assert.match(r.stdout, /br-walk/);
    await assertNothingLeft(d, e);
    await e.stop();
  },
);
