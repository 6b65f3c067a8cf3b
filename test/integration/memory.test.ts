// Memory after removal: sandboxes created and removed in cycles give their
// memory back. The daemon's RSS (VmRSS from /proc) after the last removal is
// bounded by its first peak: V8's young generation, which used to grow under a
// burst and never shrink (docs/design-notes.md, "Memory after removal"), is
// capped by the flags cnmd runs with (src/cli/node-flags.ts). Measured here:
// +6 to +9 MB over three cycles with them (old space still settling), 81 -> 102
// MB without.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { lab } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { CNMD_NODE_FLAGS } from '../../src/cli/node-flags';

function rssMb(d: RunningDaemon): number {
  const status = fs.readFileSync(`/proc/${d.proc.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

test('the daemon runs with the flags its #! line names', () => {
  const first = fs.readFileSync(require.resolve('../../src/cli/cnmd.js'), 'utf8').split('\n')[0];
  assert.equal(first, `#!/usr/bin/env -S node ${CNMD_NODE_FLAGS.join(' ')}`);
});

test('create/delete cycles of 300 sandboxes: RSS after each removal stays within 15 MB of the first peak', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const cmdline = fs.readFileSync(`/proc/${d.proc.pid}/cmdline`, 'utf8').split('\0');
  assert.ok(cmdline.includes(CNMD_NODE_FLAGS[0]), `the daemon is the node process: ${cmdline.join(' ')}`);
  for (const [i, subnet] of ['10.230.0.0/16', '10.231.0.0/16'].entries()) {
    const r = await d.request('POST', '/networks/create', {
      Name: `m${i}`,
      IPAM: { Config: [{ Subnet: subnet }] },
    });
    assert.equal(r.status, 201);
  }
  const peaks: number[] = [];
  const after: number[] = [];
  for (let cycle = 0; cycle < 3; cycle++) {
    const ids: string[] = [];
    for (let i = 0; i < 300; i++) {
      const r = await d.request('POST', '/sandboxes', {
        Name: `c${cycle}s${i}`,
        Networks: [{ Network: `m${i % 2}` }],
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      ids.push(r.body.Id);
    }
    peaks.push(rssMb(d));
    for (const id of ids) assert.equal((await d.request('DELETE', `/sandboxes/${id}`)).status, 204);
    after.push(rssMb(d));
  }
  t.diagnostic(
    `RSS MB at the peaks ${peaks.map((x) => x.toFixed(1)).join(' ')}, after removal ${after.map((x) => x.toFixed(1)).join(' ')}`,
  );
  for (const a of after)
    assert.ok(a <= peaks[0] + 15, `after removal ${a.toFixed(1)} MB vs first peak ${peaks[0].toFixed(1)} MB`);
});
