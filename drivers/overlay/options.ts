// The overlay driver's options and names: the VNI the cluster chose, the MTU
// from the underlay, the kernel objects' names. Bad values are refused with
// what to fix.
import { invalidArgument } from '../../src/errors';
import type { NetworkSpec } from '../driver';

export const OPT = {
  vni: 'com.docker.network.driver.overlay.vxlanid_list',
  mtu: 'com.docker.network.driver.mtu',
  /** Docker's `-o encrypted`: IPsec ESP between the hosts (present, empty or "true"). */
  encrypted: 'encrypted',
} as const;

export const VNI_MAX = 0xffffff;
export const DEFAULT_VXLAN_PORT = 4789;
/** Outer Ethernet (14) + IPv4 (20) + UDP (8) + VXLAN (8); IPv6 outer headers are 20 bytes longer. */
export const VXLAN_OVERHEAD_V4 = 50;
export const VXLAN_OVERHEAD_V6 = 70;

/** Marks kernel objects the overlay driver made; not cnmd:net/cnmd:ep, which the bridge driver sweeps as its own. */
export const OV_ALIAS_PREFIX = 'cnmd:ov';
export const ovNetworkAlias = (networkId: string) => `${OV_ALIAS_PREFIX}net:${networkId}`;
export const ovEndpointAlias = (networkId: string, endpointId: string, sandboxId: string) =>
  `${OV_ALIAS_PREFIX}ep:${networkId}:${endpointId}:${sandboxId}`;

export function parseOvEndpointAlias(
  alias: string | undefined,
): { networkId: string; endpointId: string; sandboxId: string } | undefined {
  const m = /^cnmd:ovep:([0-9a-zA-Z]+):([0-9a-zA-Z]+):([0-9a-zA-Z_.-]+)$/.exec(alias ?? '');
  return m ? { networkId: m[1], endpointId: m[2], sandboxId: m[3] } : undefined;
}

export interface OverlayConfig {
  networkId: string;
  vni: number;
  /** Bridge and vxlan device, inside the network's netns; named by VNI so `ip -d link` says which network it is. */
  bridgeName: string;
  vxlanName: string;
  /** The network's netns id (under <exec-root>/overlay/netns). */
  netnsId: string;
  /** The underlay MTU given by option (Docker's meaning: the overlay is this minus the encapsulation). */
  underlayMtu?: number;
  internal: boolean;
  /** `-o encrypted`: VXLAN between hosts only inside ESP. */
  encrypted: boolean;
  subnetV4?: string;
  subnetV6?: string;
}

export function vniHex(vni: number): string {
  return vni.toString(16).padStart(6, '0');
}

export function parseVni(op: string, text: string | undefined): number {
  if (text === undefined || text === '')
    throw invalidArgument(
      op,
      OPT.vni,
      `an overlay network needs its VNI in option ${OPT.vni}; the cluster store assigns it (start cnmd with ` +
        `--cluster-store)`,
    );
  if (!/^\d{1,8}$/.test(text.trim()))
    throw invalidArgument(op, OPT.vni, `option ${OPT.vni}: "${text}" is not one VNI (a decimal number)`);
  const vni = Number(text.trim());
  if (vni < 1 || vni > VNI_MAX)
    throw invalidArgument(op, OPT.vni, `option ${OPT.vni}: VNI ${vni} is outside 1..${VNI_MAX}`);
  return vni;
}

/** Whether `-o encrypted` asks for an encrypted network; Docker's CLI sends it with an empty value. */
export function parseEncrypted(op: string, options: Record<string, string>): boolean {
  const v = options[OPT.encrypted];
  if (v === undefined) return false;
  const t = v.trim().toLowerCase();
  if (t === '' || t === 'true' || t === '1') return true;
  if (t === 'false' || t === '0') return false;
  throw invalidArgument(op, OPT.encrypted, `option ${OPT.encrypted}: "${v}" is not true or false (or empty)`);
}

export function parseOverlayConfig(spec: NetworkSpec): OverlayConfig {
  const op = 'network create';
  const vni = parseVni(op, spec.options[OPT.vni]);
  if (spec.ipv4.length > 1 || spec.ipv6.length > 1)
    throw invalidArgument(
      op,
      spec.name,
      'an overlay network takes one IPv4 and at most one IPv6 subnet (one VNI, one bridge per host)',
    );
  const mtuText = spec.options[OPT.mtu];
  let underlayMtu: number | undefined;
  if (mtuText !== undefined && mtuText !== '') {
    underlayMtu = Number(mtuText);
    if (!Number.isInteger(underlayMtu) || underlayMtu < 68 + VXLAN_OVERHEAD_V6 || underlayMtu > 65535)
      throw invalidArgument(
        op,
        OPT.mtu,
        `option ${OPT.mtu}: "${mtuText}" is not an underlay MTU between ${68 + VXLAN_OVERHEAD_V6} and 65535`,
      );
  }
  const h = vniHex(vni);
  return {
    networkId: spec.id,
    vni,
    bridgeName: `ov-${h}`,
    vxlanName: `vx-${h}`,
    netnsId: `ov-${spec.id}`,
    underlayMtu,
    internal: spec.internal,
    encrypted: parseEncrypted(op, spec.options),
    subnetV4: spec.ipv4[0]?.pool,
    subnetV6: spec.enableIPv6 ? spec.ipv6[0]?.pool : undefined,
  };
}

/** The overlay's MTU: the underlay's minus the VXLAN encapsulation for the underlay's family. */
export function overlayMtu(underlayMtu: number, vtep: string): number {
  return underlayMtu - (vtep.includes(':') ? VXLAN_OVERHEAD_V6 : VXLAN_OVERHEAD_V4);
}
