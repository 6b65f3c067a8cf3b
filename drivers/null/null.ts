// The null driver: the sandbox keeps only its loopback. One network, not deletable.
import type { Capabilities } from '../driver';
import { NoKernelDriver } from '../nokernel';

export class NullDriver extends NoKernelDriver {
  readonly name = 'null';
  capabilities(): Capabilities {
    return { scope: 'local', singleton: true, needsIpam: false, embeddedDns: false, noInterface: true };
  }
}
