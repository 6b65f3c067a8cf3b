// The ipvlan driver (libnetwork drivers/ipvlan): endpoints share the parent's
// MAC; `ipvlan_mode` l2 (default), l3 or l3s (routed: no gateway, the default
// route through the device), `ipvlan_flag` bridge (default), private or vepa.
import type { LinkAddSpec } from '../../src/netlink/handle';
import { choice, type LanConfig, type LanMode } from '../lanlink/config';
import { LanLinkDriver } from '../lanlink/driver';

export const IPVLAN_MODE_OPT = 'ipvlan_mode';
export const IPVLAN_FLAG_OPT = 'ipvlan_flag';
const MODES = ['l2', 'l3', 'l3s'] as const;
const FLAGS = ['bridge', 'private', 'vepa'] as const;

export function parseIpvlanMode(options: Record<string, string>): LanMode {
  const mode = choice(options, IPVLAN_MODE_OPT, MODES, 'an ipvlan mode');
  const flag = choice(options, IPVLAN_FLAG_OPT, FLAGS, 'an ipvlan flag');
  return {
    mode,
    flag,
    exclusive: false,
    routed: mode !== 'l2',
    noHostAccess:
      flag === 'private'
        ? "the private flag keeps every child of the parent apart, the host's shim too: use bridge or vepa"
        : undefined,
  };
}

export class IpvlanDriver extends LanLinkDriver {
  readonly name = 'ipvlan';

  protected readonly parseMode = parseIpvlanMode;

  /** Every ipvlan child has its parent's MAC. */
  protected override macFor(): string | undefined {
    return undefined;
  }

  protected childSpec(c: LanConfig): Partial<LinkAddSpec> {
    return { kind: 'ipvlan', mode: c.mode.mode as 'l2', flag: c.mode.flag as 'bridge' };
  }
}
