// cnmd-ipam's dhcp mode (--ipam-opt cnmd.ipam.mode=dhcp): the engine's
// cnmd-macvlan and cnmd-ipvlan (l2) networks addressed by the LAN's DHCP
// server. The engine asks RequestAddress before the endpoint's link exists,
// with no MAC and no endpoint id, and releases after the link is gone; so
// both exchanges go through a probe on the parent (ipam/dhcp/probe.ts) with a
// MAC cnmd picks (handed to the driver at CreateEndpoint: the engine's
// Interface.MacAddress is empty then, and the reply fills it) and a client id
// of the lease's own (cnmd:<lease id>). While the container lives the lease
// is renewed from its interface in the container's netns (Join's
// SandboxKey), found by its address since the engine renames it. Leases live
// in the pool's record (IpamLeaseRecord.dhcp): a restart renews them at once.
import { randomBytes } from 'node:crypto';
import type { Driver } from '../../drivers/driver';
import { CnmdError, bestEffort, invalidArgument } from '../errors';
import type { Ipam, LinkIpam, LinkLease } from '../ipam/ipam';
import { DHCP_IPAM } from '../ipam/dhcp/dhcp';
import { LanProbe } from '../ipam/dhcp/probe';
import type { Logger } from '../log';
import { contains, ipToBig, parseCidr, randomMac } from '../net/addr';
import type { Store } from '../store/store';
import { LOCK } from './locks';
import type { KeyedMutex } from './mutex';
import { EndpointRecord, IpamLeaseRecord, KIND, NetworkRecord } from './records';

/** cnmd-ipam's --ipam-opt choosing where addresses come from: absent (cnmd's pools) or `dhcp`. */
export const IPAM_MODE_OPT = 'cnmd.ipam.mode';
export const DHCP_MODE = 'dhcp';
/** The pool of a dhcp network without --subnet: the LAN's, whatever the server hands out. */
const ANY_POOL = '0.0.0.0/0';
const GATEWAY_DATA = 'com.docker.network.gateway';

export interface EngineDhcpDeps {
  store: Store;
  ipams: Map<string, Ipam>;
  locks: KeyedMutex;
  log: Logger;
  probe?: LanProbe;
}

const plain = (cidr: string) => cidr.split('/')[0];

export class EngineDhcp {
  constructor(private readonly d: EngineDhcpDeps) {}

  /** Whether RequestPool's options ask for the dhcp mode; another mode is refused naming the key. */
  static asked(op: string, options: Record<string, string>): boolean {
    const m = options[IPAM_MODE_OPT];
    if (m === undefined || m === '') return false;
    if (m !== DHCP_MODE)
      throw invalidArgument(
        op,
        m,
        `--ipam-opt ${IPAM_MODE_OPT}=${m}: cnmd-ipam knows the mode ${DHCP_MODE} (or none: addresses from cnmd's pools)`,
      );
    return true;
  }

  private links(op: string): { link: LinkIpam; probe: LanProbe } {
    const link = this.d.ipams.get(DHCP_IPAM)?.leases;
    if (!link || !this.d.probe)
      throw new CnmdError('INTERNAL', `${op}: this daemon has no DHCP client for cnmd-ipam's dhcp mode`, {
        op,
      });
    return { link, probe: this.d.probe };
  }

  /**
   * The pool record of a dhcp-mode RequestPool. The engine needs a gateway per
   * pool: the pool's own network address stands in for it (Data), so the engine
   * asks IPAM for none; each container's router is its lease's.
   */
  poolRecord(
    op: string,
    req: { pool?: string; subPool?: string; v6?: boolean; options: Record<string, string> },
  ): { rec: IpamLeaseRecord; data: Record<string, string> } {
    if (req.v6)
      throw invalidArgument(
        op,
        IPAM_MODE_OPT,
        `--ipam-opt ${IPAM_MODE_OPT}=${DHCP_MODE} gives IPv4 addresses only (no DHCPv6): remove --ipv6`,
      );
    if (req.subPool)
      throw invalidArgument(
        op,
        req.subPool,
        `--ip-range ${req.subPool}: in ${IPAM_MODE_OPT}=${DHCP_MODE} the LAN's DHCP server chooses the addresses: remove --ip-range`,
      );
    const options = { ...req.options };
    delete options[IPAM_MODE_OPT];
    this.links(op).link.checkOptions(op, options);
    let pool = ANY_POOL;
    if (req.pool) {
      const c = parseCidr(req.pool);
      if (!c || c.family !== 4)
        throw invalidArgument(op, req.pool, `--subnet ${req.pool} is not an IPv4 CIDR (like 192.168.1.0/24)`);
      pool = req.pool;
    }
    const poolId = `dhcp:${randomBytes(8).toString('hex')}`;
    const rec: IpamLeaseRecord = { poolId, pool, v6: false, addresses: [], dhcp: { options, leases: {} } };
    return { rec, data: { [GATEWAY_DATA]: pool } };
  }

  /** The unbound dhcp pool an engine network's IPv4Data names, if any (by its CIDR: the engine passes no pool id). */
  poolFor(n: NetworkRecord): IpamLeaseRecord | undefined {
    const v4 = n.pools.filter((p) => !p.v6);
    if (v4.length !== 1) return undefined;
    return this.d.store
      .list<IpamLeaseRecord>(KIND.ipamLease)
      .find((l) => l.dhcp && !l.dhcp.networkId && l.pool === v4[0].pool);
  }

  /**
   * Binds a dhcp pool to the engine network being made (before its record is
   * stored): the driver must put endpoints on a LAN of their own, and the
   * stand-in gateway is not given to it.
   */
  bind(op: string, rec: NetworkRecord, driver: Driver, l: IpamLeaseRecord): void {
    const policy = driver.ipamPolicy?.({ id: rec.id, options: rec.options, internal: rec.internal });
    if (!policy?.lanLeases)
      throw invalidArgument(
        op,
        IPAM_MODE_OPT,
        `--ipam-opt ${IPAM_MODE_OPT}=${DHCP_MODE}: ${policy?.noLanLeases ?? `cnmd-${driver.name} endpoints are not on a LAN of their own`}; the LAN's DHCP server addresses cnmd-macvlan networks and cnmd-ipvlan l2 networks with -o parent=`,
      );
    for (const p of rec.pools) if (!p.v6) p.gateway = undefined;
    rec.dhcpPool = l.poolId;
    l.dhcp!.networkId = rec.id;
    l.dhcp!.lan = { parent: rec.options.parent, kind: rec.driver as 'macvlan' | 'ipvlan' };
    this.d.store.put(KIND.ipamLease, l.poolId, l);
  }

  /** Undoes bind when the network's creation failed (the engine then releases the pool). */
  unbind(rec: NetworkRecord): void {
    const l = rec.dhcpPool && this.d.store.get<IpamLeaseRecord>(KIND.ipamLease, rec.dhcpPool);
    if (!l || !l.dhcp || l.dhcp.networkId !== rec.id) return;
    l.dhcp.networkId = undefined;
    this.d.store.put(KIND.ipamLease, l.poolId, l);
  }

  /** The LAN of the pool's network; asking for an address also needs the network to be there. */
  private lan(
    op: string,
    l: IpamLeaseRecord,
    ready: boolean,
  ): { parent: string; kind: 'macvlan' | 'ipvlan' } {
    const id = l.dhcp?.networkId;
    const n = id ? this.d.store.get<NetworkRecord>(KIND.engineNetwork, id) : undefined;
    if (!l.dhcp?.lan || (ready && (!n || n.state !== 'ready')))
      throw new CnmdError(
        'NOT_FOUND',
        `${op}: pool ${l.poolId} (${IPAM_MODE_OPT}=${DHCP_MODE}) has no cnmd-macvlan or cnmd-ipvlan network: its leases are asked on that network's parent`,
        { op, object: l.poolId },
      );
    return l.dhcp.lan;
  }

  private probeSpec(lan: { parent: string; kind: 'macvlan' | 'ipvlan' }, id: string, mac: string) {
    return { ...lan, mac: lan.kind === 'macvlan' ? mac : undefined, leaseId: id };
  }

  /**
   * RequestAddress on a dhcp pool (the caller holds the pool's lock). The
   * gateway's (a --gateway given) is taken as the user's word; an endpoint's
   * is a new lease, asked through a probe with a new MAC. An address the
   * server gives outside --subnet goes back to it, refused.
   */
  async requestAddress(
    op: string,
    l: IpamLeaseRecord,
    address: string | undefined,
    gateway: boolean,
  ): Promise<string> {
    const prefix = l.pool.split('/')[1];
    const c = parseCidr(l.pool)!;
    if (gateway) {
      const a = address ? ipToBig(address) : undefined;
      if (!a || a.family !== 4 || !contains(c, 4, a.value))
        throw invalidArgument(
          op,
          String(address),
          `--gateway ${address} is not an IPv4 address in ${l.pool}`,
        );
      return `${address}/${prefix}`;
    }
    if (address)
      throw invalidArgument(
        op,
        address,
        `${address}: in ${IPAM_MODE_OPT}=${DHCP_MODE} the LAN's DHCP server chooses the addresses: remove --ip (or --aux-address)`,
      );
    const { link, probe } = this.links(op);
    const lan = this.lan(op, l, true);
    const id = randomBytes(8).toString('hex');
    const mac = randomMac();
    const spec = this.probeSpec(lan, id, mac);
    const lease = await probe.with(op, spec, async (where) => {
      const got = await link.acquire(where, l.dhcp!.options, op);
      if (l.dhcp!.leases[plain(got.address)]) {
        // The server gave one address to two clients: declined (it offers the next client another).
        await bestEffort(this.d.log, 'dhcp decline', id, () => link.decline(where, got));
        throw new CnmdError(
          'CONFLICT',
          `${op}: the DHCP server on parent ${spec.parent} offered ${got.address}, which it leased to another endpoint of this network already (declined): fix the server`,
          { op, object: got.address },
        );
      }
      const a = ipToBig(plain(got.address))!;
      if (contains(c, 4, a.value)) return got;
      await bestEffort(this.d.log, 'dhcp release', id, async () => {
        await LanProbe.holdOn(where, got.address);
        await link.release(where, got);
      });
      throw new CnmdError(
        'CONFLICT',
        `${op}: the DHCP server on parent ${spec.parent} offered ${got.address}, outside the network's --subnet ${l.pool}: fix the server's range or the network's --subnet`,
        { op, object: got.address },
      );
    });
    const ip = plain(lease.address);
    l.dhcp!.leases[ip] = { id, lease };
    l.addresses.push(ip);
    this.d.store.put(KIND.ipamLease, l.poolId, l);
    this.d.log.info(
      { pool: l.poolId, address: lease.address, mac: lease.mac, server: lease.server, owner: 'engine' },
      'dhcp lease acquired for an engine endpoint',
    );
    // The prefix is the server's (the pool may be 0.0.0.0/0).
    return lease.address;
  }

  /**
   * ReleaseAddress on a dhcp pool (the caller holds its lock): the address goes
   * back to the server through a probe with its MAC and address, then leaves
   * the record. A release that cannot be sent fails and keeps the lease; the
   * pool's release drops it (the server's lease then runs out). An address
   * with no lease (the gateway's, on the network's removal) has nothing to give back.
   */
  async releaseAddress(op: string, l: IpamLeaseRecord, ip: string): Promise<void> {
    const held = l.dhcp!.leases[ip];
    if (held) {
      const { link, probe } = this.links(op);
      link.forget(held.id);
      await probe.with(
        op,
        { ...this.probeSpec(this.lan(op, l, false), held.id, held.lease.mac), address: held.lease.address },
        (where) => link.release(where, held.lease),
      );
      this.d.log.info(
        { pool: l.poolId, address: ip, server: held.lease.server, owner: 'engine' },
        'dhcp lease released for an engine endpoint',
      );
    }
    delete l.dhcp!.leases[ip];
    l.addresses = l.addresses.filter((a) => a !== ip);
    this.d.store.put(KIND.ipamLease, l.poolId, l);
  }

  /** ReleasePool: leases still held are given back where possible; none outlives the pool. */
  async releasePool(op: string, l: IpamLeaseRecord): Promise<void> {
    for (const ip of Object.keys(l.dhcp!.leases))
      await bestEffort(this.d.log, 'dhcp release', ip, () => this.releaseAddress(op, l, ip));
  }

  private held(n: NetworkRecord, ip: string | undefined) {
    const l = n.dhcpPool ? this.d.store.get<IpamLeaseRecord>(KIND.ipamLease, n.dhcpPool) : undefined;
    const h = ip && l?.dhcp?.leases[plain(ip)];
    return h && l ? { l, ...h } : undefined;
  }

  /**
   * CreateEndpoint's MAC on a dhcp network: the one its lease was asked with
   * (undefined for ipvlan, whose children take the parent's). A MAC the user
   * gave (docker run --mac-address) is not the lease's: refused.
   */
  endpointMac(op: string, n: NetworkRecord, address: string | undefined, asked: string | undefined) {
    if (!n.dhcpPool) return asked;
    const h = this.held(n, address);
    if (!h)
      throw invalidArgument(
        op,
        String(address),
        `address ${address} was not leased through cnmd-ipam's ${DHCP_MODE} mode for network ${n.id}`,
      );
    if (n.driver !== 'macvlan') return asked;
    if (asked && asked.toLowerCase() !== h.lease.mac)
      throw invalidArgument(
        op,
        asked,
        `--mac-address ${asked}: the DHCP lease of ${address} was asked with ${h.lease.mac}; in ${IPAM_MODE_OPT}=${DHCP_MODE} leave the MAC to cnmd`,
      );
    return h.lease.mac;
  }

  /** After Join: the lease's router is the container's gateway, and the lease is renewed from the container. */
  joined(n: NetworkRecord, ep: EndpointRecord, sandboxKey: string, now = false): string | undefined {
    const h = this.held(n, ep.ipv4);
    if (!h) return undefined;
    const { link } = this.links('plugin join');
    const poolId = h.l.poolId;
    const ip = plain(h.lease.address);
    link.keep(
      { nsPath: sandboxKey, ifname: '', parent: n.options.parent, endpointId: h.id },
      h.lease,
      h.l.dhcp!.options,
      (next) => this.renewed(poolId, ip, next),
      { now, fixedAddress: true },
    );
    return h.lease.gateway;
  }

  /** Leave: renewals stop (the lease is held until ReleaseAddress). */
  left(n: NetworkRecord, ep: EndpointRecord): void {
    const h = this.held(n, ep.ipv4);
    if (h) this.links('plugin leave').link.forget(h.id);
  }

  private async renewed(poolId: string, ip: string, next: LinkLease): Promise<void> {
    await this.d.locks.lock([LOCK.lease(poolId)], async () => {
      const l = this.d.store.get<IpamLeaseRecord>(KIND.ipamLease, poolId);
      const h = l?.dhcp?.leases[ip];
      // Only a renewal of this address comes here (keep's fixedAddress: another one is refused there).
      if (!l || !h) return;
      h.lease = next;
      this.d.store.put(KIND.ipamLease, poolId, l);
    });
  }

  /** After a restart: every joined engine endpoint's lease is renewed at once, then kept. */
  resume(networks: NetworkRecord[], endpoints: EndpointRecord[]): void {
    const byId = new Map(networks.filter((n) => n.dhcpPool).map((n) => [n.id, n]));
    for (const ep of endpoints) {
      const n = byId.get(ep.networkId);
      if (n && ep.sandboxKey) this.joined(n, ep, ep.sandboxKey, true);
    }
  }
}
