// cnmd for tests whose overlay driver has a local VTEP without a cluster
// store (the control plane's flags are src/cluster/'s): the daemon as cnmd
// starts it, with DaemonParts.overlay. Args: cnmd's root flags, then
// --vtep <address>. Logs JSON on stderr; SIGTERM stops it cleanly.
import { resolveConfig } from '../../src/config';
import { Daemon } from '../../src/daemon';

const args = process.argv.slice(2);
const opt = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const vtep = opt('--vtep');
const config = resolveConfig({
  dataRoot: opt('--data-root'),
  execRoot: opt('--exec-root'),
  host: opt('-H'),
  pluginDir: opt('--plugin-dir'),
  logLevel: opt('--log-level'),
  netnsPoolSize: opt('--netns-pool-size'),
});
const daemon = new Daemon(config, undefined, { overlay: { vtep: () => vtep } });
process.on('SIGTERM', () => void daemon.stop().then(() => process.exit(0)));
daemon.start().catch((e) => {
  daemon.log.fatal({ err: e }, 'start failed');
  process.exit(1);
});
