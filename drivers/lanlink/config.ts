// A macvlan or ipvlan network's configuration, parsed from its -o options
// with Docker's keys and defaults (the mode keys are parsed by each driver);
// every bad value is refused naming the option and what to give instead.
import { invalidArgument } from '../../src/errors';
import { validateIfName } from '../../src/netlink/rtnl/link';
import { parseBool } from '../bridge/options';
import type { NetworkSpec } from '../driver';

export type LanKind = 'macvlan' | 'ipvlan';

export const LAN_OPT = {
  parent: 'parent',
  mtu: 'com.docker.network.driver.mtu',
  /** Any non-empty value: IPAM picks a gateway when --gateway is not given (Docker before 29). */
  ipamGateway: 'cnmd.network.ipam_gateway',
} as const;

/** The host-access option of each kind (moby#21735): a shim link on the parent for the host. */
export const HOST_ACCESS_OPT: Record<LanKind, string> = {
  macvlan: 'cnmd.macvlan.host_access',
  ipvlan: 'cnmd.ipvlan.host_access',
};

/** The aux address (`--aux-address host=<ip>`) the host-access shim takes. */
export const HOST_AUX_NAME = 'host';

/** The child links' mode, as each driver parsed it. */
export interface LanMode {
  /** The kernel's mode name (bridge, private, vepa, passthru / l2, l3, l3s). */
  mode: string;
  /** ipvlan's flag (bridge, private, vepa). */
  flag?: string;
  /** One network and one endpoint per parent (macvlan passthru). */
  exclusive: boolean;
  /** Routed (ipvlan l3/l3s): no gateway, the default route goes through the device. */
  routed: boolean;
  /** Why the shim cannot reach the sandboxes in this mode (undefined: it can). */
  noHostAccess?: string;
}

export interface VlanParent {
  /** The link the 802.1Q sub-interface is made on. */
  lower: string;
  id: number;
}

export interface LanConfig {
  networkId: string;
  kind: LanKind;
  /** The children's parent link. */
  parent: string;
  /** No parent given (or --internal): a link of the network's own, isolated from every LAN. */
  isolated: boolean;
  /** `parent=eth0.10` names an 802.1Q sub-interface, made when missing. */
  vlan?: VlanParent;
  mode: LanMode;
  /** MTU asked for with com.docker.network.driver.mtu (else the parent's). */
  mtu?: number;
  internal: boolean;
  enableIPv6: boolean;
  subnetV4?: string;
  subnetV6?: string;
  /** Gateways as CIDRs ("10.1.0.1/24"), as IPAM allocated them. */
  gatewayV4?: string;
  gatewayV6?: string;
  /** The --ip-range of each family, routed through the shim (else the subnet). */
  rangeV4?: string;
  rangeV6?: string;
  /** Host access: the shim's addresses (CIDRs with the subnet's prefix). */
  hostAccess?: { v4?: string; v6?: string };
}

/** Docker's dummy parent name for a network without one: dm-<12 hex of the id>. */
export const isolatedParentName = (networkId: string) => `dm-${networkId.slice(0, 12)}`;

/** `<lower>.<vid>` with vid 1-4094: the 802.1Q sub-interface Docker makes for such a parent. */
export function vlanOf(op: string, parent: string): VlanParent | undefined {
  const m = /^(.+)\.(\d+)$/.exec(parent);
  if (!m) return undefined;
  const id = Number(m[2]);
  if (!Number.isInteger(id) || id < 1 || id > 4094 || String(id) !== m[2])
    throw invalidArgument(
      op,
      LAN_OPT.parent,
      `option ${LAN_OPT.parent}: "${parent}" names VLAN ${m[2]}; an 802.1Q id is 1-4094 (as in ${m[1]}.10)`,
    );
  return { lower: m[1], id };
}

/** A choice among allowed values of an option (the first is its default); another is refused listing them. */
export function choice<T extends string>(
  options: Record<string, string>,
  key: string,
  allowed: readonly T[],
  what: string,
): T {
  const given = options[key] ?? '';
  const v = (given === '' ? allowed[0] : given) as T;
  if (!allowed.includes(v))
    throw invalidArgument(
      'network create',
      key,
      `option ${key}: "${given}" is not ${what} (use ${allowed.join(', ')})`,
    );
  return v;
}

function parseMtu(op: string, text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  const mtu = Number(text);
  if (!/^\d+$/.test(text) || mtu < 68 || mtu > 65535)
    throw invalidArgument(
      op,
      LAN_OPT.mtu,
      `option ${LAN_OPT.mtu}: "${text}" is not an MTU between 68 and 65535`,
    );
  return mtu;
}

/** The network's address of the aux address named `host` in the pool of this family. */
function hostAux(spec: NetworkSpec, v6: boolean): string | undefined {
  return (v6 ? spec.ipv6 : spec.ipv4)[0]?.auxAddresses?.[HOST_AUX_NAME];
}

export function parseLanConfig(kind: LanKind, spec: NetworkSpec, mode: LanMode): LanConfig {
  const op = 'network create';
  const o = spec.options;
  const prefix = `cnmd.${kind}.`;
  for (const k of Object.keys(o))
    if (k.startsWith(prefix) && k !== HOST_ACCESS_OPT[kind])
      throw invalidArgument(
        op,
        k,
        `option ${k} is not a ${kind} option (cnmd's is ${HOST_ACCESS_OPT[kind]})`,
      );
  const given = o[LAN_OPT.parent] ?? '';
  // --internal networks are cut off from every LAN, as Docker's: a given parent is not used.
  const isolated = given === '' || spec.internal;
  let vlan: VlanParent | undefined;
  if (!isolated) {
    validateIfName(op, given);
    vlan = vlanOf(op, given);
    if (vlan) validateIfName(op, vlan.lower);
  }
  const v4 = spec.ipv4[0];
  const v6 = spec.ipv6[0];
  const wantsHost = parseBool(op, HOST_ACCESS_OPT[kind], o[HOST_ACCESS_OPT[kind]], false);
  let hostAccess: LanConfig['hostAccess'];
  if (wantsHost) {
    const opt = HOST_ACCESS_OPT[kind];
    if (isolated)
      throw invalidArgument(
        op,
        opt,
        `option ${opt}: a network without a parent (or --internal) has no LAN for the host to reach; give -o parent=`,
      );
    if (mode.noHostAccess) throw invalidArgument(op, opt, `option ${opt}: ${mode.noHostAccess}`);
    hostAccess = { v4: hostAux(spec, false), v6: spec.enableIPv6 ? hostAux(spec, true) : undefined };
    if (!hostAccess.v4 && !hostAccess.v6)
      throw invalidArgument(
        op,
        opt,
        `option ${opt}: give the host's address on the network with --aux-address ${HOST_AUX_NAME}=<ip in the subnet>`,
      );
  }
  return {
    networkId: spec.id,
    kind,
    parent: isolated ? isolatedParentName(spec.id) : given,
    isolated,
    vlan,
    mode,
    mtu: parseMtu(op, o[LAN_OPT.mtu]),
    internal: spec.internal,
    enableIPv6: spec.enableIPv6,
    subnetV4: v4?.pool,
    subnetV6: v6?.pool,
    gatewayV4: v4?.gateway,
    gatewayV6: v6?.gateway,
    rangeV4: v4?.ipRange,
    rangeV6: v6?.ipRange,
    hostAccess,
  };
}
