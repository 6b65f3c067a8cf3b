// What a remote driver and a remote IPAM share: finding the plugin and
// activating it, once, with a failed activation tried again on the next call.
import type { Logger } from '../log';
import { PluginClient, PluginClientOptions } from './client';
import { SearchDirs, discoverPlugin } from './discovery';

/** fn run once, its promise shared by every caller; after a failure the next call runs it again. */
export function onceRetrying<T>(fn: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  return () =>
    (running ??= fn().catch((e) => {
      running = undefined;
      throw e;
    }));
}

/**
 * Finds plugin `name` (see discovery.ts), makes the object that talks to it
 * and activates it; a plugin that cannot be activated has its client closed.
 */
export async function loadPlugin<T extends { ready(): Promise<unknown> }>(
  name: string,
  opts: { dirs: SearchDirs; log?: Logger; client?: PluginClientOptions },
  make: (client: PluginClient) => T,
): Promise<T> {
  const location = await discoverPlugin(name, opts.dirs);
  const client = new PluginClient(location, { ...opts.client, log: opts.client?.log ?? opts.log });
  const made = make(client);
  try {
    await made.ready();
  } catch (e) {
    client.close();
    throw e;
  }
  return made;
}
