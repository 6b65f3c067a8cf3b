// One embedded DNS server per sandbox at 127.0.0.11:53, UDP and TCP. Its
// sockets are opened inside the sandbox's netns by native/ and served here by
// fd (dgram bind({fd}), net.Server listen({fd})): no DNAT, no process, and it
// can never answer on a host interface. Bad packets are dropped or answered
// FORMERR; nothing a sandbox sends can stop the resolver of another.
//
// Every query tries the fast path first (fastpath.ts: plain A/AAAA/PTR of a
// local name, answered synchronously from the bytes); what it leaves goes
// the general way below: dns-packet, forwarding, truncation.
import * as dgram from 'node:dgram';
import * as dns from 'node:dns';
import * as net from 'node:net';
import * as packet from 'dns-packet';
import {
  native,
  AF_INET,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
  SO_RCVBUF,
  SO_REUSEADDR,
  SO_SNDBUF,
  SocketSpec,
} from '../../native';
import { CnmdError } from '../errors';
import type { Logger } from '../log';
import { EDNS_UDP_SIZE, FastPath, TTL, UDP_MAX } from './fastpath';
import type { Forwarder } from './forwarder';
import { lookup, ptrToIp, RecordSource, reverse } from './records';

export { TTL };
export const RESOLVER_IP = '127.0.0.11';
const MAX_TCP_CONNECTIONS = 64;
/** A TCP connection with no traffic either way for this long is closed (a paused one included). */
const TCP_IDLE_MS = 10_000;
/** Per TCP connection: answers being made, and bytes waiting to be sent, before reading pauses. */
const TCP_MAX_INFLIGHT = 16;
const TCP_HIGH_WATER = 16 << 10;
/** Bytes queued for a client past which it is dropped (answers finished after the pause). */
const TCP_MAX_QUEUED = 1 << 20;
/** A connection paused because its client does not read its answers is closed after this long. */
const TCP_STALL_MS = 5_000;
/** SO_SNDBUF/SO_RCVBUF of the resolver's TCP sockets (the kernel doubles it): one largest answer and more. */
const TCP_KERNEL_BUFFER = 128 << 10;
/** Forwarded queries one sandbox may have in flight: a flood from one cannot starve the others. */
const MAX_FORWARDS_PER_SANDBOX = 128;

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3 } as const;

export interface ResolverContext {
  sandboxId: string;
  records: RecordSource;
  forwarder: Forwarder;
  /** Upstream servers for names the sandbox's networks do not know. */
  upstreams: () => string[];
  log: Logger;
}

/** The raw header of a query we could not decode: answer FORMERR with its id, or drop it. */
function formErr(msg: Buffer): Buffer | undefined {
  if (msg.length < 12) return undefined;
  const out = Buffer.alloc(12);
  msg.copy(out, 0, 0, 2); // id
  out[2] = 0x80 | (msg[2] & 0x79); // QR, opcode and RD echoed
  out[3] = RCODE.FORMERR;
  return out;
}

function servfail(q: packet.Packet): Buffer {
  return packet.encode({
    id: q.id,
    type: 'response',
    flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE | RCODE.SERVFAIL,
    questions: q.questions,
  });
}

function queryOpt(q: packet.Packet): packet.OptAnswer | undefined {
  return (q.additionals ?? []).find((a): a is packet.OptAnswer => a.type === 'OPT');
}

/** The UDP payload size the client accepts (EDNS0 OPT), at least 512. */
function udpLimit(q: packet.Packet): number {
  return Math.max(UDP_MAX, Math.min(queryOpt(q)?.udpPayloadSize ?? UDP_MAX, 65535));
}

/** An EDNS0 client gets our OPT back (RFC 6891 6.1.1), its DO bit copied (RFC 3225), as on the fast path. */
function replyOpt(q: packet.Packet): packet.Answer[] {
  const opt = queryOpt(q);
  if (!opt) return [];
  const flags = (opt.flags ?? 0) & 0x8000;
  return [
    {
      type: 'OPT',
      name: '.',
      udpPayloadSize: EDNS_UDP_SIZE,
      extendedRcode: 0,
      ednsVersion: 0,
      flags,
      flag_do: flags !== 0,
      options: [],
    },
  ];
}

/**
 * Replies go to the address the query came from, always an IP literal: no
 * dns.lookup (validation and a tick per datagram), the send happens at once.
 */
const literalLookup: NonNullable<dgram.SocketOptions['lookup']> = (address, options, cb) => {
  if (net.isIPv4(address)) cb(null, address, 4);
  else dns.lookup(address, options, cb);
};

/** The resolver's sockets, UDP then TCP, to open inside a sandbox's netns. */
export const RESOLVER_SOCKETS: SocketSpec[] = [
  [AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0],
  [AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0],
];

const TCP_BACKLOG = 511; // node's own default for listen()

/**
 * Binds RESOLVER_SOCKETS' fds to 127.0.0.11:53 (the netns's loopback must be
 * up) and starts the TCP listen: from here the kernel queues queries and
 * connections until a resolver serves them.
 */
export function armResolverSockets(fds: number[]): void {
  for (const fd of fds) {
    // A sandbox may run its own DNS server on *:53; with SO_REUSEADDR on both
    // sides they can coexist (see docs/design-notes.md: the DNAT alternative).
    native.setsockoptInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    native.bindInet(fd, RESOLVER_IP, 53);
  }
  // Accepted connections inherit these: fixed kernel buffers instead of autotuned megabytes, so a
  // client that never reads stalls after a few answers and onTcp's backpressure takes over.
  native.setsockoptInt(fds[1], SOL_SOCKET, SO_SNDBUF, TCP_KERNEL_BUFFER);
  native.setsockoptInt(fds[1], SOL_SOCKET, SO_RCVBUF, TCP_KERNEL_BUFFER);
  native.listenFd(fds[1], TCP_BACKLOG);
}

export class SandboxResolver {
  private readonly ctx: ResolverContext;
  private udp?: dgram.Socket;
  /** The UDP socket's fd, for replies sent straight with sendto (-1: closed). */
  private udpFd = -1;
  /** Adopted sockets not served yet (UDP, TCP). */
  private pending?: number[];
  private closed = false;
  private tcp?: net.Server;
  private readonly conns = new Set<net.Socket>();
  private forwarding = 0;
  private readonly fast: Pick<FastPath, 'answer'>;

  private constructor(ctx: ResolverContext, fastPath = true) {
    this.ctx = ctx;
    this.fast = fastPath ? new FastPath(ctx.records, ctx.sandboxId) : { answer: () => undefined };
  }

  /**
   * A resolver without sockets, answering only what answer() is handed; with
   * fastPath false every query goes the general way, so tests can hold the
   * fast path to the general path's answers.
   */
  static detached(ctx: ResolverContext, o: { fastPath?: boolean } = {}): SandboxResolver {
    return new SandboxResolver(ctx, o.fastPath ?? true);
  }

  /**
   * Serves 127.0.0.11:53 (UDP, TCP) inside the netns at nsPath: on `armed`
   * (resolverSockets() opened there and given to armResolverSockets; this
   * resolver owns them from now on), else on sockets opened here.
   */
  static async start(nsPath: string, ctx: ResolverContext, armed?: number[]): Promise<SandboxResolver> {
    let fds: number[] = [];
    try {
      if (armed) fds = armed;
      else {
        fds = native.socketsAt(nsPath, RESOLVER_SOCKETS);
        armResolverSockets(fds);
      }
    } catch (e) {
      for (const fd of fds) native.close(fd);
      throw new CnmdError(
        'KERNEL_ERROR',
        `dns: cannot open ${RESOLVER_IP}:53 in ${nsPath}: ${(e as Error).message}`,
        { op: 'dns start', object: ctx.sandboxId, cause: e },
      );
    }
    const r = SandboxResolver.adopt(ctx, fds);
    await r.serve();
    return r;
  }

  /**
   * A resolver owning armed sockets (bound and listening: the kernel queues
   * queries and connections from here on) that serves them once serve() runs.
   * A new sandbox's resolver is adopted before the API answers and served
   * right after, off the answer's path.
   */
  static adopt(ctx: ResolverContext, armed: number[]): SandboxResolver {
    const r = new SandboxResolver(ctx);
    r.pending = armed;
    return r;
  }

  /** Starts reading the adopted sockets; a resolver closed meanwhile stays closed. */
  async serve(): Promise<void> {
    const fds = this.pending;
    if (!fds) return;
    this.pending = undefined;
    const [udpFd, tcpFd] = fds;
    const udp = dgram.createSocket({ type: 'udp4', lookup: literalLookup });
    this.udp = udp;
    udp.on('message', (msg, rinfo) => this.onUdp(msg, rinfo));
    udp.on('error', (e) => this.ctx.log.warn({ err: e, sandbox: this.ctx.sandboxId }, 'dns udp error'));
    await new Promise<void>((resolve) => udp.bind({ fd: udpFd }, () => resolve()));
    if (this.closed) {
      native.close(tcpFd);
      return;
    }
    this.udpFd = udpFd;
    const tcp = net.createServer((c) => this.onTcp(c));
    this.tcp = tcp;
    tcp.maxConnections = MAX_TCP_CONNECTIONS;
    tcp.on('error', (e) => this.ctx.log.warn({ err: e, sandbox: this.ctx.sandboxId }, 'dns tcp error'));
    await new Promise<void>((resolve) => tcp.listen({ fd: tcpFd }, () => resolve()));
  }

  private onUdp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const reply = this.fastAnswer(msg, false);
    if (reply) this.sendUdp(reply, rinfo);
    else void this.slowUdp(msg, rinfo);
  }

  /**
   * One sendto from native (node's dgram send spends more in JS than the kernel
   * spends delivering); when the socket buffer is full, the queued dgram send.
   */
  private sendUdp(reply: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.udpFd >= 0 && native.udpSend(this.udpFd, reply, rinfo.address, rinfo.port) >= 0) return;
    this.udp?.send(reply, rinfo.port, rinfo.address);
  }

  private async slowUdp(msg: Buffer, rinfo: dgram.RemoteInfo): Promise<void> {
    try {
      const reply = await this.general(msg, false);
      if (reply) this.sendUdp(reply, rinfo);
    } catch (e) {
      this.ctx.log.debug({ err: e }, 'dns: dropped a query');
    }
  }

  /** The fast path's reply, or undefined; it runs in the socket's event handler, so it must never throw. */
  private fastAnswer(msg: Buffer, tcp: boolean): Buffer | undefined {
    try {
      return this.fast.answer(msg, tcp);
    } catch (e) {
      this.ctx.log.debug({ err: e }, 'dns: fast path failed, answering the general way');
      return undefined;
    }
  }

  /**
   * DNS over TCP with backpressure: a client may pipeline queries, but reading stops while
   * TCP_MAX_INFLIGHT answers are being made or TCP_HIGH_WATER bytes wait to be sent, and
   * resumes on drain. A client that sends and never reads therefore costs at most about
   * one read chunk, the queued answers and TCP_MAX_QUEUED, and is closed once it has been
   * stalled for TCP_STALL_MS. Without this, one sandbox grew the daemon to gigabytes.
   */
  private onTcp(c: net.Socket): void {
    this.conns.add(c);
    c.setTimeout(TCP_IDLE_MS, () => c.destroy());
    let buf: Buffer = Buffer.alloc(0);
    let inflight = 0;
    let stall: NodeJS.Timeout | undefined;
    const busy = () => inflight >= TCP_MAX_INFLIGHT || c.writableLength >= TCP_HIGH_WATER;
    const pump = (): void => {
      while (!busy() && buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        inflight++;
        void this.answer(msg, true).then(
          (reply) => {
            inflight--;
            if (c.destroyed) return;
            if (reply) {
              const len = Buffer.alloc(2);
              len.writeUInt16BE(reply.length);
              // Answers finished in one tick go out as one writev, not one write request each.
              if (!c.writableCorked) {
                c.cork();
                process.nextTick(() => c.uncork());
              }
              c.write(len);
              c.write(reply);
              if (c.writableLength > TCP_MAX_QUEUED) return void c.destroy();
            }
            pump();
          },
          () => c.destroy(),
        );
      }
      if (busy()) {
        c.pause();
        stall ??= setTimeout(() => c.destroy(), TCP_STALL_MS);
      } else {
        if (c.isPaused()) c.resume();
        clearTimeout(stall);
        stall = undefined;
      }
    };
    c.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      pump();
    });
    c.on('drain', pump);
    c.on('error', () => c.destroy());
    c.on('close', () => {
      clearTimeout(stall);
      this.conns.delete(c);
    });
  }

  /** The reply to one query (undefined: drop it). */
  async answer(msg: Buffer, tcp: boolean): Promise<Buffer | undefined> {
    return this.fastAnswer(msg, tcp) ?? this.general(msg, tcp);
  }

  private async general(msg: Buffer, tcp: boolean): Promise<Buffer | undefined> {
    if (msg.length === 0) return undefined;
    let q: packet.Packet;
    try {
      q = packet.decode(msg);
    } catch {
      return formErr(msg);
    }
    if (q.type !== 'query' || (q.questions ?? []).length !== 1) return formErr(msg);
    const question = q.questions![0];
    const local = this.local(q, question);
    if (local) return this.fit(local, q, tcp);
    const upstreams = this.ctx.upstreams();
    if (!upstreams.length || this.forwarding >= MAX_FORWARDS_PER_SANDBOX) return servfail(q);
    this.forwarding++;
    try {
      return (await this.ctx.forwarder.forward(msg, upstreams, tcp)) ?? servfail(q);
    } finally {
      this.forwarding--;
    }
  }

  /** A reply from the sandbox's networks, or undefined to forward. */
  private local(q: packet.Packet, question: packet.Question): packet.Packet | undefined {
    const base = {
      id: q.id,
      type: 'response' as const,
      flags:
        packet.AUTHORITATIVE_ANSWER |
        packet.RECURSION_AVAILABLE |
        ((q.flags ?? 0) & packet.RECURSION_DESIRED),
      questions: [question],
    };
    if (question.class !== 'IN') return undefined;
    const name = question.name;
    switch (question.type) {
      case 'A':
      case 'AAAA': {
        const found = lookup(this.ctx.records, this.ctx.sandboxId, name, question.type === 'A' ? 4 : 6);
        if (!found.exists) return undefined;
        // AAAA of an IPv4-only name: an empty answer, not a forward (as Docker).
        return {
          ...base,
          answers: found.addresses.map(
            (data) => ({ name, type: question.type, class: 'IN', ttl: TTL, data }) as packet.Answer,
          ),
        };
      }
      case 'PTR': {
        const ip = ptrToIp(name);
        const target = ip && reverse(this.ctx.records, this.ctx.sandboxId, ip);
        if (!target) return undefined;
        return { ...base, answers: [{ name, type: 'PTR', class: 'IN', ttl: TTL, data: `${target}.` }] };
      }
      case 'MX': {
        // A sandbox name has no mail exchanger: an empty answer (Docker's handleMXQuery).
        const found = lookup(this.ctx.records, this.ctx.sandboxId, name, 4);
        return found.exists ? { ...base, answers: [] } : undefined;
      }
      default:
        return undefined;
    }
  }

  /** Encodes a reply; over UDP, larger than the client's limit: truncated with TC. */
  private fit(local: packet.Packet, q: packet.Packet, tcp: boolean): Buffer {
    const reply: packet.Packet = { ...local, additionals: replyOpt(q) };
    let out = packet.encode(reply);
    if (tcp) return out;
    const limit = udpLimit(q);
    if (out.length <= limit) return out;
    const answers = [...(reply.answers ?? [])];
    while (answers.length && out.length > limit) {
      answers.pop();
      out = packet.encode({ ...reply, flags: (reply.flags ?? 0) | packet.TRUNCATED_RESPONSE, answers });
    }
    return out;
  }

  close(): void {
    this.closed = true;
    if (this.pending) for (const fd of this.pending) native.close(fd);
    this.pending = undefined;
    this.udpFd = -1;
    this.udp?.close();
    this.tcp?.close();
    for (const c of this.conns) c.destroy();
  }
}
