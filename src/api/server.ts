// The API server on the --host socket (unix, mode 0660; TCP only when asked).
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as os from 'node:os';
import * as tls from 'node:tls';
import * as path from 'node:path';
import { ListenAddress } from '../config';
import { capConnections } from '../conn-cap';
import { invalidArgument } from '../errors';
import type { Logger } from '../log';
import { API_VERSION, MIN_API_VERSION, VERSION } from '../version';
import { drainable } from '../http-drain';
import { claimSocketPath } from '../unix-socket';
import { Router } from './router';

export interface ApiServer {
  router: Router;
  close(): Promise<void>;
}

function pingHeaders(): Record<string, string> {
  return {
    'Api-Version': API_VERSION,
    'Docker-Experimental': 'false',
    OSType: 'linux',
    Server: `cnmd/${VERSION} (linux)`,
    'Cache-Control': 'no-cache, no-store, must-revalidate',
    Pragma: 'no-cache',
  };
}

export function versionInfo(): Record<string, unknown> {
  return {
    Platform: { Name: 'cnmd' },
    Components: [
      {
        Name: 'cnmd',
        Version: VERSION,
        Details: { ApiVersion: API_VERSION, MinAPIVersion: MIN_API_VERSION },
      },
    ],
    Version: VERSION,
    ApiVersion: API_VERSION,
    MinAPIVersion: MIN_API_VERSION,
    GitCommit: '',
    GoVersion: `node ${process.version}`,
    Os: 'linux',
    Arch: process.arch === 'x64' ? 'amd64' : process.arch,
    KernelVersion: os.release(),
    BuildTime: '',
  };
}

/** Routes every daemon answers, whatever else is mounted. */
export function baseRouter(): Router {
  return new Router()
    .add('GET', '/_ping', () => ({ body: 'OK', raw: true, headers: pingHeaders() }))
    .add('GET', '/version', () => ({ body: versionInfo(), headers: { 'Api-Version': API_VERSION } }));
}

export interface ApiServerOptions {
  /** TLS on a tcp:// address, from apiTlsOptions. */
  tls?: https.ServerOptions;
  /** Open connections accepted at once (node's server.maxConnections): beyond it new ones are closed. */
  maxConnections?: number;
}

function readPem(file: string, flag: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw invalidArgument('api listen', file, `${flag} ${file}: ${(e as Error).message}`);
  }
}

/**
 * The API's TLS from PEM files (`verify` requires client certificates signed by `ca`), read and checked: the
 * daemon calls it before it changes anything, so a wrong file refuses the start and leaves the host as it was.
 */
export function apiTlsOptions(t: {
  cert: string;
  key: string;
  ca?: string;
  verify: boolean;
}): https.ServerOptions {
  const opts: https.ServerOptions = {
    cert: readPem(t.cert, '--tlscert'),
    key: readPem(t.key, '--tlskey'),
    ...(t.ca ? { ca: readPem(t.ca, '--tlscacert') } : {}),
    requestCert: t.verify,
    rejectUnauthorized: t.verify,
    minVersion: 'TLSv1.2',
  };
  try {
    tls.createSecureContext(opts);
  } catch (e) {
    throw invalidArgument(
      'api listen',
      t.cert,
      `--tlscert ${t.cert}, --tlskey ${t.key}${t.ca ? `, --tlscacert ${t.ca}` : ''}: ${(e as Error).message}; ` +
        `give the server's PEM certificate and its private key${t.ca ? ', and the CA of client certificates' : ''}`,
    );
  }
  return opts;
}

export async function startApiServer(
  addr: ListenAddress,
  router: Router,
  log: Logger,
  opts: ApiServerOptions = {},
): Promise<ApiServer> {
  const onRequest: http.RequestListener = (req, res) => {
    const started = process.hrtime.bigint();
    void router
      .handle(req, res, (e, r) => log.warn({ err: e, method: r.method, path: r.path }, 'api request failed'))
      .finally(() =>
        log.debug(
          {
            method: req.method,
            url: req.url,
            status: res.statusCode,
            ms: Number(process.hrtime.bigint() - started) / 1e6,
          },
          'api',
        ),
      );
  };
  const server =
    addr.kind === 'tcp' && opts.tls ? https.createServer(opts.tls, onRequest) : http.createServer(onRequest);
  server.keepAliveTimeout = 30_000;
  capConnections(server, opts.maxConnections ?? 512, log, 'api');
  const drain = drainable(server, log, 'api');
  if (addr.kind === 'unix') {
    fs.mkdirSync(path.dirname(addr.path), { recursive: true, mode: 0o755 });
    await claimSocketPath(addr.path, '--host');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(addr.path, () => resolve());
    });
    fs.chmodSync(addr.path, 0o660);
  } else {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(addr.port, addr.host, () => resolve());
    });
  }
  log.info(
    {
      listen: addr,
      tls:
        addr.kind === 'tcp'
          ? opts.tls
            ? opts.tls.requestCert
              ? 'verify'
              : 'server-only'
            : 'none'
          : undefined,
    },
    'api listening',
  );
  return {
    router,
    close: () => {
      // The socket file goes first: a client started after the stop gets ENOENT, not a hang.
      if (addr.kind === 'unix') fs.rmSync(addr.path, { force: true });
      return drain.close();
    },
  };
}
