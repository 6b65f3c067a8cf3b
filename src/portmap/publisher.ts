// Publishing a sandbox's ports: host ports reserved (allocator.ts), the NAT
// and filter rules applied as one batch (rules.ts through the firewall
// backend), and loopback access through the in-daemon proxy (proxy.ts), or
// through route_localnet when the proxy is off. All or nothing: a failure
// leaves no reservation, rule or proxy entry behind.
import * as dgram from 'node:dgram';
import { CnmdError } from '../errors';
import { canonicalRule } from '../firewall/canonical';
import {
  BatchBuilder,
  mergeBatches,
  type Family,
  type FirewallBackend,
  type RuleBatch,
  type Table,
} from '../firewall/firewall';
import { CHAINS } from '../firewall/layout';
import { contains, ipToBig, parseCidr } from '../net/addr';
import type { Logger } from '../log';
import { writeSysctl } from '../netns/sysctl';
import { PortAllocator } from './allocator';
import { UserlandProxy, type ProxyMapping } from './proxy';
import { portRuleList, portRules, removePortRules, type PortRulesSpec } from './rules';
import {
  bindingAddresses,
  canonicalIP,
  defaultBindingIPv4,
  formatPortSpec,
  hostFamily,
  type PortBinding,
} from './spec';

export const PROXY_CHAIN = 'CNMD-PROXY';

export interface PublishRequest {
  /** The endpoint that owns the bindings. */
  owner: string;
  bridge: string;
  containerIPv4?: string;
  containerIPv6?: string;
  bindings: readonly PortBinding[];
  hostBindingIPv4?: string;
  /** The network's gateway mode per family (default nat): routed families get no host port (rules.ts). */
  gatewayModes?: PortRulesSpec['gatewayModes'];
  trustedHostInterfaces?: readonly string[];
  /** The raw-table DROP of direct access to the sandbox's address (rules.ts; default 'auto'). */
  directAccessFilter?: PortRulesSpec['directAccessFilter'];
}

export interface PublisherOptions {
  backend: FirewallBackend;
  allocator?: PortAllocator;
  /** Docker's userland-proxy (default true); false: loopback access by route_localnet and NAT. */
  userlandProxy?: boolean;
  log: Logger;
}

interface Published {
  req: PublishRequest;
  allocated: PortBinding[];
}

export class PortPublisher {
  private readonly backend: FirewallBackend;
  readonly allocator: PortAllocator;
  readonly userlandProxy: boolean;
  private readonly proxy?: UserlandProxy;
  private readonly log: Logger;
  private readonly published = new Map<string, Published>();
  private redirect: { 4?: number; 6?: number } = {};

  constructor(o: PublisherOptions) {
    this.backend = o.backend;
    this.allocator = o.allocator ?? new PortAllocator();
    this.userlandProxy = o.userlandProxy ?? true;
    this.log = o.log;
    if (this.userlandProxy) this.proxy = new UserlandProxy(o.log);
  }

  /**
   * Starts the proxy listeners and the loopback REDIRECT chain (the proxy's
   * ports change each start). Without the proxy, that chain and its jumps go:
   * the previous run may have had it.
   */
  async start(): Promise<void> {
    if (this.proxy) {
      this.redirect = await this.proxy.start();
      if (this.redirect[4] !== undefined) this.allocator.ownListener('tcp', '127.0.0.1', this.redirect[4]);
      if (this.redirect[6] !== undefined) this.allocator.ownListener('tcp', '::', this.redirect[6]);
    }
    const b = new BatchBuilder();
    const v4jump = `-d 127.0.0.0/8 -j ${PROXY_CHAIN}`;
    // IPv6: every local destination, from the host itself (OUTPUT) and from outside (PREROUTING): a
    // sandbox without IPv6 is served on every IPv6 address by the proxy, as docker-proxy on [::]
    // (ip6tables cannot DNAT to IPv4). Earlier versions jumped from OUTPUT for ::1 only.
    const v6jump = `-m addrtype --dst-type LOCAL -j ${PROXY_CHAIN}`;
    const v6legacy = `-d ::1/128 -j ${PROXY_CHAIN}`;
    if (this.proxy) {
      b.in('nat', 'ipv4').ensureChain(PROXY_CHAIN).flushChain(PROXY_CHAIN).ensureRule('OUTPUT', v4jump, {
        position: 1,
      });
      b.in('nat', 'ipv6')
        .ensureChain(PROXY_CHAIN)
        .flushChain(PROXY_CHAIN)
        .deleteIfPresent('OUTPUT', v6legacy)
        .ensureRule('OUTPUT', v6jump, { position: 1 })
        .ensureRule('PREROUTING', v6jump, { position: 1 });
    } else {
      b.in('nat', 'ipv4').deleteIfPresent('OUTPUT', v4jump);
      b.in('nat', 'ipv6')
        .deleteIfPresent('OUTPUT', v6legacy)
        .deleteIfPresent('OUTPUT', v6jump)
        .deleteIfPresent('PREROUTING', v6jump);
      for (const family of ['ipv4', 'ipv6'] as const)
        b.in('nat', family).flushChain(PROXY_CHAIN, true).deleteChain(PROXY_CHAIN, true);
    }
    // The proxy's IPv6 listener is on [::] (REDIRECT from PREROUTING lands on the address a
    // client arrived on): only connections REDIRECTed to it (conntrack DNAT) may reach it, so
    // it is no open port of its own. The filter chain is cnmd's; its rule names this run's port.
    if (this.proxy && this.redirect[6] !== undefined)
      b.in('filter', 'ipv6')
        .ensureChain(PROXY_CHAIN)
        .flushChain(PROXY_CHAIN)
        .ensureRule(
          PROXY_CHAIN,
          `-p tcp -m tcp --dport ${this.redirect[6]} -m conntrack ! --ctstate DNAT -j DROP`,
        )
        .ensureRule('INPUT', `-j ${PROXY_CHAIN}`, { position: 1 });
    else
      b.in('filter', 'ipv6')
        .deleteIfPresent('INPUT', `-j ${PROXY_CHAIN}`)
        .flushChain(PROXY_CHAIN, true)
        .deleteChain(PROXY_CHAIN, true);
    await this.backend.apply(b.build());
  }

  /** REDIRECT into the proxy of connections to the published TCP ports it serves (proxyAddresses). */
  private redirectRules(req: PublishRequest, allocated: PortBinding[]): RuleBatch {
    const b = new BatchBuilder();
    if (!this.proxy) return b.build();
    for (const x of allocated) {
      if (x.proto !== 'tcp' || isRouted(x)) continue;
      const dport = x.hostPortEnd ? `${x.hostPort}:${x.hostPortEnd}` : String(x.hostPort);
      for (const { family, address } of proxyAddresses(x, req)) {
        const port = this.redirect[family === 'ipv4' ? 4 : 6];
        if (port === undefined) continue;
        const dst = address === '::' ? '' : `-d ${address}/${family === 'ipv4' ? 32 : 128} `;
        b.in('nat', family).ensureRule(
          PROXY_CHAIN,
          `${dst}-p tcp -m tcp --dport ${dport} -j REDIRECT --to-ports ${port}`,
        );
      }
    }
    return b.build();
  }

  private inverse(batch: RuleBatch): RuleBatch {
    const b = new BatchBuilder();
    for (const family of ['ipv4', 'ipv6'] as const) {
      for (const [table, ops] of Object.entries(batch[family] ?? {})) {
        for (const op of [...(ops ?? [])].reverse()) {
          if (op.kind === 'ensureRule') b.in(table as 'nat', family).deleteIfPresent(op.chain, op.rule);
        }
      }
    }
    return b.build();
  }

  private proxyMappings(req: PublishRequest, allocated: PortBinding[]): ProxyMapping[] {
    return allocated
      .filter((x) => !isRouted(x))
      .flatMap((x) =>
        proxyAddresses(x, req).map(({ family, address }) => ({
          proto: x.proto,
          address,
          hostPort: x.hostPort,
          hostPortEnd: x.hostPortEnd,
          // The family the client used when the sandbox has it; else the other (IPv4-only: docker-proxy's way).
          containerIP:
            (family === 'ipv4' ? req.containerIPv4 : req.containerIPv6) ??
            req.containerIPv4 ??
            req.containerIPv6!,
          containerPort: x.containerPort,
        })),
      );
  }

  /** Reserves, programs and proxies req's bindings; resolves with them as allocated (exact host ports). */
  async publish(req: PublishRequest): Promise<PortBinding[]> {
    if (req.bindings.length === 0) return [];
    if (!req.containerIPv4 && !req.containerIPv6) {
      throw new CnmdError(
        'INVALID_ARGUMENT',
        `port publish: endpoint ${req.owner.slice(0, 12)} has no address to publish to`,
        { op: 'port publish', object: req.owner },
      );
    }
    const { nat, routed } = splitRouted(req);
    for (const b of nat) {
      await assertHostAddress(b);
      if (!this.userlandProxy) assertNatServable(b, req);
    }
    const allocated = nat.length
      ? await this.allocator.reserve(req.owner, this.servable({ ...req, bindings: nat }), {
          hostBindingIPv4: req.hostBindingIPv4,
        })
      : [];
    return this.program(req, [...allocated, ...routed]);
  }

  /**
   * The bindings as they will be served. Without the proxy, a binding on every address of a
   * sandbox with no IPv6 address is IPv4 only (ip6tables cannot DNAT to IPv4), so its [::]
   * half is neither reserved nor claimed, as Docker does; with the proxy, the proxy serves it.
   */
  private servable(req: PublishRequest): PortBinding[] {
    if (this.userlandProxy || req.containerIPv6) return [...req.bindings];
    const v4 = defaultBindingIPv4(req.hostBindingIPv4);
    return req.bindings.map((b) => (b.hostIP === '' ? { ...b, hostIP: v4 } : b));
  }

  /** After a restart: the same bindings, host ports included, recorded and reprogrammed. */
  async restore(req: PublishRequest): Promise<PortBinding[]> {
    if (req.bindings.length === 0) return [];
    // As recorded: routed bindings (no host port) were split from the NAT ones at publish.
    const nat = req.bindings.filter((b) => !isRouted(b));
    // Published under the proxy, restored without it: kept (and listed), but nothing can serve it.
    for (const b of this.userlandProxy ? [] : nat) {
      const why = natRefusal(b, req);
      if (why) this.log.warn({ owner: req.owner, binding: formatPortSpec(b) }, `port not served: ${why}`);
    }
    const allocated = nat.length
      ? this.allocator.restore(req.owner, nat, { hostBindingIPv4: req.hostBindingIPv4 })
      : [];
    return this.program(req, [...allocated, ...req.bindings.filter(isRouted)]);
  }

  /**
   * The rules' view: a binding on an IPv6 host address of a sandbox without IPv6 has no NAT rule
   * (ip6tables cannot DNAT to IPv4); the proxy alone serves it.
   */
  private specOf(req: PublishRequest, allocated: PortBinding[]): PortRulesSpec {
    return {
      bridge: req.bridge,
      containerIPv4: req.containerIPv4,
      containerIPv6: req.containerIPv6,
      bindings: req.containerIPv6 ? allocated : allocated.filter((x) => hostFamily(x.hostIP) !== 'ipv6'),
      hostBindingIPv4: req.hostBindingIPv4,
      gatewayModes: req.gatewayModes,
      trustedHostInterfaces: req.trustedHostInterfaces,
      directAccessFilter: req.directAccessFilter,
    };
  }

  private async program(req: PublishRequest, allocated: PortBinding[]): Promise<PortBinding[]> {
    const spec = this.specOf(req, allocated);
    // Hairpin by NAT in both modes (DNAT also for traffic from the bridge, and
    // hairpin-mode ports): the proxy only carries loopback connections.
    const opts = { userlandProxy: false };
    const redirects = this.redirectRules(req, allocated);
    try {
      if (!this.userlandProxy && !allocated.every(isRouted))
        writeSysctl(['net', 'ipv4', 'conf', req.bridge, 'route_localnet'], '1');
      await this.backend.apply(mergeBatches(portRules(spec, opts), redirects));
      try {
        await this.proxy?.add(req.owner, this.proxyMappings(req, allocated));
      } catch (e) {
        await this.backend.apply(mergeBatches(removePortRules(spec, opts), this.inverse(redirects)));
        throw e;
      }
    } catch (e) {
      this.allocator.release(req.owner);
      throw e;
    }
    this.published.set(req.owner, { req, allocated });
    this.log.debug({ owner: req.owner, bindings: allocated.length }, 'ports published');
    return allocated;
  }

  async unpublish(owner: string): Promise<void> {
    const p = this.published.get(owner);
    if (!p) return;
    this.proxy?.remove(owner);
    const spec = this.specOf(p.req, p.allocated);
    await this.backend.apply(
      mergeBatches(
        removePortRules(spec, { userlandProxy: false }),
        this.inverse(this.redirectRules(p.req, p.allocated)),
      ),
    );
    this.allocator.release(owner);
    this.published.delete(owner);
  }

  /**
   * Removes the port rules no published binding has: those of endpoints a
   * crash took out of the store after their rules were made (a sandbox killed
   * mid-delete, or mid-create between its rules and its record). Run at start,
   * once every live binding is restored. Only rules of cnmd's shape are
   * looked at: everything in its own chains, and in the shared chains the
   * hairpin, checksum and raw rules that name an address of `networks` (its
   * bridges and their subnets) or a host port a removed DNAT had. Returns the
   * rules removed.
   */
  async sweep(networks: { bridge: string; subnets: string[] }[]): Promise<string[]> {
    const opts = { userlandProxy: false };
    const wanted = new Set<string>();
    const want = (family: Family, table: string, chain: string, rule: string) =>
      wanted.add(`${family} ${table} ${chain} ${canonicalRule(rule, family)}`);
    for (const { req, allocated } of this.published.values()) {
      for (const r of portRuleList(this.specOf(req, allocated), opts))
        want(r.family, r.table, r.chain, r.rule);
      const redirects = this.redirectRules(req, allocated);
      for (const family of ['ipv4', 'ipv6'] as const)
        for (const op of redirects[family]?.nat ?? [])
          if (op.kind === 'ensureRule') want(family, 'nat', op.chain, op.rule);
    }
    const bridges = new Set(networks.map((n) => n.bridge));
    const subnets = networks.flatMap((n) => n.subnets.map((c) => parseCidr(c)).filter((c) => !!c));
    const ours = (ip: string) => {
      const a = ipToBig(ip);
      return !!a && subnets.some((c) => contains(c, a.family, a.value));
    };
    const removed: string[] = [];
    const b = new BatchBuilder();
    for (const family of ['ipv4', 'ipv6'] as const) {
      const rules = async (table: Table, chain: string) =>
        this.backend.chainRules(table, chain, family).catch((e) => {
          if (e instanceof CnmdError && e.code === 'NOT_FOUND') return [] as string[];
          throw e;
        });
      const stale = (table: Table, chain: string, rule: string) => {
        if (wanted.has(`${family} ${table} ${chain} ${rule}`)) return false;
        b.in(table, family).deleteIfPresent(chain, rule);
        removed.push(`${family} -t ${table} -A ${chain} ${rule}`);
        return true;
      };
      // Host ports of removed DNATs: the raw table's loopback DROP for them goes too.
      const deadPorts = new Set<string>();
      for (const r of await rules('nat', CHAINS.nat)) {
        if (!/ -j DNAT /.test(r) || !stale('nat', CHAINS.nat, r)) continue;
        const m = /^(?:-d (\S+) )?.*-p (\S+) .*--dport (\S+) /.exec(r);
        if (m) deadPorts.add(`${m[1] ?? ''} ${m[2]} ${m[3]}`);
      }
      for (const r of await rules('filter', CHAINS.filter))
        // Per-port ACCEPTs only (they name a container address); a network's own rules there do not.
        if (/^-d \S+ ! -i \S+ -o \S+ -p .* -j ACCEPT$/.test(r)) stale('filter', CHAINS.filter, r);
      for (const r of await rules('nat', PROXY_CHAIN))
        if (/ -j REDIRECT /.test(r)) stale('nat', PROXY_CHAIN, r);
      for (const r of await rules('nat', 'POSTROUTING')) {
        const m = /^-s (\S+)\/(?:32|128) -d \1\/(?:32|128) -p \S+ -m \S+ --dport \S+ -j MASQUERADE$/.exec(r);
        if (m && ours(m[1])) stale('nat', 'POSTROUTING', r);
      }
      for (const r of await rules('mangle', 'POSTROUTING')) {
        const m = /^-s (\S+)\/(?:32|128) -p sctp -m sctp --sport \S+ -j CHECKSUM --checksum-fill$/.exec(r);
        if (m && ours(m[1])) stale('mangle', 'POSTROUTING', r);
      }
      for (const r of await rules('raw', 'PREROUTING')) {
        const direct = /^-d (\S+)\/(?:32|128) ! -i (\S+) -j DROP$/.exec(r);
        const trusted = /^-d (\S+)\/(?:32|128) -i \S+ -j ACCEPT$/.exec(r);
        const loop = /^-d (\S+) ! -i lo -p (\S+) -m \S+ --dport (\S+) -j DROP$/.exec(r);
        if (
          (direct && bridges.has(direct[2]) && ours(direct[1])) ||
          (trusted && ours(trusted[1])) ||
          (loop && deadPorts.has(`${loop[1]} ${loop[2]} ${loop[3]}`))
        )
          stale('raw', 'PREROUTING', r);
      }
    }
    if (removed.length) await this.backend.apply(b.build());
    return removed;
  }

  close(): void {
    this.proxy?.close();
  }
}

/**
 * req's bindings split by the gateway mode of the families they apply to: NAT ones (host ports to
 * reserve, as given, or narrowed to the NAT family of a binding on every address) and routed ones,
 * one per routed family the sandbox has an address in, with no host port (moby's routed port
 * mapper: "Host port ignored, because NAT is disabled"; the host address only picks the family).
 * On a network with routed IPv6 and nat IPv4, `-p 8080:80` is 0.0.0.0:8080 and [::] routed, as
 * Docker's (docker/docs port-publishing.md, "Gateway modes").
 */
function splitRouted(req: PublishRequest): { nat: PortBinding[]; routed: PortBinding[] } {
  const mode = (f: Family) => req.gatewayModes?.[f] ?? 'nat';
  const nat: PortBinding[] = [];
  const routed: PortBinding[] = [];
  for (const b of req.bindings) {
    const a = bindingAddresses(b.hostIP, req.hostBindingIPv4);
    const families = (['ipv4', 'ipv6'] as const).filter(
      (f) => (f === 'ipv4' ? a.ipv4 : a.ipv6) !== undefined,
    );
    const natFamilies = families.filter((f) => mode(f) !== 'routed');
    for (const f of families) {
      if (mode(f) !== 'routed' || !(f === 'ipv4' ? req.containerIPv4 : req.containerIPv6)) continue;
      const { hostPortEnd: _end, ...rest } = b;
      routed.push({ ...rest, hostIP: f === 'ipv4' ? '0.0.0.0' : '::', hostPort: 0 });
    }
    if (natFamilies.length === families.length) nat.push(b);
    else if (natFamilies.length === 1)
      nat.push({ ...b, hostIP: natFamilies[0] === 'ipv4' ? (a.ipv4 ?? '0.0.0.0') : '::' });
  }
  return { nat, routed };
}

/** A routed binding as split and recorded: no host port (an allocated NAT binding always has one). */
function isRouted(b: PortBinding): boolean {
  return b.hostPort === 0;
}

/**
 * A binding on one host address needs an address the host (the daemon's netns) has, as
 * Docker's bind does: a UDP socket bound to it on port 0 says so in one syscall, with the
 * kernel's own rules (the whole of 127.0.0.0/8 is local, a tentative IPv6 address is not).
 */
async function assertHostAddress(b: PortBinding): Promise<void> {
  const ip = b.hostIP;
  if (ip === '' || ip === '0.0.0.0' || ip === '::') return;
  const sock = dgram.createSocket({ type: ip.includes(':') ? 'udp6' : 'udp4' });
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind({ address: ip, port: 0, exclusive: true }, () => resolve());
    });
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    const spec = formatPortSpec(b);
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `port publish ${spec}: host address ${ip} is not an address of this host (bind: ${why}); publish on ` +
        `one of the host's addresses, or on every address`,
      { op: 'port publish', object: ip },
    );
  } finally {
    sock.close();
  }
}

/**
 * The host addresses the proxy serves for one binding (TCP by REDIRECT to its listeners, UDP by a
 * socket on each): loopback, which the kernel does not DNAT in proxy mode (the nat OUTPUT jump skips
 * 127.0.0.0/8 and ::1, as Docker's), and, for a sandbox without IPv6, the binding's IPv6 addresses
 * ('::' = every one), as docker-proxy does. Everything else is the NAT rules' (rules.ts).
 */
export function proxyAddresses(
  x: PortBinding,
  req: Pick<PublishRequest, 'containerIPv4' | 'containerIPv6' | 'hostBindingIPv4'>,
): { family: Family; address: string }[] {
  const out: { family: Family; address: string }[] = [];
  const a = bindingAddresses(x.hostIP, req.hostBindingIPv4);
  const v4 = a.ipv4 !== undefined ? (canonicalIP(a.ipv4)?.ip ?? a.ipv4) : undefined;
  const v6 = a.ipv6 !== undefined ? (canonicalIP(a.ipv6)?.ip ?? a.ipv6) : undefined;
  if (v4 === '0.0.0.0') out.push({ family: 'ipv4', address: '127.0.0.1' });
  else if (v4?.startsWith('127.')) out.push({ family: 'ipv4', address: v4 });
  if (v6 !== undefined) {
    if (!req.containerIPv6) out.push({ family: 'ipv6', address: v6 });
    else if (v6 === '::' || v6 === '::1') out.push({ family: 'ipv6', address: '::1' });
  }
  return out;
}

/**
 * Without the proxy, only what NAT can serve may be published: no IPv6 host address for a sandbox
 * without IPv6 (ip6tables cannot DNAT to IPv4) and no [::1] (the kernel never routes ::1 off the
 * loopback, so a DNAT from it goes nowhere; IPv4 has route_localnet, IPv6 nothing like it).
 * Returns why a binding cannot be served that way, or undefined.
 */
function natRefusal(b: PortBinding, req: PublishRequest): string | undefined {
  const ip = canonicalIP(b.hostIP)?.ip;
  if (ip === undefined || hostFamily(ip) !== 'ipv6') return undefined;
  const why =
    ip === '::1'
      ? 'the kernel does not NAT IPv6 loopback connections and the userland proxy is off'
      : !req.containerIPv6
        ? 'the sandbox has no IPv6 address on this network and, with the userland proxy off, IPv6 cannot ' +
          'be forwarded to IPv4'
        : undefined;
  return why && `host address ${ip} cannot be served: ${why}`;
}

function assertNatServable(b: PortBinding, req: PublishRequest): void {
  const why = natRefusal(b, req);
  if (!why) return;
  const ip = canonicalIP(b.hostIP)!.ip;
  throw new CnmdError(
    'INVALID_ARGUMENT',
    `port publish ${formatPortSpec(b)}: ${why}; publish on an IPv4 address or on every ` +
      `address${ip === '::1' ? '' : ', enable IPv6 on the network'}, or run cnmd with --userland-proxy true`,
    { op: 'port publish', object: ip },
  );
}
