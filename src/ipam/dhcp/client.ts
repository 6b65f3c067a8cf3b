// A DHCPv4 client speaking from an endpoint's own interface: a UDP socket on
// port 68 opened inside the sandbox's netns and bound to the interface
// (SO_BINDTOIFINDEX), so requests leave with the endpoint's MAC on the
// parent's LAN. Before the interface has an address the client asks for
// broadcast replies (it could not take a unicast to an address it lacks);
// once bound it renews by unicast from that address (RFC 2131 4.4.5).
import * as crypto from 'node:crypto';
import * as dgram from 'node:dgram';
import { CnmdError } from '../../errors';
import type { LeaseLink, LinkLease } from '../ipam';
import { contains, ipToBig, parseCidr } from '../../net/addr';
import { Handle } from '../../netlink/handle';
import { NUD_INCOMPLETE } from '../../netlink/rtnl/constants';
import { AF_INET, SOCK_DGRAM, SOCK_NONBLOCK, SOL_SOCKET, SO_REUSEADDR, native } from '../../../native';
import {
  CLIENT_PORT,
  DHCP,
  SERVER_PORT,
  ServerReply,
  clientIdOf,
  decodeServerReply,
  encodeClientMessage,
  type ClientMessage,
} from './message';

const SO_BROADCAST = 6;
/** SO_BINDTODEVICE by index (Linux 5.0): an int, where SO_BINDTODEVICE takes a name. */
const SO_BINDTOIFINDEX = 62;
const BROADCAST = '255.255.255.255';

export type DhcpLink = LeaseLink;
export type DhcpLease = LinkLease;

/** Why an exchange got no lease: no answer in time, or a NAK (the server refuses the address). */
export class NoLease extends Error {
  constructor(
    readonly why: 'timeout' | 'nak',
    message: string,
  ) {
    super(message);
  }
}

/** Resends: after 1 s, then doubling up to 4 s, until the deadline (the exchange's whole budget). */
const FIRST_RESEND_MS = 1000;
const MAX_RESEND_MS = 4000;

/** One socket on the interface for one exchange (a few messages), closed after it. */
class Port {
  private readonly sock: dgram.Socket;
  private readonly waiters = new Set<(r: ServerReply) => void>();
  lastError?: Error;

  private constructor(sock: dgram.Socket) {
    this.sock = sock;
    sock.on('message', (msg) => {
      const r = decodeServerReply(msg);
      if (r) for (const w of this.waiters) w(r);
    });
    // A send error (ENETUNREACH while the interface settles) is retried by the resend, and named in
    // the error when no answer ever comes.
    sock.on('error', (e) => (this.lastError = e));
  }

  static async open(link: DhcpLink): Promise<{ port: Port; mac: string }> {
    const iface = await Handle.inNetns(link.nsPath, (h) => h.linkGet(link.ifname));
    if (!iface.mac)
      throw new CnmdError('INVALID_ARGUMENT', `dhcp: ${link.ifname} has no MAC address`, {
        op: 'dhcp',
        object: link.ifname,
      });
    const [fd] = native.socketsAt(link.nsPath, [[AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0]]);
    try {
      native.setsockoptInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
      native.setsockoptInt(fd, SOL_SOCKET, SO_BROADCAST, 1);
      native.setsockoptInt(fd, SOL_SOCKET, SO_BINDTOIFINDEX, iface.index);
      native.bindInet(fd, '0.0.0.0', CLIENT_PORT);
    } catch (e) {
      native.close(fd);
      throw e;
    }
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => sock.bind({ fd }, () => resolve()));
    return { port: new Port(sock), mac: iface.mac };
  }

  /**
   * Sends msg (again at each resend, a new xid each try is not needed: the
   * same xid matches a late answer to an earlier copy) until a reply `accept`
   * takes, or the deadline passes (undefined).
   */
  async exchange(
    msg: Buffer,
    to: string,
    accept: (r: ServerReply) => boolean,
    deadline: number,
  ): Promise<ServerReply | undefined> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let wait = FIRST_RESEND_MS;
      const done = (r: ServerReply | undefined) => {
        clearTimeout(timer);
        this.waiters.delete(onReply);
        resolve(r);
      };
      const onReply = (r: ServerReply) => {
        if (accept(r)) done(r);
      };
      const send = () => {
        const left = deadline - Date.now();
        if (left <= 0) return done(undefined);
        this.sock.send(msg, SERVER_PORT, to);
        timer = setTimeout(send, Math.min(wait, left));
        wait = Math.min(wait * 2, MAX_RESEND_MS);
      };
      this.waiters.add(onReply);
      send();
    });
  }

  /** One message, no answer expected (DHCPRELEASE). */
  async sendOnce(msg: Buffer, to: string): Promise<void> {
    await new Promise<void>((resolve, reject) =>
      this.sock.send(msg, SERVER_PORT, to, (e) => (e ? reject(e) : resolve())),
    );
  }

  close(): void {
    this.sock.close();
  }
}

async function withPort<T>(link: DhcpLink, fn: (port: Port, mac: string) => Promise<T>): Promise<T> {
  const { port, mac } = await Port.open(link);
  try {
    return await fn(port, mac);
  } finally {
    port.close();
  }
}

const newXid = () => crypto.randomBytes(4).readUInt32BE(0);

function noAnswer(port: Port, timeoutMs: number, what = 'no DHCP server answered'): NoLease {
  const e = port.lastError as (Error & { code?: string }) | undefined;
  return new NoLease(
    'timeout',
    `${what} in ${Math.round(timeoutMs / 1000)} s${e ? ` (the last send failed: ${e.code ?? e.message})` : ''}`,
  );
}

/** A reply to this client's message: same xid, same hardware address, and our client id when it echoes one. */
function ours(r: ServerReply, xid: number, mac: string, clientId: Buffer): boolean {
  return r.xid === xid && r.mac === mac && (!r.clientId || r.clientId.equals(clientId));
}

/** A unicast IPv4 address a host may hold or route through (not 0/8, loopback, multicast, reserved or broadcast). */
function unicast(ip: string): boolean {
  const a = ipToBig(ip);
  if (!a || a.family !== 4) return false;
  const first = Number(a.value >> 24n);
  return first !== 0 && first !== 127 && first < 224;
}

/**
 * What the server's ACK says, as a lease; its fields are the LAN's word, so
 * only what can be configured is kept: a unicast address, a mask of 1-32 bits
 * (else /24), routers that are hosts of that subnet, unicast DNS servers, and times
 * ordered T1 <= T2 <= lease with a lease of at least 10 s.
 */
export function leaseOf(ack: ServerReply, sentAt: number, mac: string, fallbackServer: string): DhcpLease {
  const leaseSeconds = Math.max(10, ack.leaseSeconds ?? 3600);
  const t1 = Math.min(leaseSeconds, Math.max(1, ack.t1 ?? Math.floor(leaseSeconds / 2)));
  const t2 = Math.min(leaseSeconds, Math.max(t1, ack.t2 ?? Math.floor((leaseSeconds * 7) / 8)));
  const prefix = ack.prefix !== undefined && ack.prefix >= 1 ? ack.prefix : 24;
  const subnet = parseCidr(`${ack.yiaddr}/${prefix}`)!;
  // A router is a host of the subnet: not its network or broadcast address (the kernel refuses those as a
  // gateway, EINVAL, and the join failed), except on /31 and /32 where every address is a host.
  const host = (v: bigint) => prefix >= 31 || (v !== subnet.base && v !== subnet.base + subnet.size - 1n);
  const onLink = (ip: string) => {
    const a = ipToBig(ip);
    return !!a && unicast(ip) && ip !== ack.yiaddr && contains(subnet, 4, a.value) && host(a.value);
  };
  return {
    address: `${ack.yiaddr}/${prefix}`,
    gateway: ack.routers.find(onLink),
    dns: ack.dns.filter(unicast).slice(0, 3),
    server: ack.serverId && unicast(ack.serverId) ? ack.serverId : fallbackServer,
    leaseSeconds,
    t1,
    t2,
    boundAt: sentAt,
    mac,
  };
}

function base(link: DhcpLink, mac: string, type: ClientMessage['type'], xid: number): ClientMessage {
  return { type, xid, mac, clientId: clientIdOf(link.endpointId), hostname: link.hostname };
}

/** REQUEST until ACK or NAK (a NAK throws NoLease('nak')). */
async function request(
  port: Port,
  m: ClientMessage,
  to: string,
  deadline: number,
): Promise<{ ack?: ServerReply; sentAt: number }> {
  const sentAt = Date.now();
  const r = await port.exchange(
    encodeClientMessage(m),
    to,
    (r) =>
      (r.type === DHCP.NAK || (r.type === DHCP.ACK && unicast(r.yiaddr))) &&
      ours(r, m.xid, m.mac, m.clientId),
    deadline,
  );
  if (r?.type === DHCP.NAK)
    throw new NoLease(
      'nak',
      `the DHCP server refused the address (DHCPNAK${r.message ? `: ${r.message}` : ''})`,
    );
  return { ack: r, sentAt };
}

/** DISCOVER, OFFER, REQUEST, ACK: a new lease, or NoLease when no server answers by the deadline. */
export async function acquire(link: DhcpLink, timeoutMs: number): Promise<DhcpLease> {
  const deadline = Date.now() + timeoutMs;
  return withPort(link, async (port, mac) => {
    const xid = newXid();
    const discover = { ...base(link, mac, DHCP.DISCOVER, xid), broadcast: true };
    const offer = await port.exchange(
      encodeClientMessage(discover),
      BROADCAST,
      (r) =>
        r.type === DHCP.OFFER &&
        unicast(r.yiaddr) &&
        !!r.serverId &&
        unicast(r.serverId) &&
        ours(r, xid, mac, discover.clientId),
      deadline,
    );
    if (!offer || !offer.serverId) throw noAnswer(port, timeoutMs);
    const { ack, sentAt } = await request(
      port,
      {
        ...base(link, mac, DHCP.REQUEST, xid),
        broadcast: true,
        requestedIp: offer.yiaddr,
        serverId: offer.serverId,
      },
      BROADCAST,
      deadline,
    );
    if (!ack)
      throw noAnswer(
        port,
        timeoutMs,
        `DHCP server ${offer.serverId} offered ${offer.yiaddr} and did not answer the request`,
      );
    return leaseOf(ack, sentAt, mac, offer.serverId);
  });
}

/**
 * Extends a bound lease: unicast to its server (RENEWING), or broadcast to
 * any (REBINDING), from the address itself.
 */
export async function renew(
  link: DhcpLink,
  lease: DhcpLease,
  rebinding: boolean,
  timeoutMs: number,
): Promise<DhcpLease> {
  if (!link.ifname) link = { ...link, ifname: await holderOf(link, lease) };
  return withPort(link, async (port, mac) => {
    const m = { ...base(link, mac, DHCP.REQUEST, newXid()), ciaddr: lease.address.split('/')[0] };
    const { ack, sentAt } = await request(
      port,
      m,
      rebinding ? BROADCAST : lease.server,
      Date.now() + timeoutMs,
    );
    if (!ack) throw noAnswer(port, timeoutMs);
    return leaseOf(ack, sentAt, mac, lease.server);
  });
}

/**
 * The interface holding the lease's address in the link's netns: where a
 * link is named by its holder (an engine container's, renamed by the engine
 * after the join). None (not configured yet, or taken off) is UNAVAILABLE,
 * which a renewal retries; a netns that is gone is NOT_FOUND.
 */
async function holderOf(link: DhcpLink, lease: DhcpLease): Promise<string> {
  const ip = lease.address.split('/')[0];
  return Handle.inNetns(link.nsPath, async (h) => {
    const a = (await h.addrList({ family: 4 })).find((x) => x.address === ip);
    if (!a)
      throw new CnmdError('UNAVAILABLE', `dhcp renew: no interface in ${link.nsPath} holds ${ip}`, {
        op: 'dhcp renew',
        object: ip,
      });
    return (await h.linkGet(a.index)).name;
  });
}

/** How long a release waits for its next hop's ARP (the interface goes right after it). */
const RELEASE_ARP_MS = 1000;

/**
 * Gives the address back (DHCPRELEASE, unicast to the lease's server; no
 * answer comes). The datagram waits in the kernel for ARP when the next hop's
 * entry has expired (leases last hours, ARP entries minutes), and the
 * interface is removed right after a release: so this resolves once the
 * next hop is resolved (or after a bounded wait).
 */
export async function release(link: DhcpLink, lease: DhcpLease): Promise<void> {
  await withPort(link, async (port, mac) => {
    const m = {
      ...base(link, mac, DHCP.RELEASE, newXid()),
      ciaddr: lease.address.split('/')[0],
      serverId: lease.server,
      hostname: undefined,
    };
    await port.sendOnce(encodeClientMessage(m), lease.server);
  });
  const server = ipToBig(lease.server);
  const subnet = parseCidr(lease.address);
  const hop = server && subnet && contains(subnet, 4, server.value) ? lease.server : lease.gateway;
  if (!hop) return;
  const deadline = Date.now() + RELEASE_ARP_MS;
  await Handle.inNetns(link.nsPath, async (h) => {
    for (;;) {
      const n = (await h.neighList({ dev: link.ifname, family: 4 })).find((x) => x.ip === hop);
      if (!n || !(n.state & NUD_INCOMPLETE) || Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  });
}

/**
 * Tells the server its offer is taken on the LAN (DHCPDECLINE, RFC 2131
 * 4.4.1): broadcast, as the client holds no address, with the address and the
 * server's id. The server then offers another.
 */
export async function decline(link: DhcpLink, lease: DhcpLease): Promise<void> {
  await withPort(link, async (port, mac) => {
    const m = {
      ...base(link, mac, DHCP.DECLINE, newXid()),
      requestedIp: lease.address.split('/')[0],
      serverId: lease.server,
      hostname: undefined,
    };
    await port.sendOnce(encodeClientMessage(m), BROADCAST);
  });
}
