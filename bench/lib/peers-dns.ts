// Peers and probes for the `dns` bench case (bench/cases/dns.ts), beside the
// cnmd and dockerd runners of bench/lib/peers.ts: aardvark-dns in a netns of
// its own; dnsperf run inside a netns and its output parsed (summary, -S
// intervals, -v per-query latencies); a tiny UDP resolver check; CPU time of a
// process; a V8 .cpuprofile summarised by self time.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Scratch, alive, percentile, sleep } from './host';
import { guardNetns } from './peers';

export const AARDVARK = '/usr/lib/podman/aardvark-dns';

/** How to enter a client's netns with nsenter: a netns file, or a process (`-n -t PID`, for a docker container). */
export type NsRef = { path: string } | { pid: number };

export function nsenterArgs(ns: NsRef): string[] {
  return 'path' in ns ? [`--net=${ns.path}`] : ['-n', '-t', String(ns.pid)];
}

// ---- process CPU time ----

/** utime and stime of a process (all its threads), in seconds. */
export function cpuTimes(pid: number): { user: number; sys: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields after "(comm)": state(0) ppid(1) ... utime(11) stime(12), in USER_HZ (100 on every Linux ABI node runs on)
  return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 };
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number): number {
  const t = cpuTimes(pid);
  return t.user + t.sys;
}

// ---- aardvark-dns ----

export interface AardvarkEntry {
  id: string;
  ipv4: string;
  names: string[];
}

/**
 * The config directory aardvark-dns reads (one file per network: first line
 * the listening gateway address, then `ID IPV4 IPV6 NAMES` lines, names
 * comma-separated; IPv6 empty here).
 */
export function writeAardvarkConfig(
  dir: string,
  network: string,
  gateway: string,
  entries: AardvarkEntry[],
): void {
  fs.mkdirSync(dir, { recursive: true });
  const lines = [gateway, ...entries.map((e) => `${e.id} ${e.ipv4}  ${e.names.join(',')}`)];
  fs.writeFileSync(path.join(dir, network), lines.join('\n') + '\n');
}

/**
 * `aardvark-dns --config DIR -p 53 run` inside hostNs (which must hold the
 * gateway address). aardvark-dns forks into the background once it serves;
 * its pid is read from DIR/aardvark.pid. Returns its pid.
 */
export async function startAardvark(s: Scratch, hostNs: string, dir: string): Promise<number> {
  guardNetns(s);
  const r = spawnSync('nsenter', [`--net=${hostNs}`, AARDVARK, '--config', dir, '-p', '53', 'run'], {
    encoding: 'utf8',
    timeout: 20_000,
    killSignal: 'SIGKILL',
  });
  if (r.status !== 0)
    throw new Error(
      `aardvark-dns run: exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout || String(r.error)).trim().slice(-600)}`,
    );
  const pidFile = path.join(dir, 'aardvark.pid');
  const deadline = Date.now() + 10_000;
  for (;;) {
    const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8').trim()) : 0;
    if (pid > 0 && alive(pid)) {
      s.trackPid(pid);
      return pid;
    }
    if (Date.now() > deadline)
      throw new Error(`aardvark-dns: no live pid in ${pidFile} after 10 s (${r.stderr.trim().slice(-300)})`);
    await sleep(50);
  }
}

export async function stopPid(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let i = 0; i < 100 && alive(pid); i++) await sleep(50);
  if (alive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

// ---- resolver check ----

// A minimal DNS client: one A query per name (argv: server, names...) over UDP,
// two tries of 1.5 s; prints {name: {rcode, ips}} (rcode -1: no answer).
const RESOLVE = `
const dgram = require('dgram');
const [server, ...names] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
const out = {}; const pending = new Map();
const query = (name, id) => {
  const parts = [Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0])];
  for (const l of name.split('.').filter(Boolean)) parts.push(Buffer.from([l.length]), Buffer.from(l));
  parts.push(Buffer.from([0, 0, 1, 0, 1]));
  return Buffer.concat(parts);
};
const skip = (b, o) => { for (;;) { const l = b[o]; if (l === 0) return o + 1; if ((l & 0xc0) === 0xc0) return o + 2; o += l + 1; } };
s.on('message', (m) => {
  const id = m.readUInt16BE(0); const name = pending.get(id); if (name === undefined) return;
  pending.delete(id);
  const qd = m.readUInt16BE(4), an = m.readUInt16BE(6);
  let o = 12; for (let i = 0; i < qd; i++) o = skip(m, o) + 4;
  const ips = [];
  for (let i = 0; i < an; i++) { o = skip(m, o); const type = m.readUInt16BE(o), len = m.readUInt16BE(o + 8); o += 10; if (type === 1 && len === 4) ips.push([...m.subarray(o, o + 4)].join('.')); o += len; }
  out[name] = { rcode: m[3] & 15, ips };
});
(async () => {
  for (let t = 0; t < 2; t++) {
    names.forEach((n, i) => { if (out[n]) return; const id = 1 + i + t * 4096; pending.set(id, n); s.send(query(n, id), 53, server); });
    const until = Date.now() + 1500;
    while (Date.now() < until && names.some((n) => !out[n])) await new Promise((r) => setTimeout(r, 10));
  }
  for (const n of names) if (!out[n]) out[n] = { rcode: -1, ips: [] };
  console.log(JSON.stringify(out));
  s.close();
})();`;

/** A query for each name, from inside ns, to server:53: {name: {rcode, ips}}. */
export function resolveAll(
  ns: NsRef,
  server: string,
  names: string[],
): Record<string, { rcode: number; ips: string[] }> {
  const r = spawnSync('nsenter', [...nsenterArgs(ns), process.execPath, '-e', RESOLVE, server, ...names], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.status !== 0)
    throw new Error(
      `resolver check from ${JSON.stringify(ns)} to ${server}: exit ${r.status ?? r.signal}: ${(r.stderr || String(r.error)).trim().slice(-400)}`,
    );
  return JSON.parse(r.stdout.trim());
}

/** Throws unless every name resolves (NOERROR) to exactly the expected address. */
export function checkResolves(where: string, ns: NsRef, server: string, want: Map<string, string>): void {
  const got = resolveAll(ns, server, [...want.keys()]);
  const bad: string[] = [];
  for (const [n, ip] of want) {
    const g = got[n];
    if (!g || g.rcode !== 0 || g.ips.length !== 1 || g.ips[0] !== ip)
      bad.push(
        `${n}: want ${ip}, got ${g ? (g.rcode === -1 ? 'no answer' : `rcode ${g.rcode} [${g.ips.join(',')}]`) : 'nothing'}`,
      );
  }
  if (bad.length)
    throw new Error(
      `verify ${where}: ${bad.length} of ${want.size} names wrong from ${server}: ${bad.slice(0, 5).join('; ')}`,
    );
}

// ---- dnsperf ----

export interface PerfResult {
  sent: number;
  completed: number;
  lost: number;
  qps: number;
  avgMs: number;
  minMs: number;
  maxMs: number;
  stddevMs: number;
  runS: number;
  rcodes: Record<string, number>;
  /** -S 1: queries/s of each interval. */
  intervals: number[];
  /** -v: latency of each answered query (ms), and their percentiles. */
  latMs?: number[];
  p50Ms?: number;
  p99Ms?: number;
  p999Ms?: number;
  /** CPU the server process used during the run, as % of one core (when its pid was given). */
  serverCpuPct?: number;
  /** The same per answered query, in microseconds: its cost, less sensitive than the rate to what else runs. */
  serverCpuUsPerQuery?: number;
  /** Of which in user space / in the kernel (utime / stime). */
  serverUserUsPerQuery?: number;
  serverSysUsPerQuery?: number;
  raw: string;
}

/** The summary dnsperf prints at the end (and -S interval lines, -v query lines). */
export function parseDnsperf(text: string): PerfResult {
  const num = (re: RegExp, what: string) => {
    const m = re.exec(text);
    if (!m) throw new Error(`dnsperf output has no "${what}":\n${text.slice(-1500)}`);
    return Number(m[1]);
  };
  const lat = /Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)/.exec(text);
  if (!lat) throw new Error(`dnsperf output has no "Average Latency":\n${text.slice(-1500)}`);
  const sd = /Latency StdDev \(s\):\s+([\d.]+)/.exec(text);
  const rcodes: Record<string, number> = {};
  const rl = /Response codes:\s*(.*)/.exec(text);
  if (rl) for (const m of rl[1].matchAll(/([A-Z]+) (\d+) \(/g)) rcodes[m[1]] = Number(m[2]);
  const intervals = [...text.matchAll(/^\d+\.\d+: ([\d.]+)$/gm)].map((m) => Number(m[1]));
  return {
    sent: num(/Queries sent:\s+(\d+)/, 'Queries sent'),
    completed: num(/Queries completed:\s+(\d+)/, 'Queries completed'),
    lost: num(/Queries lost:\s+(\d+)/, 'Queries lost'),
    qps: num(/Queries per second:\s+([\d.]+)/, 'Queries per second'),
    runS: num(/Run time \(s\):\s+([\d.]+)/, 'Run time'),
    avgMs: Number(lat[1]) * 1000,
    minMs: Number(lat[2]) * 1000,
    maxMs: Number(lat[3]) * 1000,
    stddevMs: sd ? Number(sd[1]) * 1000 : NaN,
    rcodes,
    intervals,
    raw: text,
  };
}

/** Per-query latencies (ms) from dnsperf -v lines: "> NOERROR name A 0.000123". */
export function verboseLatencies(text: string): number[] {
  const out: number[] = [];
  for (const m of text.matchAll(/^> \S+ .* ([\d.]+)$/gm)) out.push(Number(m[1]) * 1000);
  return out;
}

export interface PerfOptions {
  clients: number;
  seconds: number;
  /** -Q: cap the rate (open loop up to the cap); omitted: as fast as the server answers (-q 100 outstanding, dnsperf's default). */
  rate?: number;
  /** -v: per-query latencies (slows dnsperf down: its own throughput figure then is not comparable). */
  verbose?: boolean;
  /** -S 1: per-second rates. */
  intervals?: boolean;
  /** Whose CPU time to account over the run. */
  serverPid?: number;
}

/**
 * dnsperf from inside ns against server:53 with the query file; output to a
 * file (in dir) and parsed. Its exit status must be 0.
 */
export function dnsperf(
  ns: NsRef,
  server: string,
  queryFile: string,
  outFile: string,
  o: PerfOptions,
): PerfResult {
  const args = ['-s', server, '-p', '53', '-d', queryFile, '-c', String(o.clients), '-l', String(o.seconds)];
  if (o.rate) args.push('-Q', String(o.rate));
  if (o.intervals) args.push('-S', '1');
  if (o.verbose) args.push('-v');
  const fd = fs.openSync(outFile, 'w');
  let cpu0 = { user: 0, sys: 0 };
  let t0 = 0;
  try {
    if (o.serverPid) cpu0 = cpuTimes(o.serverPid);
    t0 = performance.now();
    const r = spawnSync('nsenter', [...nsenterArgs(ns), 'dnsperf', ...args], {
      stdio: ['ignore', fd, 'pipe'],
      encoding: 'utf8',
      timeout: (o.seconds + 60) * 1000,
      killSignal: 'SIGKILL',
    });
    if (r.error) throw new Error(`dnsperf: ${r.error.message}`);
    if (r.status !== 0)
      throw new Error(
        `dnsperf ${args.join(' ')}: exit ${r.status ?? r.signal}: ${(r.stderr || '').trim().slice(-600)} ${fs.readFileSync(outFile, 'utf8').slice(-600)}`,
      );
  } finally {
    fs.closeSync(fd);
  }
  const wallS = (performance.now() - t0) / 1000;
  const text = fs.readFileSync(outFile, 'utf8');
  const res = parseDnsperf(text);
  if (o.serverPid) {
    const c1 = cpuTimes(o.serverPid);
    const user = c1.user - cpu0.user;
    const sys = c1.sys - cpu0.sys;
    const perQuery = (sec: number) => (res.completed > 0 ? (sec * 1e6) / res.completed : NaN);
    res.serverCpuPct = ((user + sys) / wallS) * 100;
    res.serverCpuUsPerQuery = perQuery(user + sys);
    res.serverUserUsPerQuery = perQuery(user);
    res.serverSysUsPerQuery = perQuery(sys);
  }
  if (o.verbose) {
    const lat = verboseLatencies(text);
    res.latMs = lat;
    res.p50Ms = percentile(lat, 50);
    res.p99Ms = percentile(lat, 99);
    res.p999Ms = percentile(lat, 99.9);
    res.raw = ''; // large; not kept
  }
  return res;
}

/** dnsperf's input: one "name A" line per name. */
export function writeQueryFile(file: string, names: string[]): void {
  fs.writeFileSync(file, names.map((n) => `${n} A`).join('\n') + '\n');
}

// ---- V8 CPU profile ----

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Milliseconds of samples in the window. */
  windowMs: number;
  /** Whether the window was cut to the load (monotonic clocks matched) or the whole profile was used. */
  windowed: boolean;
  /** Share (%) of the window by category. */
  categories: [string, number][];
  /** Top functions by self time: [label, % of window]. */
  top: [string, number][];
}

function categoryOf(f: ProfileNode['callFrame']): string {
  const u = f.url;
  const n = f.functionName;
  if (n === '(idle)') return 'idle (waiting for packets)';
  if (n === '(garbage collector)') return 'garbage collector';
  if (n === '(program)') return 'V8/native, unattributed (incl. syscalls of the event loop)';
  if (u.includes('node_modules/dns-packet')) return 'dns-packet encode/decode';
  if (u.includes('/src/dns/records')) return 'cnmd records (lookup)';
  if (u.includes('/src/dns/')) return 'cnmd resolver (src/dns)';
  if (u.includes('/src/controller/')) return 'cnmd controller (networksOf)';
  if (u.includes('/src/store/')) return 'cnmd store';
  if (u.includes('/src/netlink/')) return 'cnmd netlink codec';
  if (u.includes('/dist/src/') || u.includes('/dist/native/')) return 'cnmd other';
  if (
    /dgram|udp_wrap/.test(u) ||
    (/^(send|onMessage|doSend|afterSend|bufferSize)$/.test(n) && u.startsWith('node:'))
  )
    return 'node dgram (send/receive)';
  if (u.startsWith('node:') || u === '') return 'node internals / builtins';
  return 'other JS';
}

/**
 * Self time of a .cpuprofile (written by node --cpu-prof), restricted to
 * [fromUs, toUs] on CLOCK_MONOTONIC (process.hrtime; V8's profile timestamps
 * use the same clock on Linux) when that window lies within the profile.
 */
export function summarizeProfile(file: string, fromUs?: number, toUs?: number): ProfileSummary {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  let windowed =
    fromUs !== undefined && toUs !== undefined && fromUs >= p.startTime && toUs <= p.endTime + 1e6;
  const self = new Map<number, number>();
  let t = p.startTime;
  let total = 0;
  const add = (useWindow: boolean) => {
    self.clear();
    total = 0;
    t = p.startTime;
    for (let i = 0; i < p.samples.length; i++) {
      t += p.timeDeltas[i];
      const dt = p.timeDeltas[i + 1] ?? 0; // a sample stands for the interval until the next
      if (useWindow && (t < fromUs! || t > toUs!)) continue;
      self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + dt);
      total += dt;
    }
  };
  add(windowed);
  if (windowed && total < 1000) {
    windowed = false; // clocks did not match after all
    add(false);
  }
  const cats = new Map<string, number>();
  const fns = new Map<string, number>();
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    const c = categoryOf(f);
    cats.set(c, (cats.get(c) ?? 0) + us);
    const where = f.url
      ? `${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/').replace(/^file:\/\//, '')}:${f.lineNumber + 1}`
      : '';
    const label = `${f.functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
    fns.set(label, (fns.get(label) ?? 0) + us);
  }
  const pct = (us: number) => (total > 0 ? (us / total) * 100 : 0);
  return {
    windowMs: total / 1000,
    windowed,
    categories: [...cats].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, pct(v)]),
    top: [...fns]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 15)
      .map(([k, v]) => [k, pct(v)]),
  };
}

/** CLOCK_MONOTONIC now, in microseconds (the clock of V8 profile timestamps). */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}
