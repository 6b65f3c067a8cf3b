// Real packets between namespaces: a TCP/UDP echo server in one netns and a
// client in another, both plain node processes started with nsenter --net.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

// Echoes what it gets, prefixed by the peer address it saw ("<addr>|<data>"), so a
// client can check its source address was preserved. Listens on port..last.
const SERVER = `
const proto = process.argv[1], first = Number(process.argv[2]), last = Number(process.argv[3] || process.argv[2]);
let pending = last - first + 1;
const up = () => { if (--pending === 0) console.log('ready'); };
const peer = (a) => a.replace(/^::ffff:/, '');
for (let port = first; port <= last; port++) {
  if (proto === 'tcp') {
    const s = require('net').createServer((c) => c.on('data', (d) => c.write(peer(c.remoteAddress) + '|' + d)));
    s.listen(port, '::', up);
  } else {
    const s = require('dgram').createSocket({ type: 'udp6' });
    s.on('message', (m, r) => s.send(peer(r.address) + '|' + m, r.port, r.address));
    s.bind(port, '::', up);
  }
}`;

const CLIENT = `
const [proto, host, port, ms] = [process.argv[1], process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const token = 'cnmd-' + Math.random();
const done = (ok, why) => { console.log(ok ? 'OK ' + why : 'FAIL ' + why); process.exit(0); };
const check = (d) => { const [from, echoed] = d.toString().split('|'); done(echoed === token, from); };
setTimeout(() => done(false, 'timeout'), ms);
if (proto === 'tcp') {
  const c = require('net').connect({ host, port }, () => c.write(token));
  c.on('data', check);
  c.on('error', (e) => done(false, e.code));
} else {
  const s = require('dgram').createSocket(host.includes(':') ? 'udp6' : 'udp4');
  s.on('message', check);
  s.send(token, port, host);
  setInterval(() => s.send(token, port, host), 300);
}`;

export interface Server {
  proc: ChildProcess;
  stop(): void;
}

export async function serve(
  t: TestContext,
  nsPath: string,
  proto: 'tcp' | 'udp',
  port: number,
  lastPort = port,
): Promise<Server> {
  return startServer(t, nsPath, SERVER, [proto, String(port), String(lastPort)]);
}

/** A node script run inside nsPath until the test ends; resolves once it printed its first line (ready). */
async function startServer(t: TestContext, nsPath: string, script: string, args: string[]): Promise<Server> {
  const proc = spawn('nsenter', [`--net=${nsPath}`, process.execPath, '-e', script, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stop = () => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  };
  t.after(stop);
  await new Promise<void>((resolve, reject) => {
    let err = '';
    proc.stderr!.on('data', (d) => (err += d));
    proc.stdout!.once('data', () => resolve());
    proc.once('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
  return { proc, stop };
}

/** An echo round trip to ip:port from inside nsPath: did it work, and which source address did the server see. */
export function roundTrip(
  nsPath: string,
  proto: 'tcp' | 'udp',
  ip: string,
  port: number,
  ms = 1500,
): { ok: boolean; seenFrom?: string } {
  const r = spawnSync(
    'nsenter',
    [`--net=${nsPath}`, process.execPath, '-e', CLIENT, proto, ip, String(port), String(ms)],
    { encoding: 'utf8', timeout: ms + 5000 },
  );
  const [status, detail] = r.stdout.trim().split(' ');
  return status === 'OK' ? { ok: true, seenFrom: detail } : { ok: false };
}

/** True when an echo round trip to ip:port succeeds from inside nsPath within ms. */
export function reach(nsPath: string, proto: 'tcp' | 'udp', ip: string, port: number, ms = 1500): boolean {
  return roundTrip(nsPath, proto, ip, port, ms).ok;
}

/**
 * True once `count` echo replies came back within max(3, count + 2) seconds (a packet every 0.2 s): a
 * loaded machine can take over a second to resolve ARP and answer the first one, which a single probe
 * with a 1 s wait reported as unreachable (a CI flake). A negative check therefore costs the deadline.
 */
export function ping(nsPath: string, ip: string, count = 1): boolean {
  const r = spawnSync(
    'nsenter',
    [
      `--net=${nsPath}`,
      'ping',
      ip.includes(':') ? '-6' : '-4',
      '-c',
      String(count),
      '-w',
      String(Math.max(3, count + 2)),
      '-i',
      '0.2',
      ip,
    ],
    { encoding: 'utf8' },
  );
  return r.status === 0;
}

const MULTI = `
const [host, first, last, ms] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const failed = [];
let left = last - first + 1;
const one = (port) => new Promise((resolve) => {
  const token = 'p' + port;
  const c = require('net').connect({ host, port }, () => c.write(token));
  const t = setTimeout(() => { failed.push(port); c.destroy(); resolve(); }, ms);
  c.on('data', (d) => { clearTimeout(t); if (d.toString().split('|')[1] !== token) failed.push(port); c.destroy(); resolve(); });
  c.on('error', () => { clearTimeout(t); failed.push(port); resolve(); });
});
(async () => {
  for (let p = first; p <= last; p += 50) await Promise.all(Array.from({ length: Math.min(50, last - p + 1) }, (_, i) => one(p + i)));
  console.log(JSON.stringify(failed));
})();`;

/** TCP ports first..last at ip from inside nsPath, from one process; resolves with the ports that did not answer. */
export function unreachablePorts(
  nsPath: string,
  ip: string,
  first: number,
  last: number,
  ms = 2000,
): number[] {
  const r = spawnSync(
    'nsenter',
    [`--net=${nsPath}`, process.execPath, '-e', MULTI, ip, String(first), String(last), String(ms)],
    { encoding: 'utf8', timeout: 120_000 },
  );
  if (r.status !== 0) throw new Error(`port sweep failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim());
}

// An HTTP server for curl: answers every request with the client address it saw.
const HTTP_SERVER = `
const port = Number(process.argv[1]);
require('http').createServer((q, r) => r.end(q.socket.remoteAddress.replace(/^::ffff:/, '') + '\\n'))
  .listen(port, '::', () => console.log('ready'));`;

/** An HTTP server on [::]:port (dual-stack) inside nsPath, stopped after the test; its body is the client address. */
export function serveHttp(t: TestContext, nsPath: string, port: number): Promise<Server> {
  return startServer(t, nsPath, HTTP_SERVER, [String(port)]);
}

/** curl from inside nsPath (a URL with an IPv6 literal needs no escaping: -g); the body, or undefined. */
export function curlIn(nsPath: string, url: string, maxTime = 3): string | undefined {
  const r = spawnSync('nsenter', [`--net=${nsPath}`, 'curl', '-sS', '-g', '-m', String(maxTime), url], {
    encoding: 'utf8',
    timeout: (maxTime + 5) * 1000,
  });
  return r.status === 0 ? r.stdout.trim() : undefined;
}
