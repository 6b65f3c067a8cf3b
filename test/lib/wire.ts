// Independent observers and hostile senders on a cluster's underlay: tcpdump
// watching a link, a UDP sink inside a sandbox, and a forged cleartext VXLAN
// datagram (Ethernet + IPv4 + UDP inside, built here byte by byte) sent from
// any netns as an attacker on the underlay would.
import { spawn, spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

export interface Capture {
  /** Everything tcpdump printed so far (one packet a line, -v details on the following lines). */
  text(): string;
  /** SIGINT and wait for tcpdump's exit; returns the whole text. */
  stop(): Promise<string>;
}

/** tcpdump -nn -v on `iface` inside nsPath, line-buffered; resolves once it is listening. */
export async function capture(
  t: TestContext,
  nsPath: string,
  iface: string,
  filter: string,
): Promise<Capture> {
  const p = spawn(
    'nsenter',
    [`--net=${nsPath}`, 'tcpdump', '-i', iface, '-nn', '-l', '-v', '--immediate-mode', filter],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  p.stdout!.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  t.after(() => void (p.exitCode === null && p.signalCode === null && p.kill('SIGKILL')));
  await new Promise<void>((resolve, reject) => {
    p.stderr!.on('data', (d) => {
      err += d;
      if (/listening on/.test(err)) resolve();
    });
    p.once('exit', (code) => reject(new Error(`tcpdump exited ${code}: ${err}`)));
  });
  return {
    text: () => out,
    async stop() {
      if (p.exitCode === null && p.signalCode === null) {
        p.kill('SIGINT');
        await exited;
      }
      return out;
    },
  };
}

export interface Sink {
  /** The payloads received so far, in order. */
  received(): string[];
  stop(): void;
}

/** A UDP listener on port inside nsPath (a sandbox): every datagram's payload, as text. */
export async function udpSink(t: TestContext, nsPath: string, port: number): Promise<Sink> {
  const script = `const s = require('dgram').createSocket('udp4');
s.on('message', (m) => console.log(JSON.stringify(m.toString('latin1'))));
s.bind(${port}, () => console.log('"@ready"'));`;
  const p = spawn('nsenter', [`--net=${nsPath}`, process.execPath, '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stop = () => void (p.exitCode === null && p.signalCode === null && p.kill('SIGKILL'));
  t.after(stop);
  let buf = '';
  const got: string[] = [];
  await new Promise<void>((resolve, reject) => {
    p.stdout!.on('data', (d) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, i)) as string;
        buf = buf.slice(i + 1);
        if (msg === '@ready') resolve();
        else got.push(msg);
      }
    });
    p.once('exit', (code) => reject(new Error(`udp sink exited ${code}`)));
  });
  return { received: () => [...got], stop };
}

/** Sends one UDP datagram from inside nsPath (through the kernel's stack, so xfrm policies apply). */
export function sendUdp(nsPath: string, ip: string, port: number, payload: Buffer): void {
  const script = `const s = require('dgram').createSocket('udp4');
s.send(Buffer.from(process.argv[1], 'hex'), ${port}, ${JSON.stringify(ip)}, (e) => { if (e) { console.error(e.message); process.exit(1); } s.close(); });`;
  const r = spawnSync(
    'nsenter',
    [`--net=${nsPath}`, process.execPath, '-e', script, payload.toString('hex')],
    {
      encoding: 'utf8',
    },
  );
  if (r.status !== 0) throw new Error(`send to ${ip}:${port} from ${nsPath} failed: ${r.stderr}`);
}

function ipv4Checksum(h: Buffer): number {
  let sum = 0;
  for (let i = 0; i < h.length; i += 2) sum += h.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const macBytes = (mac: string) => Buffer.from(mac.split(':').map((x) => parseInt(x, 16)));
const ipBytes = (ip: string) => Buffer.from(ip.split('.').map(Number));

/**
 * A VXLAN payload (RFC 7348 header + inner Ethernet frame) carrying an IPv4
 * UDP datagram `payload` from `src` to `dst`: what the outer UDP socket sends
 * to port 4789 of a VTEP.
 */
export function forgedVxlan(o: {
  vni: number;
  dstMac: string;
  srcMac?: string;
  src: string;
  dst: string;
  port: number;
  payload: Buffer;
}): Buffer {
  const vx = Buffer.alloc(8);
  vx[0] = 0x08; // I flag: the VNI is valid
  vx.writeUIntBE(o.vni, 4, 3);
  const eth = Buffer.concat([
    macBytes(o.dstMac),
    macBytes(o.srcMac ?? '02:00:de:ad:be:ef'),
    Buffer.from([8, 0]),
  ]);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(40000, 0);
  udp.writeUInt16BE(o.port, 2);
  udp.writeUInt16BE(8 + o.payload.length, 4); // checksum 0: none (IPv4)
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + o.payload.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  ipBytes(o.src).copy(ip, 12);
  ipBytes(o.dst).copy(ip, 16);
  ip.writeUInt16BE(ipv4Checksum(ip), 10);
  return Buffer.concat([vx, eth, ip, udp, o.payload]);
}

export interface PingCount {
  /** Echo requests ping says it sent. */
  sent: number;
  answered: number;
  /** The highest icmp_seq answered. */
  highest: number;
  /** icmp_seq numbers up to the highest answered that never were: lost (those after it were in flight at the stop). */
  lost: number[];
}

/** ping at 100/s from inside nsPath until stop(); what was lost is counted by icmp_seq. */
export function pinger(nsPath: string, ip: string): { stop(): Promise<PingCount> } {
  const p = spawn('nsenter', [`--net=${nsPath}`, 'ping', '-4', '-n', '-i', '0.01', ip], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  return {
    async stop() {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGINT');
      await exited;
      const got = new Set([...out.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1])));
      const highest = Math.max(0, ...got);
      const lost: number[] = [];
      for (let n = 1; n <= highest; n++) if (!got.has(n)) lost.push(n);
      return {
        sent: Number(/(\d+) packets transmitted/.exec(out)?.[1] ?? 0),
        answered: got.size,
        highest,
        lost,
      };
    },
  };
}

const SPOOF = `import socket, struct, sys
src, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), bytes.fromhex(sys.argv[4])
udp = struct.pack('!HHHH', 40001, port, 8 + len(payload), 0) + payload
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (dst, 0))`;

/**
 * One UDP datagram with a source address that is not the sender's (a raw
 * socket, IP header written here: what an attacker on the underlay does to
 * look like a peer host). python3, as the kernel lane's guest has it.
 */
export function sendUdpSpoofed(
  nsPath: string,
  src: string,
  dst: string,
  port: number,
  payload: Buffer,
): void {
  const r = spawnSync(
    'nsenter',
    [`--net=${nsPath}`, 'python3', '-c', SPOOF, src, dst, String(port), payload.toString('hex')],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`spoofed send ${src} -> ${dst}:${port} failed: ${r.stderr}`);
}

const SEND6 = `import socket, sys
dst, port, payload, ext = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), sys.argv[4] == '1'
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
# A destination options header (next header: the kernel's; length 0; PadN of 4) before the UDP header.
cmsg = [(socket.IPPROTO_IPV6, getattr(socket, 'IPV6_DSTOPTS', 59), bytes([0, 0, 1, 4, 0, 0, 0, 0]))] if ext else []
s.sendmsg([payload], cmsg, 0, (dst, port))`;

/**
 * One UDP datagram over IPv6 from inside nsPath (the kernel's stack); with
 * `dstopts`, a destination options extension header goes between the IPv6 and
 * UDP headers (what hides a VXLAN header from a match at a fixed offset).
 * python3 (sendmsg with IPV6_DSTOPTS), as the kernel lane's guest has it.
 */
export function sendUdp6(nsPath: string, ip: string, port: number, payload: Buffer, dstopts = false): void {
  const r = spawnSync(
    'nsenter',
    [
      `--net=${nsPath}`,
      'python3',
      '-c',
      SEND6,
      ip,
      String(port),
      payload.toString('hex'),
      dstopts ? '1' : '0',
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`send to [${ip}]:${port} from ${nsPath} failed: ${r.stderr}`);
}
