// cnmd as a Docker plugin: one unix socket per exposed driver under
// --plugin-dir (cnmd-bridge.sock, later cnmd-macvlan/-ipvlan/-overlay as
// those drivers arrive, and cnmd-ipam.sock), where the engine discovers them.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { Controller } from '../controller/controller';
import type { Logger } from '../log';
import { Drainable, drainable } from '../http-drain';
import { capConnections, PLUGIN_MAX_CONNECTIONS } from '../conn-cap';
import { claimSocketPath } from '../unix-socket';
import { ipamDriverPlugin } from './ipam-driver';
import { networkDriverPlugin } from './network-driver';
import { handle, PluginDef } from './protocol';

/** cnmd's drivers the engine may use, by plugin name. */
export const EXPOSED_DRIVERS: Record<string, string> = {
  'cnmd-bridge': 'bridge',
  'cnmd-macvlan': 'macvlan',
  'cnmd-ipvlan': 'ipvlan',
  'cnmd-overlay': 'overlay',
};
export const IPAM_PLUGIN = 'cnmd-ipam';

export interface PluginServers {
  /** Socket paths served. */
  sockets: string[];
  close(): Promise<void>;
}

export function pluginDefs(ctrl: Controller, hasDriver: (name: string) => boolean): PluginDef[] {
  const defs = Object.entries(EXPOSED_DRIVERS)
    .filter(([, driver]) => hasDriver(driver))
    .map(([name, driver]) => networkDriverPlugin(name, driver, ctrl));
  defs.push(ipamDriverPlugin(IPAM_PLUGIN, ctrl));
  return defs;
}

async function listen(
  def: PluginDef,
  sock: string,
  log: Logger,
  ready: Promise<void>,
): Promise<{ server: http.Server; drain: Drainable }> {
  const server = http.createServer((req, res) => void handle(def, req, res, log, ready));
  server.keepAliveTimeout = 60_000;
  capConnections(server, PLUGIN_MAX_CONNECTIONS, log, def.name);
  const drain = drainable(server, log, def.name);
  await claimSocketPath(sock, '--plugin-dir');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sock, () => resolve());
  });
  fs.chmodSync(sock, 0o660);
  return { server, drain };
}

/** `ready` resolves when the daemon's state is recovered: calls that touch state wait for it. */
export async function startPluginServers(
  dir: string,
  defs: PluginDef[],
  log: Logger,
  ready: Promise<void>,
): Promise<PluginServers> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const servers: { server: http.Server; drain: Drainable; sock: string }[] = [];
  try {
    for (const def of defs) {
      const sock = path.join(dir, `${def.name}.sock`);
      servers.push({ ...(await listen(def, sock, log, ready)), sock });
    }
  } catch (e) {
    for (const s of servers) s.server.close();
    throw e;
  }
  log.info({ dir, plugins: defs.map((d) => `${d.name} (${d.implements})`) }, 'plugin sockets listening');
  return {
    sockets: servers.map((s) => s.sock),
    close: async () => {
      await Promise.all(
        servers.map((s) => {
          fs.rmSync(s.sock, { force: true });
          return s.drain.close();
        }),
      );
    },
  };
}
