export * from './handle';
export { NetlinkError, NetlinkSocket } from './socket';
export type { Link, LinkKind, LinkSpec } from './rtnl/link';
export type { Addr, AddrOptions } from './rtnl/addr';
export type { Route, RouteSpec } from './rtnl/route';
export type { Neigh, NeighSpec, FdbSpec } from './rtnl/neigh';
export type * from './xfrm/xfrm';
