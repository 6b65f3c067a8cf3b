// The macvlan driver (libnetwork drivers/macvlan): each endpoint a macvlan
// child of the network's parent with a MAC of its own, `macvlan_mode` bridge
// (default), private, vepa or passthru.
import type { LinkAddSpec } from '../../src/netlink/handle';
import { choice, type LanConfig, type LanMode } from '../lanlink/config';
import { LanLinkDriver } from '../lanlink/driver';

export const MACVLAN_MODE_OPT = 'macvlan_mode';
const MODES = ['bridge', 'private', 'vepa', 'passthru'] as const;
type MacvlanMode = (typeof MODES)[number];

export function parseMacvlanMode(options: Record<string, string>): LanMode {
  const mode = choice(options, MACVLAN_MODE_OPT, MODES, 'a macvlan mode');
  return {
    mode,
    exclusive: mode === 'passthru',
    routed: false,
    noHostAccess:
      mode === 'private'
        ? "private mode keeps every child of the parent apart, the host's shim too: use bridge or vepa"
        : mode === 'passthru'
          ? "passthru gives the whole parent to one endpoint, leaving none for the host's shim"
          : undefined,
  };
}

export class MacvlanDriver extends LanLinkDriver {
  readonly name = 'macvlan';

  protected readonly parseMode = parseMacvlanMode;

  /** A passthru child takes its parent's MAC (the kernel's eth_hw_addr_inherit). */
  protected override macFor(c: LanConfig, asked: string | undefined): string | undefined {
    return c.mode.exclusive ? undefined : super.macFor(c, asked);
  }

  protected childSpec(c: LanConfig, mac: string | undefined): Partial<LinkAddSpec> {
    return { kind: 'macvlan', mode: c.mode.mode as MacvlanMode, mac };
  }
}
