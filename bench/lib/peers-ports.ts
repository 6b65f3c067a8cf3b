// Peers and probes for the `ports` bench case (bench/cases/ports.ts), beside
// the cnmd and dockerd runners of bench/lib/peers.ts: an "outside" netns with
// an uplink to a private host netns, TCP servers and port sweeps in a netns,
// process accounting (strace on execve, descendants in /proc), netavark
// invocations with port_mappings, iperf3, docker-proxy run standalone.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { native } from '../../native';
import { Scratch, commandExists, run as exec, sleep } from './host';
import { NETAVARK, inNs, makeNetns, ownNetns } from './peers';

// ---- namespaces ----

export const HOST_IP = '192.0.2.1';
export const OUTSIDE_IP = '192.0.2.2';

/** An "outside" netns joined to hostNs by a veth: HOST_IP/24 on the host side (uplink), OUTSIDE_IP/24 outside (wan). */
export async function makeOutside(hostNs: string, outsideNs: string): Promise<void> {
  await makeNetns(outsideNs);
  inNs(hostNs, 'uplink veth', 'ip', [
    'link',
    'add',
    'uplink',
    'type',
    'veth',
    'peer',
    'name',
    'wan',
    'netns',
    outsideNs,
  ]);
  inNs(hostNs, 'uplink addr', 'ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', 'uplink']);
  inNs(hostNs, 'uplink up', 'ip', ['link', 'set', 'uplink', 'up']);
  inNs(outsideNs, 'wan addr', 'ip', ['addr', 'add', `${OUTSIDE_IP}/24`, 'dev', 'wan']);
  inNs(outsideNs, 'wan up', 'ip', ['link', 'set', 'wan', 'up']);
}

/** iptables-save of every table in a netns, without counters and comments (comparable before/after). */
export function iptablesState(nsPath: string, table?: string): string {
  const out = inNs(nsPath, 'iptables-save', 'iptables-save', table ? ['-t', table] : []).stdout;
  return out
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[]'))
    .join('\n');
}

/** A short line diff of two iptables states (for error messages). */
export function stateDiff(a: string, b: string): string {
  const A = new Set(a.split('\n'));
  const B = new Set(b.split('\n'));
  const gone = [...A].filter((l) => !B.has(l)).map((l) => `- ${l}`);
  const added = [...B].filter((l) => !A.has(l)).map((l) => `+ ${l}`);
  return [...gone, ...added].slice(0, 12).join(' | ');
}

// ---- TCP servers and sweeps ----

// Listens on every port of argv[1] ("a-b,c,d-e"), answers "<port>|<data>" to each
// connection's first data. Prints "ready" once all are bound.
const SERVER = `
const spec = process.argv[1];
const ports = [];
for (const part of spec.split(',')) { const [a, b] = part.split('-').map(Number); for (let p = a; p <= (b || a); p++) ports.push(p); }
let pending = ports.length;
for (const port of ports) {
  const s = require('net').createServer((c) => { c.on('data', (d) => c.end(port + '|' + d)); c.on('error', () => {}); });
  s.on('error', (e) => { console.error('listen ' + port + ': ' + e.message); process.exit(1); });
  s.listen(port, '0.0.0.0', () => { if (--pending === 0) console.log('ready'); });
}`;

// Connects to host:port for each port of argv[2] (same syntax), 64 at a time;
// prints a JSON list of the ports that did not answer with "<port>|<token>".
const SWEEP = `
const host = process.argv[1], spec = process.argv[2], ms = Number(process.argv[3]);
const ports = [];
for (const part of spec.split(',')) { const [a, b] = part.split('-').map(Number); for (let p = a; p <= (b || a); p++) ports.push(p); }
const failed = [];
const one = (port) => new Promise((resolve) => {
  const token = 't' + port;
  let got = '';
  const c = require('net').connect({ host, port }, () => c.write(token));
  const t = setTimeout(() => { failed.push(port); c.destroy(); resolve(); }, ms);
  c.on('data', (d) => { got += d; });
  c.on('end', () => { clearTimeout(t); if (got !== port + '|' + token) failed.push(port); c.destroy(); resolve(); });
  c.on('error', () => { clearTimeout(t); failed.push(port); resolve(); });
});
(async () => {
  for (let i = 0; i < ports.length; i += 64) await Promise.all(ports.slice(i, i + 64).map(one));
  console.log(JSON.stringify(failed));
})();`;

/** "a-b,c": a compact list of ports. */
export function portSpec(ports: number[]): string {
  const s = [...new Set(ports)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < s.length;) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    out.push(j > i ? `${s[i]}-${s[j]}` : String(s[i]));
    i = j + 1;
  }
  return out.join(',');
}

export interface Server {
  pid: number;
  stop(): Promise<void>;
}

/** TCP servers on the given ports inside a netns (one node process); resolves once all listen. */
export async function serveTcp(s: Scratch, nsPath: string, ports: number[]): Promise<Server> {
  const proc = spawn('nsenter', [`--net=${nsPath}`, process.execPath, '-e', SERVER, portSpec(ports)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  s.trackPid(proc.pid);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let err = '';
    proc.stderr!.on('data', (d) => (err += d));
    proc.stdout!.once('data', () => resolve());
    proc.once('exit', (code) => reject(new Error(`port server in ${nsPath} exited ${code}: ${err.trim()}`)));
  });
  return {
    pid: proc.pid!,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Ports of the list that do not answer at ip from inside nsPath (each attempt times out after ms). */
export function unanswered(nsPath: string, ip: string, ports: number[], ms = 2000): number[] {
  const r = spawnSync(
    'nsenter',
    [`--net=${nsPath}`, process.execPath, '-e', SWEEP, ip, portSpec(ports), String(ms)],
    { encoding: 'utf8', timeout: 300_000 },
  );
  if (r.status !== 0)
    throw new Error(
      `port sweep from ${nsPath} to ${ip} failed (exit ${r.status ?? r.signal}): ${(r.stderr || String(r.error)).trim().slice(-400)}`,
    );
  return JSON.parse(r.stdout.trim()) as number[];
}

/** first, last, and every step-th port of first..last. */
export function samplePorts(first: number, last: number, step: number): number[] {
  const out: number[] = [];
  for (let p = first; p <= last; p += step) out.push(p);
  out.push(last);
  return [...new Set(out)];
}

// ---- process accounting ----

function ppidOf(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[0] === 'Z' || rest[0] === 'X' ? undefined : Number(rest[1]);
  } catch {
    return undefined;
  }
}

/** Live descendants of pid (children, grandchildren, ...). */
export function descendants(pid: number): Set<number> {
  const parent = new Map<number, number>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pp = ppidOf(Number(d));
    if (pp !== undefined) parent.set(Number(d), pp);
  }
  const out = new Set<number>();
  let grew = true;
  while (grew) {
    grew = false;
    for (const [c, p] of parent) {
      if (!out.has(c) && (p === pid || out.has(p))) {
        out.add(c);
        grew = true;
      }
    }
  }
  return out;
}

export interface ExecTrace {
  /** Distinct processes that exec'd during the window (successful execve only). */
  processes: number;
  /** Program paths exec'd, with counts. */
  programs: Map<string, number>;
  pids: Set<number>;
}

/** Successful execve lines of an `strace -f -z -o FILE` log: "PID execve("PATH", ...". */
export function parseExecTrace(text: string): ExecTrace {
  const programs = new Map<string, number>();
  const pids = new Set<number>();
  for (const l of text.split('\n')) {
    const m = /^(\d+)\s+(?:<\.\.\. )?execve\("([^"]*)"/.exec(l);
    if (!m) continue;
    if (/= -1 /.test(l)) continue;
    pids.add(Number(m[1]));
    programs.set(m[2], (programs.get(m[2]) ?? 0) + 1);
  }
  return { processes: pids.size, programs, pids };
}

/**
 * strace attached to every thread of a running process (-f: and to whatever it
 * forks), logging successful execve only. start() resolves once every thread
 * shows the tracer; stop() detaches (SIGINT) and returns the parsed log.
 */
export class ExecWatch {
  private proc?: ChildProcess;
  private exited?: Promise<void>;
  constructor(
    private readonly s: Scratch,
    private readonly pid: number,
    private readonly logFile: string,
  ) {}

  static available(): boolean {
    return commandExists('strace');
  }

  async start(): Promise<void> {
    this.proc = spawn(
      'strace',
      ['-f', '-qq', '-z', '-e', 'trace=execve', '-o', this.logFile, '-p', String(this.pid)],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.s.trackPid(this.proc.pid);
    let err = '';
    this.proc.stderr!.on('data', (d) => (err += d));
    this.exited = new Promise((resolve) => this.proc!.once('exit', () => resolve()));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (this.proc.exitCode !== null)
        throw new Error(`strace -p ${this.pid} exited ${this.proc.exitCode}: ${err.trim()}`);
      let all = true;
      try {
        for (const t of fs.readdirSync(`/proc/${this.pid}/task`)) {
          const st = fs.readFileSync(`/proc/${this.pid}/task/${t}/status`, 'utf8');
          if (/^TracerPid:\s+0$/m.test(st)) all = false;
        }
      } catch {
        all = false;
      }
      if (all) break;
      if (Date.now() > deadline)
        throw new Error(`strace did not attach to every thread of ${this.pid} within 10 s: ${err.trim()}`);
      await sleep(20);
    }
  }

  async stop(): Promise<ExecTrace> {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill('SIGINT');
      const t = setTimeout(() => this.proc!.kill('SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(t);
    }
    return parseExecTrace(fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, 'utf8') : '');
  }
}

export function summarizePrograms(t: ExecTrace): string {
  return [...t.programs].map(([p, n]) => `${path.basename(p)} x${n}`).join(', ') || 'none';
}

// ---- netavark ----

export interface NetavarkNet {
  dir: string;
  hostNs: string;
  /** setup/teardown of container id with the given port mappings; the netns is made/removed around it. */
  /** With traceFile: run under strace (execve), untimed use only. */
  setup(
    id: string,
    mappings: NetavarkPortMapping[],
    traceFile?: string,
  ): Promise<{ ms: number; ip: string; ns: string; trace?: ExecTrace }>;
  teardown(id: string, traceFile?: string): { ms: number; trace?: ExecTrace };
  /** The argv and stdin of one call (for strace). */
  argv(
    cmd: 'setup' | 'teardown',
    id: string,
  ): { cmd: string; args: string[]; input: string; env: NodeJS.ProcessEnv };
  nsPath(id: string): string;
}

export interface NetavarkPortMapping {
  host_ip: string;
  container_port: number;
  host_port: number;
  range: number;
  protocol: 'tcp' | 'udp';
}

/**
 * A netavark bridge network in a private host netns of its own (iptables
 * driver). Addresses are handed out by the caller's counter (netavark has no
 * IPAM: podman allocates); the container netns is made before setup and
 * removed after teardown, counted in both, as in the attach case.
 */
export async function netavarkNet(
  s: Scratch,
  tag: string,
  subnet: { prefix: string; cidr: string; gateway: string },
  prepare?: (hostNs: string) => Promise<void>,
): Promise<NetavarkNet> {
  const dir = path.join(s.run, tag);
  fs.mkdirSync(path.join(dir, 'config'), { recursive: true });
  const hostNs = await makeNetns(path.join(dir, 'host-netns'));
  if (prepare) await prepare(hostNs);
  const netId = 'cb1e1c0ffee1' + '0'.repeat(52);
  let next = 2;
  const ips = new Map<string, string>();
  const maps = new Map<string, NetavarkPortMapping[]>();
  const nsPath = (id: string) => path.join(dir, `ns-${id}`);
  const opts = (id: string) =>
    JSON.stringify({
      container_id: (Buffer.from(id).toString('hex') + 'c'.repeat(64)).slice(0, 64),
      container_name: `cnmdbench-${id}`,
      port_mappings: maps.get(id) ?? [],
      networks: { benchnet: { interface_name: 'eth0', static_ips: [ips.get(id)] } },
      network_info: {
        benchnet: {
          dns_enabled: false,
          driver: 'bridge',
          id: netId,
          internal: false,
          ipv6_enabled: false,
          name: 'benchnet',
          network_interface: 'navbr1',
          subnets: [{ gateway: subnet.gateway, subnet: subnet.cidr }],
        },
      },
    });
  const argv = (cmd: 'setup' | 'teardown', id: string) => ({
    cmd: 'nsenter',
    args: [`--net=${hostNs}`, NETAVARK, '--config', path.join(dir, 'config'), cmd, nsPath(id)],
    input: opts(id),
    env: { ...process.env, NETAVARK_FW: 'iptables' },
  });
  const nv = (
    cmd: 'setup' | 'teardown',
    id: string,
    traceFile?: string,
  ): { stdout: string; trace?: ExecTrace } => {
    const a = argv(cmd, id);
    const o = { input: a.input, env: a.env, timeoutMs: 300_000 };
    if (!traceFile) return exec(`netavark ${cmd} ${id}`, a.cmd, a.args, o);
    const r = exec(
      `netavark ${cmd} ${id} (strace)`,
      'strace',
      ['-f', '-qq', '-z', '-e', 'trace=execve', '-o', traceFile, a.cmd, ...a.args],
      o,
    );
    return { stdout: r.stdout, trace: parseExecTrace(fs.readFileSync(traceFile, 'utf8')) };
  };
  return {
    dir,
    hostNs,
    nsPath,
    argv,
    async setup(id, mappings, traceFile) {
      if (!ips.has(id)) {
        const k = next++;
        ips.set(id, `${subnet.prefix}${k >> 8}.${k & 255}`);
      }
      maps.set(id, mappings);
      const t0 = performance.now();
      await native.netnsCreate(nsPath(id));
      ownNetns(nsPath(id));
      const r = nv('setup', id, traceFile);
      const ms = performance.now() - t0;
      const out = JSON.parse(r.stdout) as Record<
        string,
        { interfaces?: Record<string, { subnets?: { ipnet: string }[] }> }
      >;
      const got = out.benchnet?.interfaces?.eth0?.subnets?.[0];
      if (!got || !got.ipnet.startsWith(`${ips.get(id)}/`))
        throw new Error(`netavark setup ${id}: unexpected output ${JSON.stringify(out)}`);
      return { ms, ip: ips.get(id)!, ns: nsPath(id), trace: r.trace };
    },
    teardown(id, traceFile) {
      const t0 = performance.now();
      const r = nv('teardown', id, traceFile);
      native.netnsDelete(nsPath(id));
      return { ms: performance.now() - t0, trace: r.trace };
    },
  };
}

// ---- memory ----

/** Sum of VmRSS (kB) of some processes (those gone meanwhile count 0). */
export function rssSumKb(pids: number[]): number {
  let sum = 0;
  for (const p of pids) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) sum += Number(m[1]);
    } catch {
      /* exited */
    }
  }
  return sum;
}

/**
 * Sum of Pss (kB) of some processes: each shared page counted once across them
 * (VmRSS sums count the shared binary text once per process).
 */
export function pssSumKb(pids: number[]): number {
  let sum = 0;
  for (const p of pids) {
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'));
      if (m) sum += Number(m[1]);
    } catch {
      /* exited */
    }
  }
  return sum;
}

/** MemAvailable of the machine, kB. */
export function memAvailableKb(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) : 0;
}

// ---- iperf3 ----

/** An iperf3 server inside a netns (port 5201 unless given); resolves when it listens. */
export async function iperfServer(s: Scratch, nsPath: string, port = 5201): Promise<Server> {
  const proc = spawn('nsenter', [`--net=${nsPath}`, 'iperf3', '-s', '-p', String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  s.trackPid(proc.pid);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  // iperf3 block-buffers its "Server listening" line on a pipe: poll for the socket instead.
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`iperf3 -s exited ${proc.exitCode ?? proc.signalCode}: ${out.trim()}`);
    const r = spawnSync('nsenter', [`--net=${nsPath}`, 'ss', '-Hltn', `sport = :${port}`], {
      encoding: 'utf8',
    });
    if (r.status === 0 && r.stdout.includes('LISTEN')) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`iperf3 -s did not listen on ${port} within 10 s: ${out.trim()}`);
    }
    await sleep(50);
  }
  return {
    pid: proc.pid!,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** `streams` TCP streams (default one) for seconds s from inside nsPath to ip:port; Gbit/s as the receiver counted it. */
export function iperfClient(nsPath: string, ip: string, port: number, seconds: number, streams = 1): number {
  const r = inNs(
    nsPath,
    `iperf3 -c ${ip}:${port}`,
    'iperf3',
    ['-c', ip, '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J'],
    { timeoutMs: (seconds + 30) * 1000 },
  );
  const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  const bps = j.end?.sum_received?.bits_per_second;
  if (j.error || typeof bps !== 'number' || !(bps > 0))
    throw new Error(`iperf3 to ${ip}:${port}: no result: ${j.error ?? r.stdout.slice(0, 300)}`);
  return bps / 1e9;
}

/** docker-proxy run standalone in a netns; resolves once it signalled readiness on fd 3 ("0\n"). */
export async function dockerProxyStandalone(
  s: Scratch,
  bin: string,
  nsPath: string,
  hostPort: number,
  containerIP: string,
  containerPort: number,
): Promise<Server> {
  const proc = spawn(
    'nsenter',
    [
      `--net=${nsPath}`,
      bin,
      '-proto',
      'tcp',
      '-host-ip',
      '127.0.0.1',
      '-host-port',
      String(hostPort),
      '-container-ip',
      containerIP,
      '-container-port',
      String(containerPort),
    ],
    { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
  );
  s.trackPid(proc.pid);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let sig = '';
    let err = '';
    const t = setTimeout(
      () => reject(new Error(`docker-proxy did not signal readiness within 10 s: ${sig}${err}`)),
      10_000,
    );
    (proc.stdio[3] as NodeJS.ReadableStream).on('data', (d) => {
      sig += d;
      if (sig.startsWith('0')) {
        clearTimeout(t);
        resolve();
      } else if (sig.startsWith('1')) {
        clearTimeout(t);
        reject(new Error(`docker-proxy failed: ${sig.slice(1).trim()}`));
      }
    });
    proc.stderr!.on('data', (d) => (err += d));
    proc.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`docker-proxy exited ${code}: ${err.trim()}`));
    });
  });
  return {
    pid: proc.pid!,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
