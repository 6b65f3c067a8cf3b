// What drivers see of the controller's records (drivers/driver.ts specs),
// for cnmd's own objects and the engine's alike.
import type { EndpointSpec, IpamData, NetworkSpec } from '../../drivers/driver';
import type { EndpointRecord, NetworkRecord } from './records';

/** The spec a driver sees for a network record. */
export function networkSpec(n: NetworkRecord): NetworkSpec {
  const data = (v6: boolean): IpamData[] =>
    n.pools
      .filter((p) => p.v6 === v6)
      .map((p) => ({
        pool: p.pool,
        gateway: p.gateway,
        ipRange: p.ipRange,
        auxAddresses: Object.fromEntries(
          Object.entries(p.auxAddresses).map(([k, ip]) => [k, `${ip}/${p.pool.split('/')[1]}`]),
        ),
      }));
  return {
    id: n.id,
    name: n.name,
    options: n.options,
    ipv4: data(false),
    ipv6: data(true),
    enableIPv6: n.enableIPv6,
    internal: n.internal,
    isDefault: n.isDefault,
  };
}

/** The spec a driver sees for an endpoint record. */
export function endpointSpec(ep: EndpointRecord): EndpointSpec {
  return {
    networkId: ep.networkId,
    endpointId: ep.id,
    address: ep.ipv4,
    addressIPv6: ep.ipv6,
    mac: ep.mac,
    options: {},
    ports: ep.ports,
  };
}
