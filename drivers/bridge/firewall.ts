// What the bridge driver needs from a firewall: its base chains, and the rules
// of one network added or removed as one batch (firewall/layout's spec).
import type { BridgeNetworkSpec } from '../../src/firewall/layout';
import type { BridgeConfig } from './options';

export type { BridgeNetworkSpec };

export interface BridgeFirewall {
  setupBase(): Promise<void>;
  addNetwork(n: BridgeNetworkSpec): Promise<void>;
  removeNetwork(n: BridgeNetworkSpec): Promise<void>;
}

/** The firewall's view of a bridge network: IPv6 rules only when the network has IPv6. */
export function firewallSpec(c: BridgeConfig): BridgeNetworkSpec {
  return {
    bridge: c.bridgeName,
    subnets: { v4: c.subnetV4, v6: c.enableIPv6 ? c.subnetV6 : undefined },
    icc: c.enableICC,
    masquerade: c.enableIPMasquerade,
    internal: c.internal,
    hostIPv4: c.hostIPv4,
    gatewayModes: { ipv4: c.gatewayModeIPv4, ipv6: c.gatewayModeIPv6 },
  };
}
