// Daemon configuration: every path and name comes from here (flag > env > default),
// so several daemons on one machine (one per test "host" netns) never collide.
import * as path from 'node:path';
import { readClusterSecret } from './cluster/keys';
import { PoolSpec, parsePoolSpec } from './ipam/pools';

export interface Config {
  dataRoot: string;
  execRoot: string;
  /** API listen address: unix:///path or tcp://host:port. */
  host: string;
  pluginDir: string;
  logLevel: string;
  /** Loopback access to published ports through the in-daemon proxy (true) or route_localnet NAT (false). */
  userlandProxy: boolean;
  /** The host's resolver configuration: upstreams of the embedded DNS, base of sandboxes' resolv.conf. */
  resolvConf: string;
  /** Network namespaces kept ready for new sandboxes (0: none); refilled when the daemon is idle. */
  netnsPoolSize: number;
  /** etcd://h1:2379,h2:2379: the cluster store global (overlay) networks live in; '' = none. */
  clusterStore: string;
  clusterStoreCacert: string;
  clusterStoreCert: string;
  clusterStoreKey: string;
  /** This host's VTEP: an address or an interface name; '' = the default-route interface's address. */
  clusterAdvertise: string;
  /** Seconds a dead host's records outlive it (its lease's TTL). */
  clusterTtl: number;
  /** Seconds a dead host's address blocks stay its after its lease is gone, before other hosts reclaim them. */
  clusterBlockGrace: number;
  /** UDP port of VXLAN. */
  vxlanPort: number;
  /** A file of random bytes, the same on every host: the root of encrypted overlays' keys; '' = none. */
  clusterSecretFile: string;
  /** Seconds between rotations of the encrypted overlays' key ring (--encryption-key-rotation). */
  encryptionKeyRotation: number;
  /** TLS on a tcp:// API (dockerd's --tls); tlsVerify also requires client certificates signed by tlsCaCert. */
  tls: boolean;
  tlsVerify: boolean;
  tlsCaCert?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** Serve a tcp:// API without TLS (anyone who reaches it is root here): refused unless asked for. */
  insecureTcp: boolean;
  /** Open connections the API socket accepts; beyond it new ones are closed at once. */
  maxConnections: number;
  /** The Docker engine's API (unix:///var/run/docker.sock): asked at start about its networks; '' = never asked. */
  engineHost: string;
  /** Local pools of networks made without --subnet, instead of Docker's (dockerd's --default-address-pool). */
  defaultAddressPools: PoolSpec[];
}

export const DEFAULTS: Config = {
  dataRoot: '/var/lib/cnmd',
  execRoot: '/run/cnmd',
  host: 'unix:///run/cnmd/cnmd.sock',
  pluginDir: '/run/docker/plugins',
  logLevel: 'info',
  userlandProxy: true,
  resolvConf: '/etc/resolv.conf',
  netnsPoolSize: 64,
  clusterStore: '',
  clusterStoreCacert: '',
  clusterStoreCert: '',
  clusterStoreKey: '',
  clusterAdvertise: '',
  clusterTtl: 10,
  clusterBlockGrace: 300,
  vxlanPort: 4789,
  clusterSecretFile: '',
  encryptionKeyRotation: 12 * 3600,
  tls: false,
  tlsVerify: false,
  insecureTcp: false,
  maxConnections: 512,
  engineHost: '',
  defaultAddressPools: [],
};

export const ENV: Record<keyof Config, string> = {
  dataRoot: 'CNMD_DATA_ROOT',
  execRoot: 'CNMD_EXEC_ROOT',
  host: 'CNMD_HOST',
  pluginDir: 'CNMD_PLUGIN_DIR',
  logLevel: 'CNMD_LOG_LEVEL',
  userlandProxy: 'CNMD_USERLAND_PROXY',
  resolvConf: 'CNMD_RESOLV_CONF',
  netnsPoolSize: 'CNMD_NETNS_POOL_SIZE',
  clusterStore: 'CNMD_CLUSTER_STORE',
  clusterStoreCacert: 'CNMD_CLUSTER_STORE_CACERT',
  clusterStoreCert: 'CNMD_CLUSTER_STORE_CERT',
  clusterStoreKey: 'CNMD_CLUSTER_STORE_KEY',
  clusterAdvertise: 'CNMD_CLUSTER_ADVERTISE',
  clusterTtl: 'CNMD_CLUSTER_TTL',
  clusterBlockGrace: 'CNMD_CLUSTER_BLOCK_GRACE',
  vxlanPort: 'CNMD_VXLAN_PORT',
  clusterSecretFile: 'CNMD_CLUSTER_SECRET_FILE',
  encryptionKeyRotation: 'CNMD_ENCRYPTION_KEY_ROTATION',
  tls: 'CNMD_TLS',
  tlsVerify: 'CNMD_TLS_VERIFY',
  tlsCaCert: 'CNMD_TLS_CACERT',
  tlsCert: 'CNMD_TLS_CERT',
  tlsKey: 'CNMD_TLS_KEY',
  insecureTcp: 'CNMD_INSECURE_TCP',
  maxConnections: 'CNMD_MAX_CONNECTIONS',
  engineHost: 'CNMD_ENGINE_HOST',
  defaultAddressPools: 'CNMD_DEFAULT_ADDRESS_POOLS',
};

/** pino's levels, as --log-level takes them. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function resolveConfig(
  flags: Partial<Record<keyof Config, string | boolean>>,
  env: NodeJS.ProcessEnv = process.env,
): Config {
  const out: Config = { ...DEFAULTS };
  for (const key of [
    'dataRoot',
    'execRoot',
    'host',
    'pluginDir',
    'logLevel',
    'resolvConf',
    'clusterStore',
    'clusterStoreCacert',
    'clusterStoreCert',
    'clusterStoreKey',
    'clusterAdvertise',
    'clusterSecretFile',
    'engineHost',
  ] as const) {
    const v = flags[key] ?? env[ENV[key]];
    if (v !== undefined && v !== '') out[key] = String(v);
  }
  if (!LOG_LEVELS.includes(out.logLevel))
    throw new Error(`--log-level "${out.logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  const proxy = flags.userlandProxy ?? env[ENV.userlandProxy];
  if (proxy !== undefined && proxy !== '') {
    if (!['true', 'false', true, false].includes(proxy))
      throw new Error(`--userland-proxy "${proxy}" is not true or false`);
    out.userlandProxy = proxy === true || proxy === 'true';
  }
  const poolSize = flags.netnsPoolSize ?? env[ENV.netnsPoolSize];
  if (poolSize !== undefined && poolSize !== '') {
    const n = Number(poolSize);
    if (!/^\d+$/.test(String(poolSize)) || n > 1024)
      throw new Error(`--netns-pool-size "${poolSize}" is not a whole number from 0 to 1024`);
    out.netnsPoolSize = n;
  }
  const ttl = flags.clusterTtl ?? env[ENV.clusterTtl];
  if (ttl !== undefined && ttl !== '') {
    const n = Number(String(ttl).replace(/s$/, ''));
    if (!/^\d+s?$/.test(String(ttl)) || n < 2 || n > 3600)
      throw new Error(`--cluster-ttl "${ttl}" is not a whole number of seconds from 2 to 3600`);
    out.clusterTtl = n;
  }
  const grace = flags.clusterBlockGrace ?? env[ENV.clusterBlockGrace];
  if (grace !== undefined && grace !== '') {
    const n = Number(String(grace).replace(/s$/, ''));
    if (!/^\d+s?$/.test(String(grace)) || n < 1 || n > 86400)
      throw new Error(`--cluster-block-grace "${grace}" is not a whole number of seconds from 1 to 86400`);
    out.clusterBlockGrace = n;
  }
  const port = flags.vxlanPort ?? env[ENV.vxlanPort];
  if (port !== undefined && port !== '') {
    const n = Number(port);
    if (!/^\d+$/.test(String(port)) || n < 1024 || n > 49151)
      throw new Error(`--vxlan-port "${port}" is not a UDP port from 1024 to 49151`);
    out.vxlanPort = n;
  }
  const rot = flags.encryptionKeyRotation ?? env[ENV.encryptionKeyRotation];
  if (rot !== undefined && rot !== '')
    out.encryptionKeyRotation = parseDuration('--encryption-key-rotation', String(rot));
  if (!out.clusterStore) {
    for (const k of [
      'clusterStoreCacert',
      'clusterStoreCert',
      'clusterStoreKey',
      'clusterAdvertise',
      'clusterSecretFile',
    ] as const)
      if (out[k])
        throw new Error(`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} needs --cluster-store`);
  } else if (!/^etcd:\/\//.test(out.clusterStore)) {
    throw new Error(`--cluster-store "${out.clusterStore}" is not etcd://HOST:PORT[,HOST:PORT...]`);
  }
  const bool = (key: 'tls' | 'tlsVerify' | 'insecureTcp', flag: string) => {
    const v = flags[key] ?? env[ENV[key]];
    if (v === undefined || v === '') return;
    if (!['true', 'false', '1', '0', true, false].includes(v))
      throw new Error(`${flag} "${v}" is not true or false`);
    out[key] = v === true || v === 'true' || v === '1';
  };
  bool('tls', '--tls');
  bool('tlsVerify', '--tlsverify');
  bool('insecureTcp', '--insecure-tcp');
  for (const key of ['tlsCaCert', 'tlsCert', 'tlsKey'] as const) {
    const v = flags[key] ?? env[ENV[key]];
    if (v !== undefined && v !== '') out[key] = path.resolve(String(v));
  }
  const maxConns = flags.maxConnections ?? env[ENV.maxConnections];
  if (maxConns !== undefined && maxConns !== '') {
    if (!/^\d{1,6}$/.test(String(maxConns)) || Number(maxConns) < 1)
      throw new Error(`--max-connections "${maxConns}" is not a whole number from 1 to 999999`);
    out.maxConnections = Number(maxConns);
  }
  if (out.tlsVerify) out.tls = true;
  if (out.tls && (!out.tlsCert || !out.tlsKey))
    throw new Error('--tls needs --tlscert and --tlskey (the server certificate and its key)');
  if (out.tlsVerify && !out.tlsCaCert)
    throw new Error('--tlsverify needs --tlscacert (the CA that signs client certificates)');
  if (parseHost(out.host).kind === 'tcp' && !out.tls && !out.insecureTcp)
    throw new Error(
      `-H ${out.host} would serve the API, which is root on this host, to anyone who reaches the port: use --tlsverify --tlscacert CA --tlscert CERT --tlskey KEY (clients need a certificate signed by CA), or --insecure-tcp to accept that`,
    );
  out.dataRoot = path.resolve(out.dataRoot);
  out.execRoot = path.resolve(out.execRoot);
  out.pluginDir = path.resolve(out.pluginDir);
  out.resolvConf = path.resolve(out.resolvConf);
  if (out.clusterSecretFile) {
    out.clusterSecretFile = path.resolve(out.clusterSecretFile);
    // Read now so that a missing or short file stops the daemon before it starts, saying why.
    readClusterSecret(out.clusterSecretFile);
  }
  parseHost(out.host); // refuse a bad address before anything starts
  // Repeated flags arrive joined by spaces (a pool spec has none), as the env variable takes them.
  const pools = flags.defaultAddressPools ?? env[ENV.defaultAddressPools];
  if (pools !== undefined && pools !== '')
    out.defaultAddressPools = String(pools)
      .split(/\s+/)
      .filter(Boolean)
      .map((p) => parsePoolSpec(p));
  if (out.engineHost) {
    try {
      parseHost(out.engineHost);
    } catch {
      throw new Error(
        `--engine-host "${out.engineHost}" is not unix:///path/to/docker.sock or tcp://HOST:PORT (Docker's -H syntax)`,
      );
    }
  }
  return out;
}

export type ListenAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** Parses `unix:///run/cnmd/cnmd.sock`, a bare path, or `tcp://127.0.0.1:2375`. */
export function parseHost(host: string): ListenAddress {
  if (host.startsWith('unix://')) return { kind: 'unix', path: host.slice('unix://'.length) };
  if (host.startsWith('/')) return { kind: 'unix', path: host };
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(host);
  if (m) return { kind: 'tcp', host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) };
  throw new Error(`--host "${host}" is not unix:///path/to.sock or tcp://HOST:PORT`);
}

const UNITS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400 };

/** Seconds from "90", "90s", "30m", "12h", "7d" (whole numbers); 2 s .. 365 days. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d{1,9})([smhd]?)$/.exec(text.trim());
  const n = m ? Number(m[1]) * UNITS[m[2]] : NaN;
  if (!m || n < 2 || n > 365 * 86400)
    throw new Error(`${flag} "${text}" is not a duration from 2s to 365d (e.g. 12h, 30m, 90s)`);
  return n;
}
