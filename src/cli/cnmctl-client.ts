// The HTTP client of cnmd's API, shared by cnmctl and the tests: unix sockets,
// plain tcp://, and tcp:// over TLS with the docker CLI's flags and env.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { ENV, parseHost } from '../config';

/** TLS to a tcp:// daemon, as the docker CLI's --tls/--tlsverify make it. */
export interface ClientTls {
  /** Check the daemon's certificate against ca (--tlsverify); false: any certificate (--tls). */
  verify: boolean;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** For messages: where the CA came from. */
  caPath?: string;
}

export interface TlsFlags {
  tls?: boolean;
  tlsverify?: boolean;
  tlscacert?: string;
  tlscert?: string;
  tlskey?: string;
}

/**
 * The docker CLI's rules: --tlsverify or DOCKER_TLS_VERIFY (any value) means
 * TLS checked against the CA; --tls (or any --tls* file) means TLS; the files
 * default to ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH (~/.docker). A
 * client certificate is sent when its files exist. undefined: no TLS.
 */
export function clientTls(flags: TlsFlags, env: NodeJS.ProcessEnv = process.env): ClientTls | undefined {
  const verify = !!flags.tlsverify || !!env.DOCKER_TLS_VERIFY;
  const tls = verify || !!flags.tls || !!flags.tlscacert || !!flags.tlscert || !!flags.tlskey;
  if (!tls) return undefined;
  const dir = env.DOCKER_CERT_PATH || path.join(os.homedir(), '.docker');
  const pick = (given: string | undefined, file: string, flag: string) => {
    const p = path.resolve(given ?? path.join(dir, file));
    if (fs.existsSync(p)) return { path: p, data: fs.readFileSync(p) };
    if (given !== undefined) throw new Error(`${flag} ${given}: no such file`);
    return { path: p, data: undefined };
  };
  const ca = pick(flags.tlscacert, 'ca.pem', '--tlscacert');
  const cert = pick(flags.tlscert, 'cert.pem', '--tlscert');
  const key = pick(flags.tlskey, 'key.pem', '--tlskey');
  if (verify && !ca.data)
    throw new Error(
      `--tlsverify needs the CA that signed the daemon's certificate: ${ca.path} does not exist (give --tlscacert, or DOCKER_CERT_PATH)`,
    );
  if (!cert.data !== !key.data)
    throw new Error(
      `a client certificate needs both files: ${cert.data ? key.path : cert.path} does not exist (--tlscert and --tlskey, or cert.pem and key.pem in DOCKER_CERT_PATH)`,
    );
  return { verify, ca: ca.data, cert: cert.data, key: key.data, caPath: ca.path };
}

/** Node's TLS failures, said as what to fix. */
function tlsMessage(host: string, e: NodeJS.ErrnoException, tls: ClientTls | undefined): string | undefined {
  const code = e.code ?? '';
  const text = `${code} ${e.message}`;
  const where = `cannot reach cnmd at ${host}`;
  // OpenSSL's errors carry a short reason ("tlsv13 alert certificate required") beside a long message.
  const why = (e as { reason?: string }).reason ?? e.message.split('\n')[0];
  // The daemon's alert (TLS 1.3 sends it after the handshake, so it may come as a reset).
  if (tls && /alert|ECONNRESET|EPIPE/i.test(text))
    return `${where}: the daemon refused the TLS handshake (${why}): it wants a client certificate signed by its --tlscacert (--tlscert and --tlskey, or cert.pem and key.pem in DOCKER_CERT_PATH)`;
  if (tls?.verify && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code))
    return `${where}: the daemon's certificate is not trusted (${why}): --tlscacert ${tls.caPath} is not the CA that signed it, or the certificate does not name ${parseHostName(host)}`;
  if (tls && /wrong version number|packet length too long|WRONG_VERSION/i.test(text))
    return `${where}: the daemon does not speak TLS there (${why}): drop --tls/--tlsverify (and DOCKER_TLS_VERIFY)`;
  if (!tls && /HPE_|Parse Error|ECONNRESET/.test(text))
    return `${where}: no HTTP answer (${why}): if the daemon serves TLS, use --tlsverify with --tlscacert, --tlscert, --tlskey`;
  return undefined;
}

function parseHostName(host: string): string {
  const a = parseHost(host);
  return a.kind === 'tcp' ? a.host : a.path;
}

export function apiRequest(
  host: string,
  method: string,
  path: string,
  body?: unknown,
  tls?: ClientTls,
): Promise<{ status: number; body: any }> {
  const addr = parseHost(host);
  // TLS is for tcp:// only, as the docker CLI: a unix socket is guarded by its file mode.
  const useTls = addr.kind === 'tcp' && tls !== undefined;
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const options: https.RequestOptions = {
      method,
      path,
      ...(addr.kind === 'unix' ? { socketPath: addr.path } : { host: addr.host, port: addr.port }),
      headers: {
        'Content-Type': 'application/json',
        ...(data ? { 'Content-Length': Buffer.byteLength(data) } : {}),
      },
      ...(useTls
        ? { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: tls.verify, minVersion: 'TLSv1.2' }
        : {}),
    };
    const req = (useTls ? https : http).request(options, (res) => {
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
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        reject(new Error(`cannot reach cnmd at ${host}: is the daemon running? (set -H or ${ENV.host})`));
        return;
      }
      const m = tlsMessage(host, e, useTls ? tls : undefined);
      reject(m ? new Error(m) : e);
    });
    if (data) req.write(data);
    req.end();
  });
}
