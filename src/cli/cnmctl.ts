#!/usr/bin/env node
// cnmctl: the command line client of cnmd's API, with Docker's network
// commands, flags and output, plus sandboxes.
import { Command, Option } from 'commander';
import { spawnSync } from 'node:child_process';
import { DEFAULTS, ENV } from '../config';
import { contains, ipToBig, parseCidr, stripPrefix } from '../net/addr';
import { VERSION } from '../version';
import { ClientTls, TlsFlags, apiRequest, clientTls } from './cnmctl-client';
import { renderTemplate } from './template';

const collect = (v: string, prev: string[]) => [...prev, v];

function host(): string {
  return program.opts<{ host: string }>().host;
}

let tls: ClientTls | undefined | null = null;

async function call(method: string, path: string, body?: unknown): Promise<any> {
  if (tls === null) tls = clientTls(program.opts<TlsFlags>());
  const r = await apiRequest(host(), method, path, body, tls);
  if (r.status >= 400) {
    const msg =
      typeof r.body === 'object' && r.body?.message ? r.body.message : String(r.body ?? `HTTP ${r.status}`);
    throw new Error(`Error response from daemon: ${msg}`);
  }
  return r.body;
}

function keyValues(list: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new Error(`invalid ${what} "${kv}": want KEY=VALUE`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

function filtersParam(list: string[]): string {
  if (!list.length) return '';
  const f: Record<string, Record<string, boolean>> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new Error(`bad format of filter "${kv}" (expected name=value)`);
    (f[kv.slice(0, eq)] ??= {})[kv.slice(eq + 1)] = true;
  }
  return `filters=${encodeURIComponent(JSON.stringify(f))}`;
}

/** Runs fn for each reference, printing errors and continuing, as the docker CLI does; exit 1 if any failed. */
async function eachRef<T>(refs: string[], fn: (ref: string) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (const ref of refs) {
    try {
      out.push(await fn(ref));
    } catch (e) {
      console.error((e as Error).message);
      process.exitCode = 1;
    }
  }
  return out;
}

/** The docker CLI's tabwriter (minwidth 10, padding 3): every column but the last is max(widest + 3, 10) wide. */
function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(Math.max(widths[i] + 3, 10))))
        .join('')
        .trimEnd(),
    )
    .join('\n');
}

/**
 * fvbommel/sortorder.NaturalLess, the docker CLI's order for names: runs of digits compare as numbers, the
 * rest bytewise.
 */
export function naturalLess(a: string, b: string): boolean {
  const digit = (c: number) => c >= 48 && c <= 57;
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(j);
    const da = digit(ca);
    const db = digit(cb);
    if (da !== db) return da;
    if (!da) {
      if (ca !== cb) return ca < cb; // names are ASCII ([a-zA-Z0-9_.-]): code units order as Go's bytes
      i++;
      j++;
      continue;
    }
    while (i < a.length && a[i] === '0') i++;
    while (j < b.length && b[j] === '0') j++;
    const za = i;
    const zb = j;
    while (i < a.length && digit(a.charCodeAt(i))) i++;
    while (j < b.length && digit(b.charCodeAt(j))) j++;
    if (i - za !== j - zb) return i - za < j - zb;
    const na = a.slice(za, i);
    const nb = b.slice(zb, j);
    if (na !== nb) return na < nb;
    if (za !== zb) return za < zb;
  }
  return a.length < b.length;
}

const naturalCompare = (a: string, b: string) => (naturalLess(a, b) ? -1 : naturalLess(b, a) ? 1 : 0);

/**
 * Go's time.Time.String() of an RFC 3339 UTC time, as the docker CLI prints CreatedAt: 2006-01-02
 * 15:04:05.999999999 +0000 UTC.
 */
function goTime(iso: string): string {
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(iso ?? '');
  if (!m) return '0001-01-01 00:00:00 +0000 UTC';
  const frac = (m[3] ?? '').replace(/0+$/, '');
  return `${m[1]} ${m[2]}${frac ? `.${frac}` : ''} +0000 UTC`;
}

/** The docker CLI's `network ls --format` fields and their `table` headers. */
const NETWORK_HEADERS: Record<string, string> = {
  ID: 'NETWORK ID',
  Name: 'NAME',
  Driver: 'DRIVER',
  Scope: 'SCOPE',
  IPv4: 'IPV4',
  IPv6: 'IPV6',
  Internal: 'INTERNAL',
  Labels: 'LABELS',
  CreatedAt: 'CREATED AT',
};

function networkFields(n: any, id: string): Record<string, string> {
  return {
    ID: id,
    Name: n.Name,
    Driver: n.Driver,
    Scope: n.Scope,
    // EnableIPv4 is API 1.47's; cnmd answers it at every version (views.ts), as the docker CLI 28 reads it.
    IPv4: String(!!n.EnableIPv4),
    IPv6: String(!!n.EnableIPv6),
    Internal: String(!!n.Internal),
    Labels: Object.entries((n.Labels ?? {}) as Record<string, string>)
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
    CreatedAt: goTime(n.Created),
  };
}

/** `sandbox ls --format` fields and their `table` headers (the first four are the default table). */
const SANDBOX_HEADERS: Record<string, string> = {
  ID: 'SANDBOX ID',
  Name: 'NAME',
  Networks: 'NETWORKS',
  IPv4: 'IPV4',
  IPv6: 'IPV6',
  Hostname: 'HOSTNAME',
  Ports: 'PORTS',
  Labels: 'LABELS',
  CreatedAt: 'CREATED AT',
};

function sandboxFields(s: any, id: string): Record<string, string> {
  const eps = Object.values((s.Networks ?? {}) as Record<string, any>);
  const ports = Object.entries(
    (s.Ports ?? {}) as Record<string, { HostIp: string; HostPort: string }[] | null>,
  )
    .flatMap(([k, list]) =>
      (list ?? []).map((m) => `${m.HostIp.includes(':') ? `[${m.HostIp}]` : m.HostIp}:${m.HostPort}->${k}`),
    )
    .join(', ');
  return {
    ID: id,
    Name: s.Name,
    Networks: Object.keys(s.Networks ?? {}).join(','),
    IPv4: eps
      .map((e) => e.IPAddress)
      .filter(Boolean)
      .join(','),
    IPv6: eps
      .map((e) => e.GlobalIPv6Address)
      .filter(Boolean)
      .join(','),
    Hostname: s.Hostname ?? '',
    Ports: ports,
    Labels: Object.entries((s.Labels ?? {}) as Record<string, string>)
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
    CreatedAt: goTime(s.Created),
  };
}

/** What a list command shows of its objects: --format's fields and headers, the default table. */
interface ListView {
  fields(x: any, id: string): Record<string, string>;
  headers: Record<string, string>;
  columns: string[];
  row(x: any, id: string): string[];
}

/** A list command's output, as the docker CLI's: --format wins over -q, else the table; ids cut to 12 unless --no-trunc. */
function printList(o: { format?: string; quiet?: boolean; trunc?: boolean }, list: any[], v: ListView): void {
  const id = (x: any): string => (o.trunc === false ? x.Id : x.Id.slice(0, 12));
  if (o.format) {
    const lines = formatRows(
      o.format,
      list.map((x) => v.fields(x, id(x))),
      v.headers,
    );
    lines.forEach((l) => console.log(l));
  } else if (o.quiet) list.forEach((x) => console.log(id(x)));
  else console.log(table([v.columns, ...list.map((x) => v.row(x, id(x)))]));
}

/**
 * --format as the docker CLI reads it: `json` (one object a line), `table TEMPLATE` (with headers, aligned at
 * \t), or a template.
 */
function formatRows(
  format: string,
  items: Record<string, unknown>[],
  headers: Record<string, string>,
): string[] {
  if (format === 'json') {
    return items.map((x) =>
      JSON.stringify(
        Object.fromEntries(
          Object.keys(headers)
            .sort()
            .map((k) => [k, x[k]]),
        ),
      ),
    );
  }
  const m = /^table\s*(.*)$/s.exec(format);
  if (!m) return items.map((x) => renderTemplate(format, x));
  const tpl =
    m[1] ||
    Object.keys(headers)
      .slice(0, 4)
      .map((k) => `{{.${k}}}`)
      .join('\t');
  return table(
    [renderTemplate(tpl, headers), ...items.map((x) => renderTemplate(tpl, x))].map((line) =>
      line.split('\t'),
    ),
  ).split('\n');
}

/** Docker's matching of --gateway/--ip-range/--aux-address to the --subnet that contains them. */
export function ipamConfig(o: {
  subnet: string[];
  gateway: string[];
  ipRange: string[];
  auxAddress: string[];
}): Record<string, unknown>[] {
  const configs = o.subnet.map((s) => ({
    Subnet: s,
    IPRange: '',
    Gateway: '',
    AuxiliaryAddresses: {} as Record<string, string>,
  }));
  const owner = (ip: string, what: string) => {
    const a = ipToBig(stripPrefix(ip));
    const matches = configs.filter((c) => {
      const cidr = parseCidr(c.Subnet);
      return a && cidr && contains(cidr, a.family, a.value);
    });
    if (matches.length !== 1) throw new Error(`no matching subnet for ${what} ${ip}`);
    return matches[0];
  };
  for (const g of o.gateway) {
    const c = owner(g, 'gateway');
    if (c.Gateway) throw new Error(`cannot configure multiple gateways for subnet ${c.Subnet}`);
    c.Gateway = g;
  }
  for (const r of o.ipRange) {
    const c = owner(stripPrefix(r), 'range');
    if (c.IPRange)
      throw new Error(
        `cannot configure multiple ranges (${r}, ${c.IPRange}) on the same subnet (${c.Subnet})`,
      );
    c.IPRange = r;
  }
  for (const [name, ip] of Object.entries(keyValues(o.auxAddress, 'aux-address')))
    owner(ip, 'auxiliary address').AuxiliaryAddresses[name] = ip;
  if (!o.subnet.length && (o.gateway.length || o.ipRange.length || o.auxAddress.length))
    throw new Error('--gateway, --ip-range and --aux-address need --subnet');
  return configs;
}

const program = new Command('cnmctl')
  .description('Command line client for cnmd')
  .version(VERSION, '-v, --version')
  .option(
    '-H, --host <addr>',
    `daemon socket: unix:///path.sock or tcp://HOST:PORT [env ${ENV.host}, then DOCKER_HOST]`,
    process.env[ENV.host] || process.env.DOCKER_HOST || DEFAULTS.host,
  )
  .option('--tls', 'use TLS to a tcp:// daemon, without checking its certificate; implied by --tlsverify')
  .option(
    '--tlsverify',
    "use TLS and check the daemon's certificate against --tlscacert [env DOCKER_TLS_VERIFY]",
  )
  .option('--tlscacert <file>', 'trust certificates signed by this CA [default: DOCKER_CERT_PATH/ca.pem]')
  .option('--tlscert <file>', 'client certificate [default: DOCKER_CERT_PATH/cert.pem]')
  .option('--tlskey <file>', "client certificate's key [default: DOCKER_CERT_PATH/key.pem]")
  .addHelpText('after', '\nDOCKER_CERT_PATH defaults to ~/.docker, as the docker CLI.');

program
  .command('version')
  .description('Show the client and daemon versions')
  .action(async () => {
    console.log(`Client:\n Version:     ${VERSION}\n Node:        ${process.version}`);
    const v = await call('GET', '/version');
    console.log(
      `\nServer:\n Version:     ${v.Version}\n API version: ${v.ApiVersion} (minimum ${v.MinAPIVersion})\n ` +
        `Kernel:      ${v.KernelVersion}`,
    );
  });

const network = program.command('network').description('Manage networks');

network
  .command('create')
  .description('Create a network')
  .argument('<name>')
  .addOption(new Option('-d, --driver <driver>', 'driver to manage the network').default('bridge'))
  .option('--subnet <cidr>', 'subnet in CIDR format (repeatable)', collect, [])
  .option('--ip-range <cidr>', 'allocate container IPs from a sub-range (repeatable)', collect, [])
  .option('--gateway <ip>', 'gateway for the master subnet (repeatable)', collect, [])
  .option(
    '--aux-address <name=ip>',
    'auxiliary addresses used by the network driver (repeatable)',
    collect,
    [],
  )
  .option('--ipv6', 'enable IPv6 networking', false)
  .option('--internal', 'restrict external access to the network', false)
  .option('--attachable', 'enable manual container attachment', false)
  .option('-o, --opt <key=value>', 'driver specific options (repeatable)', collect, [])
  .option('--ipam-driver <driver>', 'IP address management driver', 'default')
  .option('--ipam-opt <key=value>', 'IPAM driver specific options (repeatable)', collect, [])
  .option('--label <key=value>', 'metadata (repeatable)', collect, [])
  .action(async (name: string, o) => {
    const r = await call('POST', '/networks/create', {
      Name: name,
      Driver: o.driver,
      EnableIPv6: o.ipv6,
      Internal: o.internal,
      Attachable: o.attachable,
      Options: keyValues(o.opt, 'option'),
      Labels: keyValues(o.label, 'label'),
      IPAM: { Driver: o.ipamDriver, Options: keyValues(o.ipamOpt, 'ipam option'), Config: ipamConfig(o) },
    });
    console.log(r.Id);
  });

network
  .command('ls')
  .alias('list')
  .description('List networks')
  .option('-f, --filter <filter>', 'filter output (e.g. driver=bridge, name=web, type=custom)', collect, [])
  .option('-q, --quiet', 'only display network IDs', false)
  .option('--no-trunc', 'do not truncate the output')
  .option(
    '--format <template>',
    `json, table [TEMPLATE] or a template; fields: ${Object.keys(NETWORK_HEADERS).join(', ')}`,
  )
  .action(async (o) => {
    const q = filtersParam(o.filter);
    const list: any[] = await call('GET', `/networks${q ? `?${q}` : ''}`);
    list.sort((a, b) => naturalCompare(a.Name, b.Name));
    printList(o, list, {
      fields: networkFields,
      headers: NETWORK_HEADERS,
      columns: ['NETWORK ID', 'NAME', 'DRIVER', 'SCOPE'],
      row: (n, id) => [id, n.Name, n.Driver, n.Scope],
    });
  });

network
  .command('inspect')
  .description('Display detailed information on one or more networks')
  .argument('<network...>')
  .option('-f, --format <template>', 'format output using a Go template subset')
  .action(async (refs: string[], o) => {
    const out = await eachRef(refs, (ref) => call('GET', `/networks/${encodeURIComponent(ref)}`));
    if (o.format) out.forEach((n) => console.log(renderTemplate(o.format, n)));
    else console.log(JSON.stringify(out, null, 4));
  });

network
  .command('rm')
  .alias('remove')
  .description('Remove one or more networks')
  .argument('<network...>')
  .option(
    '-f, --force',
    "also a network the Docker engine made through cnmd's plugin, when no engine uses it any more (its endpoints, bridge, rules and pools go)",
  )
  .action(async (refs: string[], o: { force?: boolean }) => {
    await eachRef(refs, async (ref) => {
      await call('DELETE', `/networks/${encodeURIComponent(ref)}${o.force ? '?force=1' : ''}`);
      console.log(ref);
    });
  });

network
  .command('connect')
  .description('Connect a sandbox to a network')
  .argument('<network>')
  .argument('<sandbox>')
  .option('--alias <name>', 'network-scoped alias (repeatable)', collect, [])
  .option('--ip <address>', 'IPv4 address')
  .option('--ip6 <address>', 'IPv6 address')
  .action(async (net: string, sb: string, o) => {
    await call('POST', `/networks/${encodeURIComponent(net)}/connect`, {
      Container: sb,
      EndpointConfig: { Aliases: o.alias, IPAMConfig: { IPv4Address: o.ip ?? '', IPv6Address: o.ip6 ?? '' } },
    });
  });

network
  .command('disconnect')
  .description('Disconnect a sandbox from a network')
  .argument('<network>')
  .argument('<sandbox>')
  .option('-f, --force', 'force the sandbox to disconnect from a network', false)
  .action(async (net: string, sb: string, o) => {
    await call('POST', `/networks/${encodeURIComponent(net)}/disconnect`, { Container: sb, Force: o.force });
  });

network
  .command('prune')
  .description('Remove all unused networks')
  .option('-f, --force', 'do not prompt for confirmation (cnmctl never prompts)', false)
  .option('--filter <filter>', 'provide filter values (e.g. label=<key>=<value>)', collect, [])
  .action(async (o) => {
    const q = filtersParam(o.filter);
    const r = await call('POST', `/networks/prune${q ? `?${q}` : ''}`);
    // The docker CLI's output, blank line included.
    if (r.NetworksDeleted?.length) console.log(`Deleted Networks:\n${r.NetworksDeleted.join('\n')}\n`);
  });

const sandbox = program.command('sandbox').description('Manage sandboxes (network namespaces)');

sandbox
  .command('create')
  .description('Create a sandbox and join it to networks')
  .option('--name <name>', 'sandbox name')
  .option('--hostname <name>', 'host name')
  .option(
    '--network <network>',
    'network to join (repeatable; in join order: eth0, eth1, ...); default: the default network "bridge"; ' +
      '"none": loopback only',
    collect,
    [],
  )
  .option('--alias <name>', 'network-scoped alias on the first network (repeatable)', collect, [])
  .option('--ip <address>', 'IPv4 address on the first network')
  .option('--ip6 <address>', 'IPv6 address on the first network')
  .option('--dns <ip>', 'DNS server (repeatable)', collect, [])
  .option('--dns-search <domain>', 'DNS search domain (repeatable)', collect, [])
  .option('--dns-option <option>', 'DNS option (repeatable)', collect, [])
  .option('--label <key=value>', 'metadata (repeatable)', collect, [])
  .option(
    '-p, --publish <spec>',
    'publish ports: [IP:][HOSTPORT:]PORT[/PROTO], ranges as 8000-8099:80-179 (repeatable)',
    collect,
    [],
  )
  .action(async (o) => {
    const r = await call('POST', '/sandboxes', {
      Ports: o.publish,
      Name: o.name,
      Hostname: o.hostname,
      // As docker run: no --network means the default network bridge.
      Networks: ((o.network as string[]).length ? (o.network as string[]) : ['bridge']).map((n, i) => ({
        Network: n,
        Aliases: i === 0 ? o.alias : [],
        IPv4Address: i === 0 ? o.ip : undefined,
        IPv6Address: i === 0 ? o.ip6 : undefined,
      })),
      DNS: { Servers: o.dns, Search: o.dnsSearch, Options: o.dnsOption },
      Labels: keyValues(o.label, 'label'),
    });
    console.log(r.Id);
  });

sandbox
  .command('ls')
  .alias('list')
  .description('List sandboxes')
  .option('-f, --filter <filter>', 'filter output (name=, id=, network=)', collect, [])
  .option('-q, --quiet', 'only display sandbox IDs', false)
  .option('--no-trunc', 'do not truncate the output')
  .option(
    '--format <template>',
    `json, table [TEMPLATE] or a template; fields: ${Object.keys(SANDBOX_HEADERS).join(', ')}`,
  )
  .action(async (o) => {
    const q = filtersParam(o.filter);
    const list: any[] = await call('GET', `/sandboxes${q ? `?${q}` : ''}`);
    printList(o, list, {
      fields: sandboxFields,
      headers: SANDBOX_HEADERS,
      columns: ['SANDBOX ID', 'NAME', 'NETWORKS', 'IPV4'],
      row: (s, id) => [
        id,
        s.Name,
        Object.keys(s.Networks).join(',') || '-',
        sandboxFields(s, '').IPv4 || '-',
      ],
    });
  });

sandbox
  .command('inspect')
  .description('Display detailed information on one or more sandboxes')
  .argument('<sandbox...>')
  .option('-f, --format <template>', 'format output using a Go template subset')
  .action(async (refs: string[], o) => {
    const out = await eachRef(refs, (ref) => call('GET', `/sandboxes/${encodeURIComponent(ref)}`));
    if (o.format) out.forEach((s) => console.log(renderTemplate(o.format, s)));
    else console.log(JSON.stringify(out, null, 4));
  });

sandbox
  .command('rm')
  .alias('remove')
  .description('Remove one or more sandboxes')
  .argument('<sandbox...>')
  .action(async (refs: string[]) => {
    await eachRef(refs, async (ref) => {
      await call('DELETE', `/sandboxes/${encodeURIComponent(ref)}`);
      console.log(ref);
    });
  });

program
  .command('port')
  .description('List port mappings of a sandbox, or look up one (as docker port)')
  .argument('<sandbox>')
  .argument('[port]', 'PRIVATE_PORT[/PROTO]')
  .action(async (ref: string, port?: string) => {
    const sb = await call('GET', `/sandboxes/${encodeURIComponent(ref)}`);
    const ports = (sb.Ports ?? {}) as Record<string, { HostIp: string; HostPort: string }[] | null>;
    const want = port ? (port.includes('/') ? port : `${port}/tcp`) : undefined;
    if (want && !(want in ports)) throw new Error(`Error: No public port '${want}' published for ${sb.Name}`);
    const keys = Object.keys(ports)
      .filter((k) => !want || k === want)
      .sort((a, b) => parseInt(a) - parseInt(b));
    for (const k of keys) {
      for (const m of ports[k] ?? []) {
        const addr = m.HostIp.includes(':') ? `[${m.HostIp}]:${m.HostPort}` : `${m.HostIp}:${m.HostPort}`;
        console.log(want ? addr : `${k} -> ${addr}`);
      }
    }
  });

sandbox
  .command('exec')
  .description("Run a command inside a sandbox's netns, with its resolv.conf, hosts and hostname (as root)")
  .argument('<sandbox>')
  .argument('<command...>')
  .action(async (ref: string, cmd: string[]) => {
    const sb = await call('GET', `/sandboxes/${encodeURIComponent(ref)}`);
    // A private mount and UTS namespace: the sandbox's files are bind-mounted over /etc for this command only.
    const script =
      'set -e; for f in resolv.conf hosts hostname; do [ -e "/etc/$f" ] || touch "/etc/$f"; done; ' +
      `mount --bind "$1" /etc/resolv.conf; mount --bind "$2" /etc/hosts; mount --bind "$3" /etc/hostname; ` +
      `hostname "$4"; shift 4; exec "$@"`;
    const r = spawnSync(
      'nsenter',
      [
        `--net=${sb.SandboxKey}`,
        'unshare',
        '--mount',
        '--uts',
        '--propagation',
        'private',
        'sh',
        '-c',
        script,
        'sh',
        sb.ResolvConfPath,
        sb.HostsPath,
        sb.HostnamePath,
        sb.Hostname,
        ...cmd,
      ],
      { stdio: 'inherit' },
    );
    if (r.error) throw new Error(`exec: ${r.error.message}`);
    process.exitCode = r.status ?? 1;
  });

program.parseAsync().catch((e: Error) => {
  console.error(e.message.startsWith('Error response') ? e.message : `cnmctl: ${e.message}`);
  process.exit(1);
});
