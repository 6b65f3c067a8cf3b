// A daemon killed while its netns pool fills can leave an empty file where a
// namespace was about to be mounted (the file is made first, the bind mount
// after). The next start removes such stubs with the pool's other leftovers,
// and a sandbox's stub that no record claims with the leaked namespaces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { eventually, lab, mountsUnder } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';

/** Files under dir, and which of them are not mounts (stubs). */
function poolState(dir: string): { files: string[]; stubs: string[] } {
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
  const mounts = new Set(mountsUnder(dir));
  return { files, stubs: files.filter((f) => !mounts.has(path.join(dir, f))) };
}

test('SIGKILL while the netns pool fills: the restart leaves no stub file in the pool or the netns dir', async (t) => {
  const l = await lab(t);
  const args = ['--netns-pool-size', '16'];
  let d = await startDaemon(t, l, { args });
  const poolDir = path.join(d.execRoot, 'pool', 'netns');
  const netnsDir = path.join(d.execRoot, 'netns');
  // Kill at varied instants of the fill (it starts once the daemon answers).
  for (const delay of [0, 15, 40]) {
    await new Promise((r) => setTimeout(r, delay));
    await d.kill();
    // What a kill between a netns file and its mount leaves, planted so that every round has one.
    for (const dir of [poolDir, netnsDir]) {
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, `0123stub${delay}`), '', { mode: 0o444 });
    }
    d = await startDaemon(t, l, { hostNs: d.host, base: d.base, args });
    // Once full, the pool dir holds the 16 pooled namespaces, all mounted, and nothing else (while the
    // fill runs, its newest file is not mounted yet: a leftover stub would stay and fail the wait).
    await eventually(() => {
      const st = poolState(poolDir);
      assert.equal(st.files.length, 16);
      assert.deepEqual(st.stubs, [], 'no stub left in the pool');
    }, 10_000);
    assert.deepEqual(
      fs.readdirSync(netnsDir).filter((f) => f.includes('stub')),
      [],
      'no stub left among the sandboxes',
    );
  }
  // The pool still serves sandboxes.
  const r = await d.request('POST', '/sandboxes', { Name: 'after' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
});
