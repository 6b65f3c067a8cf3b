// The bridge driver's firewall: cnmd's layout (firewall/layout.ts) programmed
// through the iptables backend, one iptables-restore per family per change.
import type { Logger } from '../../src/log';
import { mergeBatches, type FirewallBackend } from '../../src/firewall/firewall';
import { IptablesBackend } from '../../src/firewall/iptables';
import {
  BridgeNetworkSpec,
  LayoutOptions,
  baseRuleList,
  baseRules,
  legacyNetworkRules,
  networkRuleList,
  networkRules,
  removeNetworkRules,
  removeOtherModeRules,
} from '../../src/firewall/layout';
import type { BridgeFirewall } from './firewall';

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

  /** The base layout, without the other proxy mode's OUTPUT jump (a restart may have switched modes). */
  setupBase(): Promise<void> {
    const layout = { ...this.layout, ipv6: true };
    return this.backend.apply(mergeBatches(removeOtherModeRules(baseRuleList, layout), baseRules(layout)));
  }

  /** A network's rules, without the other proxy mode's (its MASQUERADE of local sources). */
  addNetwork(s: BridgeNetworkSpec): Promise<void> {
    return this.backend.apply(
      mergeBatches(
        legacyNetworkRules(s, this.layout),
        removeOtherModeRules((o) => networkRuleList(s, o), this.layout),
        networkRules(s, this.layout),
      ),
    );
  }

  /** Both modes' rules: a network made before a switch of --userland-proxy may still have the other's. */
  removeNetwork(s: BridgeNetworkSpec): Promise<void> {
    return this.backend.apply(
      mergeBatches(
        removeNetworkRules(s, this.layout),
        legacyNetworkRules(s, this.layout),
        removeOtherModeRules((o) => networkRuleList(s, o), this.layout),
      ),
    );
  }
}
