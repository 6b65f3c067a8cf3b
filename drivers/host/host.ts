// The host driver: the sandbox uses the daemon's own netns. One network, not deletable.
import type { Capabilities } from '../driver';
import { NoKernelDriver } from '../nokernel';

export class HostDriver extends NoKernelDriver {
  readonly name = 'host';
  capabilities(): Capabilities {
    return { scope: 'local', singleton: true, usesHostNetns: true, needsIpam: false, embeddedDns: false };
  }
}
