// The Docker plugin protocol as the engine speaks it (pkg/plugins): POST
// /<Interface>.<Method> on a plugin's unix socket, JSON both ways.
import assert from 'node:assert/strict';
import * as http from 'node:http';

export interface PluginReply {
  status: number;
  body: any;
  text: string;
}

export function pluginCall(sock: string, method: string, body?: unknown, raw?: string): Promise<PluginReply> {
  const data = raw ?? (body === undefined ? '' : JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: sock,
        path: `/${method}`,
        method: 'POST',
        headers: {
          Accept: 'application/vnd.docker.plugins.v1.2+json',
          'Content-Length': Buffer.byteLength(data),
        },
      },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          let parsed: any;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, text });
        });
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** A call that must succeed: 200 and an empty error field. */
export async function pluginOk(sock: string, method: string, body?: unknown): Promise<any> {
  const r = await pluginCall(sock, method, body);
  assert.equal(r.status, 200, `${method}: ${r.text}`);
  assert.ok(!r.body.Err && !r.body.Error, `${method}: ${r.text}`);
  return r.body;
}
