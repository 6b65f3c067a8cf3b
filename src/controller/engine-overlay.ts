// An engine network of cnmd-overlay is bound to a cnmd overlay network
// (`docker network create -d cnmd-overlay --ipam-driver cnmd-ipam --subnet S
// -o cnmd.network=NAME`): the engine sees a local-scope network (a remote
// driver of global scope needs the engine's own cluster store, gone in Docker
// 23), cnmd joins its containers to NAME's data plane and publishes them to
// the cluster like its own endpoints. The checks here refuse every binding
// that would give two hosts one address or put one subnet on two data planes.
import type { EndpointPublication } from '../cluster/records';
import { OPT as OVERLAY_OPT, parseEncrypted } from '../../drivers/overlay/options';
import { CnmdError, invalidArgument } from '../errors';
import { stripPrefix } from '../net/addr';
import type { Store } from '../store/store';
import { EndpointRecord, IpamLeaseRecord, KIND, NetworkRecord, PoolAllocation } from './records';

/** The engine network's -o option naming the cnmd overlay network. */
export const BIND_OPTION = 'cnmd.network';

const HOW = (name: string, subnet: string) =>
  `docker network create -d cnmd-overlay --ipam-driver cnmd-ipam --subnet ${subnet} -o ${BIND_OPTION}=${name} NAME`;

/**
 * The cnmd overlay network an engine network binds to, after checking the
 * engine's pools against it: the same subnets and gateway, leased through
 * cnmd-ipam from the cluster's address blocks (so addresses are unique on
 * every host), and no other engine network of this host bound to it.
 */
export function overlayBinding(
  op: string,
  store: Store,
  engineNetworkId: string,
  options: Record<string, string>,
  pools: PoolAllocation[],
  leases: IpamLeaseRecord[],
): NetworkRecord {
  const ref = options[BIND_OPTION];
  // Docker's -o encrypted reaches the plugin as a generic option: it must agree with the bound network, whose
  // encryption (made with it, cluster-wide) is what the binding carries.
  const wantsEncrypted =
    options[OVERLAY_OPT.encrypted] === undefined ? undefined : parseEncrypted(op, options);
  if (!ref)
    throw invalidArgument(
      op,
      engineNetworkId,
      `a cnmd-overlay network is bound to a cnmd overlay network: give -o ${BIND_OPTION}=NAME (create NAME on any ` +
        `host with: cnmctl network create -d overlay ${wantsEncrypted ? '-o encrypted ' : ''}--subnet SUBNET NAME)`,
    );
  const globals = store
    .list<NetworkRecord>(KIND.network)
    .filter((n) => n.scope === 'global' && n.state === 'ready');
  const g = globals.find((n) => n.id === ref) ?? globals.find((n) => n.name === ref);
  if (!g)
    throw new CnmdError(
      'NOT_FOUND',
      `${op}: cnmd overlay network ${ref} (-o ${BIND_OPTION}) not found on this host: create it first with ` +
        `cnmctl network create -d overlay --subnet SUBNET ${ref} (on any host of the cluster)`,
      { op, object: ref },
    );
  if (g.driver !== 'overlay')
    throw invalidArgument(op, ref, `cnmd network ${g.name} is a ${g.driver} network, not an overlay network`);
  const encrypted = parseEncrypted(op, g.options);
  if (wantsEncrypted === true && !encrypted)
    throw invalidArgument(
      op,
      ref,
      `-o ${OVERLAY_OPT.encrypted} asks for encryption, but cnmd overlay network ${g.name} is not encrypted (encryption ` +
        `is the cnmd network's): bind to one made with cnmctl network create -d overlay -o encrypted --subnet ` +
        `SUBNET NAME, or leave -o ${OVERLAY_OPT.encrypted} out`,
    );
  if (wantsEncrypted === false && encrypted)
    throw invalidArgument(
      op,
      ref,
      `-o ${OVERLAY_OPT.encrypted}=${options[OVERLAY_OPT.encrypted]} asks for no encryption, but cnmd overlay network ` +
        `${g.name} is encrypted (its traffic between hosts is always ESP): leave -o ${OVERLAY_OPT.encrypted} out or ` +
        `bind to a plain network`,
    );
  const subnets = g.pools.map((p) => p.pool).join(', ');
  for (const p of pools) {
    const own = g.pools.find((x) => x.v6 === p.v6);
    if (!own || own.pool !== p.pool)
      throw new CnmdError(
        'CONFLICT',
        `${op}: pool ${p.pool} is not the subnet of cnmd overlay network ${g.name} (${subnets}): ` +
          `create it with ${HOW(g.name, own?.pool ?? subnets)}`,
        { op, object: p.pool },
      );
    if (p.gateway && stripPrefix(p.gateway) !== stripPrefix(own.gateway))
      throw new CnmdError(
        'CONFLICT',
        `${op}: gateway ${stripPrefix(p.gateway)} is not ${stripPrefix(own.gateway)}, the gateway of cnmd overlay ` +
          `network ${g.name}: leave --gateway out or give that one`,
        { op, object: p.gateway },
      );
    const lease = leases.find((l) => l.poolId === own.poolId && l.global);
    if (!lease)
      throw new CnmdError(
        'CONFLICT',
        `${op}: the engine's addresses on cnmd overlay network ${g.name} must come from the cluster's address ` +
          `blocks (unique on every host): create it with ${HOW(g.name, own.pool)}`,
        { op, object: p.pool },
      );
  }
  const other = store
    .list<NetworkRecord>(KIND.engineNetwork)
    .find((n) => n.boundTo === g.id && n.id !== engineNetworkId);
  if (other)
    throw new CnmdError(
      'CONFLICT',
      `${op}: engine network ${other.id.slice(0, 12)} of this host is already bound to cnmd overlay network ` +
        `${g.name}; use that one`,
      { op, object: g.name },
    );
  return g;
}

/** A bound network's cnmd overlay network, or why there is none (it was removed from the cluster since). */
export function boundNetworkOrThrow(op: string, store: Store, n: NetworkRecord): NetworkRecord {
  const g = store.get<NetworkRecord>(KIND.network, n.boundTo!);
  if (!g || g.state !== 'ready')
    throw new CnmdError(
      'NOT_FOUND',
      `${op}: the cnmd overlay network this engine network was bound to (${n.options[BIND_OPTION]}, id ` +
        `${n.boundTo!.slice(0, 12)}) is gone from this host; remove this engine network and bind a new one`,
      { op, object: n.id },
    );
  return g;
}

/** The id a driver knows an engine network's objects by: the bound cnmd network's for cnmd-overlay. */
export function driverNetworkId(n: NetworkRecord): string {
  return n.boundTo ?? n.id;
}

/**
 * An engine endpoint on a bound network as the cluster publishes it. The
 * engine tells a plugin no container name: the endpoint is named by its id's
 * prefix (the engine's own DNS answers its containers' names on its host).
 */
export function enginePublication(
  ep: EndpointRecord,
  networkId: string,
  self: { hostId: string; vtep: string },
): EndpointPublication {
  const name = ep.id.slice(0, 12);
  return {
    id: ep.id,
    networkId,
    name,
    hostname: name,
    aliases: [],
    ipv4: ep.ipv4,
    ipv6: ep.ipv6,
    mac: ep.mac,
    host: self.hostId,
    vtep: self.vtep,
  };
}
