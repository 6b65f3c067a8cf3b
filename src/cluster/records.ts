// What cnmd keeps in the cluster store, and where (keys under /cnmd/v1/):
//   hosts/<hostId>               HostRecord, under the host's lease
//   networks/<networkId>         GlobalNetworkRecord
//   networks-rev                 bumped by every network create/remove: the compare-and-swap
//                                guard that keeps names, VNIs and subnets unique cluster-wide
//   blocks/<subnet>/<block>      BlockRecord: which host allocates from an address block
//   endpoints/<networkId>/<id>   EndpointPublication, under the owning host's lease
import type { IpamConfig } from '../controller/records';
import { cidrFamily, ipFamily, ipToBig, normalizeMac } from '../net/addr';

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

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** A unicast address a VTEP can have: not unspecified, loopback, multicast or (IPv4) reserved. */
function unicastIp(s: unknown): boolean {
  const a = typeof s === 'string' ? ipToBig(s) : undefined;
  if (!a) return false;
  if (a.family === 4) {
    const first = Number(a.value >> 24n);
    return first !== 0 && first !== 127 && first < 224;
  }
  return a.value > 1n && a.value >> 120n !== 0xffn;
}

/** A name the embedded DNS answers for: printable, no whitespace (a newline would reach /etc/hosts), bounded. */
const DNS_NAME = /^[\x21-\x7e]{1,255}$/;
const MAX_ALIASES = 64;

/**
 * Why a record under endpoints/ cannot be an endpoint publication, or
 * undefined when it can. The store is every host's to write (and anyone's who
 * reaches etcd): a record is checked field by field before a driver or the
 * embedded DNS sees it, so one bad record is refused alone.
 */
export function publicationProblem(k: string, v: unknown, ownVtep?: string): string | undefined {
  if (!isObject(v)) return 'not a JSON object';
  const e = v;
  const str = (f: string) => typeof e[f] === 'string' && (e[f] as string) !== '';
  for (const f of ['id', 'networkId', 'host', 'vtep'])
    if (!str(f) || /[/\s]/.test(e[f] as string)) return `${f} is not a name without spaces or slashes`;
  if (k !== key.endpoint(e.networkId as string, e.id as string))
    return `its networkId and id (${key.endpoint(e.networkId as string, e.id as string)}) are not its key's`;
  if (!unicastIp(e.vtep)) return `vtep ${JSON.stringify(e.vtep)} is not a unicast IP address`;
  // One vxlan device has one family (the kernel refuses the other's FDB entries, EAFNOSUPPORT).
  if (ownVtep && ipFamily(e.vtep) !== ipFamily(ownVtep))
    return `vtep ${e.vtep} is not of the family of this host's VTEP ${ownVtep}`;
  if (e.ipv4 !== undefined && e.ipv4 !== '' && cidrFamily(e.ipv4) !== 4)
    return `ipv4 ${JSON.stringify(e.ipv4)} is not an IPv4 address with a prefix`;
  if (e.ipv6 !== undefined && e.ipv6 !== '' && cidrFamily(e.ipv6) !== 6)
    return `ipv6 ${JSON.stringify(e.ipv6)} is not an IPv6 address with a prefix`;
  if (e.mac !== undefined) {
    const mac = normalizeMac(e.mac);
    if (!mac || parseInt(mac.slice(0, 2), 16) & 1 || mac === '00:00:00:00:00:00')
      return `mac ${JSON.stringify(e.mac)} is not a unicast MAC address`;
  }
  for (const f of ['name', 'hostname'])
    if (e[f] !== undefined && e[f] !== '' && (typeof e[f] !== 'string' || !DNS_NAME.test(e[f] as string)))
      return `${f} is not a name of 1-255 printable characters`;
  const aliases = e.aliases ?? [];
  if (
    !Array.isArray(aliases) ||
    aliases.length > MAX_ALIASES ||
    !aliases.every((a) => typeof a === 'string' && DNS_NAME.test(a))
  )
    return `aliases is not a list of at most ${MAX_ALIASES} names`;
  return undefined;
}

/** A record under networks/ that is a network record with its key's id (the fields every host reads). */
export function isNetworkRecord(k: string, v: unknown): v is GlobalNetworkRecord {
  return (
    isObject(v) &&
    typeof v.id === 'string' &&
    k === key.network(v.id) &&
    typeof v.name === 'string' &&
    typeof v.driver === 'string' &&
    Number.isInteger(v.vni) &&
    isObject(v.options) &&
    Array.isArray(v.ipamConfig) &&
    v.ipamConfig.every(isObject)
  );
}

/** A record under hosts/ that is a host record with its key's id. */
export function isHostRecord(k: string, v: unknown): v is HostRecord {
  return isObject(v) && typeof v.id === 'string' && k === key.host(v.id) && typeof v.vtep === 'string';
}

/**
 * A block record as the store has it. One that is not a block record (anyone
 * who reaches etcd can write there) reads as unclaimed and empty: the next
 * claim overwrites it, where reading its fields threw and no host could claim
 * the block, or any block after it.
 */
export function asBlockRecord(v: unknown): BlockRecord {
  const ok =
    isObject(v) &&
    typeof v.host === 'string' &&
    Array.isArray(v.statics) &&
    v.statics.every((x) => isObject(x) && typeof x.ip === 'string' && typeof x.host === 'string');
  return ok ? (v as unknown as BlockRecord) : { host: '', statics: [] };
}
