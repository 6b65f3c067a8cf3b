// A stand-in for an endpoint on its LAN while the endpoint has no link of its
// own: a child of the parent with the endpoint's MAC, alone in a netns of its
// own (exec-root/netns/dhcp-<lease id>, swept at start if a killed daemon left
// it), that speaks DHCP for the endpoint and goes. The engine asks cnmd-ipam
// for an address before the endpoint's link exists, and gives it back after
// the link is gone: both exchanges go through one of these.
import { CnmdError, bestEffort, ignoreNotFound } from '../../errors';
import type { Logger } from '../../log';
import { Handle, type LinkAddSpec } from '../../netlink/handle';
import type { NetnsManager } from '../../netns/netns';
import type { LeaseLink } from '../ipam';

export interface ProbeSpec {
  /** The parent link, in the host netns. */
  parent: string;
  kind: 'macvlan' | 'ipvlan';
  /** macvlan: the endpoint's MAC (ipvlan children take the parent's). */
  mac?: string;
  /** Names the probe's netns and is the client id's (LeaseLink.endpointId). */
  leaseId: string;
  /** The lease's address (CIDR), put on the probe to speak from it (a release). */
  address?: string;
  hostname?: string;
}

const PROBE_IF = 'dhcp0';
export const PROBE_NETNS_PREFIX = 'dhcp-';

export class LanProbe {
  constructor(
    private readonly host: Handle,
    private readonly netns: NetnsManager,
    private readonly log?: Logger,
  ) {}

  /** Puts a lease's address on a probe (`link`, one `with` handed out), to speak from it: a release. */
  static async holdOn(link: LeaseLink, cidr: string): Promise<void> {
    await Handle.inNetns(link.nsPath, (h) => LanProbe.hold(h, cidr));
  }

  private static async hold(h: Handle, cidr: string): Promise<void> {
    await h.addrAdd(PROBE_IF, cidr, { nodad: true });
  }

  /** Runs fn with a LeaseLink on the probe; the probe (its netns and link) is gone when this settles. */
  async with<T>(op: string, s: ProbeSpec, fn: (link: LeaseLink) => Promise<T>): Promise<T> {
    const ns = await this.netns.create(`${PROBE_NETNS_PREFIX}${s.leaseId}`);
    try {
      const child =
        s.kind === 'macvlan'
          ? { kind: 'macvlan', mode: 'bridge', mac: s.mac }
          : { kind: 'ipvlan', mode: 'l2', flag: 'bridge' };
      try {
        await this.host.linkAdd({
          ...child,
          name: PROBE_IF,
          parent: s.parent,
          netns: ns.handle,
          echo: false,
        } as LinkAddSpec);
        await ns.handle.linkSet(PROBE_IF, { up: true });
      } catch (e) {
        if (!(e instanceof CnmdError)) throw e;
        const why =
          e.errno === 'EADDRINUSE'
            ? `another link on ${s.parent} has MAC ${s.mac} (the endpoint's link is not gone yet)`
            : e.message;
        throw new CnmdError(
          'UNAVAILABLE',
          `${op}: dhcp on parent ${s.parent}: cannot speak for the endpoint: ${why}`,
          {
            op,
            object: s.parent,
            cause: e,
          },
        );
      }
      if (s.address) await LanProbe.hold(ns.handle, s.address);
      return await fn({
        nsPath: ns.path,
        ifname: PROBE_IF,
        parent: s.parent,
        endpointId: s.leaseId,
        hostname: s.hostname,
      });
    } finally {
      // The child goes now, not with the netns: a netns is destroyed later, from a kernel work queue, and until then
      // its child holds the MAC on the parent (the endpoint's link, or the release's probe, could not come up with
      // it: EADDRINUSE; seen under load).
      await bestEffort(this.log, 'dhcp probe removal', s.parent, () =>
        ignoreNotFound(ns.handle.linkDel(PROBE_IF)),
      );
      ns.handle.close();
      await this.netns.remove(ns.id);
    }
  }
}
