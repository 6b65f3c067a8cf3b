// Bench case "ipvlan": endpoint attach and detach on an ipvlan (l2) network,
// cnmd beside the CNI ipvlan plugin, inside the kernel lane's VM (this
// machine's kernel lacks CONFIG_IPVLAN). The work is the macvlan case's
// protocol, done by bench/lib/ipvlan-guest.ts in the guest; this side boots
// the VM (bench/lib/in-vm.ts) and passes the BENCH_IPVLAN_* sizes. Debian's
// netavark (1.4.0) has no ipvlan driver. Under qemu's TCG (no KVM here) the
// absolute times are emulation's: read the ratios, taken within one run with
// the peers alternating.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ensureDebPackages } from '../lib/host';
import { runGuestBench } from '../lib/in-vm';
import { CNI_DIR } from '../lib/peers';

export const name = 'ipvlan';
export const unit = 'ms (under TCG: ratios only)';

export async function run(): Promise<Record<string, number>> {
  const err = ensureDebPackages([
    'containernetworking-plugins',
    'iputils-ping',
    'qemu-system-x86',
    'busybox-static',
  ]);
  if (err) throw new Error(`bench ipvlan: ${err}`);
  for (const f of ['ipvlan', 'host-local'])
    if (!fs.existsSync(path.join(CNI_DIR, f)))
      throw new Error(`bench ipvlan: ${path.join(CNI_DIR, f)} is missing`);
  return runGuestBench(name, 'ipvlan-guest', 'BENCH_IPVLAN_');
}
