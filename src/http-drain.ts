// Closing an HTTP server the way a daemon stops: accept nothing new, answer
// every request a client has already sent (bounded by a grace period), close
// idle connections, then cut whatever is left, so the caller can exit at once.
import type * as http from 'node:http';
import * as net from 'node:net';
import type { Logger } from './log';

/**
 * How long requests in flight at a stop may take to finish before their connections are cut (under cnmd's 10
 * s stop deadline, leaving time for the rest of the teardown).
 */
export const DRAIN_GRACE_MS = 8_000;

/** How long a stop goes on accepting what was queued before it (a tcp:// listener may keep getting more). */
const ACCEPT_QUEUE_MS = 1_000;

export interface Drainable {
  /**
   * Stops accepting; resolves once every request already sent is answered (or graceMs passed) and every
   * connection is closed.
   */
  close(graceMs?: number): Promise<void>;
}

/**
 * One pass of the event loop through its I/O phase: bytes already in the kernel's buffers are read and
 * parsed (a request whose head is parsed is in flight), and a connection waiting in the accept queue is
 * accepted (libuv takes about one a pass).
 */
const ioPass = () => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));

/** Tracks `server`'s connections and the answers each is giving; call before it listens. */
export function drainable(server: http.Server, log: Logger, what: string): Drainable {
  // Accepted sockets; for https a request's socket is a TLS socket over one of them (its _parent).
  const conns = new Map<net.Socket, Set<http.ServerResponse>>();
  let accepted = 0;
  let draining = false;
  server.on('connection', (s: net.Socket) => {
    accepted++;
    conns.set(s, new Set());
    s.once('close', () => conns.delete(s));
  });
  server.on('drop', () => accepted++);
  server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const sock = req.socket as net.Socket & { _parent?: net.Socket | null };
    const answering = conns.get(sock._parent ?? sock);
    if (!answering) return;
    answering.add(res);
    // While stopping, an answer closes its connection: the client sends nothing more on it.
    if (draining) res.shouldKeepAlive = false;
    res.once('close', () => {
      answering.delete(res);
      if (draining && answering.size === 0) sock.destroySoon();
    });
  });
  return {
    close: async (graceMs = DRAIN_GRACE_MS) => {
      draining = true;
      // The caller removed the unix socket, so no new client can connect: the accept queue holds requests sent
      // before the stop. Closing the listener would reset them: they are accepted and read first.
      const until = Date.now() + ACCEPT_QUEUE_MS;
      for (let before = -1; before !== accepted && Date.now() < until;) {
        before = accepted;
        await ioPass();
      }
      const timer = setTimeout(() => {
        log.warn(
          { server: what, connections: conns.size, ms: graceMs },
          'requests in flight did not finish within the drain bound: their connections are cut',
        );
        for (const s of conns.keys()) s.destroy();
      }, graceMs);
      // The listener goes; idle connections are closed here. Not http's close(): it also destroys a
      // connection whose answer is still being written (an ended response counts as done), a slow reader's.
      const closed = new Promise<void>((resolve) => net.Server.prototype.close.call(server, () => resolve()));
      for (const [sock, answering] of conns) {
        if (answering.size === 0) sock.destroy();
        for (const res of answering) if (!res.headersSent) res.shouldKeepAlive = false;
      }
      await closed;
      clearTimeout(timer);
    },
  };
}
