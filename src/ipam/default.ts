// The default IPAM: Docker's predefined pools, --subnet/--ip-range/--gateway/
// --aux-address/static addresses, IPv6, the serial option; one compressed
// bitmap per pool, persisted in the store with every change.
import { CnmdError, invalidArgument } from '../errors';
import type { Store } from '../store/store';
import {
  ADDRESS_IN_USE,
  AddressOptions,
  GLOBAL_SPACE,
  Ipam,
  LOCAL_SPACE,
  POOL_OVERLAP,
  PoolInfo,
  PoolRequest,
  SERIAL_OPTION,
} from './ipam';
import {
  Cidr,
  bigToIp,
  contains,
  formatCidr,
  ipToBig,
  overlaps,
  parseCidr,
  stripPrefix,
  within,
} from '../net/addr';
import { PoolSpec, predefinedSubnets } from './pools';
import { unusableSubnet } from './usable';
import { Sequence, SequenceJSON } from './sequence';

const KIND = 'ipam-pool';

interface PoolRecord {
  id: string;
  addressSpace: string;
  pool: string;
  range?: string;
  v6: boolean;
  serial: boolean;
  seq: SequenceJSON;
  /** Offset of the last address handed out, for serial allocation. */
  last?: string;
}

/** A pool's bitmap with only the reserved addresses set: the network address, and the IPv4 broadcast. */
function emptySequence(pool: Cidr): Sequence {
  const seq = new Sequence(pool.size);
  if (pool.size > 2n || pool.family === 6) seq.set(0n);
  if (pool.family === 4 && pool.size > 2n) seq.set(pool.size - 1n);
  return seq;
}

/**
 * A start-up sweep of one range: `fresh` (its sequence holding only what is
 * always reserved) plus each address of `used` inside it. Returned when that
 * frees addresses the stored sequence holds, with how many; else undefined.
 */
export function sweptSequence(
  stored: SequenceJSON,
  fresh: Sequence,
  range: Cidr,
  used: Iterable<string>,
): { seq: SequenceJSON; freed: bigint } | undefined {
  for (const ip of used) {
    const a = ipToBig(ip);
    if (a && contains(range, a.family, a.value)) fresh.set(a.value - range.base);
  }
  const before = Sequence.fromJSON(stored).count();
  return before === fresh.count() ? undefined : { seq: fresh.toJSON(), freed: before - fresh.count() };
}

export interface DefaultIpamOptions {
  /** Networks routed on the host (CIDRs): predefined pools that overlap them are skipped. */
  hostNetworks?: () => Promise<string[]>;
  /**
   * For messages: the network a pool belongs to, its gateway (plain IP) and, given an
   * address, what holds it (`sandbox "db"`); the daemon answers from its records.
   */
  describePool?: (poolId: string, ip?: string) => PoolDescription | undefined;
  /** Subnets held outside this IPAM (the engine's networks from its own IPAM): refused and skipped like its pools. */
  reserved?: () => string[];
  /** The local scope's pools for networks without --subnet (--default-address-pool); none: Docker's. */
  localPools?: PoolSpec[];
}

export interface PoolDescription {
  /** The network holding the pool, as messages name it: `network "web"`, `Docker engine network 5f3a...`. */
  network: string;
  gateway?: string;
  holder?: string;
}

export class DefaultIpam implements Ipam {
  readonly name = 'default';
  private readonly store: Store;
  private readonly hostNetworks: () => Promise<string[]>;
  private readonly describePool: (poolId: string, ip?: string) => PoolDescription | undefined;
  private readonly reserved: () => string[];
  private readonly localPools: PoolSpec[];

  constructor(store: Store, opts: DefaultIpamOptions = {}) {
    this.store = store;
    this.hostNetworks = opts.hostNetworks ?? (async () => []);
    this.describePool = opts.describePool ?? (() => undefined);
    this.reserved = opts.reserved ?? (() => []);
    this.localPools = opts.localPools ?? [];
  }

  async defaultAddressSpaces(): Promise<{ local: string; global: string }> {
    return { local: LOCAL_SPACE, global: GLOBAL_SPACE };
  }

  private records(space: string): PoolRecord[] {
    return this.store.list<PoolRecord>(KIND).filter((p) => p.addressSpace === space);
  }

  pools(): { id: string; pool: string }[] {
    return this.store.list<PoolRecord>(KIND).map((p) => ({ id: p.id, pool: p.pool }));
  }

  async requestPool(req: PoolRequest): Promise<PoolInfo> {
    const op = 'ipam request pool';
    let space = req.addressSpace || LOCAL_SPACE;
    if (req.addressSpace !== undefined && space !== LOCAL_SPACE && space !== GLOBAL_SPACE) {
      throw invalidArgument(op, space, `address space "${space}" is not ${LOCAL_SPACE} or ${GLOBAL_SPACE}`);
    }
    // A partition is an address space of its own for overlaps and picks (its pools are not routed on the host).
    if (req.partition) space = `${space}#${req.partition}`;
    const v6 = !!req.v6;
    const serial = req.options?.[SERIAL_OPTION] === 'true';
    // The host's routes are read first: from the read of the pools taken to
    // the new pool's record there is no await, so concurrent requests (compose
    // creates its networks in parallel) each see the others' pools.
    const host = await this.hostRoutes();
    let pool: Cidr;
    if (req.pool) {
      const p = parseCidr(req.pool);
      if (!p)
        throw invalidArgument(
          op,
          req.pool,
          `subnet "${req.pool}" is not a CIDR (want e.g. 10.1.0.0/24${v6 ? ' or fd00:1::/64' : ''})`,
        );
      if (!parseCidr(req.pool, true)) {
        // Docker refuses a subnet with host bits set; say which network was meant.
        throw invalidArgument(
          op,
          req.pool,
          `subnet "${req.pool}" has host bits set; did you mean ${formatCidr(p)}?`,
        );
      }
      if ((p.family === 6) !== v6)
        throw invalidArgument(
          op,
          req.pool,
          `subnet ${req.pool} is IPv${p.family} but an IPv${v6 ? 6 : 4} pool was requested`,
        );
      const unusable = unusableSubnet(p);
      if (unusable)
        throw invalidArgument(
          op,
          req.pool,
          `subnet ${unusable}: no network can use it; choose a private range such as 10.1.0.0/24`,
        );
      const foreign = this.reserved().find((o) => overlaps(parseCidr(o)!, p));
      if (foreign)
        throw new CnmdError(
          'IN_USE',
          `${op}: ${POOL_OVERLAP}: subnet ${formatCidr(p)} overlaps with ${foreign}, the subnet of a Docker ` +
            `engine network; choose a subnet that does not overlap it`,
          { op, object: formatCidr(p) },
        );
      const taken = this.records(space).map((o) => ({ rec: o, cidr: parseCidr(o.pool)! }));
      const clash = taken.find((o) => overlaps(o.cidr, p))?.rec;
      if (clash) {
        const holder = this.describePool(clash.id)?.network;
        throw new CnmdError(
          'IN_USE',
          `${op}: ${POOL_OVERLAP}: subnet ${formatCidr(p)} overlaps with ${clash.pool}, ${holder ? `the subnet of ${holder}` : 'already used by another network in this address space'}; choose a subnet that does not overlap it`,
          {
            op,
            object: formatCidr(p),
          },
        );
      }
      // Docker refuses a subnet the host routes (its LAN, a VPN): the bridge would take traffic
      // meant for it. Routes inside cnmd's own pools are its bridges; the default route is not a subnet.
      // A partition's pools are not routed on the host (a macvlan network's subnet is its LAN's,
      // usually the host's own there): the check is the bridge's.
      const routed = req.partition
        ? undefined
        : host.find((h) => overlaps(h, p) && !taken.some((t) => within(h, t.cidr)));
      if (routed)
        throw new CnmdError(
          'IN_USE',
          `${op}: subnet ${formatCidr(p)} overlaps ${formatCidr(routed)}, a network the host routes (an interface's subnet or a route); a network there would take the host's traffic: choose a subnet the host does not use`,
          { op, object: formatCidr(p) },
        );
      pool = p;
    } else {
      if (req.subPool) throw invalidArgument(op, req.subPool, '--ip-range needs --subnet');
      pool = this.pickPredefined(space, v6, host);
    }
    let range: Cidr | undefined;
    if (req.subPool) {
      const r = parseCidr(req.subPool);
      if (!r) throw invalidArgument(op, req.subPool, `ip-range "${req.subPool}" is not a CIDR`);
      if (!within(r, pool))
        throw invalidArgument(
          op,
          req.subPool,
          `ip-range ${req.subPool} is not inside subnet ${formatCidr(pool)}`,
        );
      range = r;
    }
    const id = `${space}/${formatCidr(pool)}${range ? `/${formatCidr(range)}` : ''}`;
    const seq = emptySequence(pool);
    const rec: PoolRecord = {
      id,
      addressSpace: space,
      pool: formatCidr(pool),
      range: range && formatCidr(range),
      v6,
      serial,
      seq: seq.toJSON(),
    };
    // Never over another pool's record (its bitmap would be lost): the overlap checks above make this unreachable.
    if (!this.store.add(KIND, id, rec))
      throw new CnmdError('IN_USE', `${op}: pool ${id} is already allocated`, { op, object: id });
    return { poolId: id, pool: rec.pool, data: {} };
  }

  private async hostRoutes(): Promise<Cidr[]> {
    return (await this.hostNetworks())
      .map((s) => parseCidr(s))
      .filter((c): c is Cidr => !!c && c.prefixLen > 0);
  }

  /** Synchronous on purpose: the caller records the choice before anything else runs. */
  private pickPredefined(space: string, v6: boolean, host: Cidr[]): Cidr {
    const taken = [...this.records(space).map((p) => p.pool), ...this.reserved()].map((p) => parseCidr(p)!);
    const scope = space.startsWith(GLOBAL_SPACE) ? 'global' : 'local';
    for (const c of predefinedSubnets(scope, v6, this.localPools)) {
      if (taken.some((t) => overlaps(t, c)) || host.some((h) => overlaps(h, c))) continue;
      return c;
    }
    throw new CnmdError(
      'EXHAUSTED',
      `ipam request pool: could not find an available, non-overlapping IPv${v6 ? 6 : 4} address pool among ` +
        `the defaults to assign to the network; give one with --subnet`,
      { op: 'ipam request pool', object: space },
    );
  }

  private load(op: string, poolId: string): PoolRecord {
    const rec = this.store.get<PoolRecord>(KIND, poolId);
    if (!rec)
      throw new CnmdError('NOT_FOUND', `${op}: pool ${poolId} does not exist`, { op, object: poolId });
    return rec;
  }

  async releasePool(poolId: string): Promise<void> {
    this.load('ipam release pool', poolId);
    this.store.delete(KIND, poolId);
  }

  async requestAddress(poolId: string, ip?: string, opts: AddressOptions = {}): Promise<string> {
    const op = 'ipam request address';
    const rec = this.load(op, poolId);
    const pool = parseCidr(rec.pool)!;
    const seq = Sequence.fromJSON(rec.seq);
    let offset: bigint;
    if (ip) {
      const a = ipToBig(ip);
      if (!a) throw invalidArgument(op, ip, `"${ip}" is not an IP address`);
      if (!contains(pool, a.family, a.value))
        throw invalidArgument(op, ip, `address ${ip} is outside subnet ${rec.pool}`);
      offset = a.value - pool.base;
      if (!seq.set(offset)) {
        const reserved = offset === 0n || (pool.family === 4 && offset === pool.size - 1n);
        const owner = this.describePool(poolId, ip);
        const net = owner ? `${owner.network} (${rec.pool})` : rec.pool;
        const isGateway = owner?.gateway !== undefined && ipToBig(owner.gateway)?.value === a.value;
        throw new CnmdError(
          'IN_USE',
          reserved
            ? `${op}: address ${ip} is reserved (network or broadcast address) in ${net}`
            : isGateway
              ? `${op}: ${ADDRESS_IN_USE}: ${ip} is the gateway of ${net}; choose another address`
              : `${op}: ${ADDRESS_IN_USE}: ${ip} in ${net}` +
                (owner?.holder ? ` is held by ${owner.holder}` : ''),
          {
            op,
            object: ip,
          },
        );
      }
    } else {
      const range = rec.range ? parseCidr(rec.range)! : pool;
      const from = range.base - pool.base;
      const to = from + range.size;
      let found: bigint | undefined;
      if ((opts.serial || rec.serial) && rec.last !== undefined) {
        const after = BigInt(rec.last) + 1n;
        found = after < to ? seq.firstClear(after > from ? after : from, to) : undefined;
        found ??= seq.firstClear(from, to); // wrap around
      } else {
        found = seq.firstClear(from, to);
      }
      if (found === undefined) {
        throw new CnmdError(
          'EXHAUSTED',
          `${op}: no available IPv${pool.family} addresses in ${rec.range ?? rec.pool}`,
          { op, object: poolId },
        );
      }
      seq.set(found);
      offset = found;
    }
    rec.seq = seq.toJSON();
    rec.last = offset.toString();
    this.store.put(KIND, poolId, rec);
    return `${bigToIp(pool.base + offset, pool.family)}/${pool.prefixLen}`;
  }

  /**
   * Frees pools and addresses that no record references (poolId -> IPs in
   * use). Run at start-up, after a crash between an allocation and the record
   * that owns it. Returns what was freed.
   */
  sweep(referenced: Map<string, Set<string>>): string[] {
    const freed: string[] = [];
    this.store.tx(() => {
      for (const rec of this.store.list<PoolRecord>(KIND)) {
        const used = referenced.get(rec.id);
        if (!used) {
          this.store.delete(KIND, rec.id);
          freed.push(rec.pool);
          continue;
        }
        const pool = parseCidr(rec.pool)!;
        const swept = sweptSequence(rec.seq, emptySequence(pool), pool, used);
        if (swept) {
          freed.push(`${swept.freed} address(es) in ${rec.pool}`);
          rec.seq = swept.seq;
          this.store.put(KIND, rec.id, rec);
        }
      }
    });
    return freed;
  }

  async releaseAddress(poolId: string, ip: string): Promise<void> {
    const op = 'ipam release address';
    const rec = this.load(op, poolId);
    const pool = parseCidr(rec.pool)!;
    const a = ipToBig(stripPrefix(ip));
    if (!a || !contains(pool, a.family, a.value))
      throw invalidArgument(op, ip, `address ${ip} is not in ${rec.pool}`);
    const offset = a.value - pool.base;
    if (
      (offset === 0n && pool.size > 2n) ||
      (pool.family === 4 && pool.size > 2n && offset === pool.size - 1n)
    ) {
      throw invalidArgument(
        op,
        ip,
        `address ${ip} is the network or broadcast address of ${rec.pool}, which is never allocated`,
      );
    }
    const seq = Sequence.fromJSON(rec.seq);
    if (!seq.unset(offset)) {
      throw new CnmdError('NOT_FOUND', `${op}: address ${ip} is not allocated in ${rec.pool}`, {
        op,
        object: ip,
      });
    }
    rec.seq = seq.toJSON();
    this.store.put(KIND, poolId, rec);
  }
}
