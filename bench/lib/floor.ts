// The floor of any round trip to another process on this machine, timed in a
// bench's rotation as a daemon's API calls are: a unix-socket echo served by
// socat (C, one process: the cheapest server there is), and a plain node http
// server answering GET / (node's own floor, no router, no store). They say
// whether a goal for an API call is within reach of any daemon here, not
// only of cnmd (docs/design-notes.md, "Where a macvlan attach's time goes").
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Scratch, eventually } from './host';
import { KeepAliveClient, keptConnection } from './http-client';

export interface Floor {
  /** Figure name part: floor_<label>_median_ms. */
  label: string;
  /** One round trip: resolves when the answer is in. */
  rtt(): Promise<void>;
}

const NODE_HTTP = `
const http = require('node:http');
const srv = http.createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '2' });
  res.end('OK');
});
srv.keepAliveTimeout = 0;
srv.listen(process.argv[1]);
`;

/** A kept-alive connection that sends one byte and waits for it back. */
class EchoClient {
  private sock?: net.Socket;
  private waiting?: { resolve: () => void; reject: (e: Error) => void };

  constructor(private readonly socketPath: string) {}

  rtt(): Promise<void> {
    if (this.waiting) return Promise.reject(new Error('echo: a round trip is in flight'));
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.socket().write('x');
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
      () => this.settle(),
      (e) => {
        if (this.sock === s) this.sock = undefined;
        this.settle(e ?? new Error(`${this.socketPath}: the echo server closed the connection`));
      },
    );
    this.sock = s;
    return s;
  }

  private settle(e?: Error): void {
    const w = this.waiting;
    this.waiting = undefined;
    if (e) w?.reject(e);
    else w?.resolve();
  }
}

/** Starts both floor servers (their processes are the scratch's to kill); close() stops them. */
export async function startFloors(s: Scratch): Promise<{ floors: Floor[]; close(): void }> {
  const dir = path.join(s.run, 'floor');
  const echoSock = path.join(dir, 'echo.sock');
  const httpSock = path.join(dir, 'http.sock');
  fs.mkdirSync(dir, { recursive: true });
  const procs = [
    spawn('socat', [`UNIX-LISTEN:${echoSock}`, 'PIPE'], { stdio: ['ignore', 'ignore', 'inherit'] }),
    spawn(process.execPath, ['-e', NODE_HTTP, httpSock], { stdio: ['ignore', 'ignore', 'inherit'] }),
  ];
  for (const p of procs) s.trackPid(p.pid);
  const close = () => {
    echo.close();
    http.close();
    for (const p of procs) p.kill('SIGKILL');
  };
  const echo = new EchoClient(echoSock);
  const http = new KeepAliveClient(httpSock);
  try {
    await eventually(async () => {
      await echo.rtt();
      const r = await http.request('GET', '/');
      if (r.status !== 200) throw new Error(`floor http server answered ${r.status}`);
    });
  } catch (e) {
    close();
    throw new Error(`floor servers did not answer: ${(e as Error).message}`);
  }
  return {
    floors: [
      { label: 'socat_echo', rtt: () => echo.rtt() },
      {
        label: 'node_http',
        rtt: async () => {
          const r = await http.request('GET', '/');
          if (r.status !== 200) throw new Error(`floor http server answered ${r.status}`);
        },
      },
    ],
    close,
  };
}
