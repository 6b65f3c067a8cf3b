// Closing an HTTP server the way a daemon stops: accept nothing new, let the
// requests already being served finish (bounded by a grace period), then cut
// whatever connections remain, so the caller can exit at once.
import type * as http from 'node:http';

/**
 * How long requests in flight at a stop may take to finish before their connections are cut (under cnmd's 10
 * s stop deadline, leaving time for the rest of the teardown).
 */
export const DRAIN_GRACE_MS = 8_000;

export interface Drainable {
  /**
   * Stops accepting; resolves once in-flight requests are answered (or graceMs passed) and every connection
   * is closed.
   */
  close(graceMs?: number): Promise<void>;
}

/** Counts `server`'s requests in flight from now on; call before it listens. */
export function drainable(server: http.Server): Drainable {
  let inFlight = 0;
  let onIdle: (() => void) | undefined;
  server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    inFlight++;
    res.once('close', () => {
      if (--inFlight === 0) onIdle?.();
    });
  });
  return {
    close: (graceMs = DRAIN_GRACE_MS) =>
      new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const cut = () => {
          if (timer) clearTimeout(timer);
          onIdle = undefined;
          server.closeAllConnections();
        };
        server.close(() => resolve());
        server.closeIdleConnections();
        if (inFlight === 0) return cut();
        onIdle = cut;
        timer = setTimeout(cut, graceMs);
      }),
  };
}
