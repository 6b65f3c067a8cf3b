// The transport of Docker's plugin protocol (pkg/plugins): HTTP/1.1 POST
// /<Method> with a JSON body, over a unix socket or TCP. Failures become
// CnmdErrors naming the plugin, the method and what to do about it.
//
// Differences from the engine, on purpose: only failures to connect are retried
// (a request that timed out may have been applied: sending it again could apply
// it twice), and the retry budget is cnmd's to choose (5 s by default, not 30 s)
// so a missing plugin fails an API call quickly.
import * as http from 'node:http';
import { CnmdError, ErrorCode } from '../errors';
import type { Logger } from '../log';
import { PluginAddr, PluginLocation, formatAddr } from './discovery';

export const PLUGIN_ACCEPT = 'application/vnd.docker.plugins.v1.2+json';

export interface PluginClientOptions {
  /** Per-call deadline, from sending the request to the end of the reply. */
  timeoutMs?: number;
  /** How long connection failures (ECONNREFUSED, ENOENT) are retried, in total. */
  retryMs?: number;
  log?: Logger;
}

export interface CallOptions {
  timeoutMs?: number;
  /**
   * The error field of this protocol's 200 replies: "Err" for NetworkDriver,
   * "Error" for IpamDriver; a non-empty value fails the call.
   */
  errorField?: 'Err' | 'Error';
}

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_RETRY_MS = 5_000;
const MAX_REPLY = 16 << 20;
const FIRST_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 1_000;
/** Docker's plugin clients send this Host for local sockets. */
const LOCAL_HOST = 'plugin.moby.localhost';

const RETRYABLE = new Set(['ECONNREFUSED', 'ENOENT', 'EAGAIN']);

/** A plugin's error as the caller sees it: who, which method, the HTTP status if any. */
export function isPluginStatus(e: unknown, status: number): boolean {
  return e instanceof CnmdError && e.code === 'PLUGIN_ERROR' && e.details.status === status;
}

interface RawReply {
  status: number;
  body: string;
}

class AttemptError extends Error {
  constructor(
    readonly errno: string | undefined,
    readonly reused: boolean,
    readonly original: unknown,
  ) {
    super(String((original as Error)?.message ?? original));
  }
}

class TimeoutSignal extends Error {}

function truncate(s: string, n = 200): string {
  return s.length > n ? `${s.slice(0, n)}...` : s;
}

export class PluginClient {
  readonly name: string;
  readonly addr: PluginAddr;
  private readonly timeoutMs: number;
  private readonly retryMs: number;
  private readonly log?: Logger;
  // Keep-alive: an endpoint attach is several calls in a row to the same plugin.
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  private activation?: Promise<string[]>;

  constructor(location: PluginLocation, opts: PluginClientOptions = {}) {
    this.name = location.name;
    this.addr = location.addr;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.retryMs = opts.retryMs ?? DEFAULT_RETRY_MS;
    this.log = opts.log;
  }

  /** "remote plugin "x" (unix:///run/docker/plugins/x.sock)" */
  get label(): string {
    return `remote plugin "${this.name}" (${formatAddr(this.addr)})`;
  }

  close(): void {
    this.agent.destroy();
  }

  /** An error about `method` of this plugin: the message starts with the plugin and its address. */
  error(code: ErrorCode, method: string, message: string, extra: Record<string, unknown> = {}): CnmdError {
    return new CnmdError(code, `${this.label}: ${method}: ${message}`, {
      op: method,
      object: this.name,
      plugin: this.name,
      method,
      addr: formatAddr(this.addr),
      ...extra,
    });
  }

  /**
   * POST /Plugin.Activate; resolves with what the plugin implements
   * ("NetworkDriver", "IpamDriver", ...). Done once per client, as the engine
   * does; a failed activation is tried again on the next call.
   */
  activate(): Promise<string[]> {
    if (!this.activation) {
      this.activation = this.doActivate().catch((e) => {
        this.activation = undefined;
        throw e;
      });
    }
    return this.activation;
  }

  private async doActivate(): Promise<string[]> {
    const method = 'Plugin.Activate';
    const reply = await this.call(method);
    const impl = reply.Implements;
    if (!Array.isArray(impl) || !impl.every((x) => typeof x === 'string')) {
      throw this.error(
        'MALFORMED_REPLY',
        method,
        `the reply has no "Implements" list of strings (got ${truncate(JSON.stringify(reply))}); the plugin ` +
          `must answer {"Implements": ["NetworkDriver"]} or similar`,
      );
    }
    return impl as string[];
  }

  /** Activates the plugin and checks it implements `what` (NetworkDriver, IpamDriver). */
  async require(what: string): Promise<void> {
    const impl = await this.activate();
    if (!impl.includes(what)) {
      throw this.error(
        'PLUGIN_ERROR',
        'Plugin.Activate',
        `the plugin implements ${impl.length ? impl.join(', ') : 'nothing'}, not ${what}; use a plugin that ` +
          `implements ${what}, or use this one where ${impl.join('/') || 'it'} is expected`,
        {
          implements: impl,
        },
      );
    }
  }

  /**
   * Calls a method; resolves with the reply's JSON object ({} for an empty body).
   * `body` undefined sends no body, as the engine does for argument-less calls.
   */
  async call(method: string, body?: unknown, opts: CallOptions = {}): Promise<Record<string, unknown>> {
    const payload = body === undefined ? '' : JSON.stringify(body);
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const raw = await this.withRetry(method, payload, timeoutMs);
    if (raw.status !== 200) throw this.statusError(method, raw);
    const reply = this.parse(method, raw.body);
    const field = opts.errorField;
    if (field !== undefined) {
      const v = reply[field];
      if (v !== undefined && v !== null && v !== '') {
        if (typeof v !== 'string')
          throw this.error(
            'MALFORMED_REPLY',
            method,
            `"${field}" in the reply is not a string (${truncate(JSON.stringify(v))}); fix the plugin`,
          );
        throw this.error(
          'PLUGIN_ERROR',
          method,
          `the plugin refused: ${v} (the plugin's own message; fix what it names, or see the plugin's logs)`,
          { pluginMessage: v, status: 200 },
        );
      }
    }
    return reply;
  }

  private statusError(method: string, raw: RawReply): CnmdError {
    let message = raw.body.trim();
    try {
      const o = JSON.parse(raw.body) as Record<string, unknown>;
      // pkg/plugins reads Err; IPAM plugins often send their own Error field.
      const m =
        typeof o?.Err === 'string' && o.Err
          ? o.Err
          : typeof o?.Error === 'string' && o.Error
            ? o.Error
            : undefined;
      if (m !== undefined) message = m;
    } catch (e) {
      // Not JSON: the raw body is the message, as the engine reports it.
      if (!(e instanceof SyntaxError)) throw e;
    }
    const hint =
      raw.status === 404
        ? `the plugin does not implement ${method} (HTTP 404); use a plugin version that does, or check the ` +
          `plugin's name`
        : `the plugin refused with HTTP ${raw.status}: ${truncate(message || '(empty body)', 1000)} (the ` +
          `plugin's own message; fix what it names, or see the plugin's logs)`;
    return this.error('PLUGIN_ERROR', method, hint, { status: raw.status, pluginMessage: message });
  }

  private parse(method: string, body: string): Record<string, unknown> {
    if (body.trim() === '') return {};
    let v: unknown;
    try {
      v = JSON.parse(body);
    } catch (e) {
      throw this.error(
        'MALFORMED_REPLY',
        method,
        `the reply is not valid JSON (${(e as Error).message}; body: ${JSON.stringify(truncate(body))}); ` +
          `the plugin is broken or is not a Docker plugin: fix the plugin or point cnmd at the right socket`,
      );
    }
    if (v === null) return {};
    if (typeof v !== 'object' || Array.isArray(v)) {
      throw this.error(
        'MALFORMED_REPLY',
        method,
        `the reply is JSON but not an object (${truncate(body)}); the plugin is broken: fix the plugin`,
      );
    }
    return v as Record<string, unknown>;
  }

  private async withRetry(method: string, payload: string, timeoutMs: number): Promise<RawReply> {
    const start = Date.now();
    let backoff = FIRST_BACKOFF_MS;
    let attempts = 0;
    let staleRetried = false;
    for (;;) {
      attempts++;
      try {
        return await this.attempt(method, payload, timeoutMs);
      } catch (e) {
        if (e instanceof TimeoutSignal) {
          throw this.error(
            'TIMEOUT',
            method,
            `no reply within ${timeoutMs / 1000} s; check that the plugin is running and not stuck (its ` +
              `logs), or raise cnmd's plugin timeout`,
            { timeoutMs },
          );
        }
        if (!(e instanceof AttemptError)) throw e;
        // A kept-alive socket the plugin closed meanwhile: the request never reached it.
        if (e.reused && e.errno === 'ECONNRESET' && !staleRetried) {
          staleRetried = true;
          continue;
        }
        const retryable = e.errno !== undefined && RETRYABLE.has(e.errno);
        const elapsed = Date.now() - start;
        if (retryable && elapsed + backoff < this.retryMs) {
          this.log?.warn(
            { plugin: this.name, method, errno: e.errno, retryInMs: backoff },
            'plugin not reachable, retrying',
          );
          await new Promise((r) => setTimeout(r, backoff));
          backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
          continue;
        }
        throw this.connectError(method, e, attempts, Date.now() - start);
      }
    }
  }

  private connectError(method: string, e: AttemptError, attempts: number, elapsedMs: number): CnmdError {
    const where = formatAddr(this.addr);
    const tried = attempts > 1 ? ` (${attempts} attempts over ${(elapsedMs / 1000).toFixed(1)} s)` : '';
    let fix: string;
    switch (e.errno) {
      case 'ENOENT':
        fix = `the socket ${where} does not exist${tried}; start the plugin, or remove its stale spec file`;
        break;
      case 'ECONNREFUSED':
        fix =
          `nothing accepts connections at ${where}${tried}; start the plugin, or remove its stale ` +
          `socket or spec file`;
        break;
      case 'EACCES':
      case 'EPERM':
        fix = `permission denied connecting to ${where}; run cnmd as root or give it access to the socket`;
        break;
      case 'ECONNRESET':
      case 'EPIPE':
        fix = `the plugin closed the connection before replying (${e.errno}); it probably crashed: see its logs`;
        break;
      default:
        fix =
          `cannot talk to the plugin at ${where} (${e.errno ?? e.message})${tried}; check that it is ` +
          `running and reachable`;
    }
    return this.error('PLUGIN_ERROR', method, fix, { errno: e.errno, cause: e.original });
  }

  private attempt(method: string, payload: string, timeoutMs: number): Promise<RawReply> {
    return new Promise<RawReply>((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = {
        Accept: PLUGIN_ACCEPT,
        'Content-Length': Buffer.byteLength(payload),
      };
      const target: http.RequestOptions =
        this.addr.kind === 'unix'
          ? { socketPath: this.addr.path, headers: { ...headers, Host: LOCAL_HOST } }
          : { host: this.addr.host, port: this.addr.port, headers };
      let settled = false;
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const req = http.request({ ...target, method: 'POST', path: `/${method}`, agent: this.agent });
      // One deadline for connect, send and the whole reply: a plugin that trickles bytes is as stuck as a silent one.
      const timer = setTimeout(() => {
        finish(() => reject(new TimeoutSignal()));
        req.destroy();
      }, timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) =>
        finish(() => reject(new AttemptError(err.code, req.reusedSocket, err))),
      );
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_REPLY) {
            finish(() =>
              reject(
                this.error(
                  'MALFORMED_REPLY',
                  method,
                  `the reply is larger than ${MAX_REPLY >> 20} MiB; the plugin is broken: fix the plugin`,
                ),
              ),
            );
            req.destroy();
            return;
          }
          chunks.push(c);
        });
        res.on('end', () =>
          finish(() =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
          ),
        );
        res.on('error', (err: NodeJS.ErrnoException) =>
          finish(() => reject(new AttemptError(err.code, false, err))),
        );
        res.on('aborted', () =>
          finish(() => reject(new AttemptError('ECONNRESET', false, new Error('reply aborted')))),
        );
      });
      req.end(payload);
    });
  }
}
