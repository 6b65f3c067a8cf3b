// Forwards queries the embedded DNS cannot answer to the upstream servers,
// from the daemon's own netns (so host-loopback upstreams such as
// systemd-resolved's 127.0.0.53 work). libnetwork's rules: at most 3
// upstreams, each tried in turn on timeout, SERVFAIL or REFUSED; NXDOMAIN and
// every other answer are final.
//
// UDP goes through one socket per family, shared by every sandbox, with
// query ids rewritten so concurrent queries never collide; a bounded number
// of queries is in flight: beyond it, callers get no answer at once (the
// resolver replies SERVFAIL) instead of piling up behind an upstream that
// never answers.
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import type { Logger } from '../log';

export const MAX_UPSTREAMS = 3;
export const MAX_IN_FLIGHT = 1024;

export interface ForwarderOptions {
  timeoutMs?: number;
  maxInFlight?: number;
  log: Logger;
}

const RCODE_SERVFAIL = 2;
const RCODE_REFUSED = 5;

function rcode(msg: Buffer): number {
  return msg.length >= 4 ? msg[3] & 0x0f : RCODE_SERVFAIL;
}

interface Waiting {
  upstream: string;
  originalId: number;
  resolve: (b: Buffer | undefined) => void;
  timer: NodeJS.Timeout;
}

export class Forwarder {
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;
  private readonly log: Logger;
  private inFlight = 0;
  private sockets: { 4?: dgram.Socket; 6?: dgram.Socket } = {};
  private readonly waiting = new Map<number, Waiting>();
  private nextId = Math.floor(Math.random() * 0x10000);

  constructor(o: ForwarderOptions) {
    this.timeoutMs = o.timeoutMs ?? 4000;
    this.maxInFlight = o.maxInFlight ?? MAX_IN_FLIGHT;
    this.log = o.log;
  }

  get pending(): number {
    return this.inFlight;
  }

  /** The upstream's reply (with the query's id), or undefined when none answered usefully. */
  async forward(query: Buffer, upstreams: string[], tcp: boolean): Promise<Buffer | undefined> {
    if (this.inFlight >= this.maxInFlight || query.length < 12) return undefined;
    this.inFlight++;
    try {
      let last: Buffer | undefined;
      for (const up of upstreams.slice(0, MAX_UPSTREAMS)) {
        const reply = await (tcp ? this.viaTcp(query, up) : this.viaUdp(query, up)).catch((e) => {
          this.log.debug({ err: e, upstream: up }, 'dns upstream failed');
          return undefined;
        });
        if (!reply) continue;
        last = reply;
        const rc = rcode(reply);
        if (rc !== RCODE_SERVFAIL && rc !== RCODE_REFUSED) return reply;
      }
      return last;
    } finally {
      this.inFlight--;
    }
  }

  private socket(family: 4 | 6): dgram.Socket {
    let s = this.sockets[family];
    if (!s) {
      s = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
      s.on('message', (msg, rinfo) => this.onReply(msg, rinfo));
      s.on('error', (e) => this.log.warn({ err: e }, 'dns forwarder socket error'));
      s.unref();
      this.sockets[family] = s;
    }
    return s;
  }

  private onReply(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (msg.length < 12) return;
    const w = this.waiting.get(msg.readUInt16BE(0));
    // Only the server we asked may answer (no spoofing from elsewhere).
    if (!w || w.upstream !== rinfo.address.replace(/^::ffff:/, '')) return;
    this.waiting.delete(msg.readUInt16BE(0));
    clearTimeout(w.timer);
    const out = Buffer.from(msg);
    out.writeUInt16BE(w.originalId, 0);
    w.resolve(out);
  }

  private allocId(): number | undefined {
    for (let i = 0; i < 0x10000; i++) {
      this.nextId = (this.nextId + 1) & 0xffff;
      if (!this.waiting.has(this.nextId)) return this.nextId;
    }
    return undefined;
  }

  private viaUdp(query: Buffer, upstream: string): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const id = this.allocId();
      if (id === undefined) return resolve(undefined);
      const out = Buffer.from(query);
      out.writeUInt16BE(id, 0);
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve(undefined);
      }, this.timeoutMs);
      this.waiting.set(id, { upstream, originalId: query.readUInt16BE(0), resolve, timer });
      this.socket(upstream.includes(':') ? 6 : 4).send(out, 53, upstream, (err) => {
        if (!err) return;
        this.waiting.delete(id);
        clearTimeout(timer);
        resolve(undefined);
      });
    });
  }

  private viaTcp(query: Buffer, upstream: string): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) => {
      const c = net.connect({ host: upstream, port: 53 });
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => finish(undefined), this.timeoutMs);
      const finish = (v: Buffer | undefined, e?: Error) => {
        clearTimeout(timer);
        c.destroy();
        if (e) reject(e);
        else resolve(v);
      };
      c.on('connect', () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(query.length);
        c.write(Buffer.concat([len, query]));
      });
      c.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0))
          finish(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      });
      c.on('error', (e) => finish(undefined, e));
      c.on('close', () => finish(undefined));
    });
  }

  close(): void {
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.resolve(undefined);
    }
    this.waiting.clear();
    this.sockets[4]?.close();
    this.sockets[6]?.close();
    this.sockets = {};
  }
}
