// Subnets a network can never work on, whoever asks (the API, the engine through
// cnmd-ipam): the whole address space, loopback, multicast, link-local, reserved.
import { type Cidr, formatCidr, overlaps, parseCidr } from '../net/addr';

const RESERVED: [string, string][] = [
  ['0.0.0.0/8', 'the "this network" block'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved (and broadcast)'],
  ['::/127', 'the unspecified and loopback addresses'],
  ['::ffff:0:0/96', 'IPv4-mapped'],
  ['fe80::/10', 'link-local'],
  ['ff00::/8', 'multicast'],
];
const BLOCKS = RESERVED.map(([c, why]) => ({ cidr: parseCidr(c)!, why }));

/** Why no network can use `c`, or undefined when it can. */
export function unusableSubnet(c: Cidr): string | undefined {
  if (c.prefixLen === 0) return `${formatCidr(c)} is the whole address space`;
  const hit = BLOCKS.find((b) => overlaps(b.cidr, c));
  return hit && `${formatCidr(c)} overlaps ${formatCidr(hit.cidr)}, ${hit.why}`;
}
