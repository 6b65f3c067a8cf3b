#!/usr/bin/env -S node --max-semi-space-size=2
// cnmd: the container networking daemon.
import { Command } from 'commander';
import { DEFAULTS, ENV, resolveConfig } from '../config';
import { Daemon } from '../daemon';
import { DRAIN_GRACE_MS } from '../http-drain';
import { ENGINE_CHECK_MS } from '../remote/engine-api';
import { VERSION } from '../version';

/** How long a clean stop may take after SIGTERM/SIGINT before the daemon exits anyway. */
const STOP_DEADLINE_MS = 10_000;

const program = new Command('cnmd')
  .description(
    'Container networking daemon: networks, endpoints and sandboxes (the Container Network Model) with ' +
      'bridge, host and null drivers, IPAM, embedded DNS, port publishing, and Docker network/IPAM plugin ' +
      'sockets.',
  )
  .version(VERSION, '-v, --version')
  .option(
    '--data-root <dir>',
    `persistent state: the SQLite store [env ${ENV.dataRoot}] (default ${DEFAULTS.dataRoot})`,
  )
  .option(
    '--exec-root <dir>',
    `runtime state: netns/<id> files, per-sandbox resolv.conf and hosts [env ${ENV.execRoot}] (default ` +
      `${DEFAULTS.execRoot})`,
  )
  .option(
    '-H, --host <addr>',
    `API listen address, unix:///path.sock or tcp://HOST:PORT [env ${ENV.host}] (default ${DEFAULTS.host})`,
  )
  .option(
    '--plugin-dir <dir>',
    `where Docker plugin sockets are served [env ${ENV.pluginDir}] (default ${DEFAULTS.pluginDir})`,
  )
  .option(
    '--log-level <level>',
    `trace|debug|info|warn|error [env ${ENV.logLevel}] (default ${DEFAULTS.logLevel})`,
  )
  .option(
    '--resolv-conf <file>',
    `the host's resolver configuration: upstreams of the embedded DNS [env ${ENV.resolvConf}] (default ` +
      `${DEFAULTS.resolvConf})`,
  )
  .option(
    '--userland-proxy <bool>',
    `loopback access to published ports: true = the in-daemon proxy, false = route_localnet NAT [env ` +
      `${ENV.userlandProxy}] (default ${DEFAULTS.userlandProxy})`,
  )
  .option(
    '--netns-pool-size <n>',
    `network namespaces kept ready for new sandboxes, refilled when the daemon is idle (about 0.1 MB of ` +
      `kernel memory each; 0: none) [env ${ENV.netnsPoolSize}] (default ${DEFAULTS.netnsPoolSize})`,
  )
  .option(
    '--cluster-store <url>',
    `the cluster store for overlay networks, etcd://HOST:PORT[,HOST:PORT...] [env ${ENV.clusterStore}] ` +
      `(default: none, overlay networks refused)`,
  )
  .option(
    '--cluster-store-cacert <file>',
    `CA certificate of the store's members (TLS) [env ${ENV.clusterStoreCacert}]`,
  )
  .option(
    '--cluster-store-cert <file>',
    `client certificate for the store (TLS) [env ${ENV.clusterStoreCert}]`,
  )
  .option('--cluster-store-key <file>', `client key for the store (TLS) [env ${ENV.clusterStoreKey}]`)
  .option(
    '--cluster-advertise <addr|ifname>',
    `this host's VTEP address, or an interface whose address it is [env ${ENV.clusterAdvertise}] (default: ` +
      `the address of the default-route interface)`,
  )
  .option(
    '--cluster-ttl <seconds>',
    `how long a dead host's endpoints stay in the cluster (its lease) [env ${ENV.clusterTtl}] (default ` +
      `${DEFAULTS.clusterTtl})`,
  )
  .option(
    '--cluster-block-grace <seconds>',
    `how long a dead host's address blocks stay its after its lease expired, before other hosts reclaim them ` +
      `[env ${ENV.clusterBlockGrace}] (default ${DEFAULTS.clusterBlockGrace})`,
  )
  .option('--vxlan-port <port>', `UDP port of VXLAN [env ${ENV.vxlanPort}] (default ${DEFAULTS.vxlanPort})`)
  .option(
    '--cluster-secret-file <file>',
    `a file of at least 32 random bytes, the same on every host: the root of encrypted overlays' keys [env ${ENV.clusterSecretFile}]`,
  )
  .option(
    '--encryption-key-rotation <duration>',
    `how often the encrypted overlays' key ring rotates (12h, 30m, 90s) [env ${ENV.encryptionKeyRotation}] (default 12h)`,
  )
  .option('--tls', `serve a tcp:// API over TLS (needs --tlscert, --tlskey) [env ${ENV.tls}]`)
  .option(
    '--tlsverify',
    `TLS and require client certificates signed by --tlscacert, as dockerd [env ${ENV.tlsVerify}]`,
  )
  .option(
    '--tlscacert <file>',
    `CA certificate that client certificates must chain to [env ${ENV.tlsCaCert}]`,
  )
  .option('--tlscert <file>', `server certificate (PEM) [env ${ENV.tlsCert}]`)
  .option('--tlskey <file>', `server certificate's private key (PEM) [env ${ENV.tlsKey}]`)
  .option(
    '--insecure-tcp',
    `allow a tcp:// API without TLS (anyone who reaches it is root here; warned at every start) [env ${ENV.insecureTcp}]`,
  )
  .option(
    '--max-connections <n>',
    `open API connections accepted at once; beyond it new ones are closed [env ${ENV.maxConnections}] (default ${DEFAULTS.maxConnections})`,
  )
  .option(
    '--engine-host <addr>',
    `the Docker engine's API, unix:///var/run/docker.sock or tcp://HOST:PORT (plain HTTP): at start, engine networks and endpoints it answers 404 for are removed (bridge, rules, veths, pools); an engine that does not answer within ${ENGINE_CHECK_MS / 1000} s keeps them [env ${ENV.engineHost}] (default: none, never asked)`,
  )
  .option(
    '--default-address-pool <base=CIDR,size=N>',
    `pools of networks made without --subnet, as dockerd's (repeat it; replaces Docker's local pools of that family; e.g. base=10.0.0.0/8,size=24 gives 65,536 /24s) [env ${ENV.defaultAddressPools}, space-separated] (default: Docker's, 31 IPv4 pools)`,
    (v: string, prev: string[]) => [...prev, v],
    [] as string[],
  )
  .addHelpText(
    'after',
    `
Signals: SIGTERM/SIGINT stop the daemon cleanly: the API and plugin sockets stop accepting at
once, every request already sent is answered (for up to ${DRAIN_GRACE_MS / 1000} s; connections still busy then are
cut), then it exits; networks and sandboxes stay in place for the next start. A stop that takes
over ${STOP_DEADLINE_MS / 1000} s, or a second signal, exits at once (the next start recovers).
One daemon per root: <data-root>/cnmd.lock and <exec-root>/cnmd.pid (its pid) are locked while
it runs; a second daemon on a root or socket in use is refused before it changes anything.
Logs are JSON lines on stderr.

Example:
  cnmd --data-root /var/lib/cnmd --exec-root /run/cnmd -H unix:///run/cnmd/cnmd.sock
  curl --unix-socket /run/cnmd/cnmd.sock http://cnmd/_ping`,
  );

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{
    dataRoot?: string;
    execRoot?: string;
    host?: string;
    pluginDir?: string;
    logLevel?: string;
    userlandProxy?: string;
    resolvConf?: string;
    netnsPoolSize?: string;
    clusterStore?: string;
    clusterStoreCacert?: string;
    clusterStoreCert?: string;
    clusterStoreKey?: string;
    clusterAdvertise?: string;
    clusterTtl?: string;
    clusterBlockGrace?: string;
    vxlanPort?: string;
    clusterSecretFile?: string;
    encryptionKeyRotation?: string;
    tls?: boolean;
    tlsverify?: boolean;
    tlscacert?: string;
    tlscert?: string;
    tlskey?: string;
    insecureTcp?: boolean;
    maxConnections?: string;
    engineHost?: string;
    defaultAddressPool: string[];
  }>();
  let config;
  try {
    config = resolveConfig({
      ...o,
      tlsVerify: o.tlsverify,
      tlsCaCert: o.tlscacert,
      tlsCert: o.tlscert,
      tlsKey: o.tlskey,
      defaultAddressPools: o.defaultAddressPool.length ? o.defaultAddressPool.join(' ') : undefined,
    });
  } catch (e) {
    console.error(`cnmd: ${(e as Error).message}`);
    process.exit(2);
  }
  const daemon = new Daemon(config);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      // A second signal: the operator wants it gone now (state is recovered at the next start).
      daemon.log.warn({ signal }, 'second signal while stopping: exiting now');
      process.exit(1);
    }
    stopping = true;
    daemon.log.info({ signal }, 'stopping');
    // A stop that hangs (a stuck plugin or kernel call) must not keep the daemon alive: recovery
    // at the next start finishes or undoes whatever was in flight.
    setTimeout(() => {
      daemon.log.error({ signal, ms: STOP_DEADLINE_MS }, 'stop did not finish in time: exiting');
      process.exit(1);
    }, STOP_DEADLINE_MS).unref();
    daemon.stop().then(
      () => process.exit(0),
      (e) => {
        daemon.log.error({ err: e }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await daemon.start();
  } catch (e) {
    // One plain line for whoever started it (the message says what to fix); no stack.
    console.error(`cnmd: ${(e as Error).message}`);
    process.exit(1);
  }
}

void main();
