// Bench case "overlay-encrypted": encrypted vs plain overlay between two host
// netns, inside the kernel lane's VM (this machine's kernel has no ESP or
// GCM): throughput (iperf3), latency (ping), the time a key rotation takes end
// to end and the pings lost during it (goal 0). The work is done by
// bench/lib/overlay-encrypted-guest.ts in the guest; this side boots the VM,
// passes the BENCH_OVERLAY_ENC_* sizes and reads its figures back (bench/lib/in-vm.ts).
// Under qemu's TCG (no KVM here) absolute figures are emulation's, not the
// kernel's: read the ratios (bench/README.md says what a hardware run must confirm).
import { ensureDebPackages } from '../lib/host';
import { runGuestBench } from '../lib/in-vm';

export const name = 'overlay-encrypted';
export const unit = 'Gbit/s, ms (under TCG: ratios only)';

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
  return runGuestBench(name, 'overlay-encrypted-guest', 'BENCH_OVERLAY_ENC_');
}
