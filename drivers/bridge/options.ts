// The bridge driver's options, parsed from a network's -o map with Docker's
// keys and defaults; bad values are refused with what to fix.
import { invalidArgument } from '../../src/errors';
import { isUserIfName, validateUserIfName } from '../../src/netlink/rtnl/link';
import type { NetworkSpec } from '../driver';
import { isIPv4 } from '../../src/net/addr';
import type { GatewayMode } from '../../src/firewall/layout';

export type { GatewayMode };

export const OPT = {
  name: 'com.docker.network.bridge.name',
  icc: 'com.docker.network.bridge.enable_icc',
  masquerade: 'com.docker.network.bridge.enable_ip_masquerade',
  hostBinding: 'com.docker.network.bridge.host_binding_ipv4',
  inhibitIPv4: 'com.docker.network.bridge.inhibit_ipv4',
  defaultBridge: 'com.docker.network.bridge.default_bridge',
  mtu: 'com.docker.network.driver.mtu',
  ifacePrefix: 'com.docker.network.container_iface_prefix',
  hostIPv4: 'com.docker.network.host_ipv4',
  gatewayModeIPv4: 'com.docker.network.bridge.gateway_mode_ipv4',
  gatewayModeIPv6: 'com.docker.network.bridge.gateway_mode_ipv6',
  trustedHostInterfaces: 'com.docker.network.bridge.trusted_host_interfaces',
} as const;

/**
 * Docker 28's gateway modes (moby daemon/libnetwork/drivers/bridge/bridge_linux.go newGwMode):
 * nat (default), nat-unprotected (no per-port filtering), routed (no NAT: container addresses
 * reached by routing, published container ports open), isolated (--internal only: no address on
 * the bridge). What each installs: docs/design-notes.md, "Gateway modes".
 */
export const GATEWAY_MODES: readonly GatewayMode[] = ['nat', 'nat-unprotected', 'routed', 'isolated'];

/** The com.docker.network.bridge.* keys Docker defines that cnmd implements; any other one is refused. */
const BRIDGE_NAMESPACE = 'com.docker.network.bridge.';
const KNOWN_BRIDGE_KEYS: ReadonlySet<string> = new Set(
  Object.values(OPT).filter((k) => k.startsWith(BRIDGE_NAMESPACE)),
);

/**
 * The options in Docker's bridge namespace cnmd does not implement (a typo, or a key of a later
 * Docker such as trusted_host_interfaces): refused at create, so a user never gets silently less
 * than asked. Keys outside the namespace pass through, as Docker passes unknown generic options.
 */
export function unknownBridgeOptions(o: Record<string, string>): string[] {
  return Object.keys(o).filter((k) => k.startsWith(BRIDGE_NAMESPACE) && !KNOWN_BRIDGE_KEYS.has(k));
}

export const DEFAULT_BRIDGE_DEVICE = 'cnm0';

export interface BridgeConfig {
  networkId: string;
  bridgeName: string;
  enableICC: boolean;
  enableIPMasquerade: boolean;
  hostBindingIPv4: string;
  inhibitIPv4: boolean;
  mtu: number;
  internal: boolean;
  enableIPv6: boolean;
  /** Gateway CIDRs on the bridge. */
  gatewayV4?: string;
  gatewayV6?: string;
  subnetV4?: string;
  subnetV6?: string;
  /** SNAT source for masquerade instead of the outgoing interface's address. */
  hostIPv4?: string;
  isDefault: boolean;
  /** com.docker.network.bridge.gateway_mode_ipv4 / _ipv6 (default nat). */
  gatewayModeIPv4: GatewayMode;
  gatewayModeIPv6: GatewayMode;
  /**
   * com.docker.network.bridge.trusted_host_interfaces (Docker 28.2): host interfaces treated as the
   * bridge by the raw-table DROP of direct access to a sandbox's address (colon-separated).
   */
  trustedHostInterfaces: string[];
}

/** strconv.ParseBool, as Docker parses its boolean options. */
export function parseBool(op: string, key: string, v: string | undefined, dflt: boolean): boolean {
  if (v === undefined || v === '') return dflt;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  throw invalidArgument(op, key, `option ${key}: "${v}" is not a boolean (use true or false)`);
}

/** A plain decimal number (no sign, hex, exponent or whitespace), as Go's strconv.Atoi reads options; undefined otherwise. */
export function decimal(s: string): number | undefined {
  return /^\d{1,9}$/.test(s) ? Number(s) : undefined;
}

function parseGatewayMode(op: string, key: string, v: string | undefined): GatewayMode {
  if (v === undefined) return 'nat';
  const mode = GATEWAY_MODES.find((m) => m === v);
  if (mode) return mode;
  throw invalidArgument(
    op,
    key,
    `option ${key}: ${JSON.stringify(v)} is not a gateway mode (use ${GATEWAY_MODES.join(', ')})`,
  );
}

/**
 * The network's bridge configuration. Bridge-namespace keys cnmd does not implement are refused
 * unless `refuseUnknown` is false: a network restored from the store was accepted by an earlier
 * version (the caller logs them: unknownBridgeOptions).
 */
export function parseBridgeConfig(spec: NetworkSpec, opts: { refuseUnknown?: boolean } = {}): BridgeConfig {
  const op = 'network create';
  const o = spec.options;
  const unknown = opts.refuseUnknown === false ? [] : unknownBridgeOptions(o);
  if (unknown.length)
    throw invalidArgument(
      op,
      unknown[0],
      `option ${unknown[0]} is not supported by cnmd's bridge driver (supported: ${[...KNOWN_BRIDGE_KEYS]
        .map((k) => k.slice(BRIDGE_NAMESPACE.length))
        .join(', ')})`,
    );
  // Docker splits on ':' and drops empty parts (strings.FieldsFunc); each must be a plain interface name.
  const trustedHostInterfaces = (o[OPT.trustedHostInterfaces] ?? '').split(':').filter((x) => x !== '');
  for (const name of trustedHostInterfaces)
    if (!isUserIfName(name))
      throw invalidArgument(
        op,
        OPT.trustedHostInterfaces,
        `option ${OPT.trustedHostInterfaces}: "${name}" is not an interface name (1-15 ASCII letters, ` +
          `digits, '_', '.' or '-', starting with a letter or digit; separate names with ':')`,
      );
  const gatewayModeIPv4 = parseGatewayMode(op, OPT.gatewayModeIPv4, o[OPT.gatewayModeIPv4]);
  const gatewayModeIPv6 = parseGatewayMode(op, OPT.gatewayModeIPv6, o[OPT.gatewayModeIPv6]);
  for (const [key, mode] of [
    [OPT.gatewayModeIPv4, gatewayModeIPv4],
    [OPT.gatewayModeIPv6, gatewayModeIPv6],
  ] as const) {
    // Docker's words (bridge_linux.go parseNetworkOptions), with what to do.
    if (mode === 'isolated' && !spec.internal)
      throw invalidArgument(
        op,
        key,
        `option ${key}: gateway mode 'isolated' can only be used for an internal network (create it with --internal)`,
      );
  }
  const bridgeName = o[OPT.name] || (spec.isDefault ? DEFAULT_BRIDGE_DEVICE : `br-${spec.id.slice(0, 12)}`);
  validateUserIfName(op, `option ${OPT.name}`, bridgeName);
  const mtuText = o[OPT.mtu];
  const mtu = mtuText === undefined || mtuText === '' ? 1500 : decimal(mtuText);
  if (mtu === undefined || mtu < 68 || mtu > 65535)
    throw invalidArgument(
      op,
      OPT.mtu,
      `option ${OPT.mtu}: ${JSON.stringify(mtuText)} is not an MTU between 68 and 65535 (a decimal number)`,
    );
  const hostBindingIPv4 = o[OPT.hostBinding] || '0.0.0.0';
  if (!isIPv4(hostBindingIPv4))
    throw invalidArgument(
      op,
      OPT.hostBinding,
      `option ${OPT.hostBinding}: "${hostBindingIPv4}" is not an IPv4 address`,
    );
  const hostIPv4 = o[OPT.hostIPv4] || undefined;
  if (hostIPv4 !== undefined && !isIPv4(hostIPv4))
    throw invalidArgument(op, OPT.hostIPv4, `option ${OPT.hostIPv4}: "${hostIPv4}" is not an IPv4 address`);
  const prefix = o[OPT.ifacePrefix];
  if (prefix !== undefined && !/^[a-z][a-z0-9]{0,10}$/.test(prefix))
    throw invalidArgument(
      op,
      OPT.ifacePrefix,
      `option ${OPT.ifacePrefix}: "${prefix}" must be 1-11 lowercase letters and digits`,
    );
  const v4 = spec.ipv4[0];
  const v6 = spec.ipv6[0];
  return {
    networkId: spec.id,
    bridgeName,
    enableICC: parseBool(op, OPT.icc, o[OPT.icc], true),
    enableIPMasquerade: parseBool(op, OPT.masquerade, o[OPT.masquerade], true),
    hostBindingIPv4,
    inhibitIPv4: parseBool(op, OPT.inhibitIPv4, o[OPT.inhibitIPv4], false),
    mtu,
    internal: spec.internal,
    enableIPv6: spec.enableIPv6,
    gatewayV4: v4?.gateway,
    gatewayV6: v6?.gateway,
    subnetV4: v4?.pool,
    subnetV6: v6?.pool,
    hostIPv4,
    isDefault: !!spec.isDefault || parseBool(op, OPT.defaultBridge, o[OPT.defaultBridge], false),
    gatewayModeIPv4,
    gatewayModeIPv6,
    trustedHostInterfaces,
  };
}
