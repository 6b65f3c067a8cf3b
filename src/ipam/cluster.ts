// The default IPAM with a cluster store: LocalDefault pools as before
// (DefaultIpam), GlobalDefault pools (overlay networks) shared by every host.
// A host claims address blocks of a global subnet in the cluster store with a
// compare-and-swap (as Calico's IPAM blocks) and allocates from its own blocks
// locally, with no round trip per address; a static address is claimed in the
// store, inside a block nobody allocates from or one of its own.
import { CnmdError, invalidArgument } from '../errors';
import type { Logger } from '../log';
import type { Store } from '../store/store';
import type { ClusterStore, Versioned } from '../cluster/etcd';
import {
  BlockRecord,
  EndpointPublication,
  GlobalNetworkRecord,
  HostRecord,
  asBlockRecord,
  isHostRecord,
  isNetworkRecord,
  key,
  publicationProblem,
} from '../cluster/records';
import { DefaultIpam, sweptSequence } from './default';
import { AddressOptions, GLOBAL_SPACE, Ipam, PoolInfo, PoolRequest } from './ipam';
import { Cidr, bigToIp, bits, contains, formatCidr, ipToBig, parseCidr, stripPrefix } from '../net/addr';
import { Sequence, SequenceJSON } from './sequence';

const POOL = 'cluster-pool';
const BLOCK = 'cluster-block';
const STATIC = 'cluster-static';
/** Addresses per block: 64 (a /26 in IPv4). */
const BLOCK_BITS = 6;
/** Compare-and-swap attempts before a block claim gives up (another host won every time). */
const CLAIM_ATTEMPTS = 8;
/** How often the cluster's blocks are checked for gone hosts (at most; and at least twice per grace). */
const RECLAIM_EVERY_MS = 10_000;

interface PoolRecord {
  id: string;
  pool: string;
  /** Addresses no host hands out: the gateway, aux addresses (the same on every host). */
  reserved: string[];
}

interface LocalBlock {
  id: string;
  poolId: string;
  block: string;
  seq: SequenceJSON;
  /**
   * Another host holds the block in the store now (this host was gone past
   * the grace and its blocks were reclaimed): nothing more is allocated here.
   */
  lost?: string;
}

/** A static address this host claimed in a block it does not own. */
interface LocalStatic {
  id: string;
  poolId: string;
  ip: string;
  block: string;
  /** Released locally, not yet removed from the store (it was unreachable). */
  releasing?: boolean;
}

export interface ClusterLink {
  store: ClusterStore;
  hostId: string;
}

export interface ClusterIpamOptions {
  /** --cluster-block-grace: how long a gone host's blocks stay its (after its lease expired). */
  blockGraceSeconds: number;
}

function sane(items: Versioned<unknown>[]): Versioned<BlockRecord>[] {
  return items.map((i) => ({ ...i, value: asBlockRecord(i.value) }));
}

async function getBlock(
  store: ClusterStore,
  op: string,
  k: string,
): Promise<Versioned<BlockRecord> | undefined> {
  const got = await store.get<unknown>(op, k);
  return got && { ...got, value: asBlockRecord(got.value) };
}

export class ClusterIpam implements Ipam {
  readonly name = 'default';
  readonly local: DefaultIpam;
  private readonly store: Store;
  private readonly cluster: () => ClusterLink | undefined;
  private readonly log: Logger;
  /** One block claim at a time per pool: concurrent attaches share it. */
  private readonly claiming = new Map<string, Promise<void>>();
  private readonly graceMs: number;
  /** Blocks seen held by a gone host ("<store key>|<host>"): since when (this host's clock). */
  private readonly orphaned = new Map<string, number>();
  private lastReclaim = 0;

  constructor(
    store: Store,
    local: DefaultIpam,
    cluster: () => ClusterLink | undefined,
    log: Logger,
    opts: ClusterIpamOptions = { blockGraceSeconds: 300 },
  ) {
    this.store = store;
    this.local = local;
    this.cluster = cluster;
    this.log = log;
    this.graceMs = opts.blockGraceSeconds * 1000;
  }

  defaultAddressSpaces() {
    return this.local.defaultAddressSpaces();
  }

  private pool(poolId: string): PoolRecord | undefined {
    return this.store.get<PoolRecord>(POOL, poolId);
  }

  private link(op: string): ClusterLink {
    const c = this.cluster();
    if (!c)
      throw new CnmdError(
        'FORBIDDEN',
        `${op}: global address pools need a cluster store: start cnmd with --cluster-store`,
        {
          op,
        },
      );
    return c;
  }

  async requestPool(req: PoolRequest): Promise<PoolInfo> {
    if (req.addressSpace !== GLOBAL_SPACE || !this.cluster()) return this.local.requestPool(req);
    const op = 'ipam request pool';
    const p = req.pool ? parseCidr(req.pool, true) : undefined;
    // The cluster decided the subnet (unique among global networks) before any host asks for its pool.
    if (!p) throw invalidArgument(op, req.pool, `a global pool needs its subnet (got "${req.pool ?? ''}")`);
    if (req.subPool)
      throw invalidArgument(op, req.subPool, '--ip-range is not supported on overlay networks');
    const id = `${GLOBAL_SPACE}/${formatCidr(p)}`;
    if (!this.pool(id)) this.store.put<PoolRecord>(POOL, id, { id, pool: formatCidr(p), reserved: [] });
    return { poolId: id, pool: formatCidr(p), data: {} };
  }

  async releasePool(poolId: string): Promise<void> {
    if (!this.pool(poolId)) return this.local.releasePool(poolId);
    this.store.tx(() => {
      for (const b of this.blocksOf(poolId)) this.store.delete(BLOCK, b.id);
      for (const s of this.store.list<LocalStatic>(STATIC))
        if (s.poolId === poolId) this.store.delete(STATIC, s.id);
      this.store.delete(POOL, poolId);
    });
  }

  private blocksOf(poolId: string): LocalBlock[] {
    return this.store.list<LocalBlock>(BLOCK).filter((b) => b.poolId === poolId);
  }

  /** The block an address of the pool falls in. */
  private blockOf(pool: Cidr, value: bigint): Cidr {
    const prefixLen = Math.max(pool.prefixLen, bits(pool.family) - BLOCK_BITS);
    const host = BigInt(bits(pool.family) - prefixLen);
    return { family: pool.family, base: (value >> host) << host, prefixLen, size: 1n << host };
  }

  /** A new block's bitmap: the subnet's network/broadcast addresses and the reserved ones set. */
  private freshBlock(rec: PoolRecord, block: Cidr, statics: string[]): Sequence {
    const pool = parseCidr(rec.pool)!;
    const seq = new Sequence(block.size);
    const mark = (v: bigint) => {
      if (contains(block, pool.family, v)) seq.set(v - block.base);
    };
    if (pool.size > 2n || pool.family === 6) mark(pool.base);
    if (pool.family === 4 && pool.size > 2n) mark(pool.base + pool.size - 1n);
    for (const ip of [...rec.reserved, ...statics]) {
      const a = ipToBig(ip);
      if (a) mark(a.value);
    }
    return seq;
  }

  async requestAddress(poolId: string, ip?: string, opts: AddressOptions = {}): Promise<string> {
    const rec = this.pool(poolId);
    if (!rec) return this.local.requestAddress(poolId, ip, opts);
    const op = 'ipam request address';
    const pool = parseCidr(rec.pool)!;
    if (opts.gateway) {
      // The gateway is the same address on every host (the network record's): reserved, never claimed.
      const gw = ip ?? bigToIp(pool.base + 1n, pool.family);
      if (!rec.reserved.includes(gw)) {
        rec.reserved.push(gw);
        this.store.tx(() => {
          this.store.put(POOL, poolId, rec);
          for (const b of this.blocksOf(poolId)) this.markReserved(b, pool, gw);
        });
      }
      return `${gw}/${pool.prefixLen}`;
    }
    if (ip) {
      const a = ipToBig(ip);
      if (!a) throw invalidArgument(op, ip, `"${ip}" is not an IP address`);
      if (!contains(pool, a.family, a.value))
        throw invalidArgument(op, ip, `address ${ip} is outside subnet ${rec.pool}`);
      if (
        rec.reserved.includes(ip) ||
        (pool.family === 4 && (a.value === pool.base || a.value === pool.base + pool.size - 1n))
      )
        throw new CnmdError(
          'IN_USE',
          `${op}: address ${ip} is reserved in ${rec.pool} (gateway, network or broadcast address)`,
          {
            op,
            object: ip,
          },
        );
      const block = formatCidr(this.blockOf(pool, a.value));
      const mine = this.store.get<LocalBlock>(BLOCK, `${poolId}|${block}`);
      if (mine) {
        this.take(mine, this.blockOf(pool, a.value), a.value, op, ip);
        return `${ip}/${pool.prefixLen}`;
      }
      await this.claimStatic(rec, block, ip);
      return `${ip}/${pool.prefixLen}`;
    }
    // Fast path, synchronous: a free address in one of this host's blocks (the caller's transaction covers the write).
    // Otherwise a new block; concurrent requests share each claim and claim again while it runs short.
    for (;;) {
      const got = this.fromOwnBlocks(rec, pool);
      if (got) return got;
      await this.claimBlock(rec, pool);
    }
  }

  private markReserved(b: LocalBlock, pool: Cidr, ip: string): void {
    const a = ipToBig(ip);
    const block = parseCidr(b.block)!;
    if (!a || !contains(block, pool.family, a.value)) return;
    const seq = Sequence.fromJSON(b.seq);
    seq.set(a.value - block.base);
    b.seq = seq.toJSON();
    this.store.put(BLOCK, b.id, b);
  }

  private take(b: LocalBlock, block: Cidr, value: bigint, op: string, ip: string): void {
    const seq = Sequence.fromJSON(b.seq);
    if (!seq.set(value - block.base))
      throw new CnmdError('IN_USE', `${op}: address ${ip} is already in use`, { op, object: ip });
    b.seq = seq.toJSON();
    this.store.put(BLOCK, b.id, b);
  }

  private fromOwnBlocks(rec: PoolRecord, pool: Cidr): string | undefined {
    for (const b of this.blocksOf(rec.id)) {
      if (b.lost) continue;
      const block = parseCidr(b.block)!;
      const seq = Sequence.fromJSON(b.seq);
      const free = seq.firstClear(0n, block.size);
      if (free === undefined) continue;
      seq.set(free);
      b.seq = seq.toJSON();
      this.store.put(BLOCK, b.id, b);
      return `${bigToIp(block.base + free, pool.family)}/${pool.prefixLen}`;
    }
    return undefined;
  }

  /** Claims a block nobody allocates from, shared by the attaches waiting for one. */
  private claimBlock(rec: PoolRecord, pool: Cidr): Promise<void> {
    let p = this.claiming.get(rec.id);
    if (!p) {
      p = this.claimBlockOnce(rec, pool).finally(() => this.claiming.delete(rec.id));
      this.claiming.set(rec.id, p);
    }
    return p;
  }

  private async claimBlockOnce(rec: PoolRecord, pool: Cidr): Promise<void> {
    const op = 'ipam claim block';
    const { store, hostId } = this.link(op);
    const blockCidr = this.blockOf(pool, pool.base);
    const count = Number(pool.size / blockCidr.size);
    // Hosts start their search at different blocks: concurrent claims rarely meet.
    let h = 0;
    for (const ch of hostId) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      const items = sane((await store.list<unknown>(op, key.blocks(rec.pool))).items);
      const held = new Map(items.map((i) => [i.key.slice(key.blocks(rec.pool).length), i]));
      let target: { block: Cidr; rev?: string; statics: string[] } | undefined;
      for (let k = 0; k < count && !target; k++) {
        const base = pool.base + BigInt((h + k) % count) * blockCidr.size;
        const block: Cidr = { ...blockCidr, base };
        const name = formatCidr(block);
        if (this.store.get(BLOCK, `${rec.id}|${name}`)) continue;
        const cur = held.get(name);
        if (cur && cur.value.host) continue;
        // Blocks with nothing but reserved addresses in them are not worth a claim.
        if (
          this.freshBlock(rec, block, cur?.value.statics.map((s) => s.ip) ?? []).firstClear(
            0n,
            block.size,
          ) === undefined
        )
          continue;
        target = { block, rev: cur?.rev, statics: cur?.value.statics.map((s) => s.ip) ?? [] };
      }
      if (!target)
        throw new CnmdError(
          'EXHAUSTED',
          `${op}: no free address block left in ${rec.pool}: every block is held by a host`,
          {
            op,
            object: rec.pool,
          },
        );
      const name = formatCidr(target.block);
      const k = key.block(rec.pool, name);
      const value: BlockRecord = { host: hostId, statics: held.get(name)?.value.statics ?? [] };
      if (await store.txn(op, k, [{ key: k, rev: target.rev }], [{ put: { key: k, value } }])) {
        const b: LocalBlock = {
          id: `${rec.id}|${name}`,
          poolId: rec.id,
          block: name,
          seq: this.freshBlock(rec, target.block, target.statics).toJSON(),
        };
        this.store.put(BLOCK, b.id, b);
        this.log.info({ pool: rec.pool, block: name }, 'address block claimed');
        return;
      }
    }
    throw new CnmdError(
      'CONFLICT',
      `${op}: other hosts kept claiming the same blocks of ${rec.pool}; try again`,
      {
        op,
        object: rec.pool,
      },
    );
  }

  /** A static address in a block this host does not allocate from: claimed in the store's block record. */
  private async claimStatic(rec: PoolRecord, block: string, ip: string): Promise<void> {
    const op = 'ipam request address';
    const { store, hostId } = this.link(op);
    const k = key.block(rec.pool, block);
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      const cur = await getBlock(store, op, k);
      if (cur?.value.host && cur.value.host !== hostId)
        throw new CnmdError(
          'IN_USE',
          `${op}: address ${ip} is in block ${block}, which host ${cur.value.host} allocates from; pick an ` +
            `address in a block no other host uses (see the blocks in network inspect)`,
          { op, object: ip },
        );
      const statics = cur?.value.statics ?? [];
      if (statics.some((s) => s.ip === ip))
        throw new CnmdError('IN_USE', `${op}: address ${ip} is already in use`, { op, object: ip });
      const value: BlockRecord = { host: cur?.value.host ?? '', statics: [...statics, { ip, host: hostId }] };
      if (await store.txn(op, k, [{ key: k, rev: cur?.rev }], [{ put: { key: k, value } }])) {
        const s: LocalStatic = { id: `${rec.id}|${ip}`, poolId: rec.id, ip, block };
        this.store.put(STATIC, s.id, s);
        return;
      }
    }
    throw new CnmdError(
      'CONFLICT',
      `${op}: block ${block} kept changing under the claim of ${ip}; try again`,
      {
        op,
        object: ip,
      },
    );
  }

  async releaseAddress(poolId: string, ip: string): Promise<void> {
    const rec = this.pool(poolId);
    if (!rec) return this.local.releaseAddress(poolId, ip);
    const op = 'ipam release address';
    const plain = stripPrefix(ip);
    const a = ipToBig(plain);
    const pool = parseCidr(rec.pool)!;
    if (!a || !contains(pool, a.family, a.value))
      throw invalidArgument(op, ip, `address ${ip} is not in ${rec.pool}`);
    if (rec.reserved.includes(plain)) return;
    const block = this.blockOf(pool, a.value);
    const mine = this.store.get<LocalBlock>(BLOCK, `${poolId}|${formatCidr(block)}`);
    if (mine) {
      const seq = Sequence.fromJSON(mine.seq);
      if (!seq.unset(a.value - block.base))
        throw new CnmdError('NOT_FOUND', `${op}: address ${ip} is not allocated in ${rec.pool}`, {
          op,
          object: ip,
        });
      mine.seq = seq.toJSON();
      this.store.put(BLOCK, mine.id, mine);
      return;
    }
    const s = this.store.get<LocalStatic>(STATIC, `${poolId}|${plain}`);
    if (!s)
      throw new CnmdError('NOT_FOUND', `${op}: address ${ip} is not allocated in ${rec.pool}`, {
        op,
        object: ip,
      });
    s.releasing = true;
    this.store.put(STATIC, s.id, s);
    await this.finishStaticRelease(rec, s).catch((e) =>
      this.log.warn({ err: e, ip }, 'static address release: cluster store unreachable, retried later'),
    );
  }

  private async finishStaticRelease(rec: PoolRecord, s: LocalStatic): Promise<void> {
    const op = 'ipam release address';
    const { store } = this.link(op);
    const k = key.block(rec.pool, s.block);
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      const cur = await getBlock(store, op, k);
      if (!cur || !cur.value.statics.some((x) => x.ip === s.ip)) break;
      const value: BlockRecord = { ...cur.value, statics: cur.value.statics.filter((x) => x.ip !== s.ip) };
      const ops =
        !value.host && !value.statics.length ? [{ delete: { key: k } }] : [{ put: { key: k, value } }];
      if (await store.txn(op, k, [{ key: k, rev: cur.rev }], ops)) break;
    }
    this.store.delete(STATIC, s.id);
  }

  /** Static releases the store missed while it was unreachable (the cluster's reconcile loop calls this). */
  async retryReleases(): Promise<void> {
    for (const s of this.store.list<LocalStatic>(STATIC)) {
      const rec = s.releasing && this.pool(s.poolId);
      if (rec) await this.finishStaticRelease(rec, s);
    }
  }

  globalPool(subnet: string): PoolInfo | undefined {
    const c = parseCidr(subnet, true);
    const rec = c && this.pool(`${GLOBAL_SPACE}/${formatCidr(c)}`);
    return rec ? { poolId: rec.id, pool: rec.pool, data: {} } : undefined;
  }

  /** The blocks this host allocates from in a pool (for network inspect). */
  blocks(poolId: string): string[] {
    return this.blocksOf(poolId)
      .filter((b) => !b.lost)
      .map((b) => b.block);
  }

  /**
   * Blocks of hosts that are gone (no host record: the lease expired) and
   * have no live endpoint record in them are released once this host has
   * seen them so for the grace period: then any host may claim them. The
   * release is a compare-and-swap on the block's revision and on the host
   * record's absence, so of two reclaimers one wins, and a host that came
   * back meanwhile keeps its blocks. Also checks this host's own blocks
   * against the store (its blocks reclaimed while it was away: claimed again
   * when free, given up when another host has them). Runs from the cluster's
   * reconcile loop; returns the blocks it released.
   */
  async reclaimBlocks(now = Date.now()): Promise<string[]> {
    const op = 'ipam reclaim blocks';
    const c = this.cluster();
    if (!c || now - this.lastReclaim < Math.min(RECLAIM_EVERY_MS, this.graceMs / 2)) return [];
    this.lastReclaim = now;
    const [blocks, hosts, eps, nets, guard] = await Promise.all([
      c.store.list<unknown>(op, key.allBlocks).then((r) => sane(r.items)),
      c.store.list<HostRecord>(op, key.hosts),
      c.store.list<EndpointPublication>(op, key.endpoints),
      c.store.list<GlobalNetworkRecord>(op, key.networks),
      c.store.get<number>(op, key.networksRev),
    ]);
    // Records that are not what their key says (anyone who reaches etcd can write) count for nothing here.
    hosts.items = hosts.items.filter((h) => isHostRecord(h.key, h.value));
    eps.items = eps.items.filter((e) => !publicationProblem(e.key, e.value));
    nets.items = nets.items.filter((n) => isNetworkRecord(n.key, n.value));
    const subnets = new Set(nets.items.flatMap((n) => n.value.ipamConfig.map((x) => x.subnet)));
    await this.reassertOwn(c, blocks, subnets, guard?.rev);
    const live = new Set(hosts.items.map((h) => h.value.id));
    const used = eps.items
      .flatMap((e) => [e.value.ipv4, e.value.ipv6])
      .map((ip) => ip && ipToBig(stripPrefix(ip)!))
      .filter((a) => !!a);
    const seen = new Set<string>();
    const freed: string[] = [];
    for (const b of blocks) {
      const owner = b.value.host;
      const name = blockName(b.key);
      if (!owner || live.has(owner) || !name) continue;
      const mark = `${b.key}|${owner}`;
      seen.add(mark);
      const since = this.orphaned.get(mark) ?? now;
      this.orphaned.set(mark, since);
      if (now - since < this.graceMs) continue;
      const cidr = parseCidr(name.block)!;
      if (used.some((a) => contains(cidr, a.family, a.value))) continue;
      const statics = b.value.statics;
      const ok = await c.store.txn(
        op,
        name.block,
        [{ key: b.key, rev: b.rev }, { key: key.host(owner) }],
        statics.length
          ? [{ put: { key: b.key, value: { host: '', statics } } }]
          : [{ delete: { key: b.key } }],
      );
      this.orphaned.delete(mark);
      if (!ok) continue;
      freed.push(name.block);
      this.log.warn(
        { pool: name.subnet, block: name.block, host: owner, graceSeconds: this.graceMs / 1000 },
        'address block of a gone host reclaimed',
      );
    }
    for (const k of this.orphaned.keys()) if (!seen.has(k)) this.orphaned.delete(k);
    return freed;
  }

  /**
   * This host's blocks as the store has them. One missing (released while the
   * host was away) is claimed again, unless its network is being removed (the
   * guard key's revision is compared: a removal deletes the blocks, which must
   * stay deleted); one another host holds is marked lost.
   */
  private async reassertOwn(
    c: ClusterLink,
    items: { key: string; value: BlockRecord }[],
    subnets: Set<string | undefined>,
    networksRev: string | undefined,
  ): Promise<void> {
    const op = 'ipam reclaim blocks';
    const byKey = new Map(items.map((i) => [i.key, i]));
    for (const b of this.store.list<LocalBlock>(BLOCK)) {
      const rec = this.pool(b.poolId);
      if (!rec || b.lost) continue;
      const k = key.block(rec.pool, b.block);
      if (byKey.get(k)?.value.host === c.hostId) continue;
      // The listing may predate a claim of this host's: read again.
      let cur = await getBlock(c.store, op, k);
      if (cur?.value.host === c.hostId) continue;
      if (!cur?.value.host) {
        // The network is gone or going: its removal here frees the local blocks.
        if (!subnets.has(rec.pool)) continue;
        const value: BlockRecord = { host: c.hostId, statics: cur?.value.statics ?? [] };
        const compares = [
          { key: k, rev: cur?.rev },
          { key: key.networksRev, rev: networksRev },
        ];
        if (await c.store.txn(op, b.block, compares, [{ put: { key: k, value } }])) {
          this.log.warn(
            { pool: rec.pool, block: b.block },
            'address block released while this host was away: claimed again',
          );
          continue;
        }
        // Lost the race, or networks changed meanwhile: looked at again on the next pass unless a host has it.
        cur = await getBlock(c.store, op, k);
        if (!cur?.value.host || cur.value.host === c.hostId) continue;
      }
      // Another host allocates from it now: this host allocates no more from it.
      const holder = cur.value.host;
      b.lost = holder;
      this.store.put(BLOCK, b.id, b);
      this.log.error(
        { pool: rec.pool, block: b.block, holder },
        'address block reclaimed by another host while this host was away: no more addresses from it here; ' +
          "endpoints of this host in it may clash with that host's, re-create them",
      );
    }
  }

  /** Frees what no record references, in both address spaces (run at start-up). */
  sweep(referenced: Map<string, Set<string>>): string[] {
    const freed = this.local.sweep(referenced);
    this.store.tx(() => {
      for (const rec of this.store.list<PoolRecord>(POOL)) {
        const used = referenced.get(rec.id);
        if (!used) {
          freed.push(rec.pool);
          for (const b of this.blocksOf(rec.id)) this.store.delete(BLOCK, b.id);
          this.store.delete(POOL, rec.id);
          continue;
        }
        for (const b of this.blocksOf(rec.id)) {
          const block = parseCidr(b.block)!;
          const swept = sweptSequence(b.seq, this.freshBlock(rec, block, []), block, used);
          if (swept) {
            freed.push(`${swept.freed} address(es) in ${b.block}`);
            b.seq = swept.seq;
            this.store.put(BLOCK, b.id, b);
          }
        }
        for (const s of this.store.list<LocalStatic>(STATIC))
          if (s.poolId === rec.id && !s.releasing && !used.has(s.ip)) {
            s.releasing = true;
            this.store.put(STATIC, s.id, s);
          }
      }
    });
    return freed;
  }
}

/** "blocks/<subnet>/<block>" -> its subnet and block (both CIDRs). */
function blockName(storeKey: string): { subnet: string; block: string } | undefined {
  const p = storeKey.slice(key.allBlocks.length).split('/');
  return p.length === 4 ? { subnet: `${p[0]}/${p[1]}`, block: `${p[2]}/${p[3]}` } : undefined;
}
