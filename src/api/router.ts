// A small HTTP router for the Engine-API subset: Docker's optional /vX.Y
// prefix, JSON bodies, {"message"} errors with Docker's statuses.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { CnmdError, ErrorCode } from '../errors';
import { API_VERSION, MIN_API_VERSION } from '../version';

export interface Request {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  apiVersion?: string;
  headers: IncomingMessage['headers'];
  body(): Promise<unknown>;
}

export interface Reply {
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Send body as-is (text/plain) instead of JSON. */
  raw?: boolean;
}

export type Handler = (req: Request) => Promise<Reply> | Reply;

interface Route {
  method: string;
  re: RegExp;
  keys: string[];
  handler: Handler;
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  CONFLICT: 409,
  // libnetwork's ActiveEndpointsError, ErrPoolOverlap, ErrIPAlreadyAllocated and "endpoint with name x
  // already exists in network y" are Forbidden in Docker's errdefs (docs/design-notes.md, "Engine-API statuses").
  IN_USE: 403,
  FORBIDDEN: 403,
  EXHAUSTED: 409,
  KERNEL_FEATURE_MISSING: 400,
  UNAVAILABLE: 503,
};

export function statusFor(e: unknown): number {
  if (!(e instanceof CnmdError)) return 500;
  // A kernel refusal (it carries the errno) of something the request asked for: the kernel's
  // ENODEV/EADDRNOTAVAIL/ENOENT say the request cannot be done as asked, not that an API object is unknown.
  if (e.errno && e.code === 'NOT_FOUND') return 400;
  return STATUS[e.code] ?? 500;
}

const MAX_BODY = 4 << 20;

/** Compares "1.41"-style versions numerically, as Docker's versions.LessThan does. */
function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Docker's version middleware: a /vX.Y prefix outside [MIN_API_VERSION, API_VERSION] is a 400 with its wording. */
export function checkApiVersion(v: string | undefined): void {
  if (v === undefined) return;
  if (compareVersions(v, MIN_API_VERSION) < 0) {
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `client version ${v} is too old. Minimum supported API version is ${MIN_API_VERSION}, please upgrade ` +
        `your client to a newer version`,
      { op: 'api', object: v },
    );
  }
  if (compareVersions(v, API_VERSION) > 0) {
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `client version ${v} is too new. Maximum supported API version is ${API_VERSION}`,
      { op: 'api', object: v },
    );
  }
}

export class Router {
  private routes: Route[] = [];

  add(method: string, pattern: string, handler: Handler): this {
    const keys: string[] = [];
    const re = new RegExp(
      '^' +
        pattern.replace(/\{(\w+)\}/g, (_, k: string) => {
          keys.push(k);
          return '([^/]+)';
        }) +
        '/?$',
    );
    this.routes.push({ method, re, keys, handler });
    return this;
  }

  async handle(
    req: IncomingMessage,
    res: ServerResponse,
    onError: (e: unknown, r: Request) => void,
  ): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://cnmd');
    let p = url.pathname;
    let apiVersion: string | undefined;
    const vm = /^\/v(\d+\.\d+)(\/.*)$/.exec(p);
    if (vm) {
      apiVersion = vm[1];
      p = vm[2];
    }
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
    let bodyPromise: Promise<unknown> | undefined;
    const request: Request = {
      method,
      path: p,
      params: {},
      query: url.searchParams,
      apiVersion,
      headers: req.headers,
      body: () => (bodyPromise ??= readJson(req)),
    };
    let reply: Reply;
    const route = this.routes.find((r) => r.method === method && r.re.test(p));
    try {
      checkApiVersion(apiVersion);
      if (!route) {
        const matches = this.routes.filter((r) => r.re.test(p));
        reply = matches.length
          ? {
              status: 405,
              body: { message: `method ${req.method} is not allowed on ${p} (allowed: ${allowed(matches)})` },
              headers: { Allow: allowed(matches) },
            }
          : { status: 404, body: { message: `page not found: ${p}` } };
      } else {
        const m = route.re.exec(p)!;
        route.keys.forEach((k, i) => (request.params[k] = decodePathParam(k, m[i + 1])));
        reply = await route.handler(request);
      }
    } catch (e) {
      onError(e, request);
      // A CnmdError's message is written for the client; anything else is a bug, told as such (the log has it).
      reply =
        e instanceof CnmdError
          ? { status: statusFor(e), body: { message: e.message } }
          : {
              status: 500,
              body: { message: `internal error in ${method} ${p} (the daemon's log has the details)` },
            };
    }
    const status = reply.status ?? 200;
    const headers: Record<string, string> = { ...(reply.headers ?? {}) };
    let payload = '';
    if (reply.body !== undefined) {
      if (reply.raw) {
        payload = String(reply.body);
        headers['Content-Type'] ??= 'text/plain; charset=utf-8';
      } else {
        payload = JSON.stringify(reply.body) + '\n';
        headers['Content-Type'] ??= 'application/json';
      }
    }
    headers['Content-Length'] = String(Buffer.byteLength(payload));
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : payload);
  }
}

function decodePathParam(key: string, v: string): string {
  try {
    return decodeURIComponent(v);
  } catch {
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `path parameter ${key} "${v}" is not valid percent-encoding (escape '%' as %25)`,
      { op: 'api', object: v },
    );
  }
}

/** The Allow header of a 405: the methods the matching routes answer (GET implies HEAD). */
function allowed(routes: Route[]): string {
  const m = new Set(routes.map((r) => r.method));
  if (m.has('GET')) m.add('HEAD');
  return [...m].sort().join(', ');
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  // Small bodies usually arrive with their headers. The handler runs from the
  // parser's 'request' event, before the parser reaches the body; one
  // microtask later the body is buffered, and it is read at once instead of
  // through the stream's events (two more turns of the event loop).
  await Promise.resolve();
  const length = Number(req.headers['content-length']);
  if (length > 0 && length <= MAX_BODY && req.readableLength === length && !req.readableFlowing) {
    const chunks: Buffer[] = [];
    for (let c: Buffer | null; (c = req.read() as Buffer | null) !== null;) chunks.push(c);
    return parseJsonBody(Buffer.concat(chunks));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      // Past the limit the rest is read and dropped, so the client gets the 400 rather than a reset.
      if (size > MAX_BODY) {
        chunks.length = 0;
        reject(
          new CnmdError('INVALID_ARGUMENT', `request body is larger than ${MAX_BODY} bytes`, { op: 'api' }),
        );
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (size > MAX_BODY) return;
      try {
        resolve(parseJsonBody(Buffer.concat(chunks)));
      } catch (e) {
        reject(e);
      }
    });
    req.on('error', reject);
  });
}

function parseJsonBody(raw: Buffer): unknown {
  const text = raw.toString('utf8').trim();
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CnmdError('INVALID_ARGUMENT', `request body is not valid JSON: ${(e as Error).message}`, {
      op: 'api',
    });
  }
}
