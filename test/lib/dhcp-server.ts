// A real DHCP server on a test LAN: Debian's dnsmasq in the "external" netns,
// its leases and log in files the tests read as the server's own account
// (independent of cnmd): who holds which address, renewals, releases.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChildProcess, spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import type { Lab, Ns } from './fixture';
import { eventually } from './fixture';

export interface DhcpServerOptions {
  /** The interface dnsmasq serves in its netns (it must hold an address of the range's subnet). */
  iface: string;
  /** First and last address handed out, e.g. 192.168.60.100, 192.168.60.150. */
  range: [string, string];
  netmask?: string;
  router?: string;
  dns?: string[];
  /** Lease time in seconds (dnsmasq's minimum is 120). */
  leaseSeconds?: number;
  /** Renewal time (option 58) in seconds, so renewals show within a test. */
  t1?: number;
  /** Names the server's own DNS answers (name -> IPv4), served on port 53 of its address. */
  hosts?: Record<string, string>;
}

export interface DhcpServer {
  dir: string;
  /** The netns it serves in. */
  ns: Ns;
  /** The lease file's lines: { expiry, mac, ip, clientId }. */
  leases(): { expiry: number; mac: string; ip: string; clientId: string }[];
  log(): string;
  /** Stops the server (SIGTERM, waits); its lease file stays for a restart. */
  stop(): Promise<void>;
  /** Starts it again on the same lease file. */
  start(): Promise<void>;
}

export async function dhcpServer(
  t: TestContext,
  ns: Ns,
  dir: string,
  o: DhcpServerOptions,
): Promise<DhcpServer> {
  fs.mkdirSync(dir, { recursive: true });
  const leaseFile = path.join(dir, 'leases');
  const logFile = path.join(dir, 'log');
  const args = [
    `--net=${ns.path}`,
    'dnsmasq',
    '--no-daemon',
    '--conf-file=/dev/null',
    '--user=root',
    '--pid-file=',
    '--bind-interfaces',
    `--interface=${o.iface}`,
    '--except-interface=lo',
    '--no-resolv',
    '--no-hosts',
    '--dhcp-authoritative',
    `--dhcp-range=${o.range[0]},${o.range[1]},${o.netmask ?? '255.255.255.0'},${o.leaseSeconds ?? 120}`,
    `--dhcp-leasefile=${leaseFile}`,
    '--log-dhcp',
    `--log-facility=${logFile}`,
    ...(o.router ? [`--dhcp-option=option:router,${o.router}`] : []),
    ...(o.dns ? [`--dhcp-option=option:dns-server,${o.dns.join(',')}`] : []),
    ...(o.t1 ? [`--dhcp-option=option:T1,${o.t1}`, `--dhcp-option=option:T2,${o.t1 * 2}`] : []),
    ...Object.entries(o.hosts ?? {}).map(([name, ip]) => `--address=/${name}/${ip}`),
  ];
  let proc: ChildProcess | undefined;
  let stderr = '';
  const start = async () => {
    stderr = '';
    // Ready once it says so in its log (it opens the DHCP socket before): counted before it can write.
    const before = fs.existsSync(logFile)
      ? fs.readFileSync(logFile, 'utf8').split(/started, version/).length
      : 1;
    const p = spawn('nsenter', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr!.on('data', (b) => (stderr += b));
    proc = p;
    await eventually(() => {
      if (p.exitCode !== null) throw new Error(`dnsmasq exited ${p.exitCode}: ${stderr}`);
      const now = fs.existsSync(logFile)
        ? fs.readFileSync(logFile, 'utf8').split(/started, version/).length
        : 1;
      if (now <= before) throw new Error(`dnsmasq not started yet: ${stderr}`);
    }, 15_000);
  };
  const stop = async () => {
    const p = proc;
    proc = undefined;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await exited;
  };
  t.after(stop);
  await start();
  return {
    dir,
    ns,
    leases: () =>
      (fs.existsSync(leaseFile) ? fs.readFileSync(leaseFile, 'utf8') : '')
        .split('\n')
        .filter((l) => l.trim() && !l.startsWith('duid'))
        .map((l) => {
          const [expiry, mac, ip, , clientId] = l.split(' ');
          return { expiry: Number(expiry), mac, ip, clientId };
        }),
    log: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''),
    stop,
    start,
  };
}

/**
 * A LAN with dnsmasq on it: `lan0` in `host` (the daemon's host netns: the
 * parent), with `hostAddress` (.2) if asked, as a NIC used as a parent holds;
 * its peer `up-lan0` in a netns `ext` (.1) where dnsmasq serves .100-.150 of
 * `subnet` (three octets), itself as router unless options say otherwise.
 */
export async function dhcpLan(
  t: TestContext,
  l: Lab,
  host: Ns,
  subnet: string,
  o: Partial<DhcpServerOptions> & { hostAddress?: boolean } = {},
): Promise<DhcpServer> {
  const { hostAddress, ...server } = o;
  const ext = await l.ns('ext');
  host.run('ip', ['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'up-lan0']);
  host.run('ip', ['link', 'set', 'up-lan0', 'netns', ext.path]);
  if (hostAddress) host.run('ip', ['addr', 'add', `${subnet}.2/24`, 'dev', 'lan0']);
  host.run('ip', ['link', 'set', 'lan0', 'up']);
  ext.run('ip', ['link', 'set', 'lo', 'up']);
  ext.run('ip', ['addr', 'add', `${subnet}.1/24`, 'dev', 'up-lan0']);
  ext.run('ip', ['link', 'set', 'up-lan0', 'up']);
  return dhcpServer(t, ext, path.join(l.root, 'dnsmasq'), {
    iface: 'up-lan0',
    range: [`${subnet}.100`, `${subnet}.150`],
    router: `${subnet}.1`,
    ...server,
  });
}
