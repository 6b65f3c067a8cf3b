// iptables rules for one sandbox's published ports, as RuleBatches for the FirewallBackend:
// libnetwork 20.10's per-port rules (drivers/bridge + iptables/iptables.go Forward()) under
// cnmd's chains (firewall/layout.ts), plus moby's later raw-table protections.
//
// Per allocated binding, per family that has both a host address and a container address
// (CIP: the sandbox's address on the bridge; HP/CP: host/container port or A:B range):
//   nat    CNMD        [-d HOSTIP/32] [! -i br] -p P -m P --dport HP -j DNAT --to-destination CIP:CP
//                      (`! -i br` only with the userland proxy, as Docker; without it the
//                       DNAT also applies to containers on the bridge: hairpin by NAT)
//   filter CNMD        -d CIP/32 ! -i br -o br -p P -m P --dport CP -j ACCEPT
//   nat    POSTROUTING -s CIP/32 -d CIP/32 -p P -m P --dport CP -j MASQUERADE        (hairpin)
//   mangle POSTROUTING -s CIP/32 -p sctp -m sctp --sport CP -j CHECKSUM --checksum-fill   (SCTP only)
//   raw    PREROUTING  -d 127.x.y.z/32 ! -i lo -p P -m P --dport HP -j DROP           (IPv4 loopback host address)
//   raw    PREROUTING  -d CIP/32 ! -i br -j DROP   once per sandbox and family, when a binding of that family
//                      names a host address (moby/moby#45610: a port published on 127.0.0.1 or one LAN
//                      address must not be reachable by routing to the container address directly;
//                      DNATed traffic is unaffected: in raw PREROUTING its destination is still the host's);
//                      with directAccessFilter 'always' (the bridge driver's, Docker 28.2) for every sandbox,
//                      after `-d CIP/32 -i IF -j ACCEPT` for each trusted_host_interfaces IF (moby endpoint.go)
// IPv6 rules go to ip6tables with /128 and [CIP]:CP.
// The filter ACCEPT is inserted at the top of CNMD: the network's default DROP (or ACCEPT) is below.
// Gateway modes (PortRulesSpec.gatewayModes, per family; moby iptabler/port.go, portmappers/routed):
//  - routed: the filter ACCEPT of the container port only. No host port, DNAT, hairpin or raw rule:
//    the port is reached at the container's own address by routing (moby's routed port mapper drops
//    the host port, "Host port ignored, because NAT is disabled").
//  - nat-unprotected: no filter ACCEPT (the network accepts every port) and no direct-access DROP.
//
// Differences from Docker, on purpose:
//  - A range is ONE rule of each kind (`--dport A:B`), never one per port. Identical host and
//    container ranges DNAT to the bare address (`--to-destination CIP`: the port is kept);
//    shifted ranges use the kernel's shifted port mapping `--to-destination CIP:C-D/A`
//    (NF_NAT_RANGE_PROTO_OFFSET, xt DNAT revision 2: new port = C + (port - A); iptables
//    >= 1.8.6, Linux >= 5.x; verified with iptables 1.8.9 nf_tables on this kernel by
//    test/integration/portmap-rules.test.ts). With `shiftedRangeDnat: false` a shifted
//    range gets one DNAT rule per port (still in the same batch); the other kinds stay one
//    range rule.
//  - The SCTP CHECKSUM rule carries `-s CIP/32`: Docker's has no address, so two containers
//    publishing the same SCTP port would share (and the first removal delete) one rule.
//  - A host address '' means 0.0.0.0 (no -d) or the network's host_binding_ipv4 for IPv4,
//    and :: for IPv6 when the sandbox has an IPv6 address (else IPv6 clients are the
//    proxy's business, as with Docker without ip6tables).
// Every rule is written exactly as iptables-save prints it (firewall/canonical.ts), so the
// "ensure" batch is idempotent and the removal batch is its exact inverse. Rules are unique
// per sandbox (they name its address or its reserved host ports), so removing one sandbox's
// rules never touches another's; pass removePortRules() the same spec portRules() got.
//
// The userland-proxy=false mode also needs, per network: POSTROUTING
// `-m addrtype --src-type LOCAL -o br -j MASQUERADE` and the OUTPUT jump without
// `! -d 127.0.0.0/8` (firewall/layout.ts with `userlandProxy: false`), and route_localnet=1
// on the bridge (routeLocalnetSysctl()).
import * as path from 'node:path';
import { CnmdError, hasErrno } from '../errors';
import { defaultExec, type Exec } from '../firewall/iptables';
import { BatchBuilder, type Family, type RuleBatch } from '../firewall/firewall';
import { chainNames, type GatewayMode, type LayoutRule } from '../firewall/layout';
import { isUserIfName } from '../netlink/rtnl/link';
import {
  bindingAddresses,
  canonicalIP,
  formatPortSpec,
  isAllocated,
  normalizeBinding,
  portCount,
  type PortBinding,
} from './spec';

const OP = 'port rules';

export interface PortRulesSpec {
  /** The bridge the sandbox is attached to. */
  bridge: string;
  /** The sandbox's addresses on that bridge (plain, no prefix). */
  containerIPv4?: string;
  containerIPv6?: string;
  /** Allocated bindings (PortAllocator.reserve's result): exact host ports. */
  bindings: readonly PortBinding[];
  /** com.docker.network.bridge.host_binding_ipv4 of the network. */
  hostBindingIPv4?: string;
  /** The network's gateway mode per family (default nat; see the file comment). */
  gatewayModes?: { ipv4?: GatewayMode; ipv6?: GatewayMode };
  /** com.docker.network.bridge.trusted_host_interfaces: an ACCEPT before the direct-access DROP for each. */
  trustedHostInterfaces?: readonly string[];
  /** Overrides PortRulesOptions.directAccessFilter for this sandbox (the bridge driver's: 'always'). */
  directAccessFilter?: PortRulesOptions['directAccessFilter'];
}

export interface PortRulesOptions {
  /** Chain prefix (default CNMD), as for the layout. */
  prefix?: string;
  /** Docker's userland-proxy (default true). false: hairpin by NAT (no `! -i br` on DNAT). */
  userlandProxy?: boolean;
  /** Use `--to-destination CIP:C-D/A` for shifted ranges (default true); false: one DNAT rule per port. */
  shiftedRangeDnat?: boolean;
  /**
   * The raw-table DROP of direct access to the container address from outside the bridge:
   * 'auto' (default) when a binding of that family names a host address, 'always', 'never'.
   */
  directAccessFilter?: 'auto' | 'always' | 'never';
}

function ports(a: number, b: number | undefined, sep: string): string {
  return b !== undefined && b !== a ? `${a}${sep}${b}` : String(a);
}

function isWildcard(addr: string): boolean {
  return addr === '0.0.0.0' || addr === '::';
}

function validBridge(br: unknown): br is string {
  return typeof br === 'string' && /^[^\s/:!"]{1,15}$/.test(br);
}

/** The rules for a sandbox's bindings, in the order they are ensured (see the file comment). */
export function portRuleList(spec: PortRulesSpec, opts: PortRulesOptions = {}): LayoutRule[] {
  const c = chainNames(opts.prefix);
  const proxy = opts.userlandProxy ?? true;
  const shifted = opts.shiftedRangeDnat ?? true;
  const filterMode = spec.directAccessFilter ?? opts.directAccessFilter ?? 'auto';
  const br = spec.bridge;
  if (!validBridge(br))
    throw new CnmdError('INVALID_ARGUMENT', `${OP}: invalid bridge name ${JSON.stringify(br)}`, {
      op: OP,
      object: String(br),
    });
  const cip: Partial<Record<Family, string>> = {};
  for (const [family, given] of [
    ['ipv4', spec.containerIPv4],
    ['ipv6', spec.containerIPv6],
  ] as const) {
    if (given === undefined || given === '') continue;
    const ip = canonicalIP(given);
    if (!ip || ip.family !== family) {
      throw new CnmdError(
        'INVALID_ARGUMENT',
        `${OP}: container ${family === 'ipv4' ? 'IPv4' : 'IPv6'} address ${JSON.stringify(given)} is not ` +
          `one address of that family`,
        { op: OP, object: given },
      );
    }
    cip[family] = ip.ip;
  }

  const out: LayoutRule[] = [];
  const seen = new Set<string>();
  const add = (
    family: Family,
    table: LayoutRule['table'],
    chain: string,
    rule: string,
    position?: number,
  ) => {
    const key = `${family} ${table} ${chain} ${rule}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push({ family, table, chain, rule, position });
  };
  const modeOf = (family: Family) => spec.gatewayModes?.[family] ?? 'nat';
  const named: Record<Family, boolean> = { ipv4: false, ipv6: false };

  for (const given of spec.bindings) {
    const b = normalizeBinding(given);
    const text = formatPortSpec(b);
    const addrs = bindingAddresses(b.hostIP, spec.hostBindingIPv4);
    let families = 0;
    for (const family of ['ipv4', 'ipv6'] as const) {
      const addr = family === 'ipv4' ? addrs.ipv4 : addrs.ipv6;
      if (addr === undefined) continue;
      const ctr = cip[family];
      if (ctr === undefined) {
        if (b.hostIP === '') continue; // every address: this family is left to the proxy
        throw new CnmdError(
          'INVALID_ARGUMENT',
          `${OP}: binding ${text} is on an ${family === 'ipv4' ? 'IPv4' : 'IPv6'} host address but the ` +
            `sandbox has no ${family === 'ipv4' ? 'IPv4' : 'IPv6'} address`,
          { op: OP, object: text },
        );
      }
      families++;
      const bits = family === 'ipv4' ? 32 : 128;
      const p = b.proto;
      const mode = modeOf(family);
      const cpEnd = b.containerPortEnd ?? b.containerPort;
      const cpR = ports(b.containerPort, cpEnd, ':');
      const accept = `-d ${ctr}/${bits} ! -i ${br} -o ${br} -p ${p} -m ${p} --dport ${cpR} -j ACCEPT`;
      if (mode === 'routed') {
        add(family, 'filter', c.filter, accept, 1);
        continue;
      }
      if (!isAllocated(b)) {
        throw new CnmdError(
          'INVALID_ARGUMENT',
          `${OP}: binding ${text} has no exact host port yet; reserve it with the PortAllocator first`,
          { op: OP, object: text },
        );
      }
      const n = portCount(b);
      const hpEnd = b.hostPortEnd ?? b.hostPort;
      const dst = isWildcard(addr) ? '' : `-d ${addr}/${bits} `;
      if (!isWildcard(addr)) named[family] = true;
      const notBridge = proxy ? `! -i ${br} ` : '';
      const toAddr = family === 'ipv6' ? `[${ctr}]` : ctr;
      const dnat = (hp: string, to: string) =>
        add(
          family,
          'nat',
          c.nat,
          `${dst}${notBridge}-p ${p} -m ${p} --dport ${hp} -j DNAT --to-destination ${to}`,
        );
      const hpR = ports(b.hostPort, hpEnd, ':');
      if (n === 1) dnat(hpR, `${toAddr}:${b.containerPort}`);
      else if (b.hostPort === b.containerPort) dnat(hpR, ctr);
      else if (shifted) dnat(hpR, `${toAddr}:${b.containerPort}-${cpEnd}/${b.hostPort}`);
      else for (let i = 0; i < n; i++) dnat(String(b.hostPort + i), `${toAddr}:${b.containerPort + i}`);
      if (mode !== 'nat-unprotected') add(family, 'filter', c.filter, accept, 1);
      add(
        family,
        'nat',
        'POSTROUTING',
        `-s ${ctr}/${bits} -d ${ctr}/${bits} -p ${p} -m ${p} --dport ${cpR} -j MASQUERADE`,
      );
      if (p === 'sctp')
        add(
          family,
          'mangle',
          'POSTROUTING',
          `-s ${ctr}/${bits} -p sctp -m sctp --sport ${cpR} -j CHECKSUM --checksum-fill`,
        );
      if (family === 'ipv4' && addr.startsWith('127.'))
        add(family, 'raw', 'PREROUTING', `-d ${addr}/32 ! -i lo -p ${p} -m ${p} --dport ${hpR} -j DROP`);
    }
    if (families === 0) {
      throw new CnmdError(
        'INVALID_ARGUMENT',
        `${OP}: binding ${text}: the sandbox has no address on ${br} to forward to`,
        { op: OP, object: text },
      );
    }
  }
  for (const family of ['ipv4', 'ipv6'] as const) {
    const ctr = cip[family];
    if (ctr === undefined || filterMode === 'never' || modeOf(family) !== 'nat') continue;
    if (filterMode !== 'always' && !named[family]) continue;
    const dst = `-d ${ctr}/${family === 'ipv4' ? 32 : 128}`;
    for (const i of spec.trustedHostInterfaces ?? []) {
      if (!isUserIfName(i))
        throw new CnmdError('INVALID_ARGUMENT', `${OP}: invalid trusted interface ${JSON.stringify(i)}`, {
          op: OP,
          object: String(i),
        });
      add(family, 'raw', 'PREROUTING', `${dst} -i ${i} -j ACCEPT`);
    }
    add(family, 'raw', 'PREROUTING', `${dst} ! -i ${br} -j DROP`);
  }
  return out;
}

/** Ensures the rules of a sandbox's bindings (the base and network layout must be in place). Idempotent. */
export function portRules(spec: PortRulesSpec, opts: PortRulesOptions = {}): RuleBatch {
  const b = new BatchBuilder();
  for (const r of portRuleList(spec, opts))
    b.in(r.table, r.family).ensureRule(r.chain, r.rule, { position: r.position });
  return b.build();
}

/** Removes exactly the rules portRules(spec, opts) adds, if present. Idempotent. */
export function removePortRules(spec: PortRulesSpec, opts: PortRulesOptions = {}): RuleBatch {
  const b = new BatchBuilder();
  for (const r of portRuleList(spec, opts).reverse())
    b.in(r.table, r.family).deleteIfPresent(r.chain, r.rule);
  return b.build();
}

/**
 * The sysctl the userland-proxy=false mode needs on the bridge (Docker sets it too): lets
 * packets from 127.0.0.1 (host loopback clients, DNATed in nat OUTPUT) be routed to the
 * bridge, where the network's `--src-type LOCAL -o br -j MASQUERADE` rewrites their source.
 * /proc/sys/net shows the netns of the process that opens the file.
 */
export function routeLocalnetSysctl(bridge: string, procRoot = '/proc'): { path: string; value: '1' } {
  if (!validBridge(bridge))
    throw new CnmdError('INVALID_ARGUMENT', `${OP}: invalid bridge name ${JSON.stringify(bridge)}`, {
      op: OP,
      object: String(bridge),
    });
  return { path: path.join(procRoot, 'sys', 'net', 'ipv4', 'conf', bridge, 'route_localnet'), value: '1' };
}

/**
 * Whether iptables and the kernel accept a shifted-range DNAT (`--to-destination
 * IP:C-D/A`). Runs `unshare --net <iptables> ...` once: in a throwaway network namespace,
 * so no firewall is touched (needs CAP_SYS_ADMIN, as the daemon has). False when refused or not installed.
 */
export async function probeShiftedRangeDnat(opts: { exec?: Exec; iptables?: string } = {}): Promise<boolean> {
  const exec = opts.exec ?? defaultExec(10_000);
  try {
    const r = await exec('unshare', [
      '--net',
      opts.iptables ?? 'iptables',
      '-w',
      '-t',
      'nat',
      '-A',
      'PREROUTING',
      '-p',
      'tcp',
      '--dport',
      '20000:20001',
      '-j',
      'DNAT',
      '--to-destination',
      '192.0.2.1:30000-30001/20000',
    ]);
    return r.code === 0;
  } catch (e) {
    // ENOENT: unshare (or iptables) is not installed, so the form cannot be used either. A timeout is no
    // rejection (the process is killed and its status is not 0); anything else is a failure to see.
    if (hasErrno(e, 'ENOENT')) return false;
    throw e;
  }
}
