// The Driver seam (libnetwork's driverapi.Driver): built-in drivers and
// remote plugins implement it, and the controller reaches drivers only
// through it (no casts, no driver names). A new driver implements Driver,
// declares what it needs in Capabilities, and is registered by name in
// src/daemon.ts's driver map. The controller calls it in libnetwork's order:
//   createNetwork -> createEndpoint -> join -> programExternalConnectivity
// and the reverse on teardown (revokeExternalConnectivity -> leave ->
// deleteEndpoint -> deleteNetwork). Calls for one network never overlap with
// its createNetwork/deleteNetwork (the controller's `net:` lock); calls for
// different networks and sandboxes may run concurrently.
//
// Errors: throw CnmdError (src/errors.ts) with a code; NOT_FOUND from a
// delete/leave means "already gone" and the controller treats it as done. A
// failed create must leave nothing behind (use src/steps.ts runSteps).
import type { Handle } from '../src/netlink/handle';
import type { PortBinding } from '../src/portmap/spec';

/** What a driver is and needs; read by the controller on every decision that differs between drivers. */
export interface Capabilities {
  /**
   * local: the network exists on this host only (bridge, macvlan, ipvlan);
   * global: one network across hosts, its state shared through the cluster
   * store (overlay). Shown as the network's Scope.
   */
  scope: 'local' | 'global';
  /** Where endpoints can reach each other (libnetwork's ConnectivityScope); defaults to scope. */
  connectivityScope?: 'local' | 'global';
  /** At most one network of this driver exists, and it cannot be removed (host, null). */
  singleton?: boolean;
  /** The sandbox shares the daemon's own netns: no netns, no interface of its own (host). */
  usesHostNetns?: boolean;
  /**
   * Default true. false: the network takes no IPAM pools and its endpoints get
   * no addresses or gateway (host, null); the driver's join gets no addresses.
   */
  needsIpam?: boolean;
  /**
   * Default true. false: the network never has the embedded DNS (127.0.0.11),
   * whatever its options say (host, null: there is no interface to serve it on).
   */
  embeddedDns?: boolean;
  /** The driver publishes ports: programExternalConnectivity honours portBindings (bridge). */
  portMapping?: boolean;
  /** Join adds no interface to the sandbox (null): there is none to look for at a restart. */
  noInterface?: boolean;
}

export interface IpamData {
  addressSpace?: string;
  /** CIDR of the pool. */
  pool: string;
  /** --ip-range: the part of the pool endpoints' addresses come from. */
  ipRange?: string;
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
  /** Where a joined endpoint's interface lives (restore: a driver whose interface has no host side removes it there). */
  sandbox?: {
    key: string;
    ifname: string;
    /** Handed to the engine at its join: moved by it, and back to the host netns when its sandbox goes. */
    engine?: boolean;
  };
}

export interface ExternalConnectivityOptions {
  /** Docker's com.docker.network.portmap: the sandbox's -p bindings. */
  portBindings?: PortBinding[];
}

/**
 * How a network's addresses are laid out, decided by its driver from the
 * request before IPAM is asked (Driver.ipamPolicy).
 */
export interface IpamPolicy {
  /**
   * ipam (default): IPAM picks a gateway when --gateway is not given.
   * explicit: only a --gateway given is used, else the network has none
   * (Docker 29's macvlan and ipvlan l2, moby#50929). none: the network routes
   * without one (ipvlan l3/l3s); a --gateway given is refused with `why`.
   */
  gateway: 'ipam' | 'explicit' | 'none';
  /** The IPv6 pools' gateway when it differs from `gateway` (a bridge's gateway_mode_ipv6=isolated). */
  gatewayIPv6?: 'ipam' | 'explicit' | 'none';
  why?: string;
  /** IPAM partition of the pools (PoolRequest.partition): subnets overlap freely across partitions. */
  partition?: string;
  /**
   * Endpoints sit on a LAN with an identity of their own there (their MAC, or
   * a client id on a shared one): a link-bound IPAM (DHCP) can address them
   * from a server on it. Absent: such an IPAM is refused, saying `noLanLeases`.
   */
  lanLeases?: boolean;
  noLanLeases?: string;
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
  /**
   * The interface name the container sees (eth0, eth1, ... in join order), or the temporary name when
   * `handle` is absent.
   */
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
  /**
   * The sandbox interface that reaches `gateway` when it is not the endpoint's
   * own (overlay: the sandbox's interface on cnmd_gwbridge); the sandbox's
   * default route then goes there rather than through the network's subnet gateway.
   */
  gatewayInterface?: string;
}

/** One remote endpoint of a global network (the control plane's desired state for the driver). */
export interface OverlayPeer {
  endpointId: string;
  /** CIDR or plain IP. */
  address: string;
  address6?: string;
  mac: string;
  /** The remote host's VTEP (underlay) address. */
  vtep: string;
}

export interface LeaveOptions {
  /**
   * The sandbox's netns file is already gone: nothing will use the interface again,
   * so a driver may finish the removal in the background instead of making the
   * caller wait (a veth delete waits for an RCU grace period). Processes
   * still inside the namespace keep it alive, so the removal must still happen.
   */
  sandboxDestroyed?: boolean;
}

/** Remote endpoints of a global network that changed since the last setPeers or updatePeers. */
export interface PeerChange {
  /** Added or altered. */
  put: OverlayPeer[];
  /** Removed, by endpoint id. */
  remove: string[];
}

export interface Driver {
  /** The name networks give as their driver (`-d name`), and the key it is registered under. */
  readonly name: string;
  /** Cheap and synchronous: the controller calls it whenever it decides something. */
  capabilities(): Capabilities;
  /**
   * Makes the network's kernel objects (bridge, parent link, VXLAN...). The
   * spec holds the pools and gateways IPAM chose (none when needsIpam is
   * false). Parse and check every option first; a failure leaves nothing.
   */
  createNetwork(spec: NetworkSpec): Promise<void>;
  /**
   * Refuses, before anything is recorded anywhere (the cluster store, IPAM), a
   * network this host cannot make: options that need a kernel feature or a
   * daemon setting it lacks. createNetwork checks the same again.
   */
  checkNetwork?(name: string, options: Record<string, string>): Promise<void>;
  /** Removes what createNetwork made. An unknown network is not an error (resolve). */
  deleteNetwork(networkId: string): Promise<void>;
  /**
   * Reserves an endpoint (no kernel work needed yet): the addresses are
   * chosen; the driver may choose the MAC. Returns what it decided.
   */
  createEndpoint(spec: EndpointSpec): Promise<EndpointInfo>;
  /** Forgets the endpoint; an unknown one is not an error. */
  deleteEndpoint(networkId: string, endpointId: string): Promise<void>;
  /**
   * Puts the endpoint's interface into the sandbox, configured: named
   * sandbox.ifname, its MAC, its addresses, up. Routes are the controller's
   * (it installs the default route through JoinInfo's gateway and the
   * staticRoutes). Without sandbox.handle, leave the interface in the
   * daemon's netns for the caller to move (JoinInfo.srcName).
   */
  join(
    networkId: string,
    endpointId: string,
    sandbox: SandboxRef,
    options: Record<string, unknown>,
  ): Promise<JoinInfo>;
  /** Takes the endpoint's interface out of the sandbox. An interface already gone is not an error. */
  leave(networkId: string, endpointId: string, opts?: LeaveOptions): Promise<void>;
  /**
   * Publishes the endpoint's ports (only asked of portMapping drivers, with
   * portBindings); resolves with them as allocated (exact host ports). Others
   * resolve with nothing.
   */
  programExternalConnectivity(
    networkId: string,
    endpointId: string,
    options: ExternalConnectivityOptions,
  ): Promise<PortBinding[] | void>;
  /** Undoes programExternalConnectivity; nothing published is not an error. */
  revokeExternalConnectivity(networkId: string, endpointId: string): Promise<void>;
  /**
   * Called once at daemon start with every network and endpoint of this
   * driver the store holds: rebuild in-memory state, recreate what the kernel
   * lost (after a reboot), reconnect what survived.
   */
  restore?(networks: NetworkSpec[], endpoints: EndpointSpec[]): Promise<void>;
  /**
   * Removes whatever the driver may have made for a network whose creation or
   * deletion was interrupted (a daemon killed mid-way). Idempotent.
   */
  cleanupNetwork?(spec: NetworkSpec): Promise<void>;
  /**
   * Called at daemon start after restore(): removes kernel objects the driver
   * made that belong to no network or endpoint it now knows (mark them, e.g.
   * with a link alias, to recognise them). Returns the names removed (logged).
   */
  sweepLeaks?(): Promise<string[]>;
  /**
   * Global drivers: the other hosts' endpoints on the network, as the cluster
   * store has them (desired state, the whole set). Called on every change and
   * every few seconds as a reconcile loop: idempotent and cheap when nothing changed.
   */
  setPeers?(networkId: string, peers: OverlayPeer[]): Promise<void>;
  /** Fields the driver adds to the network's inspect (e.g. an encrypted overlay's key tags and peers). */
  inspect?(networkId: string): Record<string, unknown> | undefined;
  /**
   * One change of those peers (after a setPeers): costs the changed entries
   * only. The control plane calls it for each batch of store events and
   * setPeers on its reconcile loop.
   */
  updatePeers?(networkId: string, change: PeerChange): Promise<void>;
  /**
   * Read before IPAM is asked for the network's pools: whether it has a
   * gateway and which partition its pools are in. Absent: IPAM picks a
   * gateway, one partition for all. May refuse bad options (they are checked
   * again by createNetwork).
   */
  ipamPolicy?(req: { id: string; options: Record<string, string>; internal: boolean }): IpamPolicy;
}
