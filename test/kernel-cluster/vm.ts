// The kernel lane's cluster VM: bounds for waits (qemu without KVM runs node
// and the daemons several times slower than this machine does), a progress
// log, and one cluster shared by every test of a file (each cnmd takes tens of
// seconds to start there: the tests share three daemons rather than pay it per test).
import { after, TestContext } from 'node:test';
import { ClusterLab, clusterLab } from '../lib/cluster';

/** --encryption-key-rotation of the VM cluster's daemons. */
export const ROTATION = '20s';

/** How long a cnmd may take to answer its first /_ping in the VM. */
export const VM_READY_MS = 420_000;
/** The bound of an `eventually` in the VM (convergence across hosts, a ping through a new overlay). */
export const VM_WAIT_MS = 60_000;

const t0 = Date.now();
/** A progress line with the seconds since the guest's tests started (a TAP comment: where the VM's time goes). */
export function mark(what: string): void {
  console.log(`@ ${((Date.now() - t0) / 1000).toFixed(1)} s ${what}`);
}

// A context whose after() hooks run when the file's tests are done: node:test's
// after(), called here at the module's top level, is the file's (called inside a
// test it would be that test's, and the shared cluster would go with the first test).
const hooks: (() => unknown)[] = [];
after(async () => {
  for (const fn of hooks.reverse()) await fn();
});
const fileContext = { after: (fn: () => unknown) => void hooks.push(fn) } as unknown as TestContext;

let shared: Promise<ClusterLab> | undefined;

/**
 * Three hosts (o.hosts) on one underlay with etcd and a cnmd each (started in
 * parallel, host i with hostArgs(i) added), made by the first test that asks
 * and shared by the file's others.
 */
export function vmCluster(
  o: Parameters<typeof clusterLab>[1] = {},
  hostArgs: (i: number) => string[] = () => [],
): Promise<ClusterLab> {
  shared ??= (async () => {
    const c = await clusterLab(fileContext, {
      hosts: 3,
      ttl: 10,
      readyMs: VM_READY_MS,
      // Encrypted networks' keys, rotated every ROTATION: every test runs with rotations under way.
      secret: true,
      args: ['--encryption-key-rotation', ROTATION],
      ...o,
    });
    mark('etcd up');
    await Promise.all(Array.from({ length: o.hosts ?? 3 }, (_, i) => c.startDaemon(i, hostArgs(i))));
    mark('daemons up');
    return c;
  })();
  return shared;
}
