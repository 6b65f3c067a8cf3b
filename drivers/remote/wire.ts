// The NetworkDriver protocol's JSON, both ways, as libnetwork's
// drivers/remote/api encodes it (no omitempty: every field is always sent).
// Replies are checked here so a plugin's mistake fails the call with a message
// that names the field, instead of surfacing later as a kernel error.
import type { PortBinding, Proto } from '../../src/portmap/spec';
import { cidrFamily, ipFamily, normalizeMac } from '../../src/net/addr';
import type { Capabilities, EndpointSpec, IpamData, JoinInfo, NetworkSpec, StaticRoute } from '../driver';

export const OPT_GENERIC = 'com.docker.network.generic';
export const OPT_ENABLE_IPV6 = 'com.docker.network.enable_ipv6';
export const OPT_INTERNAL = 'com.docker.network.internal';
export const OPT_PORTMAP = 'com.docker.network.portmap';
export const OPT_EXPOSED = 'com.docker.network.endpoint.exposedports';
/** The space cnmd's default IPAM allocates from (ipam.LOCAL_SPACE), named when a pool carries none. */
const DEFAULT_ADDRESS_SPACE = 'LocalDefault';

/** A reply that breaks the protocol: `field` says where, `message` what is wrong. */
export class ReplyError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

function ipamData(d: IpamData): Record<string, unknown> {
  const o: Record<string, unknown> = { AddressSpace: d.addressSpace ?? DEFAULT_ADDRESS_SPACE, Pool: d.pool };
  if (d.gateway) o.Gateway = d.gateway;
  if (d.auxAddresses && Object.keys(d.auxAddresses).length) o.AuxAddresses = { ...d.auxAddresses };
  return o;
}

export function createNetworkRequest(spec: NetworkSpec): Record<string, unknown> {
  return {
    NetworkID: spec.id,
    Options: {
      [OPT_GENERIC]: { ...spec.options },
      [OPT_ENABLE_IPV6]: spec.enableIPv6,
      [OPT_INTERNAL]: spec.internal,
    },
    IPv4Data: spec.ipv4.map(ipamData),
    IPv6Data: spec.ipv6.map(ipamData),
  };
}

export function createEndpointRequest(spec: EndpointSpec): Record<string, unknown> {
  return {
    NetworkID: spec.networkId,
    EndpointID: spec.endpointId,
    Interface: {
      Address: spec.address ?? '',
      AddressIPv6: spec.addressIPv6 ?? '',
      MacAddress: spec.mac ?? '',
    },
    Options: spec.options ?? {},
  };
}

export function parseCapabilities(reply: Record<string, unknown>): Capabilities {
  const scope = reply.Scope;
  if (scope !== 'local' && scope !== 'global')
    throw new ReplyError('Scope', `expected "local" or "global", got ${JSON.stringify(scope)}`);
  const cs = reply.ConnectivityScope;
  if (cs !== undefined && cs !== null && cs !== '' && cs !== 'local' && cs !== 'global') {
    throw new ReplyError('ConnectivityScope', `expected "local", "global" or "", got ${JSON.stringify(cs)}`);
  }
  // The engine passes port bindings to every remote driver: ProgramExternalConnectivity decides.
  return { scope, connectivityScope: cs === 'local' || cs === 'global' ? cs : scope, portMapping: true };
}

export interface EndpointFill {
  address?: string;
  addressIPv6?: string;
  mac?: string;
}

/**
 * The fields the plugin filled in CreateEndpoint's reply. libnetwork lets a
 * plugin fill only what it was sent empty; anything else is refused, even an
 * echo of the same value, so a plugin that works here works with the engine.
 */
export function parseEndpointReply(spec: EndpointSpec, reply: Record<string, unknown>): EndpointFill {
  const iface = reply.Interface;
  if (iface === undefined || iface === null) return {};
  if (typeof iface !== 'object' || Array.isArray(iface))
    throw new ReplyError('Interface', `expected an object or null, got ${JSON.stringify(iface)}`);
  const i = iface as Record<string, unknown>;
  const out: EndpointFill = {};
  const take = (
    field: 'Address' | 'AddressIPv6' | 'MacAddress',
    sent: string | undefined,
  ): string | undefined => {
    const v = i[field];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string')
      throw new ReplyError(`Interface.${field}`, `expected a string, got ${JSON.stringify(v)}`);
    if (sent) {
      throw new ReplyError(
        `Interface.${field}`,
        `the plugin answered ${JSON.stringify(v)} but cnmd sent ${JSON.stringify(sent)}: a plugin may only ` +
          `fill fields sent empty (libnetwork's rule); the plugin must answer an empty Interface when it ` +
          `was given one`,
      );
    }
    return v;
  };
  const a = take('Address', spec.address);
  if (a !== undefined) {
    if (cidrFamily(a) !== 4)
      throw new ReplyError(
        'Interface.Address',
        `${JSON.stringify(a)} is not an IPv4 address with a prefix (10.1.0.2/24)`,
      );
    out.address = a;
  }
  const a6 = take('AddressIPv6', spec.addressIPv6);
  if (a6 !== undefined) {
    if (cidrFamily(a6) !== 6)
      throw new ReplyError(
        'Interface.AddressIPv6',
        `${JSON.stringify(a6)} is not an IPv6 address with a prefix (fd00::2/64)`,
      );
    out.addressIPv6 = a6;
  }
  const m = take('MacAddress', spec.mac);
  if (m !== undefined) {
    const mac = normalizeMac(m);
    if (!mac)
      throw new ReplyError(
        'Interface.MacAddress',
        `${JSON.stringify(m)} is not a MAC address (02:42:0a:01:00:02)`,
      );
    out.mac = mac;
  }
  return out;
}

export interface JoinReply {
  /** The interface the plugin made in cnmd's netns, if any. */
  srcName?: string;
  info: JoinInfo;
}

function parseRoute(r: unknown, i: number): StaticRoute {
  const field = `StaticRoutes[${i}]`;
  if (typeof r !== 'object' || r === null)
    throw new ReplyError(field, `expected an object, got ${JSON.stringify(r)}`);
  const o = r as Record<string, unknown>;
  if (cidrFamily(o.Destination) === 0)
    throw new ReplyError(`${field}.Destination`, `${JSON.stringify(o.Destination)} is not a CIDR`);
  const destination = o.Destination as string;
  const type = o.RouteType ?? 0;
  if (type !== 0 && type !== 1)
    throw new ReplyError(
      `${field}.RouteType`,
      `expected 0 (next hop) or 1 (connected), got ${JSON.stringify(o.RouteType)}`,
    );
  if (type === 1) return { destination, routeType: 1 };
  if (ipFamily(o.NextHop) === 0)
    throw new ReplyError(
      `${field}.NextHop`,
      `a next-hop route (RouteType 0) needs a NextHop IP, got ${JSON.stringify(o.NextHop)}`,
    );
  return { destination, routeType: 0, nextHop: o.NextHop as string };
}

export function parseJoinReply(reply: Record<string, unknown>): JoinReply {
  let srcName: string | undefined;
  const n = reply.InterfaceName;
  if (n !== undefined && n !== null) {
    if (typeof n !== 'object' || Array.isArray(n))
      throw new ReplyError('InterfaceName', `expected an object, got ${JSON.stringify(n)}`);
    const s = (n as Record<string, unknown>).SrcName;
    if (s !== undefined && s !== null && s !== '') {
      if (typeof s !== 'string' || !/^[^\s/]{1,15}$/.test(s) || s === '.' || s === '..') {
        throw new ReplyError(
          'InterfaceName.SrcName',
          `${JSON.stringify(s)} is not a Linux interface name (1-15 characters, no "/" or spaces)`,
        );
      }
      srcName = s;
    }
  }
  const gw = (field: 'Gateway' | 'GatewayIPv6', family: 4 | 6): string | undefined => {
    const v = reply[field];
    if (v === undefined || v === null || v === '') return undefined;
    if (ipFamily(v) !== family)
      throw new ReplyError(field, `${JSON.stringify(v)} is not a plain IPv${family} address (no prefix)`);
    return v as string;
  };
  const routes = reply.StaticRoutes;
  if (routes !== undefined && routes !== null && !Array.isArray(routes))
    throw new ReplyError('StaticRoutes', `expected a list, got ${JSON.stringify(routes)}`);
  const dgs = reply.DisableGatewayService;
  if (dgs !== undefined && dgs !== null && typeof dgs !== 'boolean')
    throw new ReplyError('DisableGatewayService', `expected a boolean, got ${JSON.stringify(dgs)}`);
  return {
    srcName,
    info: {
      gateway: gw('Gateway', 4),
      gatewayIPv6: gw('GatewayIPv6', 6),
      staticRoutes: ((routes as unknown[] | null | undefined) ?? []).map(parseRoute),
      disableGatewayService: dgs === true,
    },
  };
}

const PROTO_NUMBER: Record<Proto, number> = { tcp: 6, udp: 17, sctp: 132 };

/**
 * cnmd's bindings as the engine sends them (types.PortBinding, types.TransportPort):
 * one entry per container port, HostPortEnd = HostPort for a single host port, 0/0
 * for an ephemeral one, and IP "" because the engine does not know it either.
 */
export function portOptions(bindings: PortBinding[]): Record<string, unknown> {
  const portmap: Record<string, unknown>[] = [];
  const exposed = new Map<string, { Proto: number; Port: number }>();
  for (const b of bindings) {
    const Proto = PROTO_NUMBER[b.proto];
    const HostIP = b.hostIP;
    const last = b.containerPortEnd ?? b.containerPort;
    for (let port = b.containerPort; port <= last; port++) {
      exposed.set(`${Proto}/${port}`, { Proto, Port: port });
      const i = port - b.containerPort;
      let HostPort: number;
      let HostPortEnd: number;
      if (b.hostPort === 0) HostPort = HostPortEnd = 0;
      else if (b.containerPortEnd !== undefined) HostPort = HostPortEnd = b.hostPort + i;
      else [HostPort, HostPortEnd] = [b.hostPort, b.hostPortEnd ?? b.hostPort];
      portmap.push({ Proto, IP: '', Port: port, HostIP, HostPort, HostPortEnd });
    }
  }
  return { [OPT_PORTMAP]: portmap, [OPT_EXPOSED]: [...exposed.values()] };
}
