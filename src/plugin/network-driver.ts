// /NetworkDriver.* for one of cnmd's drivers (cnmd-bridge -> bridge): the
// engine's calls mapped onto the controller's engine objects, field names
// exactly as libnetwork's drivers/remote/api.
import { z } from 'zod';
import type { Controller } from '../controller/controller';
import type { IpamData } from '../../drivers/driver';
import { CnmdError } from '../errors';
import { normalizeBinding, type PortBinding, type Proto } from '../portmap/spec';
import { method, type PluginDef } from './protocol';
import { stripPrefix } from '../net/addr';

const id = z.string().min(1, 'must not be empty');
const opts = z.record(z.string(), z.unknown()).nullish();

const IpamDataSchema = z
  .object({
    AddressSpace: z.string().optional(),
    Pool: z.string().min(1, 'must be a CIDR'),
    Gateway: z.string().optional(),
    AuxAddresses: z.record(z.string(), z.string()).nullish(),
  })
  .passthrough();

const NetworkOnly = z.object({ NetworkID: id }).passthrough();
const EndpointRef = z.object({ NetworkID: id, EndpointID: id }).passthrough();

/** libnetwork's types.PortBinding as JSON: Proto is the IP protocol number. */
const DockerPortBinding = z
  .object({
    Proto: z.number().int(),
    IP: z.string().optional(),
    Port: z.number().int(),
    HostIP: z.string().optional(),
    HostPort: z.number().int().optional(),
    HostPortEnd: z.number().int().optional(),
  })
  .passthrough();

const PROTO_NUMBERS: Record<number, Proto> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };
const PROTO_OF: Record<Proto, number> = { tcp: 6, udp: 17, sctp: 132 };

export const OPTION = {
  generic: 'com.docker.network.generic',
  enableIPv6: 'com.docker.network.enable_ipv6',
  internal: 'com.docker.network.internal',
  portmap: 'com.docker.network.portmap',
  exposedPorts: 'com.docker.network.endpoint.exposedports',
  macAddress: 'com.docker.network.endpoint.macaddress',
} as const;

function flag(v: unknown): boolean {
  return v === true || v === 'true';
}

/** The user's -o options: strings as Docker's CLI sends them (other JSON values are stringified). */
function generic(o: Record<string, unknown> | null | undefined): Record<string, string> {
  const g = o?.[OPTION.generic];
  if (g === undefined || g === null) return {};
  if (typeof g !== 'object' || Array.isArray(g))
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `Options["${OPTION.generic}"] must be an object of option names to values`,
      { op: 'plugin create network' },
    );
  return Object.fromEntries(
    Object.entries(g as Record<string, unknown>).map(([k, v]) => [
      k,
      typeof v === 'string' ? v : JSON.stringify(v),
    ]),
  );
}

function ipamData(list: z.infer<typeof IpamDataSchema>[] | null | undefined): IpamData[] {
  return (list ?? []).map((d) => ({
    addressSpace: d.AddressSpace,
    pool: d.Pool,
    gateway: d.Gateway || undefined,
    auxAddresses: d.AuxAddresses ?? {},
  }));
}

/**
 * The engine's port map as cnmd's bindings. "0.0.0.0" and "::" mean every
 * address to the engine, as '' does to cnmd; the duplicates that leaves (the
 * engine may send one entry per family) are dropped.
 */
export function bindingsFromEngine(raw: unknown): PortBinding[] {
  if (raw === undefined || raw === null) return [];
  const list = z.array(DockerPortBinding).safeParse(raw);
  if (!list.success)
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `Options["${OPTION.portmap}"] must be a list of {Proto, Port, HostIP, HostPort, HostPortEnd}: ` +
        `${list.error.issues[0]?.message}`,
      { op: 'plugin program external connectivity' },
    );
  const seen = new Map<string, PortBinding>();
  for (const b of list.data) {
    const proto = PROTO_NUMBERS[b.Proto];
    if (!proto)
      throw new CnmdError(
        'INVALID_ARGUMENT',
        `port binding Proto ${b.Proto} is not 6 (tcp), 17 (udp) or 132 (sctp)`,
        { op: 'plugin program external connectivity' },
      );
    const hostIP = !b.HostIP || b.HostIP === '0.0.0.0' || b.HostIP === '::' ? '' : b.HostIP;
    const hostPort = b.HostPort ?? 0;
    // libnetwork sends HostPortEnd 0 or equal to HostPort for one port; below it is a reversed range.
    if (b.HostPortEnd && b.HostPortEnd < hostPort)
      throw new CnmdError(
        'INVALID_ARGUMENT',
        `port binding HostPort ${hostPort}..HostPortEnd ${b.HostPortEnd} is a reversed range (HostPortEnd must be 0 or at least HostPort)`,
        { op: 'plugin program external connectivity' },
      );
    const pb = normalizeBinding({
      proto,
      hostIP,
      hostPort,
      hostPortEnd: b.HostPortEnd && b.HostPortEnd > hostPort ? b.HostPortEnd : undefined,
      containerPort: b.Port,
    });
    seen.set(JSON.stringify(pb), pb);
  }
  return [...seen.values()];
}

/** cnmd's published bindings in the engine's shape, one entry per port and address family. */
export function bindingsToEngine(
  list: PortBinding[],
  containerIP: string | undefined,
): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const b of list) {
    const n = (b.hostPortEnd ?? b.hostPort) - b.hostPort + 1;
    for (let i = 0; i < n; i++) {
      out.push({
        Proto: PROTO_OF[b.proto],
        IP: containerIP ?? '',
        Port: b.containerPort + (b.containerPortEnd ? i : 0),
        HostIP: b.hostIP || '0.0.0.0',
        HostPort: b.hostPort + i,
        HostPortEnd: b.hostPort + i,
      });
    }
  }
  return out;
}

export function networkDriverPlugin(name: string, driver: string, ctrl: Controller): PluginDef {
  const engine = ctrl.engine;
  return {
    name,
    implements: 'NetworkDriver',
    methods: {
      GetCapabilities: method(z.unknown(), () => ({ Scope: 'local', ConnectivityScope: 'local' })),
      CreateNetwork: method(
        z
          .object({
            NetworkID: id,
            Options: opts,
            IPv4Data: z.array(IpamDataSchema).nullish(),
            IPv6Data: z.array(IpamDataSchema).nullish(),
          })
          .passthrough(),
        async (r) => {
          await engine.createNetwork(driver, {
            id: r.NetworkID,
            options: generic(r.Options),
            enableIPv6: flag(r.Options?.[OPTION.enableIPv6]),
            internal: flag(r.Options?.[OPTION.internal]),
            ipv4: ipamData(r.IPv4Data),
            ipv6: ipamData(r.IPv6Data),
          });
          return {};
        },
      ),
      DeleteNetwork: method(NetworkOnly, async (r) => {
        await engine.deleteNetwork(r.NetworkID);
        return {};
      }),
      // Swarm's global-scope allocation: cnmd's drivers are local-scope, as the engine learns from GetCapabilities.
      AllocateNetwork: method(NetworkOnly, () => {
        throw new CnmdError(
          'INVALID_ARGUMENT',
          `${name} is a local-scope driver: AllocateNetwork is only for swarm's global-scope networks`,
          { op: 'plugin allocate network' },
        );
      }),
      FreeNetwork: method(NetworkOnly, () => ({})),
      CreateEndpoint: method(
        EndpointRef.extend({
          Interface: z
            .object({
              Address: z.string().optional(),
              AddressIPv6: z.string().optional(),
              MacAddress: z.string().optional(),
            })
            .passthrough()
            .nullish(),
          Options: opts,
        }),
        async (r) => {
          const i = r.Interface ?? {};
          const got = await engine.createEndpoint(r.NetworkID, r.EndpointID, {
            address: i.Address || undefined,
            addressIPv6: i.AddressIPv6 || undefined,
            mac: i.MacAddress || undefined,
          });
          // Only fields the engine left empty may be filled; anything else is a driver error to the engine.
          return { Interface: got.mac ? { Address: '', AddressIPv6: '', MacAddress: got.mac } : null };
        },
      ),
      DeleteEndpoint: method(EndpointRef, async (r) => {
        await engine.deleteEndpoint(r.NetworkID, r.EndpointID);
        return {};
      }),
      EndpointOperInfo: method(EndpointRef, (r) => {
        const e = engine.endpointInfo(r.NetworkID, r.EndpointID);
        const value: Record<string, unknown> = {};
        if (e.mac) value[OPTION.macAddress] = e.mac;
        if (e.ports?.length) value[OPTION.portmap] = bindingsToEngine(e.ports, e.ipv4 && stripPrefix(e.ipv4));
        return { Value: value };
      }),
      Join: method(
        EndpointRef.extend({
          SandboxKey: z.string().min(1, 'must be the sandbox netns path'),
          Options: opts,
        }),
        async (r) => {
          const info = await engine.join(r.NetworkID, r.EndpointID, r.SandboxKey);
          return {
            InterfaceName: { SrcName: info.srcName, DstPrefix: 'eth' },
            Gateway: info.gateway ?? '',
            GatewayIPv6: info.gatewayIPv6 ?? '',
            StaticRoutes: info.staticRoutes.map((s) => ({
              Destination: s.destination,
              RouteType: s.routeType,
              NextHop: s.nextHop ?? '',
            })),
            DisableGatewayService: !!info.disableGatewayService,
          };
        },
      ),
      Leave: method(EndpointRef, async (r) => {
        await engine.leave(r.NetworkID, r.EndpointID);
        return {};
      }),
      ProgramExternalConnectivity: method(EndpointRef.extend({ Options: opts }), async (r) => {
        await engine.programExternalConnectivity(
          r.NetworkID,
          r.EndpointID,
          bindingsFromEngine(r.Options?.[OPTION.portmap]),
        );
        return {};
      }),
      RevokeExternalConnectivity: method(EndpointRef, async (r) => {
        await engine.revokeExternalConnectivity(r.NetworkID, r.EndpointID);
        return {};
      }),
      // Node discovery is for global-scope drivers; a local driver has nothing to do.
      DiscoverNew: method(z.unknown(), () => ({})),
      DiscoverDelete: method(z.unknown(), () => ({})),
    },
  };
}
