// The IPAM seam (libnetwork's ipamapi.Ipam): the default allocator and remote
// IPAM plugins both implement it. Failures are CnmdErrors: NOT_FOUND when a
// release names a pool or address not held (teardowns treat it as done),
// EXHAUSTED when a pool has no address left (the controller then tries the
// network's next pool).

export const LOCAL_SPACE = 'LocalDefault';
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

export interface Ipam {
  readonly name: string;
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
}

export const GATEWAY_OPTION = 'com.docker.network.gateway';
export const SERIAL_OPTION = 'com.docker.network.ipam.serial';
