// The Docker engine's own API (not the plugin protocol), for one question at
// start: does the engine still know a network it made through cnmd's plugin
// sockets, and which of its endpoints? (--engine-host). Only a 404 means "it
// does not know"; every other failure (no socket, a timeout, a 500, a reply
// that does not parse) means "cannot tell", and the caller keeps the network.
import * as http from 'node:http';
import type { ListenAddress } from '../config';

export type EngineNetworkAnswer =
  { known: true; endpoints: Set<string> } | { known: false } | { known: undefined; reason: string };

const MAX_REPLY = 16 << 20;
/** How long cnmd's start waits for the engine's answers, all networks together. */
export const ENGINE_CHECK_MS = 5_000;

/** GET /networks/{id} on the engine; the signal bounds the whole exchange. */
export function inspectEngineNetwork(
  addr: ListenAddress,
  id: string,
  signal: AbortSignal,
): Promise<EngineNetworkAnswer> {
  const cannot = (reason: string): EngineNetworkAnswer => ({ known: undefined, reason });
  return new Promise((resolve) => {
    const req = http.request(
      {
        method: 'GET',
        path: `/networks/${encodeURIComponent(id)}`,
        ...(addr.kind === 'unix' ? { socketPath: addr.path } : { host: addr.host, port: addr.port }),
        headers: { Host: 'docker', Accept: 'application/json' },
        signal,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_REPLY) {
            res.destroy();
            resolve(cannot(`its reply is over ${MAX_REPLY} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('error', (e) => resolve(cannot(signal.aborted ? 'it did not answer in time' : e.message)));
        // A reply cut short (the signal fired while the body came) ends without 'end'.
        res.on('close', () => resolve(cannot('its reply was cut short')));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status === 404) return resolve({ known: false });
          if (status !== 200) return resolve(cannot(`it answered HTTP ${status}`));
          resolve(
            parseNetwork(id, Buffer.concat(chunks).toString('utf8')) ?? cannot('its reply does not parse'),
          );
        });
      },
    );
    req.on('error', (e: NodeJS.ErrnoException) =>
      resolve(cannot(signal.aborted ? 'it did not answer in time' : e.message)),
    );
    req.end();
  });
}

/** A 200's body: the network (by its full id, not a name that happens to equal it) and its endpoint ids. */
function parseNetwork(id: string, text: string): EngineNetworkAnswer | undefined {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    return undefined; // not JSON: cannot tell
  }
  if (typeof body !== 'object' || body === null) return undefined;
  const n = body as { Id?: unknown; Containers?: unknown };
  if (n.Id !== id) return undefined;
  const endpoints = new Set<string>();
  // Every endpoint the engine holds is listed, keyed by its container (or "ep-<id>" before a join).
  for (const c of Object.values((n.Containers ?? {}) as Record<string, unknown>)) {
    const ep = (c as { EndpointID?: unknown } | null)?.EndpointID;
    if (typeof ep !== 'string' || ep === '') return undefined;
    endpoints.add(ep);
  }
  return { known: true, endpoints };
}
