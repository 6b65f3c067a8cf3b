// The userland proxy: one per daemon, for every published port. It carries
// what iptables DNAT cannot: connections to the host's loopback (127.0.0.1,
// ::1), which the nat OUTPUT jump skips in proxy mode, as Docker's does, and IPv6
// clients of sandboxes without IPv6 (ip6tables cannot DNAT to IPv4), as docker-proxy on [::].
//
// TCP: one listener per family on an ephemeral port; nat OUTPUT (and, for IPv6,
// PREROUTING) REDIRECTs published ports there, and SO_ORIGINAL_DST (native.originalDst)
// says which address and port the client dialled; native.relayStart then moves the bytes
// with splice(2) on a native thread (JS streams remain the fallback). A 10,000-port range costs one listener
// and one iptables rule, not 10,000 processes (docker-proxy) or sockets.
// UDP: REDIRECT would hide the original port from a datagram socket in node,
// so each published UDP port gets a socket of its own on each address it serves.
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { native } from '../../native';
import { CnmdError } from '../errors';
import type { Logger } from '../log';

export interface ProxyMapping {
  proto: 'tcp' | 'udp' | 'sctp';
  /** The host address served: a loopback address, an IPv6 address, or '::' for every IPv6 address. */
  address: string;
  hostPort: number;
  hostPortEnd?: number;
  containerIP: string;
  containerPort: number;
}

interface Entry {
  owner: string;
  m: ProxyMapping;
}

const UDP_IDLE_MS = 30_000;

export class UserlandProxy {
  private readonly log: Logger;
  private readonly tcp: Entry[] = [];
  private readonly udp = new Map<string, dgram.Socket[]>();
  private servers: { family: 4 | 6; server: net.Server }[] = [];
  private ports: { 4?: number; 6?: number } = {};

  constructor(log: Logger) {
    this.log = log;
  }

  /** Starts the TCP listeners; returns their ports (REDIRECT targets) per family. */
  async start(): Promise<{ 4?: number; 6?: number }> {
    // IPv6 on every address: REDIRECT from PREROUTING hands over external IPv6 clients at
    // the address they arrived on (only for ports of sandboxes without IPv6; a connection
    // straight to this port finds no mapping and is closed).
    for (const [family, host] of [
      [4, '127.0.0.1'],
      [6, '::'],
    ] as const) {
      // pauseOnConnect: node reads nothing, so the connection can be handed to the native relay whole.
      const server = net.createServer({ pauseOnConnect: true }, (c) => this.onConnection(c, family));
      server.on('error', (e) => this.log.error({ err: e, family }, 'proxy listener failed'));
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host, port: 0, ipv6Only: family === 6 }, () => resolve());
        });
      } catch (e) {
        // No ::1 (IPv6 disabled): IPv6 loopback access is simply not offered.
        if (family === 4) throw e;
        this.log.warn({ err: e }, 'no IPv6 loopback: the proxy serves IPv4 only');
        continue;
      }
      this.servers.push({ family, server });
      this.ports[family] = (server.address() as net.AddressInfo).port;
    }
    return this.ports;
  }

  get redirectPorts(): { 4?: number; 6?: number } {
    return this.ports;
  }

  /** The mapping for a connection REDIRECTed from address:port (the listener's family decides '::'). */
  private lookup(address: string, port: number, family: 4 | 6): Entry | undefined {
    return this.tcp.find(
      (e) =>
        port >= e.m.hostPort &&
        port <= (e.m.hostPortEnd ?? e.m.hostPort) &&
        (e.m.address === address || (family === 6 && e.m.address === '::')) &&
        e.m.address.includes(':') === (family === 6),
    );
  }

  private onConnection(client: net.Socket, family: 4 | 6): void {
    let target: { host: string; port: number } | undefined;
    try {
      const fd = (client as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (fd === undefined || fd < 0) throw new Error('no fd for the accepted socket');
      const orig = native.originalDst(fd, family);
      const e = this.lookup(orig.address, orig.port, family);
      if (e) target = { host: e.m.containerIP, port: e.m.containerPort + (orig.port - e.m.hostPort) };
    } catch (err) {
      this.log.warn({ err }, 'proxy: cannot read the original destination');
    }
    if (!target) {
      client.destroy();
      return;
    }
    // The fast path: splice(2) on a native thread, no JS per chunk.
    try {
      const fd = (client as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (fd !== undefined && fd >= 0) {
        native.relayStart(fd, target.host, target.port);
        client.destroy(); // closes node's fd; the relay holds its own
        return;
      }
    } catch (err) {
      this.log.debug({ err }, 'proxy: native relay unavailable, relaying in JS');
    }
    const upstream = net.connect(target);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', () => upstream.end());
    upstream.on('close', () => client.end());
  }

  /** Adds an owner's TCP mappings (served by the shared listeners) and UDP sockets. */
  async add(owner: string, mappings: ProxyMapping[]): Promise<void> {
    const opened: dgram.Socket[] = [];
    try {
      for (const m of mappings) {
        if (m.proto === 'tcp') continue;
        if (m.proto !== 'udp') continue; // SCTP: no loopback proxy, as Docker's proxy does not relay it either
        for (let p = m.hostPort; p <= (m.hostPortEnd ?? m.hostPort); p++) {
          const host = m.address;
          const s = await this.udpRelay(host, p, m.containerIP, m.containerPort + (p - m.hostPort)).catch(
            (e) => {
              // No IPv6 on this host (no ::1): IPv6 is simply not offered, as for the TCP listener.
              if ((host === '::1' || host === '::') && (e as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL')
                return undefined;
              throw e;
            },
          );
          if (s) opened.push(s);
        }
      }
    } catch (e) {
      for (const s of opened) s.close();
      throw new CnmdError(
        'CONFLICT',
        `port publish: the userland proxy cannot bind a UDP port: ${(e as Error).message}`,
        { op: 'port publish', object: owner, cause: e },
      );
    }
    for (const m of mappings) if (m.proto === 'tcp') this.tcp.push({ owner, m });
    if (opened.length) this.udp.set(owner, [...(this.udp.get(owner) ?? []), ...opened]);
  }

  remove(owner: string): void {
    for (let i = this.tcp.length - 1; i >= 0; i--) if (this.tcp[i].owner === owner) this.tcp.splice(i, 1);
    for (const s of this.udp.get(owner) ?? []) s.close();
    this.udp.delete(owner);
  }

  /** One loopback UDP socket relaying to the container: a client gets its own upstream socket, dropped when idle. */
  private udpRelay(
    host: string,
    port: number,
    containerIP: string,
    containerPort: number,
  ): Promise<dgram.Socket> {
    const sock = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: host === '::' });
    const flows = new Map<string, { up: dgram.Socket; timer: NodeJS.Timeout }>();
    sock.on('message', (msg, rinfo) => {
      const key = `${rinfo.address}:${rinfo.port}`;
      let f = flows.get(key);
      if (!f) {
        const up = dgram.createSocket({ type: containerIP.includes(':') ? 'udp6' : 'udp4' });
        up.on('message', (reply) => {
          sock.send(reply, rinfo.port, rinfo.address);
          f && f.timer.refresh();
        });
        up.on('error', () => undefined);
        const timer = setTimeout(() => {
          up.close();
          flows.delete(key);
        }, UDP_IDLE_MS);
        timer.unref();
        f = { up, timer };
        flows.set(key, f);
      }
      f.timer.refresh();
      f.up.send(msg, containerPort, containerIP);
    });
    sock.on('close', () => {
      for (const f of flows.values()) {
        clearTimeout(f.timer);
        f.up.close();
      }
      flows.clear();
    });
    return new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.bind({ address: host, port, exclusive: true }, () => {
        sock.removeListener('error', reject);
        sock.on('error', (e) => this.log.warn({ err: e, port }, 'proxy: UDP relay error'));
        resolve(sock);
      });
    });
  }

  close(): void {
    for (const { server } of this.servers) server.close();
    this.servers = [];
    for (const owner of [...this.udp.keys()]) this.remove(owner);
  }
}
