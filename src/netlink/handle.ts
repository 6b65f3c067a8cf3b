// The object API: one Handle per network namespace, opened inside it (like
// vishvananda/netlink's handle-per-namespace). Links are named by index or
// name; namespaces by path. Every method resolves names, encodes with the
// pure codecs in rtnl/ and xfrm/, and turns kernel errors into typed ones.
import { native, NETLINK_ROUTE, NETLINK_XFRM } from '../../native';
import { CnmdError, invalidArgument } from '../errors';
import { NLM_F_APPEND, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE } from './codec';
import { NetlinkError, NetlinkSocket, fromNativeError } from './socket';
import * as C from './rtnl/constants';
import { Addr, AddrOptions, decodeAddr, encodeAddr, encodeAddrDump } from './rtnl/addr';
import {
  Link,
  LinkChanges,
  LinkKind,
  LinkSpec,
  decodeLink,
  encodeLinkAdd,
  encodeLinkDump,
  encodeLinkRef,
  encodeLinkSet,
} from './rtnl/link';
import {
  FdbSpec,
  Neigh,
  NeighSpec,
  decodeNeigh,
  encodeFdb,
  encodeNeigh,
  encodeNeighDump,
  encodeProxyNeighDump,
} from './rtnl/neigh';
import { Route, RouteSpec, decodeRoute, encodeRoute, encodeRouteDump } from './rtnl/route';
import * as X from './xfrm/xfrm';

/** A link by ifindex or name. */
export type LinkRef = number | string;

type Resolved<T> = Omit<T, 'masterIndex' | 'netnsFd' | 'parentIndex' | 'linkIndex'>;

/** Where link creation takes names and paths instead of indexes and fds. */
export type LinkAddSpec =
  // The peer's netns by path, or as the netns of a handle (its fd kept open: no path look-up per link).
  (
    | (Resolved<Extract<LinkSpec, { kind: 'veth' }>> & {
        peer: Resolved<Extract<LinkSpec, { kind: 'veth' }>['peer']> & { netns?: string | Handle };
      })
    | Resolved<Extract<LinkSpec, { kind: 'bridge' }>>
    | (Resolved<Extract<LinkSpec, { kind: 'vxlan' }>> & { dev?: LinkRef })
    | (Resolved<Extract<LinkSpec, { kind: 'macvlan' }>> & { parent: LinkRef })
    | (Resolved<Extract<LinkSpec, { kind: 'ipvlan' }>> & { parent: LinkRef })
    | (Resolved<Extract<LinkSpec, { kind: 'vlan' }>> & { parent: LinkRef })
    | Resolved<Extract<LinkSpec, { kind: 'dummy' }>>
  ) & {
    master?: LinkRef;
    /** Create the link in this netns: by path, or a handle's (its fd kept open: no path look-up). */
    netns?: string | Handle;
    /**
     * false: the kernel is not asked for a copy of the new link, and linkAdd resolves null (spares building
     * and decoding it).
     */
    echo?: boolean;
  };

export interface LinkSetChanges extends Omit<LinkChanges, 'masterIndex' | 'netnsFd'> {
  /** Bridge to enslave to; null = nomaster. */
  master?: LinkRef | null;
  /** Move the link into the netns at this path. */
  netns?: string;
}

export type RouteAddSpec = Omit<RouteSpec, 'oifIndex'> & { dev?: LinkRef };
export type NeighAddSpec = Omit<NeighSpec, 'index'> & { dev: LinkRef };
export type FdbAddSpec = Omit<FdbSpec, 'index'> & { dev: LinkRef };

/** The kernel option each link kind needs; named in KERNEL_FEATURE_MISSING errors. */
export const LINK_KIND_KCONFIG: Record<LinkKind, string> = {
  veth: 'CONFIG_VETH',
  bridge: 'CONFIG_BRIDGE',
  vxlan: 'CONFIG_VXLAN',
  macvlan: 'CONFIG_MACVLAN',
  ipvlan: 'CONFIG_IPVLAN',
  vlan: 'CONFIG_VLAN_8021Q',
  dummy: 'CONFIG_DUMMY',
};

/** A numeric link reference must be an ifindex: an integer in 1..2^31-1 (never truncated, never 0). */
function checkIndex(op: string, ref: LinkRef): void {
  if (typeof ref === 'number' && !(Number.isInteger(ref) && ref >= 1 && ref <= 0x7fffffff)) {
    throw invalidArgument(
      op,
      String(ref),
      `link index ${ref} is not valid (an integer from 1 to 2147483647)`,
    );
  }
}

/** Whether a request needs a look-up by name before it can be encoded (then bad input is checked first). */
function needsLookup(...refs: (LinkRef | undefined)[]): boolean {
  return refs.some((r) => typeof r === 'string');
}

/** The kernel's "no such link" as NOT_FOUND with this handle's wording; anything else is rethrown as it is. */
function remapNotFound(e: unknown, op: string, object: string, reason = 'no such link'): never {
  if (e instanceof NetlinkError && e.code === 'NOT_FOUND')
    throw new CnmdError('NOT_FOUND', `${op} ${object}: ${reason}`, { op, object, errno: e.errno, cause: e });
  throw e;
}

const EOPNOTSUPP = 95;
const EPROTONOSUPPORT = 93;
const ENOSYS = 38;

function kernelFeatureMissing(
  op: string,
  object: string,
  feature: string,
  kconfig: string,
  e: NetlinkError,
): CnmdError {
  return new CnmdError(
    'KERNEL_FEATURE_MISSING',
    `${op} ${object}: this kernel lacks ${feature} (${kconfig}); load its module or run a kernel built with it` +
      (e.kernelMessage ? ` [kernel: ${e.kernelMessage}]` : ''),
    { op, object, errno: e.errno, feature, kconfig, cause: e },
  );
}

export class Handle {
  readonly nsPath: string | null;
  /**
   * Called as each address request goes out, before its ACK: a request that
   * needs the address (a route through it) sent from here follows it on the
   * same socket, which the kernel handles in order, a round trip earlier than
   * after the ACK.
   */
  onAddressSent?: (index: number, family: 4 | 6) => void;
  private route: NetlinkSocket;
  private xfrmSock?: NetlinkSocket;
  /** Link removals that nothing after them waits for (linkDel's `onOwnSocket`). */
  private removalSock?: NetlinkSocket;
  /** This handle's netns, open for IFLA_NET_NS_FD (ownNetnsFd). */
  private nsFd?: number;

  private constructor(nsPath: string | null, route: NetlinkSocket) {
    this.nsPath = nsPath;
    this.route = route;
  }

  /** A handle for the netns at nsPath (null: the daemon's own netns). */
  static at(nsPath: string | null): Handle {
    return new Handle(nsPath, NetlinkSocket.open(NETLINK_ROUTE, nsPath));
  }

  /** Wraps an rtnetlink fd already opened inside the netns (by native.netnsCreate). */
  static adopt(nsPath: string, routeFd: number): Handle {
    return new Handle(nsPath, NetlinkSocket.adopt(routeFd, NETLINK_ROUTE, nsPath));
  }

  get closed(): boolean {
    return this.route.isClosed;
  }

  /** Runs fn with a handle opened inside the netns at nsPath, then closes it. */
  static async inNetns<T>(nsPath: string, fn: (h: Handle) => Promise<T>): Promise<T> {
    const h = Handle.at(nsPath);
    try {
      return await fn(h);
    } finally {
      h.close();
    }
  }

  /** The namespace got another path (a pooled netns adopted by a sandbox): later sockets open there. */
  relocate(nsPath: string): void {
    (this as { nsPath: string | null }).nsPath = nsPath;
  }

  /**
   * An fd for the netns this handle works in, kept open until close(): a veth's peer placed here from another
   * handle.
   */
  ownNetnsFd(): number {
    return (this.nsFd ??= this.route.netnsFd());
  }

  close(): void {
    if (this.nsFd !== undefined) native.close(this.nsFd);
    this.nsFd = undefined;
    this.route.close();
    this.xfrmSock?.close();
    this.removalSock?.close();
  }

  private removalSocket(): NetlinkSocket {
    // sibling() refuses a closed handle; in the route socket's own netns, as xfrm().
    if (!this.removalSock || this.removalSock.isClosed) this.removalSock = this.route.sibling(NETLINK_ROUTE);
    return this.removalSock;
  }

  private xfrm(): NetlinkSocket {
    if (!this.xfrmSock || this.xfrmSock.isClosed) {
      if (this.route.isClosed)
        throw new CnmdError('CLOSED', 'xfrm: netlink handle is closed', { op: 'xfrm' });
      // In the route socket's own netns: the path may have been removed or reused since.
      this.xfrmSock = this.route.sibling(NETLINK_XFRM);
    }
    return this.xfrmSock;
  }

  /** Opens the netns at path for IFLA_NET_NS_FD, runs fn, closes the fd (a handle's: its own, left open). */
  private async withNetnsFd<T>(
    op: string,
    object: string,
    path: string | Handle | undefined,
    fn: (fd: number | undefined) => Promise<T>,
  ): Promise<T> {
    if (path === undefined) return fn(undefined);
    if (path instanceof Handle) return fn(path.ownNetnsFd());
    let fd: number;
    try {
      fd = native.openPath(path);
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') {
        throw new CnmdError('NOT_FOUND', `${op} ${object}: network namespace ${path} does not exist`, {
          op,
          object,
          errno: 'ENOENT',
        });
      }
      throw fromNativeError(op, object, e);
    }
    try {
      return await fn(fd);
    } finally {
      native.close(fd);
    }
  }

  // ---- links ----

  /**
   * Creates a link. Resolves with the new link as the kernel reports it, or
   * null when it was created in another netns (the kernel echoes only there).
   */
  async linkAdd(spec: LinkAddSpec): Promise<Link | null> {
    const op = 'link add';
    const name = spec.name;
    // Bad input fails here, before any look-up is sent (placeholders stand for the indexes).
    if (
      needsLookup(
        spec.master,
        'parent' in spec ? spec.parent : undefined,
        spec.kind === 'vxlan' ? spec.dev : undefined,
      )
    ) {
      encodeLinkAdd({
        ...spec,
        masterIndex: spec.master === undefined ? undefined : 1,
        parentIndex: 'parent' in spec ? 1 : undefined,
        linkIndex: undefined,
      } as unknown as LinkSpec);
    }
    const masterIndex = spec.master === undefined ? undefined : await this.linkIndex(spec.master);
    // A parent given by index is used as is, without an await: the request goes out in call order
    // (a macvlan child made here, then configured through the sandbox's socket in the same burst).
    const parentIndex =
      'parent' in spec && spec.parent !== undefined
        ? typeof spec.parent === 'number'
          ? this.validIndex(op, spec.parent)
          : await this.linkIndex(spec.parent)
        : undefined;
    const linkIndex =
      spec.kind === 'vxlan' && spec.dev !== undefined ? await this.linkIndex(spec.dev) : undefined;
    const peerNs = spec.kind === 'veth' ? spec.peer.netns : undefined;
    return this.withNetnsFd(op, name, spec.netns, (netnsFd) =>
      this.withNetnsFd(op, name, peerNs, async (peerFd) => {
        const full = { ...spec, masterIndex, netnsFd, parentIndex, linkIndex } as unknown as LinkSpec;
        // The kernel refuses IFF_UP on a veth peer at creation (ENOTCONN, 6.x): set it afterwards.
        const peerUpLater = spec.kind === 'veth' && !!spec.peer.up;
        if (full.kind === 'veth' && spec.kind === 'veth')
          full.peer = { ...spec.peer, netnsFd: peerFd, up: peerUpLater ? false : spec.peer.up };
        const payload = encodeLinkAdd(full);
        let replies;
        try {
          replies = await this.route.request(
            C.RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL | (spec.echo === false ? 0 : NLM_F_ECHO),
            payload,
            { op, object: name },
          );
        } catch (e) {
          if (e instanceof NetlinkError && e.errnoNumber === EOPNOTSUPP) {
            if (/unknown device type/i.test(e.kernelMessage ?? '')) {
              throw kernelFeatureMissing(
                op,
                name,
                `the "${spec.kind}" link type`,
                LINK_KIND_KCONFIG[spec.kind],
                e,
              );
            }
            // The type exists; one of its options does not (e.g. bridge vlan_filtering without
            // CONFIG_BRIDGE_VLAN_FILTERING).
            const given = Object.entries(spec)
              .filter(
                ([k, v]) =>
                  v !== undefined &&
                  !['kind', 'name', 'peer', 'netns', 'master', 'parent', 'dev', 'up'].includes(k),
              )
              .map(([k]) => k);
            throw new CnmdError(
              'KERNEL_FEATURE_MISSING',
              `${op} ${name}: this kernel does not support an option given for the ${spec.kind} link (EOPNOTSUPP${e.kernelMessage ? `: ${e.kernelMessage}` : ''}); options given: ${given.join(', ') || 'none'}` +
                (spec.kind === 'bridge' && spec.vlanFiltering
                  ? '; vlan filtering needs CONFIG_BRIDGE_VLAN_FILTERING'
                  : ''),
              { op, object: name, errno: e.errno, cause: e },
            );
          }
          if (e instanceof NetlinkError && e.code === 'ALREADY_EXISTS') {
            throw new CnmdError(
              'ALREADY_EXISTS',
              `${op} ${name}: a link with this name already exists (EEXIST)`,
              { op, object: name, errno: 'EEXIST', cause: e },
            );
          }
          throw e;
        }
        // The kernel ignores IFLA_IFALIAS when it creates a link; set it right after
        // (through a short-lived handle when the link was born in another netns).
        if (spec.alias !== undefined) {
          if (spec.netns === undefined)
            await this.route.request(C.RTM_NEWLINK, 0, encodeLinkSet(0, name, { alias: spec.alias }), {
              op,
              object: name,
            });
          else if (spec.netns instanceof Handle) await spec.netns.linkSet(name, { alias: spec.alias });
          else await Handle.inNetns(spec.netns, (h) => h.linkSet(name, { alias: spec.alias }));
        }
        if (peerUpLater && spec.kind === 'veth') {
          const peerNs = spec.peer.netns;
          if (peerNs === undefined) await this.linkSet(spec.peer.name, { up: true });
          else if (peerNs instanceof Handle) await peerNs.linkSet(spec.peer.name, { up: true });
          else await Handle.inNetns(peerNs, (h) => h.linkSet(spec.peer.name, { up: true }));
        }
        if (spec.echo === false) return null;
        const echoed = replies.find((m) => m.type === C.RTM_NEWLINK);
        if (echoed) {
          const link = decodeLink(echoed.payload);
          if (spec.alias !== undefined) link.alias = spec.alias;
          return link;
        }
        if (spec.netns !== undefined) return null;
        return this.linkGet(name);
      }),
    );
  }

  async linkGet(ref: LinkRef): Promise<Link> {
    checkIndex('link get', ref);
    const [index, name] = typeof ref === 'number' ? [ref, undefined] : [0, ref];
    const object = String(ref);
    try {
      const replies = await this.route.request(C.RTM_GETLINK, 0, encodeLinkRef(index, name), {
        op: 'link get',
        object,
      });
      const m = replies.find((r) => r.type === C.RTM_NEWLINK);
      if (!m)
        throw new CnmdError('MALFORMED_REPLY', `link get ${object}: the kernel sent no link`, {
          op: 'link get',
          object,
        });
      return decodeLink(m.payload);
    } catch (e) {
      remapNotFound(e, 'link get', object, `no such link${this.nsPath ? ` in ${this.nsPath}` : ''}`);
    }
  }

  /** A numeric ref, checked: no look-up, and no await before the request goes out. */
  private validIndex(op: string, index: number): number {
    checkIndex(op, index);
    return index;
  }

  /** The ifindex of ref (a number is taken as it is). */
  async linkIndex(ref: LinkRef): Promise<number> {
    if (typeof ref === 'number') {
      checkIndex('link', ref);
      return ref;
    }
    return (await this.linkGet(ref)).index;
  }

  async linkList(): Promise<Link[]> {
    const replies = await this.route.request(C.RTM_GETLINK, 0, encodeLinkDump(), {
      op: 'link list',
      dump: true,
    });
    return replies.filter((m) => m.type === C.RTM_NEWLINK).map((m) => decodeLink(m.payload));
  }

  /**
   * Removes a link. A removal waits in the kernel for an RCU grace period, so
   * it is sent as a slow request (other sockets' requests never queue behind
   * it). `onOwnSocket`: on a socket of its own too, so this handle's later
   * requests do not wait for it either: for a removal nothing depends on, like
   * a dead sandbox's veth.
   */
  async linkDel(ref: LinkRef, opts: { onOwnSocket?: boolean } = {}): Promise<void> {
    checkIndex('link del', ref);
    const [index, name] = typeof ref === 'number' ? [ref, undefined] : [0, ref];
    const socket = opts.onOwnSocket ? this.removalSocket() : this.route;
    try {
      await socket.request(C.RTM_DELLINK, 0, encodeLinkRef(index, name), {
        op: 'link del',
        object: String(ref),
        slow: true,
      });
    } catch (e) {
      remapNotFound(e, 'link del', String(ref));
    }
  }

  async linkSet(ref: LinkRef, ch: LinkSetChanges): Promise<void> {
    const op = 'link set';
    checkIndex(op, ref);
    const object = String(ref);
    const { master: _m0, netns: _n0, ...plain } = ch;
    if (needsLookup(ch.master ?? undefined) || (ch.name !== undefined && typeof ref === 'string'))
      encodeLinkSet(1, undefined, plain); // bad input fails before any look-up
    // No look-up and no await for an index: requests by index or name go out in call order.
    const masterIndex =
      ch.master === undefined
        ? undefined
        : ch.master === null
          ? 0
          : typeof ch.master === 'number'
            ? this.validIndex(op, ch.master)
            : await this.linkIndex(ch.master);
    // Renames need the index; everything else can name the link directly.
    const index = typeof ref === 'number' ? ref : ch.name !== undefined ? await this.linkIndex(ref) : 0;
    const name = typeof ref === 'string' ? ref : undefined;
    await this.withNetnsFd(op, object, ch.netns, async (netnsFd) => {
      const { master: _m, netns: _n, ...rest } = ch;
      const payload = encodeLinkSet(index, index === 0 ? name : undefined, { ...rest, masterIndex, netnsFd });
      try {
        await this.route.request(C.RTM_NEWLINK, 0, payload, { op, object });
      } catch (e) {
        remapNotFound(e, op, object);
      }
    });
  }

  // ---- addresses ----

  async addrAdd(link: LinkRef, cidr: string, opts?: AddrOptions): Promise<void> {
    if (needsLookup(link)) encodeAddr('addr add', 1, cidr, opts); // bad input fails before the link is looked up
    const index = typeof link === 'number' ? this.validIndex('addr add', link) : await this.linkIndex(link);
    const sent = this.route.request(
      C.RTM_NEWADDR,
      NLM_F_CREATE | NLM_F_EXCL,
      encodeAddr('addr add', index, cidr, opts),
      { op: 'addr add', object: `${cidr} dev ${link}` },
    );
    this.onAddressSent?.(index, cidr.includes(':') ? 6 : 4);
    await sent;
  }

  async addrDel(link: LinkRef, cidr: string): Promise<void> {
    encodeAddr('addr del', 1, cidr);
    const index = await this.linkIndex(link);
    await this.route.request(C.RTM_DELADDR, 0, encodeAddr('addr del', index, cidr), {
      op: 'addr del',
      object: `${cidr} dev ${link}`,
    });
  }

  async addrList(filter: { link?: LinkRef; family?: 4 | 6 } = {}): Promise<Addr[]> {
    const index = filter.link === undefined ? 0 : await this.linkIndex(filter.link);
    const replies = await this.route.request(C.RTM_GETADDR, 0, encodeAddrDump(filter.family ?? 0, index), {
      op: 'addr list',
      dump: true,
    });
    return replies
      .filter((m) => m.type === C.RTM_NEWADDR)
      .map((m) => decodeAddr(m.payload))
      .filter((a) => index === 0 || a.index === index);
  }

  // ---- routes ----

  private async routeOp(op: 'route add' | 'route replace' | 'route del', spec: RouteAddSpec): Promise<void> {
    const { dev, ...rest } = spec;
    if (needsLookup(dev)) encodeRoute(op, { ...rest, oifIndex: 1 }); // bad input fails before the link is looked up
    const oifIndex =
      typeof dev === 'string'
        ? await this.linkIndex(dev)
        : dev === undefined
          ? undefined
          : this.validIndex(op, dev);
    const payload = encodeRoute(op, { ...rest, oifIndex });
    const type = op === 'route del' ? C.RTM_DELROUTE : C.RTM_NEWROUTE;
    const flags =
      op === 'route add'
        ? NLM_F_CREATE | NLM_F_EXCL
        : op === 'route replace'
          ? NLM_F_CREATE | NLM_F_REPLACE
          : 0;
    const object = `${spec.dst ?? 'default'}${spec.gateway ? ` via ${spec.gateway}` : ''}${dev !== undefined ? ` dev ${dev}` : ''}`;
    try {
      await this.route.request(type, flags, payload, { op, object });
    } catch (e) {
      if (e instanceof NetlinkError && op === 'route del' && e.errno === 'ESRCH') {
        throw new CnmdError('NOT_FOUND', `${op} ${object}: no such route`, {
          op,
          object,
          errno: e.errno,
          cause: e,
        });
      }
      if (e instanceof NetlinkError && e.errno === 'ENETUNREACH') {
        throw new CnmdError(
          'INVALID_ARGUMENT',
          `${op} ${object}: gateway is not reachable on any connected network (ENETUNREACH)`,
          { op, object, errno: e.errno, cause: e },
        );
      }
      throw e;
    }
  }

  routeAdd(spec: RouteAddSpec): Promise<void> {
    return this.routeOp('route add', spec);
  }
  routeReplace(spec: RouteAddSpec): Promise<void> {
    return this.routeOp('route replace', spec);
  }
  routeDel(spec: RouteAddSpec): Promise<void> {
    return this.routeOp('route del', spec);
  }

  /** Routes of one table (default main; 0 = every table). */
  async routeList(filter: { family?: 4 | 6; table?: number; dev?: LinkRef } = {}): Promise<Route[]> {
    const table = filter.table ?? C.RT_TABLE_MAIN;
    const oif = filter.dev === undefined ? undefined : await this.linkIndex(filter.dev);
    const replies = await this.route.request(C.RTM_GETROUTE, 0, encodeRouteDump(filter.family ?? 0), {
      op: 'route list',
      dump: true,
    });
    return replies
      .filter((m) => m.type === C.RTM_NEWROUTE)
      .map((m) => decodeRoute(m.payload))
      .filter((r) => (table === 0 || r.table === table) && (oif === undefined || r.oifIndex === oif));
  }

  // ---- neighbours and FDB ----

  async neighAdd(spec: NeighAddSpec): Promise<void> {
    const { dev, ...rest } = spec;
    encodeNeigh('neigh add', { ...rest, index: 1 });
    const index = await this.linkIndex(dev);
    await this.route.request(
      C.RTM_NEWNEIGH,
      NLM_F_CREATE | NLM_F_REPLACE,
      encodeNeigh('neigh add', { ...rest, index }),
      { op: 'neigh add', object: `${spec.ip} dev ${dev}` },
    );
  }

  async neighDel(spec: Omit<NeighAddSpec, 'mac' | 'state'>): Promise<void> {
    const { dev, ...rest } = spec;
    const index = await this.linkIndex(dev);
    await this.route.request(C.RTM_DELNEIGH, 0, encodeNeigh('neigh del', { ...rest, index }), {
      op: 'neigh del',
      object: `${spec.ip} dev ${dev}`,
    });
  }

  async neighList(filter: { dev?: LinkRef; family?: 4 | 6; proxy?: boolean } = {}): Promise<Neigh[]> {
    const index = filter.dev === undefined ? 0 : await this.linkIndex(filter.dev);
    const family = filter.family === 6 ? C.AF_INET6 : filter.family === 4 ? C.AF_INET : C.AF_UNSPEC;
    const payload = filter.proxy ? encodeProxyNeighDump(family) : encodeNeighDump(family, index);
    const replies = await this.route.request(C.RTM_GETNEIGH, 0, payload, { op: 'neigh list', dump: true });
    return replies
      .filter((m) => m.type === C.RTM_NEWNEIGH)
      .map((m) => decodeNeigh(m.payload))
      .filter(
        (n) =>
          n.family !== C.AF_BRIDGE &&
          (index === 0 || n.index === index) &&
          (filter.proxy === undefined || n.proxy === filter.proxy),
      );
  }

  private async fdbOp(
    op: 'fdb add' | 'fdb append' | 'fdb replace' | 'fdb del',
    spec: FdbAddSpec,
  ): Promise<void> {
    const { dev, ...rest } = spec;
    encodeFdb(op, { ...rest, index: 1 });
    const index = await this.linkIndex(dev);
    const type = op === 'fdb del' ? C.RTM_DELNEIGH : C.RTM_NEWNEIGH;
    // Several remote VTEPs under one MAC (the all-zeros flood entry) need APPEND.
    const flags =
      op === 'fdb add'
        ? NLM_F_CREATE | NLM_F_EXCL
        : op === 'fdb append'
          ? NLM_F_CREATE | NLM_F_APPEND
          : op === 'fdb replace'
            ? NLM_F_CREATE | NLM_F_REPLACE
            : 0;
    await this.route.request(type, flags, encodeFdb(op, { ...rest, index }), {
      op,
      object: `${spec.mac} dev ${dev}${spec.dst ? ` dst ${spec.dst}` : ''}`,
    });
  }

  fdbAdd(spec: FdbAddSpec): Promise<void> {
    return this.fdbOp('fdb add', spec);
  }
  fdbAppend(spec: FdbAddSpec): Promise<void> {
    return this.fdbOp('fdb append', spec);
  }
  /** Adds the entry or changes an existing one's (first) destination (`bridge fdb replace`). */
  fdbReplace(spec: FdbAddSpec): Promise<void> {
    return this.fdbOp('fdb replace', spec);
  }
  fdbDel(spec: FdbAddSpec): Promise<void> {
    return this.fdbOp('fdb del', spec);
  }

  async fdbList(filter: { dev?: LinkRef } = {}): Promise<Neigh[]> {
    const index = filter.dev === undefined ? 0 : await this.linkIndex(filter.dev);
    const replies = await this.route.request(C.RTM_GETNEIGH, 0, encodeNeighDump(C.AF_BRIDGE, index), {
      op: 'fdb list',
      dump: true,
    });
    return replies
      .filter((m) => m.type === C.RTM_NEWNEIGH)
      .map((m) => decodeNeigh(m.payload))
      .filter((n) => n.family === C.AF_BRIDGE && (index === 0 || n.index === index));
  }

  // ---- XFRM ----

  private async xfrmStateWrite(
    type: number,
    flags: number,
    op: string,
    spec: X.XfrmStateSpec,
  ): Promise<void> {
    const object = `${spec.src}->${spec.dst} spi 0x${(spec.spi >>> 0).toString(16)}`;
    try {
      await this.xfrm().request(type, flags, X.encodeStateAdd(spec), { op, object });
    } catch (e) {
      if (e instanceof NetlinkError && e.errnoNumber === EPROTONOSUPPORT) {
        const proto = (spec.proto ?? 'esp').toUpperCase();
        const v6 = spec.dst.includes(':');
        throw kernelFeatureMissing(
          op,
          object,
          `IPsec ${proto}${v6 ? ' over IPv6' : ''}`,
          `CONFIG_INET${v6 ? '6' : ''}_${proto === 'AH' ? 'AH' : 'ESP'}`,
          e,
        );
      }
      if (e instanceof NetlinkError && e.errnoNumber === ENOSYS) {
        const alg = spec.aead?.name ?? spec.crypt?.name ?? spec.auth?.name ?? 'the algorithm';
        const kconfig = /gcm/.test(alg)
          ? 'CONFIG_CRYPTO_GCM'
          : /authenc|cbc/.test(alg)
            ? 'CONFIG_CRYPTO_AUTHENC'
            : 'CONFIG_CRYPTO_*';
        throw kernelFeatureMissing(op, object, `the crypto algorithm ${alg}`, kconfig, e);
      }
      throw e;
    }
  }

  xfrmStateAdd(spec: X.XfrmStateSpec): Promise<void> {
    return this.xfrmStateWrite(X.XFRM_MSG_NEWSA, NLM_F_CREATE | NLM_F_EXCL, 'xfrm state add', spec);
  }
  xfrmStateUpdate(spec: X.XfrmStateSpec): Promise<void> {
    return this.xfrmStateWrite(X.XFRM_MSG_UPDSA, 0, 'xfrm state update', spec);
  }

  async xfrmStateDel(id: X.XfrmStateId): Promise<void> {
    await this.xfrm().request(X.XFRM_MSG_DELSA, 0, X.encodeStateId('xfrm state del', id), {
      op: 'xfrm state del',
      object: `${id.dst} spi 0x${(id.spi >>> 0).toString(16)}`,
    });
  }

  async xfrmStateGet(id: X.XfrmStateId): Promise<X.XfrmState> {
    const object = `${id.dst} spi 0x${(id.spi >>> 0).toString(16)}`;
    const replies = await this.xfrm().request(X.XFRM_MSG_GETSA, 0, X.encodeStateId('xfrm state get', id), {
      op: 'xfrm state get',
      object,
    });
    const m = replies.find((r) => r.type === X.XFRM_MSG_NEWSA);
    if (!m)
      throw new CnmdError('MALFORMED_REPLY', `xfrm state get ${object}: the kernel sent no state`, {
        op: 'xfrm state get',
        object,
      });
    return X.decodeState(m.payload);
  }

  async xfrmStateList(): Promise<X.XfrmState[]> {
    const replies = await this.xfrm().request(X.XFRM_MSG_GETSA, 0, Buffer.alloc(0), {
      op: 'xfrm state list',
      dump: true,
    });
    return replies.filter((m) => m.type === X.XFRM_MSG_NEWSA).map((m) => X.decodeState(m.payload));
  }

  async xfrmStateFlush(proto: X.XfrmProto | 'any' = 'any'): Promise<void> {
    await this.xfrm().request(X.XFRM_MSG_FLUSHSA, 0, X.encodeStateFlush(proto), { op: 'xfrm state flush' });
  }

  async xfrmPolicyAdd(spec: X.XfrmPolicySpec): Promise<void> {
    await this.xfrm().request(X.XFRM_MSG_NEWPOLICY, NLM_F_CREATE | NLM_F_EXCL, X.encodePolicyAdd(spec), {
      op: 'xfrm policy add',
      object: `${spec.selector.src}->${spec.selector.dst} dir ${spec.dir}`,
    });
  }
  async xfrmPolicyUpdate(spec: X.XfrmPolicySpec): Promise<void> {
    await this.xfrm().request(X.XFRM_MSG_UPDPOLICY, 0, X.encodePolicyAdd(spec), {
      op: 'xfrm policy update',
      object: `${spec.selector.src}->${spec.selector.dst} dir ${spec.dir}`,
    });
  }

  async xfrmPolicyDel(id: X.XfrmPolicyId): Promise<void> {
    await this.xfrm().request(X.XFRM_MSG_DELPOLICY, 0, X.encodePolicyId('xfrm policy del', id), {
      op: 'xfrm policy del',
      object: `${id.selector.src}->${id.selector.dst} dir ${id.dir}`,
    });
  }

  async xfrmPolicyGet(id: X.XfrmPolicyId): Promise<X.XfrmPolicy> {
    const object = `${id.selector.src}->${id.selector.dst} dir ${id.dir}`;
    const replies = await this.xfrm().request(
      X.XFRM_MSG_GETPOLICY,
      0,
      X.encodePolicyId('xfrm policy get', id),
      { op: 'xfrm policy get', object },
    );
    const m = replies.find((r) => r.type === X.XFRM_MSG_NEWPOLICY);
    if (!m)
      throw new CnmdError('MALFORMED_REPLY', `xfrm policy get ${object}: the kernel sent no policy`, {
        op: 'xfrm policy get',
        object,
      });
    return X.decodePolicy(m.payload);
  }

  async xfrmPolicyList(): Promise<X.XfrmPolicy[]> {
    const replies = await this.xfrm().request(X.XFRM_MSG_GETPOLICY, 0, Buffer.alloc(0), {
      op: 'xfrm policy list',
      dump: true,
    });
    return replies.filter((m) => m.type === X.XFRM_MSG_NEWPOLICY).map((m) => X.decodePolicy(m.payload));
  }

  async xfrmPolicyFlush(): Promise<void> {
    await this.xfrm().request(X.XFRM_MSG_FLUSHPOLICY, 0, Buffer.alloc(0), { op: 'xfrm policy flush' });
  }
}
