// A minimal HTTP/1.1 client on one kept-alive unix-socket connection, used to
// time a daemon's API. Node's http client adds 0.4-0.8 ms to each request
// here (ClientRequest, agent, parser, streams; measured against this client,
// alternating on one daemon), all of it the client's doing: the bench's cost,
// not the daemon's. The docker CLI's Go client keeps one connection too. One request at a time; replies must carry
// Content-Length (cnmd's always do) or be bodiless (204, 304, HEAD).
import * as net from 'node:net';

export interface HttpReply {
  status: number;
  body: any;
}

interface Pending {
  head: boolean;
  resolve: (r: HttpReply) => void;
  reject: (e: Error) => void;
}

/** A unix-socket connection for one request at a time (no Nagle delay); `gone` on error or close. */
export function keptConnection(
  socketPath: string,
  data: (c: Buffer) => void,
  gone: (e?: Error) => void,
): net.Socket {
  const s = net.connect(socketPath);
  s.setNoDelay(true);
  s.on('data', data);
  s.on('error', gone);
  s.on('close', () => gone());
  return s;
}

export class KeepAliveClient {
  private sock?: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private pending?: Pending;

  constructor(readonly socketPath: string) {}

  request(method: string, path: string, body?: unknown): Promise<HttpReply> {
    if (this.pending)
      return Promise.reject(new Error(`KeepAliveClient: ${method} ${path} while a request is in flight`));
    const data = body === undefined ? '' : JSON.stringify(body);
    const head = `${method} ${path} HTTP/1.1\r\nHost: cnmd\r\n${data ? `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(data)}\r\n` : ''}\r\n`;
    return new Promise((resolve, reject) => {
      this.pending = { head: method === 'HEAD', resolve, reject };
      this.socket().write(head + data);
    });
  }

  close(): void {
    this.sock?.destroy();
    this.sock = undefined;
  }

  private socket(): net.Socket {
    if (this.sock) return this.sock;
    const s = keptConnection(
      this.socketPath,
      (c) => {
        this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
        this.parse();
      },
      // A closed or failed connection fails the request in flight; the next one connects again.
      (e) => {
        if (this.sock === s) this.sock = undefined;
        this.buf = Buffer.alloc(0);
        this.fail(e ?? new Error(`${this.socketPath}: the daemon closed the connection`));
      },
    );
    this.sock = s;
    return s;
  }

  private fail(e: Error): void {
    const p = this.pending;
    this.pending = undefined;
    p?.reject(e);
  }

  private parse(): void {
    const p = this.pending;
    if (!p) return;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) return this.fail(new Error(`not an HTTP reply: ${JSON.stringify(lines[0])}`));
    const status = Number(m[1]);
    let length: number | undefined;
    let json = false;
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      const k = l.slice(0, i).trim().toLowerCase();
      const v = l.slice(i + 1).trim();
      if (k === 'content-length') length = Number(v);
      else if (k === 'transfer-encoding')
        return this.fail(new Error(`KeepAliveClient: Transfer-Encoding ${v} is not supported`));
      else if (k === 'content-type') json = v.startsWith('application/json');
    }
    if (p.head || status === 204 || status === 304) length = 0;
    if (length === undefined)
      return this.fail(new Error(`KeepAliveClient: a ${status} reply without Content-Length`));
    if (this.buf.length < end + 4 + length) return;
    const text = this.buf.subarray(end + 4, end + 4 + length).toString('utf8');
    this.buf = this.buf.subarray(end + 4 + length);
    this.pending = undefined;
    let parsed: unknown = text || undefined;
    if (json && text) {
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        return p.reject(
          new Error(`KeepAliveClient: a ${status} reply with bad JSON: ${(e as Error).message}`),
        );
      }
    }
    p.resolve({ status, body: parsed });
  }
}
