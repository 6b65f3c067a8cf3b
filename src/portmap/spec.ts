// Port bindings: Docker's `-p` syntax parsed into normalized bindings, and printed back
// the way `docker port` prints them.
//
// Accepted forms (github.com/docker/go-connections/nat ParsePortSpec, the code Docker's
// CLI and API use):
//
//   CP                  container port, ephemeral host port on every address
//   HP:CP               host port HP on every address
//   IP:HP:CP            host port HP on one host address
//   IP::CP              ephemeral host port on one host address
//   A-B:C-D             a range: host A..B to container C..D, both of the SAME length
//   A-B:C               ONE host port out of A..B (the first free one) to container port C
//   C-D / IP::C-D       a container range, each port with an ephemeral host port
//   .../tcp /udp /sctp  protocol, case-insensitive (default tcp)
//   [::1]:8080:80  [fd00::1]::80  ::1:8080:80   IPv6 host addresses, bracketed or not
//                                               (unbracketed: everything before the last two colons)
//
// A binding is kept as a range, never expanded into one object per port: a 10,000-port
// range is one PortBinding. What Docker refuses is refused here too, with a message that
// says what to change: ports outside 1-65535 (host port 0 alone means "ephemeral"),
// ranges of different lengths, a single host port for a container range, reversed
// ranges, an unknown protocol, a host address that is not one IP address.
import { CnmdError } from '../errors';
import { canonicalAddress } from '../firewall/canonical';

export type Proto = 'tcp' | 'udp' | 'sctp';
export const PROTOS: readonly Proto[] = ['tcp', 'udp', 'sctp'];

export interface PortBinding {
  proto: Proto;
  /**
   * '' = every address (0.0.0.0 and ::, or the network's host_binding_ipv4); else one canonical IPv4 or IPv6
   * address.
   */
  hostIP: string;
  /** 0 = ephemeral (allocated from ip_local_port_range). */
  hostPort: number;
  /** Last host port of a range (present only when > hostPort). */
  hostPortEnd?: number;
  containerPort: number;
  /** Last container port of a range (present only when > containerPort). */
  containerPortEnd?: number;
}

/*
 * How to read a binding's ports:
 *  - hostPortEnd and containerPortEnd, same length: host hostPort+i -> container containerPort+i.
 *  - hostPortEnd without containerPortEnd: ONE host port out of hostPort..hostPortEnd
 *    (chosen by the allocator) -> containerPort.
 *  - hostPort 0: ephemeral host port(s), as many as container ports.
 * The allocator returns bindings of the first form or single ports only ("allocated").
 */

const OP = 'port spec';

function specError(spec: string, message: string): CnmdError {
  return new CnmdError('INVALID_ARGUMENT', `invalid port spec ${JSON.stringify(spec)}: ${message}`, {
    op: OP,
    object: spec,
  });
}

/** One IP address in canonical text (IPv4 dotted, IPv6 as inet_ntop writes it); v4-mapped IPv6 becomes IPv4. */
export function canonicalIP(s: string): { ip: string; family: 'ipv4' | 'ipv6' } | undefined {
  if (typeof s !== 'string' || s.includes('/') || s === '') return undefined;
  const v4 = canonicalAddress(s, 'ipv4');
  if (v4) return { ip: v4.text.slice(0, -3), family: 'ipv4' };
  const v6 = canonicalAddress(s, 'ipv6');
  if (!v6) return undefined;
  const text = v6.text.slice(0, -4);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (mapped) return { ip: mapped[1], family: 'ipv4' };
  return { ip: text, family: 'ipv6' };
}

/** The family of a binding's host address, or undefined for '' (every address). */
export function hostFamily(hostIP: string): 'ipv4' | 'ipv6' | undefined {
  if (hostIP === '') return undefined;
  return hostIP.includes(':') ? 'ipv6' : 'ipv4';
}

/** Parses "N" or "N-M" (decimal only). */
function parseRange(spec: string, what: 'host' | 'container', text: string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(text);
  if (!m) {
    let hint =
      text === '' ? 'is empty' : `${JSON.stringify(text)} is not a port number or a range like 8000-8099`;
    if (what === 'host' && canonicalIP(text.replace(/^\[(.*)\]$/, '$1')))
      hint += `; to publish on the address ${text} with an ephemeral port write ${text}::CONTAINER_PORT`;
    throw specError(spec, `${what} port ${hint}`);
  }
  const start = Number(m[1]);
  const end = m[2] === undefined ? start : Number(m[2]);
  for (const p of m[2] === undefined ? [start] : [start, end]) {
    if (!(p >= 1 && p <= 65535) && !(what === 'host' && p === 0 && m[2] === undefined)) {
      throw specError(spec, `${what} port ${p} is outside 1-65535`);
    }
  }
  if (end < start) throw specError(spec, `${what} port range ${text} is reversed (write ${end}-${start})`);
  return [start, end];
}

/**
 * Parses one `-p` value (see the file comment for the forms). Returns the bindings it
 * stands for: always one, normalized (ranges kept as ranges).
 * Throws CnmdError INVALID_ARGUMENT naming what to fix.
 */
export function parsePortSpec(s: string): PortBinding[] {
  if (typeof s !== 'string') throw specError(String(s), 'not a string');
  if (/\s/.test(s)) throw specError(s, 'contains whitespace; write it without spaces, e.g. 8080:80');
  const spec = s;
  if (spec === '') throw specError(s, 'empty; expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]');
  // Protocol: after the last '/', which must follow the container port.
  let rest = spec;
  let proto: Proto = 'tcp';
  const slash = spec.indexOf('/');
  if (slash >= 0) {
    const p = spec.slice(slash + 1).toLowerCase();
    rest = spec.slice(0, slash);
    if (p.includes(':'))
      throw specError(s, 'the protocol goes after the container port (HOST_PORT:CONTAINER_PORT/PROTO)');
    if (p.includes('/')) throw specError(s, 'more than one "/"; expected PORT/PROTO');
    if (p !== '') {
      if (!(PROTOS as readonly string[]).includes(p))
        throw specError(s, `protocol ${JSON.stringify(spec.slice(slash + 1))} is not one of tcp, udp, sctp`);
      proto = p as Proto;
    }
  }
  // IP:HP:CP — the container port is after the last colon, the host port before it,
  // the address is everything before that (IPv6 addresses contain colons).
  const parts = rest.split(':');
  const cpText = parts[parts.length - 1];
  const hpText = parts.length >= 2 ? parts[parts.length - 2] : '';
  let ipText = parts.length >= 3 ? parts.slice(0, parts.length - 2).join(':') : '';
  if (cpText === '')
    throw specError(s, 'no container port; expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]');

  let hostIP = '';
  if (parts.length >= 3) {
    if (ipText.startsWith('[')) {
      if (!ipText.endsWith(']'))
        throw specError(s, `host address ${ipText} has an unclosed "["; write it like [::1]:8080:80`);
      ipText = ipText.slice(1, -1);
    }
    if (ipText === '')
      throw specError(
        s,
        'empty host address; leave it out to publish on every address (HOST_PORT:CONTAINER_PORT)',
      );
    const ip = canonicalIP(ipText);
    if (!ip)
      throw specError(
        s,
        `host address ${JSON.stringify(ipText)} is not an IPv4 or IPv6 address (IPv6 goes in brackets: [::1]:8080:80)`,
      );
    hostIP = ip.ip;
  }

  const [cp, cpEnd] = parseRange(s, 'container', cpText);
  let hp = 0;
  let hpEnd = 0;
  if (hpText !== '') [hp, hpEnd] = parseRange(s, 'host', hpText);

  const cpLen = cpEnd - cp;
  const hpLen = hpEnd - hp;
  if (hpText !== '' && hpLen !== cpLen && cpLen !== 0) {
    if (hpLen === 0)
      throw specError(
        s,
        `host port ${hpText} is one port but container ports ${cpText} are ${cpLen + 1}; give a host range ` +
          `of the same length (e.g. ${hp}-${hp + cpLen}:${cpText}) or no host port`,
      );
    throw specError(
      s,
      `host range ${hpText} has ${hpLen + 1} ports but container range ${cpText} has ${cpLen + 1}; the ` +
        `ranges must be the same length`,
    );
  }
  const b: PortBinding = { proto, hostIP, hostPort: hp, containerPort: cp };
  if (hpEnd > hp) b.hostPortEnd = hpEnd;
  if (cpEnd > cp) b.containerPortEnd = cpEnd;
  return [b];
}

/** Parses several `-p` values; the first bad one throws. */
export function parsePortSpecs(specs: readonly string[]): PortBinding[] {
  const out: PortBinding[] = [];
  for (const s of specs) out.push(...parsePortSpec(s));
  return out;
}

function isPort(n: unknown, allowZero = false): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n <= 65535 && (n >= 1 || (allowZero && n === 0));
}

/**
 * Validates and normalizes a binding given as an object (API input, stored state): the
 * same rules as parsePortSpec. Returns a new object; throws INVALID_ARGUMENT.
 */
export function normalizeBinding(b: unknown): PortBinding {
  const o = (b ?? {}) as Record<string, unknown>;
  const shown = JSON.stringify(b);
  const fail = (m: string) =>
    new CnmdError('INVALID_ARGUMENT', `invalid port binding ${shown}: ${m}`, { op: OP, object: shown });
  if (typeof b !== 'object' || b === null) throw fail('not an object');
  const proto = o.proto === undefined ? 'tcp' : typeof o.proto === 'string' ? o.proto.toLowerCase() : o.proto;
  if (!(PROTOS as readonly unknown[]).includes(proto))
    throw fail(`proto ${JSON.stringify(o.proto)} is not one of tcp, udp, sctp`);
  let hostIP = '';
  if (o.hostIP !== undefined && o.hostIP !== '') {
    const ip = typeof o.hostIP === 'string' ? canonicalIP(o.hostIP.replace(/^\[(.*)\]$/, '$1')) : undefined;
    if (!ip) throw fail(`hostIP ${JSON.stringify(o.hostIP)} is not an IPv4 or IPv6 address`);
    hostIP = ip.ip;
  }
  const hp = o.hostPort ?? 0;
  if (!isPort(hp, true))
    throw fail(`hostPort ${JSON.stringify(o.hostPort)} is outside 1-65535 (0: ephemeral)`);
  if (!isPort(o.containerPort))
    throw fail(`containerPort ${JSON.stringify(o.containerPort)} is outside 1-65535`);
  const hpEnd = o.hostPortEnd ?? hp;
  const cpEnd = o.containerPortEnd ?? o.containerPort;
  if (!isPort(hpEnd, true) || (hpEnd as number) < hp)
    throw fail(`hostPortEnd ${JSON.stringify(o.hostPortEnd)} must be a port >= hostPort`);
  if (!isPort(cpEnd) || cpEnd < o.containerPort)
    throw fail(`containerPortEnd ${JSON.stringify(o.containerPortEnd)} must be a port >= containerPort`);
  if (hp === 0 && hpEnd !== 0) throw fail('a host range cannot start at 0');
  const hpLen = (hpEnd as number) - hp;
  const cpLen = cpEnd - o.containerPort;
  if (hp !== 0 && cpLen !== 0 && hpLen !== cpLen)
    throw fail(
      `host range has ${hpLen + 1} ports but container range has ${cpLen + 1}; they must be the same length`,
    );
  const out: PortBinding = { proto: proto as Proto, hostIP, hostPort: hp, containerPort: o.containerPort };
  if ((hpEnd as number) > hp) out.hostPortEnd = hpEnd as number;
  if (cpEnd > o.containerPort) out.containerPortEnd = cpEnd;
  return out;
}

/** Number of container ports a binding publishes. */
export function portCount(b: PortBinding): number {
  return (b.containerPortEnd ?? b.containerPort) - b.containerPort + 1;
}

/**
 * True when the binding names its host ports exactly (no ephemeral port, no "one of a
 * host range"): the form the allocator returns and rules.ts needs.
 */
export function isAllocated(b: PortBinding): boolean {
  if (b.hostPort === 0) return false;
  return (
    (b.hostPortEnd ?? b.hostPort) - b.hostPort === (b.containerPortEnd ?? b.containerPort) - b.containerPort
  );
}

function range(a: number, b?: number): string {
  return b !== undefined && b !== a ? `${a}-${b}` : String(a);
}

/** The binding back as a `-p` value that parsePortSpec reads to the same binding. */
export function formatPortSpec(b: PortBinding): string {
  const cp = `${range(b.containerPort, b.containerPortEnd)}/${b.proto}`;
  const hp = b.hostPort === 0 ? '' : range(b.hostPort, b.hostPortEnd);
  if (b.hostIP === '') return hp === '' ? cp : `${hp}:${cp}`;
  const ip = b.hostIP.includes(':') ? `[${b.hostIP}]` : b.hostIP;
  return `${ip}:${hp}:${cp}`;
}

/** `ip:port` the way Go's net.JoinHostPort writes it. */
export function joinHostPort(ip: string, port: number | string): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Which addresses a binding occupies: '' is 0.0.0.0 (or the network's
 * host_binding_ipv4) plus ::; a given address is only itself.
 */
export function bindingAddresses(hostIP: string, hostBindingIPv4?: string): { ipv4?: string; ipv6?: string } {
  if (hostIP === '') return { ipv4: defaultBindingIPv4(hostBindingIPv4), ipv6: '::' };
  return hostFamily(hostIP) === 'ipv4' ? { ipv4: hostIP } : { ipv6: hostIP };
}

/** Validates the bridge option com.docker.network.bridge.host_binding_ipv4 (default 0.0.0.0). */
export function defaultBindingIPv4(hostBindingIPv4?: string): string {
  if (hostBindingIPv4 === undefined || hostBindingIPv4 === '') return '0.0.0.0';
  const ip = canonicalIP(hostBindingIPv4);
  if (!ip || ip.family !== 'ipv4') {
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `host_binding_ipv4 ${JSON.stringify(hostBindingIPv4)} is not an IPv4 address`,
      { op: OP, object: hostBindingIPv4 },
    );
  }
  return ip.ip;
}

export interface FormatOptions {
  /**
   * Print a range as one line (`80-179/tcp -> 0.0.0.0:8000-8099`) instead of one line per port as `docker
   * port` does.
   */
  compact?: boolean;
  /** Include the `[::]` line for bindings on every address (default true; false when the daemon has no IPv6). */
  ipv6?: boolean;
  /** The network's host_binding_ipv4, shown instead of 0.0.0.0. */
  hostBindingIPv4?: string;
}

/**
 * The lines `docker port` prints for an allocated binding: `80/tcp -> 0.0.0.0:8080`, then
 * `80/tcp -> [::]:8080` for a binding on every address; one line per port of a range
 * (unless `compact`).
 */
export function formatBinding(b: PortBinding, opts: FormatOptions = {}): string[] {
  const addrs = bindingAddresses(b.hostIP, opts.hostBindingIPv4);
  const ips: string[] = [];
  if (addrs.ipv4) ips.push(addrs.ipv4);
  if (addrs.ipv6 && (b.hostIP !== '' || opts.ipv6 !== false)) ips.push(addrs.ipv6);
  const n = portCount(b);
  const hostRangeOnly = b.hostPortEnd !== undefined && b.containerPortEnd === undefined; // not allocated yet
  const out: string[] = [];
  if (opts.compact || n === 1) {
    const cp = `${range(b.containerPort, b.containerPortEnd)}/${b.proto}`;
    const hp = hostRangeOnly || n > 1 ? range(b.hostPort, b.hostPortEnd) : String(b.hostPort);
    for (const ip of ips) out.push(`${cp} -> ${joinHostPort(ip, hp)}`);
    return out;
  }
  for (let i = 0; i < n; i++) {
    const cp = `${b.containerPort + i}/${b.proto}`;
    const hp = b.hostPort === 0 ? 0 : b.hostPort + i;
    for (const ip of ips) out.push(`${cp} -> ${joinHostPort(ip, hp)}`);
  }
  return out;
}
