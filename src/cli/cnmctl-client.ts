// The HTTP client of cnmd's API, shared by cnmctl and the tests.
import * as http from 'node:http';
import { ENV, parseHost } from '../config';

export function apiRequest(
  host: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: any }> {
  const addr = parseHost(host);
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        method,
        path,
        ...(addr.kind === 'unix' ? { socketPath: addr.path } : { host: addr.host, port: addr.port }),
        headers: {
          'Content-Type': 'application/json',
          ...(data ? { 'Content-Length': Buffer.byteLength(data) } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch (e) {
            if (!(e instanceof SyntaxError)) throw e; // not JSON: the body is plain text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        reject(new Error(`cannot reach cnmd at ${host}: is the daemon running? (set -H or ${ENV.host})`));
      } else reject(e);
    });
    if (data) req.write(data);
    req.end();
  });
}
