// Caps on open connections for the daemon's servers (API, plugin sockets): past the
// cap node closes new connections at once, so a flood of idle connections costs no
// file descriptors, and a sandbox create never meets EMFILE because of it.
import type * as net from 'node:net';
import type { Logger } from './log';

/** Open connections on each plugin socket (the engine keeps a few). */
export const PLUGIN_MAX_CONNECTIONS = 128;

/** Sets the cap and logs (at most every 10 s) when connections are being closed because of it. */
export function capConnections(server: net.Server, max: number, log: Logger, what: string): void {
  server.maxConnections = max;
  let warned = 0;
  server.on('drop', () => {
    if (Date.now() - warned < 10_000) return;
    warned = Date.now();
    log.warn({ server: what, maxConnections: max }, 'connection limit reached: new connections are closed');
  });
}
