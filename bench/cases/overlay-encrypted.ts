// Bench case "overlay-encrypted": encrypted vs plain overlay between two host
// netns, inside the kernel lane's VM (this machine's kernel has no ESP or
// GCM): throughput (iperf3), latency (ping), the time a key rotation takes end
// to end and the pings lost during it (goal 0). The work is done by
// bench/lib/overlay-encrypted-guest.ts in the guest; this side boots the VM,
// passes the BENCH_OVERLAY_ENC_* sizes and reads its figures back.
// Under qemu's TCG (no KVM here) absolute figures are emulation's, not the
// kernel's: read the ratios (bench/README.md says what a hardware run must confirm).
import * as os from 'node:os';
import * as path from 'node:path';
import { kernelLanePrerequisites, runInKernelVm, tail } from '../../test/lib/kernel-vm';
import { ensureDebPackages } from '../lib/host';

export const name = 'overlay-encrypted';
export const unit = 'Gbit/s, ms (under TCG: ratios only)';

const ROOT = path.resolve(__dirname, '..', '..', '..');

export async function run(): Promise<Record<string, number>> {
  const err = ensureDebPackages([
    'iperf3',
    'etcd-server',
    'etcd-client',
    'iputils-ping',
    'qemu-system-x86',
    'busybox-static',
  ]);
  if (err) throw new Error(`bench overlay-encrypted: ${err}`);
  kernelLanePrerequisites();
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('BENCH_OVERLAY_ENC_') && v) env[k] = v;
  const loadStart = os.loadavg()[0];
  const r = await runInKernelVm(
    `node ${path.join(ROOT, 'dist', 'bench', 'lib', 'overlay-encrypted-guest.js')} 2>&1`,
    {
      cwd: ROOT,
      env,
      timeoutMs: 3_600_000,
    },
  );
  const m = /^@@BENCH-FIGURES (.*)$/m.exec(r.commandOutput);
  if (r.exitCode !== 0 || !m)
    throw new Error(
      `bench overlay-encrypted: the guest exited ${r.exitCode}${r.timedOut ? ' (timed out)' : ''}:\n${tail(r.commandOutput || r.console, 40)}`,
    );
  const figures = JSON.parse(m[1]) as Record<string, number>;
  return {
    host_load_avg_1m_start: loadStart,
    tcg: 1,
    ...figures,
    vm_seconds: r.durationMs / 1000,
  };
}
