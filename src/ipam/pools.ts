// Docker's predefined address pools (libnetwork ipamutils), split into the
// subnets networks get when the user gives no --subnet.
import { Cidr, formatCidr, parseCidr } from '../net/addr';
import { unusableSubnet } from './usable';

/** One of Docker's default address pools: base split into subnets of prefix length size. */
export interface PoolSpec {
  base: string;
  size: number;
}

const LOCAL_V4: PoolSpec[] = [
  { base: '172.17.0.0/16', size: 16 },
  { base: '172.18.0.0/16', size: 16 },
  { base: '172.19.0.0/16', size: 16 },
  { base: '172.20.0.0/14', size: 16 },
  { base: '172.24.0.0/14', size: 16 },
  { base: '172.28.0.0/14', size: 16 },
  { base: '192.168.0.0/16', size: 20 },
];
const GLOBAL_V4: PoolSpec[] = [{ base: '10.0.0.0/8', size: 24 }];
// IPv6 networks without --subnet get a /64 from one ULA /48 (RFC 4193).
const LOCAL_V6: PoolSpec[] = [{ base: 'fd5c:6e6d:a000::/48', size: 64 }];

/**
 * Candidate subnets in Docker's order, lazily (10.0.0.0/8 split /24 is 65,536 of them). local: the local
 * scope's pools of that family instead of Docker's (dockerd's --default-address-pool); none = Docker's.
 */
export function* predefinedSubnets(
  scope: 'local' | 'global',
  v6: boolean,
  local: PoolSpec[] = [],
): Generator<Cidr> {
  const own = scope === 'local' ? local.filter((p) => p.base.includes(':') === v6) : [];
  const specs = own.length ? own : v6 ? LOCAL_V6 : scope === 'local' ? LOCAL_V4 : GLOBAL_V4;
  for (const spec of specs) {
    const outer = parseCidr(spec.base)!;
    const step = 1n << BigInt((v6 ? 128 : 32) - spec.size);
    for (let base = outer.base; base < outer.base + outer.size; base += step) {
      yield { family: outer.family, base, prefixLen: spec.size, size: step };
    }
  }
}

/**
 * One --default-address-pool value, as dockerd takes it: `base=CIDR,size=N`. Throws a message naming the
 * flag and what to fix.
 */
export function parsePoolSpec(text: string, flag = '--default-address-pool'): PoolSpec {
  const bad = (why: string) => new Error(`${flag} "${text}": ${why}`);
  const kv: Record<string, string> = {};
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const key = eq > 0 ? part.slice(0, eq) : '';
    if (key !== 'base' && key !== 'size')
      throw bad(`"${part}" is not base=CIDR or size=N (want base=10.0.0.0/8,size=24)`);
    if (key in kv) throw bad(`${key} is given twice`);
    kv[key] = part.slice(eq + 1);
  }
  if (kv.base === undefined || kv.size === undefined)
    throw bad('want both base and size, e.g. base=10.0.0.0/8,size=24');
  const base = parseCidr(kv.base, true);
  if (!base) {
    const loose = parseCidr(kv.base);
    throw bad(
      loose
        ? `base ${kv.base} has host bits set; did you mean ${formatCidr(loose)}?`
        : `base "${kv.base}" is not a CIDR like 10.0.0.0/8`,
    );
  }
  const unusable = unusableSubnet(base);
  if (unusable) throw bad(`base ${unusable}: no network can use it`);
  const max = base.family === 4 ? 30 : 126;
  if (!/^[1-9]\d{0,2}$/.test(kv.size)) throw bad(`size "${kv.size}" is not a prefix length like 24`);
  const size = Number(kv.size);
  if (size < base.prefixLen || size > max)
    throw bad(
      `size ${size} must be from the base's prefix length (${base.prefixLen}) to ${max}: each network gets a /size of the base, with room for a gateway and addresses`,
    );
  return { base: formatCidr(base), size };
}
