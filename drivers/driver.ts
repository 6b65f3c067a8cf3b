// The Driver seam (libnetwork's driverapi.Driver): built-in drivers and
// remote plugins implement it; the controller calls it in libnetwork's order:
// createNetwork -> createEndpoint -> join -> programExternalConnectivity, and
// the reverse on teardown.
import type { Handle } from '../src/netlink/handle';
import type { PortBinding } from '../src/portmap/spec';

export interface Capabilities {
  /** local: one host; global: state shared across hosts through the cluster store. */
  scope: 'local' | 'global';
  connectivityScope?: 'local' | 'global';
  /** Only one network of this driver may exist and it cannot be removed (host, null). */
  singleton?: boolean;
  /** The sandbox shares the daemon's own netns (host). */
  usesHostNetns?: boolean;
  /** The driver publishes ports (programExternalConnectivity with portBindings). */
  portMapping?: boolean;
}

export interface IpamData {
  addressSpace?: string;
  /** CIDR of the pool. */
  pool: string;
  /** Gateway with prefix ("10.1.0.1/24"). */
  gateway?: string;
  /** name -> CIDR */
  auxAddresses?: Record<string, string>;
}

export interface NetworkSpec {
  id: string;
  name: string;
  /** The user's -o options (com.docker.network.generic). */
  options: Record<string, string>;
  ipv4: IpamData[];
  ipv6: IpamData[];
  enableIPv6: boolean;
  internal: boolean;
  /** The daemon's default network ("bridge"): device cnm0, no embedded DNS. */
  isDefault?: boolean;
}

export interface EndpointSpec {
  networkId: string;
  endpointId: string;
  /** CIDRs */
  address?: string;
  addressIPv6?: string;
  mac?: string;
  options: Record<string, unknown>;
  /** Ports this endpoint publishes, as allocated (exact host ports); for restore. */
  ports?: PortBinding[];
}

export interface ExternalConnectivityOptions {
  /** Docker's com.docker.network.portmap: the sandbox's -p bindings. */
  portBindings?: PortBinding[];
}

/** What the driver decided for the endpoint (it may fill only empty fields). */
export interface EndpointInfo {
  mac?: string;
  address?: string;
  addressIPv6?: string;
}

export interface StaticRoute {
  destination: string;
  /** 0 = next hop, 1 = connected */
  routeType: 0 | 1;
  nextHop?: string;
}

export interface SandboxRef {
  id: string;
  /** netns path */
  key: string;
  /**
   * A netlink handle inside the sandbox. Absent when the caller moves the
   * interface in itself (the Docker engine through the plugin protocol): the
   * driver then leaves it in the daemon's netns, named `ifname`, unconfigured.
   */
  handle?: Handle;
  /** The interface name the container sees (eth0, eth1, ... in join order), or the temporary name when `handle` is absent. */
  ifname: string;
  /**
   * An ifindex known to be free in the sandbox's netns (a fresh one from the
   * pool, whose devices cnmd listed when it made it). A driver may create its
   * interface there with this index and configure it in the same burst,
   * without waiting for the kernel's answer to the creation.
   */
  freeIndex?: number;
}

export interface JoinInfo {
  /** Plain IPs */
  gateway?: string;
  gatewayIPv6?: string;
  staticRoutes: StaticRoute[];
  /** The network offers no default route (internal networks, ipvlan l3). */
  disableGatewayService?: boolean;
  /** Set when the interface was left in the daemon's netns for the caller to move (see SandboxRef.handle). */
  srcName?: string;
}

export interface Driver {
  readonly name: string;
  capabilities(): Capabilities;
  createNetwork(spec: NetworkSpec): Promise<void>;
  deleteNetwork(networkId: string): Promise<void>;
  createEndpoint(spec: EndpointSpec): Promise<EndpointInfo>;
  deleteEndpoint(networkId: string, endpointId: string): Promise<void>;
  /** Puts the endpoint's interface into the sandbox, configured (name, MAC, addresses, up). */
  join(
    networkId: string,
    endpointId: string,
    sandbox: SandboxRef,
    options: Record<string, unknown>,
  ): Promise<JoinInfo>;
  /**
   * Takes the endpoint's interface out of the sandbox. With sandboxDestroyed the
   * sandbox's netns file is already gone: nothing will use the interface again,
   * so a driver may finish the removal in the background instead of making the
   * caller wait (a veth delete waits for an RCU grace period, ~25 ms). Processes
   * still inside the namespace keep it alive, so the removal must still happen.
   */
  leave(networkId: string, endpointId: string, opts?: { sandboxDestroyed?: boolean }): Promise<void>;
  /** Publishes the endpoint's ports; resolves with them as allocated (exact host ports). */
  programExternalConnectivity(
    networkId: string,
    endpointId: string,
    options: ExternalConnectivityOptions,
  ): Promise<PortBinding[] | void>;
  revokeExternalConnectivity(networkId: string, endpointId: string): Promise<void>;
  /** Called once at daemon start with every network and endpoint the store holds: recreate what is missing, report what the driver owns. */
  restore?(networks: NetworkSpec[], endpoints: EndpointSpec[]): Promise<void>;
  /**
   * Removes whatever the driver may have made for a network whose creation or
   * deletion was interrupted (a daemon killed mid-way). Idempotent.
   */
  cleanupNetwork?(spec: NetworkSpec): Promise<void>;
}
