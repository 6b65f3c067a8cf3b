// JSON views of controller records, shaped as the Docker Engine API shapes them.
import type { Controller } from '../controller/controller';
import type { EndpointRecord, NetworkRecord, SandboxRecord } from '../controller/records';
import { formatPortSpec, portCount, type PortBinding } from '../portmap/spec';
import { stripPrefix } from '../net/addr';

function plain(cidr?: string): string {
  return cidr ? stripPrefix(cidr) : '';
}

export function networkView(c: Controller, n: NetworkRecord): Record<string, unknown> {
  const containers: Record<string, unknown> = {};
  for (const e of c.endpoints(n.id)) {
    if (e.owner === 'engine') {
      // The engine's containers: cnmd knows the endpoint and the engine's sandbox, not the container.
      containers[`ep-${e.id}`] = {
        Name: e.sandboxKey ? e.sandboxKey.split('/').pop() : '',
        EndpointID: e.id,
        MacAddress: e.mac ?? '',
        IPv4Address: e.ipv4 ?? '',
        IPv6Address: e.ipv6 ?? '',
      };
      continue;
    }
    const sb = c.sandboxes().find((s) => s.id === e.sandboxId);
    if (!sb) continue;
    containers[sb.id] = {
      Name: sb.name,
      EndpointID: e.id,
      MacAddress: e.mac ?? '',
      IPv4Address: e.ipv4 ?? '',
      IPv6Address: e.ipv6 ?? '',
    };
  }
  const config = n.pools.map((p) => {
    const cfg: Record<string, unknown> = { Subnet: p.pool };
    if (p.ipRange) cfg.IPRange = p.ipRange;
    if (p.gateway) cfg.Gateway = plain(p.gateway);
    if (Object.keys(p.auxAddresses).length) cfg.AuxiliaryAddresses = p.auxAddresses;
    return cfg;
  });
  return {
    Name: n.name,
    Id: n.id,
    Created: n.created,
    Scope: n.scope,
    Driver: n.driver,
    // API 1.48's field, answered at every version as dockerd 28 does (every network has IPv4 here).
    EnableIPv4: true,
    EnableIPv6: n.enableIPv6,
    IPAM: {
      Driver: n.ipamDriver,
      Options: Object.keys(n.ipamOptions).length ? n.ipamOptions : null,
      Config: config,
    },
    Internal: n.internal,
    Attachable: n.attachable,
    Ingress: n.ingress,
    ConfigFrom: { Network: '' },
    ConfigOnly: false,
    Containers: containers,
    Options: n.options,
    Labels: n.owner === 'engine' ? { ...n.labels, 'cnmd.owner': 'docker-engine' } : n.labels,
    // Docker's inspect of an overlay network: the hosts with endpoints on it and their VTEPs.
    ...(n.scope === 'global' && c.cluster ? { Peers: c.cluster.cluster.peers(n.id) } : {}),
    ...c.driverInspect(n),
  };
}

export function endpointSettings(e: EndpointRecord, n: NetworkRecord | undefined): Record<string, unknown> {
  // A DHCP lease's router is the endpoint's own gateway (its network has no pools).
  const gw4 = e.dhcp ? e.dhcp.gateway : n?.pools.find((p) => p.poolId === e.poolV4)?.gateway;
  const gw6 = n?.pools.find((p) => p.poolId === e.poolV6)?.gateway;
  return {
    NetworkID: e.networkId,
    EndpointID: e.id,
    Interface: e.ifname,
    Aliases: e.aliases,
    MacAddress: e.mac ?? '',
    IPAddress: plain(e.ipv4),
    IPPrefixLen: e.ipv4 ? Number(e.ipv4.split('/')[1]) : 0,
    Gateway: plain(gw4),
    GlobalIPv6Address: plain(e.ipv6),
    GlobalIPv6PrefixLen: e.ipv6 ? Number(e.ipv6.split('/')[1]) : 0,
    IPv6Gateway: plain(gw6),
    IPAMConfig:
      e.staticIPv4 || e.staticIPv6
        ? { IPv4Address: e.staticIPv4 ?? '', IPv6Address: e.staticIPv6 ?? '' }
        : null,
  };
}

/** Docker's NetworkSettings.Ports: {"80/tcp": [{HostIp, HostPort}], "53/udp": null} (one key per container port). */
export function portsView(
  asked: PortBinding[],
  published: PortBinding[],
): Record<string, { HostIp: string; HostPort: string }[] | null> {
  const out: Record<string, { HostIp: string; HostPort: string }[] | null> = {};
  for (const b of asked)
    for (let i = 0; i < portCount(b); i++) out[`${b.containerPort + i}/${b.proto}`] ??= null;
  for (const b of published) {
    for (let i = 0; i < portCount(b); i++) {
      const key = `${b.containerPort + i}/${b.proto}`;
      const list = (out[key] ??= []) ?? [];
      const addrs = b.hostIP === '' ? ['0.0.0.0', '::'] : [b.hostIP];
      // No host port: a routed network's binding opens the container port itself (Docker shows "").
      const hostPort = b.hostPort === 0 ? '' : String(b.hostPort + i);
      for (const ip of addrs) list.push({ HostIp: ip, HostPort: hostPort });
      out[key] = list;
    }
  }
  return out;
}

export function sandboxView(c: Controller, sb: SandboxRecord, filesDir: string): Record<string, unknown> {
  const networks: Record<string, unknown> = {};
  const eps = c.endpoints().filter((x) => x.sandboxId === sb.id);
  for (const e of eps) {
    const n = c.networks().find((x) => x.id === e.networkId);
    networks[n?.name ?? e.networkId] = endpointSettings(e, n);
  }
  return {
    Id: sb.id,
    Name: sb.name,
    Hostname: sb.hostname,
    Created: sb.created,
    SandboxKey: sb.key,
    HostNetwork: sb.hostNetns,
    ResolvConfPath: `${filesDir}/resolv.conf`,
    HostsPath: `${filesDir}/hosts`,
    HostnamePath: `${filesDir}/hostname`,
    DNS: { Servers: sb.dns.servers, Search: sb.dns.search, Options: sb.dns.options },
    Labels: sb.labels,
    Networks: networks,
    Ports: portsView(
      sb.ports ?? [],
      eps.flatMap((e) => e.ports ?? []),
    ),
    PortBindings: (sb.ports ?? []).map(formatPortSpec),
  };
}
