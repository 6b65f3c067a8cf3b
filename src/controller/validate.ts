// Checks on what a client names and asks for before anything is made: every
// value here ends up in a file a container reads (resolv.conf, hosts) or in a
// kernel object, so nothing may carry whitespace, newlines or a second meaning.
import * as path from 'node:path';
import { CnmdError, invalidArgument } from '../errors';
import { ipToBig } from '../net/addr';
import { EMBEDDED_DNS_OPTION } from './dns-view';
import type { DnsConfig } from './records';

/** Network and sandbox names: Docker's characters, and a length a DNS name (name.network) can carry. */
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/;

const LABEL_RE = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

/** dot-separated labels of letters, digits and inner '-', each 1-63 long; `trailingDot` allows one final '.'. */
function isDomain(s: string, max: number, trailingDot: boolean): boolean {
  if (s.length === 0 || s.length > max) return false;
  const labels = (trailingDot && s.endsWith('.') ? s.slice(0, -1) : s).split('.');
  return labels.every((l) => LABEL_RE.test(l));
}

export function checkName(op: string, kind: 'network' | 'sandbox', name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name))
    throw invalidArgument(
      op,
      String(name),
      `${kind} name "${String(name).slice(0, 80)}" is invalid: use up to 255 letters, digits, '_', '.', '-', starting with a letter or digit`,
    );
}

export function checkHostname(op: string, hostname: string): void {
  if (!isDomain(hostname, 63, false))
    throw invalidArgument(
      op,
      hostname,
      `hostname "${hostname.slice(0, 80)}" is not a valid host name: up to 63 characters, labels of letters, digits and '-' separated by single dots (no empty label, no leading or trailing '-' or '.')`,
    );
}

/**
 * Docker's --dns (an IP address), --dns-search (a domain, or "." for none) and --dns-option
 * (printable, no whitespace). Each becomes one line of the sandbox's resolv.conf: a newline in
 * any of them would write lines of the client's choosing (another nameserver).
 */
export function checkDnsConfig(op: string, dns: Partial<DnsConfig> | undefined): void {
  for (const s of dns?.servers ?? [])
    if (typeof s !== 'string' || !ipToBig(s) || /\s/.test(s))
      throw invalidArgument(
        op,
        String(s),
        `DNS.Servers: ${JSON.stringify(s)} is not an IP address (want e.g. 1.1.1.1 or 2606:4700::1111)`,
      );
  for (const s of dns?.search ?? [])
    if (typeof s !== 'string' || (s !== '.' && !isDomain(s, 253, true)))
      throw invalidArgument(
        op,
        String(s),
        `DNS.Search: ${JSON.stringify(s)} is not a domain name (want e.g. example.com; "." for none)`,
      );
  for (const s of dns?.options ?? [])
    if (typeof s !== 'string' || !/^[\x21-\x7e]{1,255}$/.test(s) || /[#;]/.test(s))
      throw invalidArgument(
        op,
        String(s),
        `DNS.Options: ${JSON.stringify(s)} is not a resolv.conf option (want e.g. ndots:2; no whitespace, '#' or ';')`,
      );
}

/** Docker's ErrConflictNoNetwork: `none` keeps a sandbox to its loopback, alone. */
export function invalidNone(op: string, sandbox: string): CnmdError {
  return invalidArgument(
    op,
    sandbox,
    `sandbox ${sandbox}: container cannot be connected to multiple networks with one of the networks in private (none) mode; disconnect it from none first, or create it without none`,
  );
}

/**
 * The host network and a netns sandbox's networks do not mix: Docker's wording and status
 * (cerrdefs.ErrInvalidArgument, 400). onHost: the sandbox uses the host's netns and asked for another network.
 */
export function invalidHostMix(op: string, sandbox: string, onHost: boolean): CnmdError {
  return invalidArgument(
    op,
    sandbox,
    onHost
      ? `sandbox ${sandbox}: container sharing network namespace with another container or host cannot be connected to any other network; create a sandbox without the host network to join other networks`
      : `sandbox ${sandbox}: container cannot be disconnected from host network or connected to host network; create a sandbox on the host network instead`,
  );
}

/** cnmd's own network options (the drivers check theirs). */
export function checkNetworkOptions(op: string, options: Record<string, string>): void {
  const dns = options[EMBEDDED_DNS_OPTION];
  if (dns !== undefined && dns !== 'true' && dns !== 'false')
    throw invalidArgument(
      op,
      EMBEDDED_DNS_OPTION,
      `option ${EMBEDDED_DNS_OPTION}: "${dns}" is not true or false`,
    );
}

/**
 * An engine's Join names the sandbox's netns by path; cnmd keeps it and opens it later (DHCP
 * renewals from inside the sandbox). The path may not exist yet (the engine binds it after the
 * Join), so only its form is checked: absolute, clean (no `..`, `//`, trailing `/`), no control
 * characters, no longer than PATH_MAX.
 */
export function checkSandboxKey(op: string, key: unknown): asserts key is string {
  if (typeof key !== 'string' || key === '')
    throw invalidArgument(
      op,
      String(key),
      'SandboxKey is missing: give the path of the sandbox network namespace',
    );
  if (
    !key.startsWith('/') ||
    key.length > 4096 ||
    /[\x00-\x1f\x7f]/.test(key) ||
    path.posix.normalize(key) !== key ||
    (key.length > 1 && key.endsWith('/'))
  )
    throw invalidArgument(
      op,
      key.slice(0, 200),
      `SandboxKey ${JSON.stringify(key.slice(0, 200))} is not a clean absolute path: give the path of the sandbox network namespace (as /var/run/docker/netns/<id>)`,
    );
}
