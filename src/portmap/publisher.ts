// Publishing a sandbox's ports: host ports reserved (allocator.ts), the NAT
// and filter rules applied as one batch (rules.ts through the firewall
// backend), and loopback access through the in-daemon proxy (proxy.ts), or
// through route_localnet when the proxy is off. All or nothing: a failure
// leaves no reservation, rule or proxy entry behind.
import * as dgram from 'node:dgram';
import { CnmdError } from '../errors';
import { BatchBuilder, mergeBatches, type FirewallBackend, type RuleBatch } from '../firewall/firewall';
import type { Logger } from '../log';
import { writeSysctl } from '../netns/sysctl';
import { PortAllocator } from './allocator';
import { UserlandProxy } from './proxy';
import { portRules, removePortRules } from './rules';
import { formatPortSpec, type PortBinding } from './spec';

export const PROXY_CHAIN = 'CNMD-PROXY';

export interface PublishRequest {
  /** The endpoint that owns the bindings. */
  owner: string;
  bridge: string;
  containerIPv4?: string;
  containerIPv6?: string;
  bindings: readonly PortBinding[];
  hostBindingIPv4?: string;
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

  /** Starts the proxy listeners and the loopback REDIRECT chain (the proxy's ports change each start). */
  async start(): Promise<void> {
    if (!this.proxy) return;
    this.redirect = await this.proxy.start();
    if (this.redirect[4] !== undefined) this.allocator.ownListener('tcp', '127.0.0.1', this.redirect[4]);
    if (this.redirect[6] !== undefined) this.allocator.ownListener('tcp', '::1', this.redirect[6]);
    const b = new BatchBuilder();
    for (const [family, lo] of [
      ['ipv4', '127.0.0.0/8'],
      ['ipv6', '::1/128'],
    ] as const) {
      b.in('nat', family)
        .ensureChain(PROXY_CHAIN)
        .flushChain(PROXY_CHAIN)
        .ensureRule('OUTPUT', `-d ${lo} -j ${PROXY_CHAIN}`, { position: 1 });
    }
    await this.backend.apply(b.build());
  }

  /** REDIRECT of loopback connections to published TCP ports into the proxy. */
  private redirectRules(req: PublishRequest, allocated: PortBinding[]): RuleBatch {
    const b = new BatchBuilder();
    if (!this.proxy) return b.build();
    for (const x of allocated) {
      if (x.proto !== 'tcp') continue;
      const dport = x.hostPortEnd ? `${x.hostPort}:${x.hostPortEnd}` : String(x.hostPort);
      const targets: ['ipv4' | 'ipv6', string, number | undefined][] = [];
      if (x.hostIP === '' || x.hostIP === '0.0.0.0' || x.hostIP === '127.0.0.1')
        targets.push(['ipv4', '127.0.0.1/32', this.redirect[4]]);
      if ((x.hostIP === '' && req.containerIPv6) || x.hostIP === '::' || x.hostIP === '::1')
        targets.push(['ipv6', '::1/128', this.redirect[6]]);
      for (const [family, dst, port] of targets) {
        if (port === undefined) continue;
        b.in('nat', family).ensureRule(
          PROXY_CHAIN,
          `-d ${dst} -p tcp -m tcp --dport ${dport} -j REDIRECT --to-ports ${port}`,
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

  private proxyMappings(req: PublishRequest, allocated: PortBinding[]) {
    const ip = req.containerIPv4 ?? req.containerIPv6;
    if (!ip) return [];
    return allocated
      .filter(
        (x) =>
          x.hostIP === '' ||
          x.hostIP === '0.0.0.0' ||
          x.hostIP === '::' ||
          x.hostIP === '127.0.0.1' ||
          x.hostIP === '::1',
      )
      .map((x) => ({
        proto: x.proto,
        hostPort: x.hostPort,
        hostPortEnd: x.hostPortEnd,
        containerIP: ip,
        containerPort: x.containerPort,
      }));
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
    for (const b of req.bindings) await assertHostAddress(b);
    const allocated = await this.allocator.reserve(req.owner, req.bindings, {
      hostBindingIPv4: req.hostBindingIPv4,
    });
    return this.program(req, allocated);
  }

  /** After a restart: the same bindings, host ports included, recorded and reprogrammed. */
  async restore(req: PublishRequest): Promise<PortBinding[]> {
    if (req.bindings.length === 0) return [];
    const allocated = this.allocator.restore(req.owner, req.bindings, {
      hostBindingIPv4: req.hostBindingIPv4,
    });
    return this.program(req, allocated);
  }

  private async program(req: PublishRequest, allocated: PortBinding[]): Promise<PortBinding[]> {
    const spec = {
      bridge: req.bridge,
      containerIPv4: req.containerIPv4,
      containerIPv6: req.containerIPv6,
      bindings: allocated,
      hostBindingIPv4: req.hostBindingIPv4,
    };
    // Hairpin by NAT in both modes (DNAT also for traffic from the bridge, and
    // hairpin-mode ports): the proxy only carries loopback connections.
    const opts = { userlandProxy: false };
    const redirects = this.redirectRules(req, allocated);
    try {
      if (!this.userlandProxy) writeSysctl(['net', 'ipv4', 'conf', req.bridge, 'route_localnet'], '1');
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
    const spec = {
      bridge: p.req.bridge,
      containerIPv4: p.req.containerIPv4,
      containerIPv6: p.req.containerIPv6,
      bindings: p.allocated,
      hostBindingIPv4: p.req.hostBindingIPv4,
    };
    await this.backend.apply(
      mergeBatches(
        removePortRules(spec, { userlandProxy: false }),
        this.inverse(this.redirectRules(p.req, p.allocated)),
      ),
    );
    this.allocator.release(owner);
    this.published.delete(owner);
  }

  close(): void {
    this.proxy?.close();
  }
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
      `port publish ${spec}: host address ${ip} is not an address of this host (bind: ${why}); publish on one of the host's addresses, or on every address`,
      { op: 'port publish', object: ip },
    );
  } finally {
    sock.close();
  }
}
