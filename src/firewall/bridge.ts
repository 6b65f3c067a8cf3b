// The bridge driver's firewall: cnmd's layout (layout.ts) programmed through
// the iptables backend, one iptables-restore per family per change.
import type { BridgeFirewall, BridgeNetworkRules } from '../../drivers/bridge/firewall';
import type { Logger } from '../log';
import { mergeBatches, type FirewallBackend } from './firewall';
import { IptablesBackend } from './iptables';
import {
  BridgeNetworkSpec,
  LayoutOptions,
  baseRules,
  legacyNetworkRules,
  networkRules,
  removeNetworkRules,
} from './layout';

function spec(n: BridgeNetworkRules): BridgeNetworkSpec {
  return {
    bridge: n.bridge,
    subnets: { v4: n.subnetV4, v6: n.subnetV6 },
    icc: n.icc,
    masquerade: n.masquerade,
    internal: n.internal,
    hostIPv4: n.hostIPv4,
  };
}

export class IptablesBridgeFirewall implements BridgeFirewall {
  readonly backend: FirewallBackend;
  private readonly layout: LayoutOptions;

  /** `backend` is shared with port publishing: one model of the tables per daemon. */
  constructor(
    log: Logger,
    opts: { netns?: string | null; backend?: FirewallBackend; userlandProxy?: boolean } = {},
  ) {
    this.backend = opts.backend ?? new IptablesBackend({ netns: opts.netns ?? null, log });
    // Hairpin by NAT in both modes: the proxy (if any) only serves loopback.
    this.layout = { userlandProxy: opts.userlandProxy ?? true, hairpinNat: true };
  }

  setupBase(): Promise<void> {
    return this.backend.apply(baseRules({ ...this.layout, ipv6: true }));
  }

  addNetwork(n: BridgeNetworkRules): Promise<void> {
    return this.backend.apply(
      mergeBatches(legacyNetworkRules(spec(n), this.layout), networkRules(spec(n), this.layout)),
    );
  }

  removeNetwork(n: BridgeNetworkRules): Promise<void> {
    return this.backend.apply(
      mergeBatches(removeNetworkRules(spec(n), this.layout), legacyNetworkRules(spec(n), this.layout)),
    );
  }
}
