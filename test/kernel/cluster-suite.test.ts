// The kernel lane's cluster VM: every compiled test under
// dist/test/kernel-cluster/ runs in ONE boot of Debian's kernel under qemu,
// where three host netns share an underlay bridge with etcd-server and run a
// cnmd each (test/lib/cluster.ts), with ESP and GCM that this machine's kernel
// lacks. Each guest test becomes a host subtest here.
// KERNEL_CLUSTER_FILTER=<substring> runs only the guest files whose name has it;
// KERNEL_CLUSTER_TESTS=<regexp> only the guest tests whose name matches (node's
// --test-name-pattern: the others are reported skipped).
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runGuestSuite } from '../lib/kernel-guest-suite';

const dir = path.resolve(__dirname, '..', 'kernel-cluster');

test('kernel lane: a three-host cluster with etcd inside the VM', { timeout: 1_800_000 }, async (t) => {
  const only = process.env.KERNEL_CLUSTER_FILTER ?? '';
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.test.js') && f.includes(only))
    .map((f) => path.join(dir, f))
    .sort();
  if (files.length === 0) throw new Error(`no guest tests under ${dir}${only ? ` matching ${only}` : ''}`);
  await runGuestSuite(t, files, {
    cwd: path.resolve(__dirname, '..', '..', '..'),
    testArgs: [
      '--test-concurrency=1',
      ...(process.env.KERNEL_CLUSTER_TESTS
        ? [`--test-name-pattern=${process.env.KERNEL_CLUSTER_TESTS}`]
        : []),
    ],
    timeoutMs: 1_500_000,
  });
});
