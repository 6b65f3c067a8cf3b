// A bench case whose work runs inside the kernel lane's VM (test/lib/kernel-vm.ts):
// what this machine's kernel lacks (ESP and GCM, ipvlan) Debian's under qemu has.
// The guest script prints one line "@@BENCH-FIGURES <json>"; its lines starting
// with two spaces are the case's console lines. Under TCG (no KVM here) absolute
// figures are emulation's: `tcg` 1 says so beside them.
import * as os from 'node:os';
import * as path from 'node:path';
import { kernelLanePrerequisites, runInKernelVm, tail } from '../../test/lib/kernel-vm';

const ROOT = path.resolve(__dirname, '..', '..', '..');

/**
 * Boots the VM, runs `node dist/bench/lib/<guest>.js` in the checkout, with every
 * BENCH_<envPrefix>* variable passed on; returns the guest's figures with the
 * host's load at start, `tcg` and the VM's wall time.
 */
export async function runGuestBench(
  caseName: string,
  guest: string,
  envPrefix: string,
): Promise<Record<string, number>> {
  kernelLanePrerequisites();
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith(envPrefix) && v) env[k] = v;
  const loadStart = os.loadavg()[0];
  const r = await runInKernelVm(`node ${path.join(ROOT, 'dist', 'bench', 'lib', `${guest}.js`)} 2>&1`, {
    cwd: ROOT,
    env,
    timeoutMs: 3_600_000,
  });
  const m = /^@@BENCH-FIGURES (.*)$/m.exec(r.commandOutput);
  if (r.exitCode !== 0 || !m)
    throw new Error(
      `bench ${caseName}: the guest exited ${r.exitCode}${r.timedOut ? ' (timed out)' : ''}:\n${tail(r.commandOutput || r.console, 40)}`,
    );
  for (const l of r.commandOutput.split('\n')) if (l.startsWith('  ')) console.log(l);
  const figures = JSON.parse(m[1]) as Record<string, number>;
  return { host_load_avg_1m_start: loadStart, tcg: 1, ...figures, vm_seconds: r.durationMs / 1000 };
}
