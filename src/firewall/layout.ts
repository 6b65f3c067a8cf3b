// cnmd's rule layout: Docker's (libnetwork 20.10, drivers/bridge/setup_ip_tables.go and
// iptables/iptables.go) with cnmd's chain prefix. Pure functions: they return batches of
// "ensure" operations (idempotent) and their exact inverses ("delete if present").
//
//   nat     PREROUTING  -m addrtype --dst-type LOCAL -j CNMD
//           OUTPUT      -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j CNMD   (no `!` part without userland proxy)
//           POSTROUTING -s <subnet> ! -o <br> -j MASQUERADE                      per network, when masquerading
//           CNMD        -i <br> -j RETURN                                        per network, when masquerading
//   filter  FORWARD     -j CNMD-USER                                             pinned at 1
//                       -j CNMD-ISOLATION-STAGE-1                                pinned at 2
//                       -j CNMD-FORWARD                                          pinned at 3
//           CNMD-FORWARD  -o <br> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT   per network (inserted first)
//                       -o <br> -j CNMD
//                       -i <br> ! -o <br> -j ACCEPT
//                       -i <br> -o <br> -j ACCEPT|DROP                           ICC
//           CNMD-USER   -j RETURN
//           CNMD-ISOLATION-STAGE-1  -i <br> ! -o <br> -m conntrack ! --ctstate DNAT -j CNMD-ISOLATION-STAGE-2
//                                                                            per network (inserted first),
// then -j RETURN
//           CNMD-ISOLATION-STAGE-2  -o <br> -j DROP                              per network (inserted
// first), then -j RETURN
//           CNMD        ! -i <br> -o <br> -j DROP                                 per network, appended (the
//                       published ports' ACCEPTs go above it); ACCEPT for nat-unprotected (GatewayMode)
//   internal networks: STAGE-1 `-i <br> ! -d <subnet> -j DROP`, `-o <br> ! -s <subnet> -j DROP`,
//           the ICC rule, and nothing else (no masquerade, no FORWARD accepts, no STAGE-2).
// Isolation skips connections DNATed to a published port (`! --ctstate DNAT`): a sandbox on
// network B reaches a port published by a sandbox on A through the host's or B's gateway
// address, as on Docker's bridge (moby 28 isolates with `DOCKER ! -i br -o br -j DROP` after the
// published ports' ACCEPTs, with the same effect); CNMD's per-port ACCEPT then lets it in.
// Anything else between two bridges is still dropped. 20.10 dropped it with the proxy off.
// Per-network accepts live in cnmd's own CNMD-FORWARD chain, not in FORWARD as in 20.10
// (moby 28 made the same move, DOCKER-FORWARD): FORWARD is shared with other writers
// (dockerd inserts its own jumps at the top when it starts), so positions in it are
// only ever decided once, at start, against a fresh read; inside CNMD-FORWARD nobody
// else moves rules, and a network's accepts can never end up above the isolation jump.
// IPv6 (ip6tables) mirrors all of it for networks with an IPv6 subnet (loopback ::1/128).
// Rule texts are written as the reference writes them; iptables-save prints some of them
// with the base parameters first (see canonical.ts), which the backend accounts for.
import { invalidArgument } from '../errors';
import { validateUserIfName } from '../netlink/rtnl/link';
import { canonicalAddress } from './canonical';
import { BatchBuilder, type Family, type RuleBatch, type Table } from './firewall';

export interface ChainNames {
  /** nat chain for DNAT of published ports (Docker's DOCKER). */
  nat: string;
  /** filter chain for published ports' ACCEPTs (Docker's DOCKER). */
  filter: string;
  user: string;
  isolation1: string;
  isolation2: string;
  /** filter chain holding every network's FORWARD accepts. */
  forward: string;
}

export function chainNames(prefix = 'CNMD'): ChainNames {
  return {
    nat: prefix,
    filter: prefix,
    user: `${prefix}-USER`,
    isolation1: `${prefix}-ISOLATION-STAGE-1`,
    isolation2: `${prefix}-ISOLATION-STAGE-2`,
    forward: `${prefix}-FORWARD`,
  };
}

export const CHAINS: ChainNames = chainNames();

export interface LayoutOptions {
  /** Chain prefix (default CNMD). */
  prefix?: string;
  /** Also program ip6tables base chains (baseRules/removeBaseRules). */
  ipv6?: boolean;
  /** Docker's userland-proxy mode (default true); false selects the hairpin NAT variant. */
  userlandProxy?: boolean;
  /**
   * Hairpin by NAT even with the proxy (cnmd's default): traffic from a bridge to a
   * published port is DNATed like any other (no `CNMD -i br -j RETURN`), so the proxy
   * only carries loopback connections.
   */
  hairpinNat?: boolean;
}

/**
 * Docker 28's per-family gateway mode of a bridge network (com.docker.network.bridge.gateway_mode_ipv4
 * / _ipv6). Rules per mode (moby daemon/libnetwork/drivers/bridge/internal/iptabler/network.go):
 *  nat              MASQUERADE; `CNMD ! -i br -o br -j DROP` after the published ports' ACCEPTs
 *  nat-unprotected  MASQUERADE; `CNMD ! -i br -o br -j ACCEPT` (any port reachable by routing)
 *  routed           no MASQUERADE; `CNMD -o br -p icmp -j ACCEPT`, then the DROP; STAGE-2 sends
 *                   other networks' traffic to CNMD instead of DROP, STAGE-1 accepts its answers:
 *                   other networks reach its published ports by routing, as from outside (moby
 *                   28.5 setINC)
 *  isolated         (internal networks only) the internal rules; the bridge gets no address
 */
export type GatewayMode = 'nat' | 'nat-unprotected' | 'routed' | 'isolated';

export interface BridgeNetworkSpec {
  bridge: string;
  subnets: { v4?: string; v6?: string };
  /** Inter-container communication on this bridge. */
  icc: boolean;
  /** com.docker.network.bridge.enable_ip_masquerade */
  masquerade: boolean;
  internal: boolean;
  /** com.docker.network.host_ipv4: SNAT to this address instead of MASQUERADE. */
  hostIPv4?: string;
  /** Per family (default nat). */
  gatewayModes?: { ipv4?: GatewayMode; ipv6?: GatewayMode };
}

/** One rule of the layout: where it goes and, for additions, at which position. */
export interface LayoutRule {
  family: Family;
  table: Table;
  chain: string;
  rule: string;
  /** Insert position when absent (append when undefined). */
  position?: number;
  /** Must sit exactly at `position`. */
  pinned?: boolean;
}

/** Chains created by baseRules, per table. */
export function baseChains(opts: LayoutOptions = {}): { table: Table; chain: string }[] {
  const c = chainNames(opts.prefix);
  return [
    { table: 'nat', chain: c.nat },
    { table: 'filter', chain: c.filter },
    { table: 'filter', chain: c.user },
    { table: 'filter', chain: c.isolation1 },
    { table: 'filter', chain: c.isolation2 },
    { table: 'filter', chain: c.forward },
  ];
}

/** The rules of the base layout, in the order they are ensured. */
export function baseRuleList(opts: LayoutOptions = {}): LayoutRule[] {
  const c = chainNames(opts.prefix);
  const proxy = opts.userlandProxy ?? true;
  const out: LayoutRule[] = [];
  for (const family of families(opts.ipv6)) {
    const loopback = family === 'ipv4' ? '127.0.0.0/8' : '::1/128';
    out.push(
      { family, table: 'nat', chain: 'PREROUTING', rule: `-m addrtype --dst-type LOCAL -j ${c.nat}` },
      {
        family,
        table: 'nat',
        chain: 'OUTPUT',
        rule: proxy
          ? `-m addrtype --dst-type LOCAL ! -d ${loopback} -j ${c.nat}`
          : `-m addrtype --dst-type LOCAL -j ${c.nat}`,
      },
      { family, table: 'filter', chain: c.user, rule: '-j RETURN' },
      { family, table: 'filter', chain: c.isolation1, rule: '-j RETURN' },
      { family, table: 'filter', chain: c.isolation2, rule: '-j RETURN' },
      { family, table: 'filter', chain: 'FORWARD', rule: `-j ${c.user}`, position: 1, pinned: true },
      { family, table: 'filter', chain: 'FORWARD', rule: `-j ${c.isolation1}`, position: 2, pinned: true },
      { family, table: 'filter', chain: 'FORWARD', rule: `-j ${c.forward}`, position: 3, pinned: true },
    );
  }
  return out;
}

/** Creates the base chains (never flushing existing ones) and ensures the base rules. Idempotent. */
export function baseRules(opts: LayoutOptions = {}): RuleBatch {
  const b = new BatchBuilder();
  for (const family of families(opts.ipv6)) {
    for (const { table, chain } of baseChains(opts)) b.in(table, family).ensureChain(chain);
  }
  for (const r of baseRuleList(opts))
    b.in(r.table, r.family).ensureRule(r.chain, r.rule, { position: r.position, pinned: r.pinned });
  return b.build();
}

/** Removes the base jumps, then flushes and deletes the base chains (with whatever is still in them). */
export function removeBaseRules(opts: LayoutOptions = {}): RuleBatch {
  const b = new BatchBuilder();
  const rules = baseRuleList(opts).filter((r) => isBuiltin(r.chain));
  for (const r of rules.reverse()) b.in(r.table, r.family).deleteIfPresent(r.chain, r.rule);
  for (const family of families(opts.ipv6)) {
    for (const { table, chain } of baseChains(opts)) b.in(table, family).flushChain(chain, true);
    for (const { table, chain } of baseChains(opts)) b.in(table, family).deleteChain(chain, true);
  }
  return b.build();
}

/** The rules of one bridge network, in the order they are ensured. */
export function networkRuleList(net: BridgeNetworkSpec, opts: LayoutOptions = {}): LayoutRule[] {
  const op = 'firewall layout';
  const c = chainNames(opts.prefix);
  const proxy = opts.userlandProxy ?? true;
  const br = net.bridge;
  // Never a wildcard or an option: a rule for `+` would match every interface.
  if (typeof br !== 'string') throw invalidArgument(op, String(br), 'invalid bridge name');
  validateUserIfName(op, 'bridge name', br);
  const hostIPv4 = net.hostIPv4 !== undefined ? canonicalAddress(net.hostIPv4, 'ipv4') : undefined;
  if (net.hostIPv4 !== undefined && (!hostIPv4 || hostIPv4.prefix !== 32))
    throw invalidArgument(op, net.hostIPv4, 'host_ipv4 must be one IPv4 address');
  const out: LayoutRule[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    const given = family === 'ipv4' ? net.subnets.v4 : net.subnets.v6;
    if (given === undefined) continue;
    const parsed = canonicalAddress(given, family);
    if (!parsed)
      throw invalidArgument(
        op,
        given,
        `invalid ${family === 'ipv4' ? 'IPv4' : 'IPv6'} subnet ${JSON.stringify(given)}`,
      );
    const subnet = parsed.text;
    const add = (table: Table, chain: string, rule: string, position?: number) =>
      out.push({ family, table, chain, rule, position });
    const icc = `-i ${br} -o ${br} -j ${net.icc ? 'ACCEPT' : 'DROP'}`;
    if (net.internal) {
      // IPv6 as moby writes it (iptabler/network.go setupInternalNetworkRules): bridged frames
      // traverse ip6tables with br_netfilter, and neighbour discovery between sandboxes (to
      // multicast and link-local addresses, outside the subnet) must not meet these DROPs.
      const bridged = family === 'ipv6' ? [`! -o ${br} `, `! -i ${br} `] : ['', ''];
      add('filter', c.isolation1, `-i ${br} ${bridged[0]}! -d ${subnet} -j DROP`, 1);
      add('filter', c.isolation1, `${bridged[1]}-o ${br} ! -s ${subnet} -j DROP`, 2);
      add('filter', c.forward, icc, 1);
      continue;
    }
    const mode = net.gatewayModes?.[family] ?? 'nat';
    if (net.masquerade && mode !== 'routed') {
      const snat =
        family === 'ipv4' && hostIPv4
          ? `SNAT --to-source ${hostIPv4.text.replace(/\/32$/, '')}`
          : 'MASQUERADE';
      add('nat', 'POSTROUTING', `-s ${subnet} ! -o ${br} -j ${snat}`, 1);
      if (proxy && !opts.hairpinNat) add('nat', c.nat, `-i ${br} -j RETURN`, 1);
    }
    if (!proxy) add('nat', 'POSTROUTING', `-m addrtype --src-type LOCAL -o ${br} -j MASQUERADE`, 1);
    add('filter', c.forward, `-o ${br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`, 1);
    add('filter', c.forward, `-o ${br} -j ${c.filter}`, 2);
    add('filter', c.forward, `-i ${br} ! -o ${br} -j ACCEPT`, 3);
    add('filter', c.forward, icc, 4);
    add('filter', c.isolation1, `-i ${br} ! -o ${br} -m conntrack ! --ctstate DNAT -j ${c.isolation2}`, 1);
    // Routed (moby 28 setINC): other networks may enter, through its port filter (CNMD: the open
    // ports' ACCEPTs, then its DROP), not to a DROP; that filter decides here, before the source
    // network's outgoing ACCEPT in CNMD-FORWARD could. Its answers pass STAGE-1 before its own jump.
    if (mode === 'routed') {
      add('filter', c.isolation1, `-i ${br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`, 1);
      add('filter', c.isolation2, `-o ${br} -j ${c.filter}`, 1);
    } else add('filter', c.isolation2, `-o ${br} -j DROP`, 1);
    // The network's default for what comes from outside its bridge, appended: published ports'
    // ACCEPTs are inserted above it (portmap/rules.ts). moby's setDefaultForwardRule and setICMP.
    if (mode === 'routed')
      add('filter', c.filter, `-o ${br} -p ${family === 'ipv4' ? 'icmp' : 'ipv6-icmp'} -j ACCEPT`);
    add('filter', c.filter, `! -i ${br} -o ${br} -j ${mode === 'nat-unprotected' ? 'ACCEPT' : 'DROP'}`);
  }
  return out;
}

/** Ensures one bridge network's rules (base rules must be in place). Idempotent. */
export function networkRules(net: BridgeNetworkSpec, opts: LayoutOptions = {}): RuleBatch {
  const b = new BatchBuilder();
  for (const r of networkRuleList(net, opts))
    b.in(r.table, r.family).ensureRule(r.chain, r.rule, { position: r.position });
  return b.build();
}

/** Removes exactly the rules networkRules(net, opts) adds, if present. Idempotent. */
export function removeNetworkRules(net: BridgeNetworkSpec, opts: LayoutOptions = {}): RuleBatch {
  const b = new BatchBuilder();
  for (const r of networkRuleList(net, opts).reverse())
    b.in(r.table, r.family).deleteIfPresent(r.chain, r.rule);
  return b.build();
}

/**
 * Deletes, if present, the rules earlier versions of this layout wrote for `net` and the
 * current one no longer does (the isolation jump without `! --ctstate DNAT`, an internal network's
 * IPv6 DROPs that caught bridged neighbour discovery): applied with
 * networkRules at a start, so an upgraded daemon leaves no stale rule behind.
 */
export function legacyNetworkRules(net: BridgeNetworkSpec, opts: LayoutOptions = {}): RuleBatch {
  const c = chainNames(opts.prefix);
  const b = new BatchBuilder();
  const br = net.bridge;
  for (const r of networkRuleList(net, opts)) {
    if (r.chain === c.isolation1 && r.rule.includes(' ! --ctstate DNAT '))
      b.in(r.table, r.family).deleteIfPresent(r.chain, r.rule.replace(' -m conntrack ! --ctstate DNAT', ''));
    // An internal network's IPv6 DROPs without the bridged-traffic exception.
    if (net.internal && r.family === 'ipv6' && r.chain === c.isolation1)
      b.in(r.table, r.family).deleteIfPresent(
        r.chain,
        r.rule.replace(`-i ${br} ! -o ${br} `, `-i ${br} `).replace(`! -i ${br} -o ${br} `, `-o ${br} `),
      );
  }
  return b.build();
}

/**
 * Removes the rules only the other userland-proxy mode has (`rules(opts)` with
 * the mode flipped, minus `rules(opts)`): a daemon restarted with
 * --userland-proxy switched must not keep the previous mode's jumps and
 * MASQUERADEs. Idempotent.
 */
export function removeOtherModeRules(
  rules: (o: LayoutOptions) => LayoutRule[],
  opts: LayoutOptions = {},
): RuleBatch {
  const key = (r: LayoutRule) => `${r.family} ${r.table} ${r.chain} ${r.rule}`;
  const mine = new Set(rules(opts).map(key));
  const b = new BatchBuilder();
  for (const r of rules({ ...opts, userlandProxy: !(opts.userlandProxy ?? true) }).reverse())
    if (!mine.has(key(r))) b.in(r.table, r.family).deleteIfPresent(r.chain, r.rule);
  return b.build();
}

function families(ipv6?: boolean): Family[] {
  return ipv6 ? ['ipv4', 'ipv6'] : ['ipv4'];
}

function isBuiltin(chain: string): boolean {
  return ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'].includes(chain);
}
