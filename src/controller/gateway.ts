// A sandbox's default routes: one per family, through the first endpoint (in
// join order) whose network offers a gateway (the pool's, or the one its
// driver's join named on another interface: JoinInfo.gatewayInterface). cnmd remembers what it last
// installed (LiveSandbox.gateways) so a join or leave changes the kernel only
// when the choice changes.
import { ignoreNotFound } from '../errors';
import type { Handle } from '../netlink/handle';
import type { LiveSandboxes } from './live';
import type { Lookup } from './lookup';
import { EndpointRecord, SandboxRecord } from './records';
import { stripPrefix } from '../net/addr';

export class DefaultRoutes {
  constructor(
    private readonly lookup: Lookup,
    private readonly live: LiveSandboxes,
  ) {}

  /**
   * Sends the default route through ep's interface right behind the address
   * that makes its gateway reachable, when ep is the one to carry it: the
   * route needs no look-up of the interface's index (the address request
   * names it) and no round trip of its own after the join. A route that fails
   * here is left to update(), which follows the join as always. The returned
   * function resolves once what was sent is answered.
   */
  pipeline(sb: SandboxRecord, ep: EndpointRecord, handle: Handle): () => Promise<void> {
    const known = this.live.get(sb.id)?.gateways;
    const sent: Promise<void>[] = [];
    // Unknown after a restart: update() reads the kernel's routes first.
    if (known) {
      handle.onAddressSent = (index, family) => {
        const via = this.gatewayOf(sb, family);
        if (!via || via.dev !== ep.ifname || known[family] === via.gw) return;
        const route = handle.routeReplace({ gateway: via.gw, dev: index, family });
        // A failure here is not lost: update() finds the route missing and sends it again.
        sent.push(
          route.then(
            () => void (known[family] = via.gw),
            () => undefined,
          ),
        );
      };
    }
    return async () => {
      handle.onAddressSent = undefined;
      await Promise.all(sent);
    };
  }

  /** Installs, moves or removes the sandbox's default routes to match its endpoints. */
  async update(sb: SandboxRecord, handle: Handle | undefined): Promise<void> {
    if (!handle) return;
    const live = this.live.of(sb);
    // What we installed last; read from the kernel only when unknown (after a restart).
    let known = live.gateways;
    if (!known) {
      const routes = await handle.routeList();
      known = {
        4: routes.find((r) => r.family === 4 && r.dst === 'default')?.gateway,
        6: routes.find((r) => r.family === 6 && r.dst === 'default')?.gateway,
      };
      live.gateways = known;
    }
    for (const family of [4, 6] as const) {
      const via = this.gatewayOf(sb, family);
      if (via) {
        if (known[family] === via.gw) continue;
        await handle.routeReplace({ gateway: via.gw, dev: via.dev, family });
        known[family] = via.gw;
      } else if (known[family]) {
        // Gone with its interface already: that is what was wanted.
        await ignoreNotFound(handle.routeDel({ family }));
        known[family] = undefined;
      }
    }
  }

  /** The gateway a sandbox's default route goes through, and the interface that reaches it. */
  gatewayOf(sb: SandboxRecord, family: 4 | 6): { gw: string; dev: string } | undefined {
    const v6 = family === 6;
    for (const id of sb.endpoints) {
      // An endpoint of the same call not wired yet has no interface to carry a route.
      if (this.lookup.joining.get(id)?.stage === 'prepared') continue;
      const e = this.lookup.endpointRecord(id);
      const n = e && this.lookup.networkOf(e);
      if (!e || !n || n.internal) continue;
      // The driver's own way out (overlay: cnmd_gwbridge), IPv4 only.
      if (e.gatewayVia) {
        if (!v6) return e.gatewayVia;
        continue;
      }
      if (!(v6 ? e.ipv6 : e.ipv4)) continue;
      const pool = n.pools.find((p) => p.poolId === (v6 ? e.poolV6 : e.poolV4));
      if (!pool?.gateway) continue;
      return { gw: stripPrefix(pool.gateway)!, dev: e.ifname };
    }
    return undefined;
  }
}
