// Docker's predefined address pools (libnetwork ipamutils), split into the
// subnets networks get when the user gives no --subnet.
import { Cidr, parseCidr } from '../net/addr';

interface PoolSpec {
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

/** Candidate subnets in Docker's order, lazily (10.0.0.0/8 split /24 is 65,536 of them). */
export function* predefinedSubnets(scope: 'local' | 'global', v6: boolean): Generator<Cidr> {
  const specs = v6 ? LOCAL_V6 : scope === 'local' ? LOCAL_V4 : GLOBAL_V4;
  for (const spec of specs) {
    const outer = parseCidr(spec.base)!;
    const step = 1n << BigInt((v6 ? 128 : 32) - spec.size);
    for (let base = outer.base; base < outer.base + outer.size; base += step) {
      yield { family: outer.family, base, prefixLen: spec.size, size: step };
    }
  }
}
