// The IPAM seam (libnetwork's ipamapi.Ipam): the default allocator and remote
// IPAM plugins both implement it. Failures are CnmdErrors: NOT_FOUND when a
// release names a pool or address not held (teardowns treat it as done),
// EXHAUSTED when a pool has no address left (the controller then tries the
// network's next pool), IN_USE when a requested subnet overlaps a taken one or
// a requested address is taken or reserved (Docker's 403).

export const LOCAL_SPACE = 'LocalDefault';

/**
 * Docker's wording (libnetwork's ipamapi errors), which its clients and users search for: cnmd's reasons,
 * which name the network or sandbox, follow it.
 */
export const POOL_OVERLAP = 'Pool overlaps with other one on this address space';
export const ADDRESS_IN_USE = 'Address already in use';
export const GLOBAL_SPACE = 'GlobalDefault';

export interface PoolRequest {
  addressSpace?: string;
  /** CIDR; empty: pick a free predefined pool. */
  pool?: string;
  /** --ip-range: dynamic addresses come only from here. */
  subPool?: string;
  v6?: boolean;
  options?: Record<string, string>;
  /**
   * Pools of different partitions of one address space may overlap: the same
   * subnet on two LANs (macvlan networks on two parents, moby#46438). An IPAM
   * without partitions ignores it.
   */
  partition?: string;
}

export interface PoolInfo {
  poolId: string;
  /** CIDR */
  pool: string;
  data?: Record<string, string>;
}

export interface AddressOptions {
  /** This request is for the network's gateway. */
  gateway?: boolean;
  /** Don't reuse the lowest free address: continue after the last one given. */
  serial?: boolean;
}

/** The endpoint interface a link-bound IPAM leases an address for (see LinkIpam). */
export interface LeaseLink {
  /** The netns the endpoint's interface lives in. */
  nsPath: string;
  /** '': the interface that holds the lease's address (renewals only; see renew). */
  ifname: string;
  /** The network's parent link, named in errors (the LAN that did not answer). */
  parent: string;
  endpointId: string;
  /** Offered to the server (DHCP option 12): it may register it in its DNS. */
  hostname?: string;
}

/** A lease as the server gave it: what the endpoint is configured with, and when to renew. */
export interface LinkLease {
  /** CIDR */
  address: string;
  gateway?: string;
  /** The DNS servers the server offers: the sandbox's upstreams. */
  dns: string[];
  server: string;
  leaseSeconds: number;
  t1: number;
  t2: number;
  /** When the request the server's ACK answered went out (ms since the epoch): T1, T2 and expiry count from here. */
  boundAt: number;
  /** The hardware address the lease was asked with (the interface's). */
  mac: string;
}

/** How LinkIpam.keep keeps a lease. */
export interface KeepOptions {
  /** Renew at once (a daemon's restart). */
  now?: boolean;
  /**
   * The address is not cnmd's to change (an engine container's): a refused renewal is logged
   * and retried, never answered with a new lease.
   */
  fixedAddress?: boolean;
}

/**
 * An IPAM whose addresses come from a server on the endpoint's LAN (DHCP),
 * asked from the endpoint's own interface once it exists: no pools; the
 * controller asks after the driver's join, the interface up and without an
 * address in the sandbox, then configures what the lease gives.
 */
export interface LinkIpam {
  /** Refuses bad --ipam-opt values at network create. */
  checkOptions(op: string, options: Record<string, string>): void;
  /** A new lease; a LAN that does not answer is an UNAVAILABLE error naming the parent. */
  acquire(link: LeaseLink, options: Record<string, string>, op?: string): Promise<LinkLease>;
  /**
   * Keeps the lease while the endpoint lives: renewed at T1 (rebinding at
   * T2), each new lease handed to onChange (to persist it; an address that
   * changed replaces the old one).
   */
  keep(
    link: LeaseLink,
    lease: LinkLease,
    options: Record<string, string>,
    onChange: (lease: LinkLease) => Promise<void>,
    how?: KeepOptions,
  ): void;
  /** Stops keeping the lease and gives the address back to the server. */
  release(link: LeaseLink, lease: LinkLease): Promise<void>;
  /** Tells the server the lease's address is in use by another (never kept: the server offers another). */
  decline(link: LeaseLink, lease: LinkLease): Promise<void>;
  /** Stops keeping the lease (its interface is gone: nothing can send from it). */
  forget(endpointId: string): void;
  /** Stops every renewal (daemon stop: the leases stay for the next start). */
  close(): void;
}

export interface Ipam {
  readonly name: string;
  /** Present on a link-bound IPAM (DHCP): the pool and address methods are then never called. */
  readonly leases?: LinkIpam;
  defaultAddressSpaces(): Promise<{ local: string; global: string }>;
  requestPool(req: PoolRequest): Promise<PoolInfo>;
  releasePool(poolId: string): Promise<void>;
  /** Returns the address as a CIDR with the pool's prefix ("10.1.0.2/24"). */
  requestAddress(poolId: string, ip?: string, opts?: AddressOptions): Promise<string>;
  releaseAddress(poolId: string, ip: string): Promise<void>;
  /**
   * Called at daemon start: frees every pool and address the allocator holds
   * that `referenced` does not name (pool id -> plain IPs in use; a pool
   * listed with no IPs is kept, its addresses freed). Returns what it freed,
   * for the log. An IPAM that keeps no state of its own (remote) omits it.
   */
  sweep?(referenced: Map<string, Set<string>>): string[];
  /** The pools this allocator holds now (an IPAM that keeps no state of its own omits it). */
  pools?(): { id: string; pool: string }[];
  /**
   * The cluster-wide pool of a global (overlay) network whose subnet is
   * exactly `subnet`, if this host has it: the engine's networks bound to a
   * cnmd overlay network take their addresses from it (cnmd-ipam).
   */
  globalPool?(subnet: string): PoolInfo | undefined;
}

export const GATEWAY_OPTION = 'com.docker.network.gateway';
export const SERIAL_OPTION = 'com.docker.network.ipam.serial';
