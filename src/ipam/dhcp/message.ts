// DHCPv4 messages (RFC 2131 on BOOTP, options of RFC 2132): what a client
// sends and the fields it reads back. Replies are hostile input: every length
// is checked before it is read, and a malformed reply decodes to undefined.
import { bytesToIp, bytesToMac, ipToBytes, macToBytes } from '../../net/addr';

export const DHCP = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
} as const;

export const SERVER_PORT = 67;
export const CLIENT_PORT = 68;

const OPT = {
  pad: 0,
  subnetMask: 1,
  router: 3,
  dns: 6,
  hostname: 12,
  domain: 15,
  requestedIp: 50,
  leaseTime: 51,
  messageType: 53,
  serverId: 54,
  paramList: 55,
  message: 56,
  maxSize: 57,
  t1: 58,
  t2: 59,
  clientId: 61,
  end: 255,
} as const;

const MAGIC = 0x63825363;
const FIXED = 236;
const BROADCAST_FLAG = 0x8000;

export interface ClientMessage {
  type: (typeof DHCP)[keyof typeof DHCP];
  xid: number;
  mac: string;
  /** The option 61 bytes (type byte included). */
  clientId: Buffer;
  /** Ask the server to broadcast its reply (the interface has no address yet to take a unicast one). */
  broadcast?: boolean;
  /** Our address, once bound (RENEWING, REBINDING, RELEASE). */
  ciaddr?: string;
  requestedIp?: string;
  serverId?: string;
  hostname?: string;
}

export interface ServerReply {
  type: number;
  xid: number;
  mac: string;
  yiaddr: string;
  clientId?: Buffer;
  serverId?: string;
  /** Prefix length from the subnet mask (option 1). */
  prefix?: number;
  routers: string[];
  dns: string[];
  leaseSeconds?: number;
  t1?: number;
  t2?: number;
  /** A NAK's reason (option 56), for the log. */
  message?: string;
}

function ip4(ip: string): Buffer {
  const b = ipToBytes(ip);
  if (!b || b.length !== 4) throw new Error(`not an IPv4 address: ${ip}`);
  return b;
}

/** The bytes of a client's message, padded to BOOTP's 300-byte minimum. */
export function encodeClientMessage(m: ClientMessage): Buffer {
  const opts: Buffer[] = [];
  const opt = (code: number, data: Buffer) => opts.push(Buffer.from([code, data.length]), data);
  opt(OPT.messageType, Buffer.from([m.type]));
  opt(OPT.clientId, m.clientId);
  if (m.requestedIp) opt(OPT.requestedIp, ip4(m.requestedIp));
  if (m.serverId) opt(OPT.serverId, ip4(m.serverId));
  if (m.type !== DHCP.RELEASE && m.type !== DHCP.DECLINE) {
    const size = Buffer.alloc(2);
    size.writeUInt16BE(1500);
    opt(OPT.maxSize, size);
    opt(
      OPT.paramList,
      Buffer.from([OPT.subnetMask, OPT.router, OPT.dns, OPT.domain, OPT.leaseTime, OPT.t1, OPT.t2]),
    );
    if (m.hostname) opt(OPT.hostname, Buffer.from(m.hostname.slice(0, 63), 'ascii'));
  }
  opts.push(Buffer.from([OPT.end]));
  const head = Buffer.alloc(FIXED + 4);
  head[0] = 1; // BOOTREQUEST
  head[1] = 1; // Ethernet
  head[2] = 6;
  head.writeUInt32BE(m.xid >>> 0, 4);
  if (m.broadcast) head.writeUInt16BE(BROADCAST_FLAG, 10);
  if (m.ciaddr) ip4(m.ciaddr).copy(head, 12);
  const mac = macToBytes(m.mac);
  if (!mac) throw new Error(`not a MAC address: ${m.mac}`);
  mac.copy(head, 28);
  head.writeUInt32BE(MAGIC, FIXED);
  const out = Buffer.concat([head, ...opts]);
  return out.length >= 300 ? out : Buffer.concat([out, Buffer.alloc(300 - out.length)]);
}

function ips(data: Buffer): string[] {
  const out: string[] = [];
  for (let i = 0; i + 4 <= data.length; i += 4) out.push(bytesToIp(data.subarray(i, i + 4)));
  return out;
}

function maskPrefix(data: Buffer): number | undefined {
  if (data.length !== 4) return undefined;
  const n = data.readUInt32BE(0);
  const prefix = 32 - Math.log2((~n >>> 0) + 1);
  return Number.isInteger(prefix) ? prefix : undefined;
}

const u32 = (d: Buffer) => (d.length === 4 ? d.readUInt32BE(0) : undefined);

/** A server's reply (BOOTREPLY with the DHCP magic and a message type), else undefined. */
export function decodeServerReply(b: Buffer): ServerReply | undefined {
  if (b.length < FIXED + 4 || b[0] !== 2 || b[1] !== 1 || b[2] !== 6) return undefined;
  if (b.readUInt32BE(FIXED) !== MAGIC) return undefined;
  const r: ServerReply = {
    type: 0,
    xid: b.readUInt32BE(4),
    mac: bytesToMac(b.subarray(28, 34)),
    yiaddr: bytesToIp(b.subarray(16, 20)),
    routers: [],
    dns: [],
  };
  let i = FIXED + 4;
  while (i < b.length) {
    const code = b[i++];
    if (code === OPT.pad) continue;
    if (code === OPT.end) break;
    if (i >= b.length) return undefined;
    const len = b[i++];
    if (i + len > b.length) return undefined;
    const d = b.subarray(i, i + len);
    i += len;
    switch (code) {
      case OPT.messageType:
        r.type = d[0] ?? 0;
        break;
      case OPT.subnetMask:
        r.prefix = maskPrefix(d);
        break;
      case OPT.router:
        r.routers = ips(d);
        break;
      case OPT.dns:
        r.dns = ips(d);
        break;
      case OPT.serverId:
        r.serverId = ips(d)[0];
        break;
      case OPT.leaseTime:
        r.leaseSeconds = u32(d);
        break;
      case OPT.t1:
        r.t1 = u32(d);
        break;
      case OPT.t2:
        r.t2 = u32(d);
        break;
      case OPT.clientId:
        r.clientId = Buffer.from(d);
        break;
      case OPT.message:
        r.message = d.toString('latin1').replace(/[^\x20-\x7e]/g, '?');
        break;
    }
  }
  return r.type ? r : undefined;
}

/**
 * The client id of an endpoint (option 61): type 0 (not a hardware address)
 * and `cnmd:` + its id, so the lease follows the endpoint whatever its MAC
 * (ipvlan children all share their parent's).
 */
export function clientIdOf(endpointId: string): Buffer {
  return Buffer.concat([Buffer.from([0]), Buffer.from(`cnmd:${endpointId}`, 'ascii')]);
}
