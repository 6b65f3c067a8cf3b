// What cnmd keeps in the cluster store, and where (keys under /cnmd/v1/):
//   hosts/<hostId>               HostRecord, under the host's lease
//   networks/<networkId>         GlobalNetworkRecord
//   networks-rev                 bumped by every network create/remove: the compare-and-swap
//                                guard that keeps names, VNIs and subnets unique cluster-wide
//   blocks/<subnet>/<block>      BlockRecord: which host allocates from an address block
//   endpoints/<networkId>/<id>   EndpointPublication, under the owning host's lease
import type { IpamConfig } from '../controller/records';

export interface HostRecord {
  id: string;
  name: string;
  /** The VTEP (underlay) address: --cluster-advertise. */
  vtep: string;
  started: string;
}

export interface GlobalNetworkRecord {
  id: string;
  name: string;
  driver: string;
  created: string;
  enableIPv6: boolean;
  internal: boolean;
  attachable: boolean;
  labels: Record<string, string>;
  /** The user's -o options, with the VNI in com.docker.network.driver.overlay.vxlanid_list. */
  options: Record<string, string>;
  ipamOptions: Record<string, string>;
  /** Subnets and gateways as decided at creation: every host uses these. */
  ipamConfig: IpamConfig[];
  vni: number;
  /** The host that created it (id). */
  creator: string;
}

export interface BlockRecord {
  /** Host id allocating from the block; '' while only static addresses are claimed in it. */
  host: string;
  /** Static addresses (--ip) claimed in the block by hosts that do not own it. */
  statics: { ip: string; host: string }[];
}

export interface EndpointPublication {
  id: string;
  networkId: string;
  name: string;
  aliases: string[];
  /** Sandbox host name (a DNS name too). */
  hostname: string;
  /** CIDRs */
  ipv4?: string;
  ipv6?: string;
  mac?: string;
  host: string;
  vtep: string;
}

export const VXLANID_OPTION = 'com.docker.network.driver.overlay.vxlanid_list';
/**
 * First VNI handed out: below it are 802.1Q VLAN ids, which Windows refuses as VXLAN ids (libnetwork does the
 * same).
 */
export const VNI_MIN = 4096;
export const VNI_MAX = (1 << 24) - 1;

export const key = {
  host: (id: string) => `hosts/${id}`,
  hosts: 'hosts/',
  network: (id: string) => `networks/${id}`,
  networks: 'networks/',
  networksRev: 'networks-rev',
  allBlocks: 'blocks/',
  blocks: (subnet: string) => `blocks/${subnet}/`,
  block: (subnet: string, block: string) => `blocks/${subnet}/${block}`,
  endpoints: 'endpoints/',
  endpointsOf: (networkId: string) => `endpoints/${networkId}/`,
  endpoint: (networkId: string, id: string) => `endpoints/${networkId}/${id}`,
};
