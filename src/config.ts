// Daemon configuration: every path and name comes from here (flag > env > default),
// so several daemons on one machine (one per test "host" netns) never collide.
import * as path from 'node:path';

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
};

/** pino's levels, as --log-level takes them. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function resolveConfig(
  flags: Partial<Record<keyof Config, string | boolean>>,
  env: NodeJS.ProcessEnv = process.env,
): Config {
  const out: Config = { ...DEFAULTS };
  for (const key of ['dataRoot', 'execRoot', 'host', 'pluginDir', 'logLevel', 'resolvConf'] as const) {
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
  out.dataRoot = path.resolve(out.dataRoot);
  out.execRoot = path.resolve(out.execRoot);
  out.pluginDir = path.resolve(out.pluginDir);
  out.resolvConf = path.resolve(out.resolvConf);
  parseHost(out.host); // refuse a bad address before anything starts
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
