import type { LinkLease } from '../ipam/ipam';
import type { PortBinding } from '../portmap/spec';

// What the controller persists. One record per network, endpoint and sandbox;
// `state` marks an operation in flight so a restart after SIGKILL can finish
// or undo it.

export type OpState = 'ready' | 'creating' | 'deleting';

export interface IpamConfig {
  subnet?: string;
  ipRange?: string;
  gateway?: string;
  auxAddresses?: Record<string, string>;
}

export interface PoolAllocation {
  poolId: string;
  pool: string;
  /** CIDR, the gateway handed to the driver. */
  gateway?: string;
  /** Whether the gateway address was allocated from IPAM (and must be released). */
  gatewayAllocated: boolean;
  ipRange?: string;
  /** name -> plain IP */
  auxAddresses: Record<string, string>;
  v6: boolean;
}

export interface NetworkRecord {
  id: string;
  name: string;
  driver: string;
  scope: 'local' | 'global' | 'swarm';
  created: string;
  enableIPv6: boolean;
  internal: boolean;
  attachable: boolean;
  ingress: boolean;
  labels: Record<string, string>;
  /** The user's -o options. */
  options: Record<string, string>;
  ipamDriver: string;
  ipamOptions: Record<string, string>;
  /** What the user asked for. */
  ipamConfig: IpamConfig[];
  /** What IPAM gave. */
  pools: PoolAllocation[];
  /** The daemon's own default network of its driver (bridge, host, none). */
  isDefault: boolean;
  /** Made by the Docker engine through cnmd's plugin sockets: the engine owns its lifecycle. */
  owner?: 'engine';
  /**
   * An engine network of cnmd-overlay: the id of the cnmd overlay network it
   * is bound to (-o cnmd.network=NAME), whose driver state its endpoints use.
   */
  boundTo?: string;
  /** An engine network addressed by the LAN's DHCP server: its pool's id in cnmd-ipam's dhcp mode. */
  dhcpPool?: string;
  state: OpState;
}

export interface EndpointRecord {
  id: string;
  name: string;
  networkId: string;
  sandboxId: string;
  /** CIDRs */
  ipv4?: string;
  ipv6?: string;
  poolV4?: string;
  poolV6?: string;
  mac?: string;
  /** Interface name in the sandbox. */
  ifname: string;
  aliases: string[];
  /** The user asked for these addresses (--ip/--ip6). */
  staticIPv4?: string;
  staticIPv6?: string;
  /** The sandbox's published ports, as allocated, when this endpoint holds them. */
  ports?: PortBinding[];
  /**
   * The IPv4 default route the driver's join asked for through another interface of the
   * sandbox (JoinInfo.gateway + gatewayInterface: overlay's cnmd_gwbridge), instead of the pool's gateway.
   */
  gatewayVia?: { gw: string; dev: string };
  /** The DHCP lease ipv4 (and gatewayVia) come from, on a network with a link-bound IPAM (--ipam-driver dhcp). */
  dhcp?: LinkLease;
  /** Made by the Docker engine through cnmd's plugin: no cnmd sandbox (sandboxId is ''). */
  owner?: 'engine';
  /** Engine endpoints: the engine's sandbox (netns path) it joined, if joined. */
  sandboxKey?: string;
  state: OpState;
}

/** An IPAM pool the Docker engine holds through the cnmd-ipam plugin, with its addresses. */
export interface IpamLeaseRecord {
  poolId: string;
  pool: string;
  v6: boolean;
  /** Plain IPs handed out from this pool and not yet released. */
  addresses: string[];
  /**
   * The pool is a cnmd overlay network's cluster-wide pool (IPAM's, shared
   * with that network): releasing the lease releases its addresses only.
   */
  global?: boolean;
  /** cnmd-ipam's dhcp mode (--ipam-opt cnmd.ipam.mode=dhcp): addresses are the LAN's DHCP server's. */
  dhcp?: EngineDhcpPool;
}

export interface EngineDhcpPool {
  /** The other --ipam-opt values (cnmd.dhcp.timeout). */
  options: Record<string, string>;
  /** The engine network (cnmd-macvlan/-ipvlan) whose parent the leases are asked on, once created. */
  networkId?: string;
  /** That network's parent and link kind: releases reach the LAN after the network is gone too. */
  lan?: { parent: string; kind: 'macvlan' | 'ipvlan' };
  /** Plain IP -> its lease; `id` is the client id's (cnmd:<id>) and the probe's. */
  leases: Record<string, { id: string; lease: LinkLease }>;
}

export interface DnsConfig {
  servers: string[];
  search: string[];
  options: string[];
}

export interface SandboxRecord {
  id: string;
  name: string;
  hostname: string;
  /** netns path */
  key: string;
  created: string;
  /** Endpoint ids in join order (eth0, eth1, ...). */
  endpoints: string[];
  dns: DnsConfig;
  /** The sandbox lives in the daemon's own netns (host network). */
  hostNetns: boolean;
  /** Ports to publish (-p), as asked; one endpoint holds them (see EndpointRecord.ports). */
  ports: PortBinding[];
  labels: Record<string, string>;
  state: OpState;
}

export const KIND = {
  network: 'network',
  endpoint: 'endpoint',
  sandbox: 'sandbox',
  // The engine's objects live apart from cnmd's own: the same network id can be both
  // (cnmd using its own plugin through drivers/remote), and the engine drives their lifecycle.
  engineNetwork: 'engine-network',
  engineEndpoint: 'engine-endpoint',
  ipamLease: 'ipam-lease',
} as const;
