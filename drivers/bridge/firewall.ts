// What the bridge driver needs from firewall/: its base chains, and the rules
// of one network added or removed as one batch.

export interface BridgeNetworkRules {
  bridge: string;
  subnetV4?: string;
  subnetV6?: string;
  icc: boolean;
  masquerade: boolean;
  internal: boolean;
  hostIPv4?: string;
}

export interface BridgeFirewall {
  setupBase(): Promise<void>;
  addNetwork(n: BridgeNetworkRules): Promise<void>;
  removeNetwork(n: BridgeNetworkRules): Promise<void>;
}

export function rulesFor(c: {
  bridgeName: string;
  subnetV4?: string;
  subnetV6?: string;
  enableICC: boolean;
  enableIPMasquerade: boolean;
  internal: boolean;
  hostIPv4?: string;
  enableIPv6: boolean;
}): BridgeNetworkRules {
  return {
    bridge: c.bridgeName,
    subnetV4: c.subnetV4,
    subnetV6: c.enableIPv6 ? c.subnetV6 : undefined,
    icc: c.enableICC,
    masquerade: c.enableIPMasquerade,
    internal: c.internal,
    hostIPv4: c.hostIPv4,
  };
}
