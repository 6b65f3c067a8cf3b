// Host port allocation: which host ports are published, by whom, and which are free.
//
// Reservations are kept per (protocol, host address) as sorted, disjoint intervals, so a
// 10,000-port range costs one interval per address (O(ranges), not O(ports)), and a
// conflict check is a binary search per address.
//
// Conflicts follow Linux bind() semantics, per protocol:
//  - the same address, or either side a wildcard of the same family (0.0.0.0 covers every
//    IPv4 address, :: every IPv6 address), overlapping ports: conflict;
//  - a binding on every address ('') occupies 0.0.0.0 (or the network's host_binding_ipv4)
//    and ::, so it conflicts with any binding of the port in either family;
//  - 0.0.0.0 and :: of cnmd's own bindings do not conflict with each other: the firewall
//    rules are per family and cnmd's proxy binds IPv6 sockets IPv6-only.
//  - host processes: a listener on [::] is taken to be dual-stack (the kernel default,
//    net.ipv6.bindv6only=0; /proc/net/tcp6 does not say), so it conflicts with IPv4
//    bindings of its port too; a listener on 0.0.0.0 does not conflict with :: bindings.
//
// Host processes are found in /proc/net/{tcp,tcp6,udp,udp6} (and /proc/net/sctp/eps when
// the sctp module is loaded): TCP sockets in LISTEN, UDP sockets that are not connected.
// /proc/net is /proc/self/net: it shows the network namespace of the process that reads
// it, so a daemon in the host's netns sees the host's sockets. For another netns pass
// `/proc/<pid>/net` of a process in it (`procNetDir`). Likewise /proc/sys/net/... shows
// the netns of the process that opens it: ephemeral ports come from the daemon's netns's
// ip_local_port_range (minus ip_local_reserved_ports), unless `ephemeralRange` is given.
//
// reserve() is all-or-nothing: it reads the /proc files first, then checks and records
// every binding synchronously (no other reserve() can interleave), and undoes its own
// records if any binding fails.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CnmdError } from '../errors';
import {
  bindingAddresses,
  canonicalIP,
  formatPortSpec,
  isAllocated,
  joinHostPort,
  normalizeBinding,
  portCount,
  type PortBinding,
  type Proto,
} from './spec';

const OP = 'port allocate';

type Family = 'ipv4' | 'ipv6';

// ---- /proc parsing ---------------------------------------------------------------------------

/** A socket of a host process that a published port would shadow. */
export interface HostListener {
  proto: Proto;
  family: Family;
  /** Canonical address ('0.0.0.0' / '::' for wildcards; v4-mapped IPv6 as IPv4). */
  ip: string;
  port: number;
}

export type ProcNetFile = 'tcp' | 'tcp6' | 'udp' | 'udp6';

/** Decodes /proc/net address hex: 32-bit words printed in host byte order. */
function decodeHexAddr(hex: string, endianness: 'LE' | 'BE'): string | undefined {
  if (!/^[0-9A-Fa-f]+$/.test(hex) || (hex.length !== 8 && hex.length !== 32)) return undefined;
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = [0, 2, 4, 6].map((i) => parseInt(hex.slice(w + i, w + i + 2), 16));
    bytes.push(...(endianness === 'LE' ? word.reverse() : word));
  }
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return groups.join(':');
}

/**
 * Listening sockets in one /proc/net/{tcp,tcp6,udp,udp6} text: TCP in state LISTEN (0A),
 * UDP unconnected (07; connected UDP sockets only get their own replies).
 */
export function parseProcNet(
  text: string,
  file: ProcNetFile,
  endianness: 'LE' | 'BE' = os.endianness(),
): HostListener[] {
  const proto: Proto = file.startsWith('tcp') ? 'tcp' : 'udp';
  const wantState = proto === 'tcp' ? '0A' : '07';
  const out: HostListener[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || !/^\d+:$/.test(f[0])) continue;
    if (f[3].toUpperCase() !== wantState) continue;
    const [hex, portHex] = f[1].split(':');
    const addr = hex === undefined ? undefined : decodeHexAddr(hex, endianness);
    const ip = addr === undefined ? undefined : canonicalIP(addr);
    const port = parseInt(portHex ?? '', 16);
    if (!ip || !(port >= 1 && port <= 65535)) continue;
    out.push({ proto, family: ip.family, ip: ip.ip, port });
  }
  return out;
}

/**
 * SCTP endpoints from /proc/net/sctp/eps (`ENDPT SOCK STY SST HBKT LPORT UID INODE
 * LADDRS...`): every bound local address of each endpoint.
 */
export function parseSctpEps(text: string): HostListener[] {
  const out: HostListener[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[0] === 'ENDPT') continue;
    const port = Number(f[5]);
    if (!(Number.isInteger(port) && port >= 1 && port <= 65535)) continue;
    const addrs = f
      .slice(8)
      .map((a) => canonicalIP(a))
      .filter((a): a is NonNullable<typeof a> => !!a);
    // No address listed: take it as bound everywhere.
    if (addrs.length === 0) addrs.push({ ip: '::', family: 'ipv6' });
    for (const a of addrs) out.push({ proto: 'sctp', family: a.family, ip: a.ip, port });
  }
  return out;
}

/**
 * Reads a /proc file. Each read(2) of /proc/net/tcp walks the kernel's whole socket hash
 * (milliseconds on a big machine, even with no sockets), and seq_file fills the buffer it
 * is given, so a short read is the end: one big read instead of readFile's read-until-0.
 */
async function readProc(file: string): Promise<string> {
  const h = await fsp.open(file, 'r');
  try {
    const chunks: Buffer[] = [];
    let size = 256 << 10;
    for (;;) {
      const buf = Buffer.allocUnsafe(size);
      const { bytesRead } = await h.read(buf, 0, size, null);
      chunks.push(buf.subarray(0, bytesRead));
      if (bytesRead < size) break;
      size *= 2;
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    await h.close();
  }
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readProc(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined; // no IPv6, no sctp module
    throw new CnmdError('KERNEL_ERROR', `${OP}: cannot read ${file}: ${(e as Error).message}`, {
      op: OP,
      object: file,
      errno: code,
      cause: e,
    });
  }
}

/**
 * The host's listening sockets for the given protocols, from `procNetDir` (default
 * /proc/self/net: the reader's own netns; `/proc/<pid>/net` for the netns of pid).
 */
export async function readHostListeners(
  procNetDir = '/proc/self/net',
  protos: Iterable<Proto> = ['tcp', 'udp', 'sctp'],
): Promise<HostListener[]> {
  const want = new Set(protos);
  const files: { file: string; parse: (t: string) => HostListener[] }[] = [];
  for (const f of ['tcp', 'tcp6', 'udp', 'udp6'] as const) {
    if (want.has(f.startsWith('tcp') ? 'tcp' : 'udp'))
      files.push({ file: path.join(procNetDir, f), parse: (t) => parseProcNet(t, f) });
  }
  if (want.has('sctp')) files.push({ file: path.join(procNetDir, 'sctp', 'eps'), parse: parseSctpEps });
  const texts = await Promise.all(files.map((f) => readOptional(f.file)));
  const out: HostListener[] = [];
  texts.forEach((t, i) => t !== undefined && out.push(...files[i].parse(t)));
  return out;
}

export interface PortRange {
  start: number;
  end: number;
}

/** `32768\t60999` (net.ipv4.ip_local_port_range). */
export function parsePortRangeSysctl(text: string): PortRange | undefined {
  const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(text);
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (!(start >= 1 && end <= 65535 && start <= end)) return undefined;
  return { start, end };
}

/** `8080,9000-9010` (net.ipv4.ip_local_reserved_ports; empty: none). */
export function parseReservedPorts(text: string): PortRange[] {
  const out: PortRange[] = [];
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) continue;
    const start = Number(m[1]);
    const end = m[2] === undefined ? start : Number(m[2]);
    if (start <= end) out.push({ start, end });
  }
  return out;
}

/** Docker's fallback when ip_local_port_range cannot be read. */
export const DEFAULT_EPHEMERAL_RANGE: PortRange = { start: 49153, end: 65535 };

// ---- intervals -------------------------------------------------------------------------------

interface Reservation {
  start: number;
  end: number;
  owner: string;
  /** The concrete address occupied ('0.0.0.0', '::', or one address). */
  addr: string;
  family: Family;
  /** The allocated binding it belongs to. */
  binding: PortBinding;
}

/** Disjoint intervals of one (proto, address), sorted by start. */
class IntervalList {
  readonly items: Reservation[] = [];

  /** Index of the first item with end >= port. */
  private lowerBound(port: number): number {
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.items[mid].end < port) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The first reservation overlapping [start, end], if any. */
  overlapping(start: number, end: number): Reservation | undefined {
    const r = this.items[this.lowerBound(start)];
    return r && r.start <= end ? r : undefined;
  }

  /** Reservations overlapping [start, end]. */
  *within(start: number, end: number): Generator<Reservation> {
    for (let i = this.lowerBound(start); i < this.items.length && this.items[i].start <= end; i++)
      yield this.items[i];
  }

  insert(r: Reservation): void {
    this.items.splice(this.lowerBound(r.start), 0, r);
  }

  remove(r: Reservation): boolean {
    const i = this.items.indexOf(r, this.lowerBound(r.start));
    if (i < 0) return false;
    this.items.splice(i, 1);
    return true;
  }
}

function isWildcard(addr: string): boolean {
  return addr === '0.0.0.0' || addr === '::';
}

/** Linux bind semantics between two of cnmd's own bindings (same protocol). */
function addrsOverlap(a: string, af: Family, b: string, bf: Family): boolean {
  return af === bf && (a === b || isWildcard(a) || isWildcard(b));
}

/** A host listener against a binding address (same protocol); [::] listeners are taken as dual-stack. */
function listenerOverlaps(l: HostListener, addr: string, family: Family): boolean {
  if (l.family === 'ipv6' && l.ip === '::' && family === 'ipv4') return true;
  return addrsOverlap(l.ip, l.family, addr, family);
}

function portsText(start: number, end: number, proto: Proto): string {
  return start === end ? `port ${start}/${proto}` : `ports ${start}-${end}/${proto}`;
}

function rangeText(start: number, end: number): string {
  return start === end ? String(start) : `${start}-${end}`;
}

// ---- the allocator ---------------------------------------------------------------------------

export interface PortAllocatorOptions {
  /** Root of the proc tree (default /proc): <procRoot>/sys/net/ipv4/ip_local_port_range and ip_local_reserved_ports. */
  procRoot?: string;
  /** Where tcp, tcp6, udp, udp6 (and sctp/eps) are read (default <procRoot>/net, i.e. the reader's netns). */
  procNetDir?: string;
  /** Ephemeral range to use instead of ip_local_port_range. */
  ephemeralRange?: PortRange;
  /** Refuse ports that host processes listen on (default true). */
  checkHostListeners?: boolean;
}

export interface ReserveOptions {
  /** The network's com.docker.network.bridge.host_binding_ipv4: what '' means for IPv4 (default 0.0.0.0). */
  hostBindingIPv4?: string;
}

interface Target {
  addr: string;
  family: Family;
}

interface Owned {
  binding: PortBinding;
  reservations: Reservation[];
}

export class PortAllocator {
  private readonly procRoot: string;
  private readonly procNetDir: string;
  private readonly fixedRange?: PortRange;
  private readonly checkHostListeners: boolean;
  /** `${proto} ${addr}` -> intervals. */
  private readonly lists = new Map<string, IntervalList>();
  private readonly byOwner = new Map<string, Owned[]>();
  /** The daemon's own listeners (the proxy's), which never block a publish. */
  private readonly own = new Set<string>();
  /**
   * How a message names an owner (an endpoint id): the daemon answers with the sandbox
   * (`sandbox "web"`); unset or undefined: the id's 12-hex prefix.
   */
  describeOwner?: (owner: string) => string | undefined;
  /**
   * Where the next ephemeral search starts, per protocol (round robin, like Docker: a port just freed is not
   * reused at once).
   */
  private readonly cursor: Record<Proto, number> = { tcp: 0, udp: 0, sctp: 0 };

  constructor(opts: PortAllocatorOptions = {}) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.procNetDir = opts.procNetDir ?? path.join(this.procRoot, 'net');
    this.fixedRange = opts.ephemeralRange;
    this.checkHostListeners = opts.checkHostListeners ?? true;
  }

  /**
   * A listener of the daemon itself (the userland proxy's REDIRECT target, on an
   * ephemeral port): not a host process's, so a range covering it may be published.
   */
  ownListener(proto: Proto, ip: string, port: number): void {
    this.own.add(`${proto} ${ip} ${port}`);
  }

  /** The ephemeral range and the ports excluded from it (ip_local_reserved_ports). */
  async ephemeralRange(): Promise<{ range: PortRange; reserved: PortRange[] }> {
    const sys = path.join(this.procRoot, 'sys', 'net', 'ipv4');
    const reservedText = await readOptional(path.join(sys, 'ip_local_reserved_ports'));
    const reserved = reservedText ? parseReservedPorts(reservedText) : [];
    if (this.fixedRange) return { range: this.fixedRange, reserved };
    const text = await readOptional(path.join(sys, 'ip_local_port_range'));
    return { range: (text && parsePortRangeSysctl(text)) || DEFAULT_EPHEMERAL_RANGE, reserved };
  }

  /**
   * Reserves host ports for `owner` (a sandbox/endpoint id). Every binding is checked
   * against all reservations (this owner's included) and, unless disabled, against host
   * processes' listeners; ephemeral ports (hostPort 0) and "one of a host range" are
   * chosen here. Returns the bindings as allocated (exact host ports, same order).
   * All or nothing: on any failure no binding stays reserved.
   * Rejects with CONFLICT (a port in use), EXHAUSTED (no free ephemeral block),
   * INVALID_ARGUMENT (a bad binding).
   */
  async reserve(
    owner: string,
    bindings: readonly PortBinding[],
    opts: ReserveOptions = {},
  ): Promise<PortBinding[]> {
    const list = bindings.map((b) => normalizeBinding(b));
    for (const b of list) bindingAddresses(b.hostIP, opts.hostBindingIPv4); // validates host_binding_ipv4 early
    const protos = new Set(list.map((b) => b.proto));
    const listeners = (
      this.checkHostListeners && list.length ? await readHostListeners(this.procNetDir, protos) : []
    ).filter((l) => !this.own.has(`${l.proto} ${l.ip} ${l.port}`));
    const eph = list.some((b) => b.hostPort === 0) ? await this.ephemeralRange() : undefined;
    return this.place(owner, list, listeners, eph, opts);
  }

  /**
   * Records already-allocated bindings without looking at host processes (daemon
   * recovery: the ports are in use by cnmd itself). Conflicts with other reservations
   * still throw CONFLICT; all or nothing.
   */
  restore(owner: string, bindings: readonly PortBinding[], opts: ReserveOptions = {}): PortBinding[] {
    const list = bindings.map((b) => normalizeBinding(b));
    for (const b of list) {
      if (!isAllocated(b))
        throw new CnmdError(
          'INVALID_ARGUMENT',
          `${OP}: restore needs allocated bindings, got ${formatPortSpec(b)}`,
          { op: OP, object: owner },
        );
    }
    return this.place(owner, list, [], undefined, opts);
  }

  /**
   * Releases `owner`'s reservations: all of them, or only those of the given allocated
   * bindings. Returns the bindings released. Releasing nothing is not an error.
   */
  release(owner: string, bindings?: readonly PortBinding[]): PortBinding[] {
    const owned = this.byOwner.get(owner);
    if (!owned) return [];
    const keep: Owned[] = [];
    const released: PortBinding[] = [];
    const wanted = bindings?.map((b) => formatPortSpec(normalizeBinding(b)));
    for (const o of owned) {
      const spec = formatPortSpec(o.binding);
      const i = wanted ? wanted.indexOf(spec) : 0;
      if (wanted && i < 0) {
        keep.push(o);
        continue;
      }
      if (wanted) wanted.splice(i, 1);
      for (const r of o.reservations) this.listOf(o.binding.proto, r.addr, false)?.remove(r);
      released.push(o.binding);
    }
    if (keep.length) this.byOwner.set(owner, keep);
    else this.byOwner.delete(owner);
    this.prune();
    return released;
  }

  /** The allocated bindings of one owner. */
  owned(owner: string): PortBinding[] {
    return (this.byOwner.get(owner) ?? []).map((o) => ({ ...o.binding }));
  }

  owners(): string[] {
    return [...this.byOwner.keys()];
  }

  /** The owner that publishes `port` on exactly this address ('' matches a binding on every address), if any. */
  ownerOf(proto: Proto, hostIP: string, port: number, opts: ReserveOptions = {}): string | undefined {
    const addrs = bindingAddresses(
      hostIP === '' ? '' : (canonicalIP(hostIP)?.ip ?? hostIP),
      opts.hostBindingIPv4,
    );
    for (const addr of [addrs.ipv4, addrs.ipv6]) {
      if (addr === undefined) continue;
      const r = this.listOf(proto, addr, false)?.overlapping(port, port);
      if (r) return r.owner;
    }
    return undefined;
  }

  /** Bookkeeping size: intervals stored and owners (a range is one interval per address). */
  stats(): { intervals: number; owners: number; lists: number } {
    let intervals = 0;
    for (const l of this.lists.values()) intervals += l.items.length;
    return { intervals, owners: this.byOwner.size, lists: this.lists.size };
  }

  // ---- internals ---------------------------------------------------------------------------

  private listOf(proto: Proto, addr: string, create: true): IntervalList;
  private listOf(proto: Proto, addr: string, create: false): IntervalList | undefined;
  private listOf(proto: Proto, addr: string, create: boolean): IntervalList | undefined {
    const key = `${proto} ${addr}`;
    let l = this.lists.get(key);
    if (!l && create) this.lists.set(key, (l = new IntervalList()));
    return l;
  }

  private prune(): void {
    for (const [k, l] of this.lists) if (l.items.length === 0) this.lists.delete(k);
  }

  /** Lists of `proto` whose addresses overlap `t` under bind semantics. */
  private *conflictingLists(proto: Proto, t: Target): Generator<IntervalList> {
    for (const [key, list] of this.lists) {
      const sp = key.indexOf(' ');
      if (key.slice(0, sp) !== proto) continue;
      const addr = key.slice(sp + 1);
      if (addrsOverlap(addr, addr.includes(':') ? 'ipv6' : 'ipv4', t.addr, t.family)) yield list;
    }
  }

  private targets(b: PortBinding, opts: ReserveOptions): Target[] {
    const a = bindingAddresses(b.hostIP, opts.hostBindingIPv4);
    const out: Target[] = [];
    if (a.ipv4) out.push({ addr: a.ipv4, family: 'ipv4' });
    if (a.ipv6) out.push({ addr: a.ipv6, family: 'ipv6' });
    return out;
  }

  /** Throws CONFLICT if [start, end] is taken on any target. */
  private check(
    owner: string,
    b: PortBinding,
    targets: Target[],
    start: number,
    end: number,
    listeners: HostListener[],
    spec: string,
  ): void {
    for (const t of targets) {
      for (const list of this.conflictingLists(b.proto, t)) {
        const r = list.overlapping(start, end);
        if (!r) continue;
        const at = Math.max(start, r.start);
        const theirs = joinHostPort(r.addr, rangeText(r.start, r.end));
        const by =
          r.owner === owner
            ? 'by another binding of the same request'
            : `by ${this.describeOwner?.(r.owner) ?? `endpoint ${r.owner.slice(0, 12)}`}`;
        throw new CnmdError(
          'CONFLICT',
          `${portsText(at, at, b.proto)} is already published (${theirs}/${b.proto} ${by}); cannot publish ${spec}`,
          { op: OP, object: spec, owner: r.owner },
        );
      }
      for (const l of listeners) {
        if (l.proto !== b.proto || l.port < start || l.port > end || !listenerOverlaps(l, t.addr, t.family))
          continue;
        throw new CnmdError(
          'CONFLICT',
          `port ${l.port}/${b.proto} is already in use by a process on the host ` +
            `(${joinHostPort(l.ip, l.port)}); cannot publish ${spec}`,
          { op: OP, object: spec, listener: joinHostPort(l.ip, l.port) },
        );
      }
    }
  }

  /** Busy intervals within [lo, hi] for `b` on every target, sorted and merged. */
  private busy(
    b: PortBinding,
    targets: Target[],
    lo: number,
    hi: number,
    listeners: HostListener[],
    extra: PortRange[],
  ): PortRange[] {
    const raw: PortRange[] = extra
      .filter((r) => r.end >= lo && r.start <= hi)
      .map((r) => ({ start: r.start, end: r.end }));
    for (const t of targets) {
      for (const list of this.conflictingLists(b.proto, t))
        for (const r of list.within(lo, hi)) raw.push({ start: r.start, end: r.end });
      for (const l of listeners) {
        if (l.proto === b.proto && l.port >= lo && l.port <= hi && listenerOverlaps(l, t.addr, t.family))
          raw.push({ start: l.port, end: l.port });
      }
    }
    raw.sort((x, y) => x.start - y.start);
    const merged: PortRange[] = [];
    for (const r of raw) {
      const last = merged[merged.length - 1];
      if (last && r.start <= last.end + 1) last.end = Math.max(last.end, r.end);
      else merged.push({ ...r });
    }
    return merged;
  }

  /** First start s >= from with [s, s+n-1] inside [lo, hi] and free; undefined if none. */
  private static firstFit(
    busy: PortRange[],
    lo: number,
    hi: number,
    n: number,
    from: number,
  ): number | undefined {
    let gapStart = lo;
    for (const r of [...busy, { start: hi + 1, end: hi + 1 }]) {
      const gapEnd = Math.min(r.start - 1, hi);
      const s = Math.max(gapStart, from);
      if (s + n - 1 <= gapEnd) return s;
      gapStart = Math.max(gapStart, r.end + 1);
      if (gapStart > hi) break;
    }
    return undefined;
  }

  private place(
    owner: string,
    list: PortBinding[],
    listeners: HostListener[],
    eph: { range: PortRange; reserved: PortRange[] } | undefined,
    opts: ReserveOptions,
  ): PortBinding[] {
    const added: Owned[] = [];
    const out: PortBinding[] = [];
    const cursors = { ...this.cursor };
    try {
      for (const b of list) {
        const spec = formatPortSpec(b);
        const targets = this.targets(b, opts);
        const n = portCount(b);
        let start: number;
        if (isAllocated(b)) {
          start = b.hostPort;
          this.check(owner, b, targets, start, start + n - 1, listeners, spec);
        } else if (b.hostPort === 0) {
          const { range, reserved } = eph!;
          const busy = this.busy(b, targets, range.start, range.end, listeners, reserved);
          const from = Math.min(Math.max(cursors[b.proto], range.start), range.end);
          const s =
            PortAllocator.firstFit(busy, range.start, range.end, n, from) ??
            PortAllocator.firstFit(busy, range.start, range.end, n, range.start);
          if (s === undefined) {
            throw new CnmdError(
              'EXHAUSTED',
              `no ${n === 1 ? 'free ephemeral port' : `${n} consecutive free ephemeral ports`} for ${spec} in ${range.start}-${range.end}/${b.proto} (net.ipv4.ip_local_port_range)`,
              { op: OP, object: spec },
            );
          }
          start = s;
          cursors[b.proto] = s + n > range.end ? range.start : s + n;
        } else {
          // One host port out of hostPort..hostPortEnd: the lowest free one.
          const hi = b.hostPortEnd!;
          const busy = this.busy(b, targets, b.hostPort, hi, listeners, []);
          const s = PortAllocator.firstFit(busy, b.hostPort, hi, 1, b.hostPort);
          if (s === undefined) {
            throw new CnmdError(
              'CONFLICT',
              `every host port of ${b.hostPort}-${hi}/${b.proto} is already in use; cannot publish ${spec}`,
              { op: OP, object: spec },
            );
          }
          start = s;
        }
        const allocated: PortBinding = {
          proto: b.proto,
          hostIP: b.hostIP,
          hostPort: start,
          containerPort: b.containerPort,
        };
        if (n > 1) {
          allocated.hostPortEnd = start + n - 1;
          allocated.containerPortEnd = b.containerPortEnd;
        }
        const owned: Owned = { binding: allocated, reservations: [] };
        for (const t of targets) {
          const r: Reservation = {
            start,
            end: start + n - 1,
            owner,
            addr: t.addr,
            family: t.family,
            binding: allocated,
          };
          this.listOf(b.proto, t.addr, true).insert(r);
          owned.reservations.push(r);
        }
        added.push(owned);
        out.push({ ...allocated });
      }
    } catch (e) {
      for (const o of added)
        for (const r of o.reservations) this.listOf(o.binding.proto, r.addr, false)?.remove(r);
      this.prune();
      throw e;
    }
    if (added.length) this.byOwner.set(owner, [...(this.byOwner.get(owner) ?? []), ...added]);
    Object.assign(this.cursor, cursors);
    return out;
  }
}
