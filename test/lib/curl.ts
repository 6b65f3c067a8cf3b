// curl as an independent client, asynchronous so several can be in flight while
// the test watches something else; every call is bounded by --max-time.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';

export interface CurlReply {
  /** 0 when curl got no answer (rc says why: 28 timeout, 7 refused, 56 reset). */
  status: number;
  rc: number;
  body: any;
  text: string;
  ms: number;
}

export function curl(args: string[], maxTime = 10): Promise<CurlReply> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(
      'curl',
      ['-sS', '--max-time', String(maxTime), '-o', '-', '-w', '\n%{http_code}', ...args],
      { encoding: 'utf8', maxBuffer: 64 << 20 },
      (err, stdout) => {
        const cut = stdout.lastIndexOf('\n');
        const text = stdout.slice(0, Math.max(cut, 0));
        let body: any;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        const rc = err ? Number((err as NodeJS.ErrnoException & { code?: unknown }).code) || 1 : 0;
        resolve({ status: Number(stdout.slice(cut + 1)) || 0, rc, body, text, ms: Date.now() - started });
      },
    );
  });
}

/** A request on a unix socket: `GET /networks`, with an optional JSON body and query parameters. */
export function unixRequest(
  sock: string,
  method: string,
  urlPath: string,
  opts: { body?: unknown; raw?: string; query?: Record<string, string>; maxTime?: number } = {},
): Promise<CurlReply> {
  const args = ['--unix-socket', sock, '-X', method];
  const data = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
  let tmp: string | undefined;
  if (data !== undefined) {
    // Large bodies and NULs go through a file (an argument list is limited, and C strings end at NUL).
    let arg = data;
    if (data.length > 64 << 10 || data.includes('\0')) {
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-curl-'));
      const file = path.join(tmp, 'body');
      fs.writeFileSync(file, data, 'latin1');
      arg = `@${file}`;
    }
    args.push('-H', 'Content-Type: application/json', '--data-binary', arg);
  }
  // The query is encoded here (NULs included), not by curl: an argument cannot hold a NUL.
  const q = opts.query ? `?${new URLSearchParams(opts.query).toString()}` : '';
  const reply = curl([...args, `http://cnmd${urlPath}${q}`], opts.maxTime);
  // The body file goes once curl is done with it (it was left in /tmp, hundreds per chaos run).
  return tmp ? reply.finally(() => fs.rmSync(tmp!, { recursive: true, force: true })) : reply;
}
