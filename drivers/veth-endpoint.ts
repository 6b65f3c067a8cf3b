// An endpoint that is one veth pair (bridge, overlay): what the driver keeps
// of it between createEndpoint and join, and Docker's MAC rule.
import { failure } from '../src/errors';
import { macFromIPv4, randomMac } from '../src/net/addr';
import type { EndpointSpec } from './driver';

export interface VethEndpoint {
  networkId: string;
  id: string;
  address?: string;
  addressIPv6?: string;
  mac: string;
  /** The veth's end outside the sandbox. */
  hostVeth: string;
}

/**
 * 11 hex of the endpoint id (15 characters, the kernel's limit): Docker's are 7
 * (11 characters), so the two never collide, and 44 bits make a clash between
 * cnmd's own endpoints negligible (with 7, the birthday bound is one clash in
 * ~500 fills of 1000 endpoints).
 * A clash is worse than a failed attach: the join names the host side in the
 * same burst that makes it, and would set another device's bridge and alias.
 */
export function hostVethName(endpointId: string): string {
  return `veth${endpointId.slice(0, 11)}`;
}

/** The endpoint as given, its MAC Docker's (02:42 + IPv4) unless given, else random. */
function vethEndpoint(spec: EndpointSpec, hostVeth = hostVethName(spec.endpointId)): VethEndpoint {
  return {
    networkId: spec.networkId,
    id: spec.endpointId,
    address: spec.address,
    addressIPv6: spec.addressIPv6,
    mac: spec.mac ?? (spec.address ? macFromIPv4(spec.address) : randomMac()),
    hostVeth,
  };
}

/** A driver's endpoints by id: each kept from createEndpoint (or restore) until deleteEndpoint. */
export class VethEndpoints extends Map<string, VethEndpoint> {
  /** Keeps spec's endpoint; restore passes the host veth it found (by its alias). */
  add(spec: EndpointSpec, hostVeth?: string): VethEndpoint {
    const ep = vethEndpoint(spec, hostVeth);
    this.set(spec.endpointId, ep);
    return ep;
  }

  /** The endpoint, or NOT_FOUND for op. */
  need(op: string, endpointId: string): VethEndpoint {
    const ep = this.get(endpointId);
    if (!ep) throw failure('NOT_FOUND', { op, object: endpointId }, 'no such endpoint');
    return ep;
  }
}
