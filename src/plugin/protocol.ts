// The Docker plugin protocol's transport as a server (pkg/plugins): POST
// /<Interface>.<Method> with a JSON body (empty for no argument), JSON back.
// Failures carry the interface's error field: `Err` for NetworkDriver,
// `Error` for IpamDriver. A request cnmd cannot read (bad JSON, a missing or
// ill-typed field) is answered 400; an operation that fails is answered 200
// with the error field, as docs/remote.md asks; an unknown method 404 (the
// engine reads 404 as "not implemented", which it tolerates where optional).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { CnmdError } from '../errors';
import type { Logger } from '../log';

export const CONTENT_TYPE = 'application/vnd.docker.plugins.v1.1+json';
const MAX_BODY = 1 << 20;

export type Interface = 'NetworkDriver' | 'IpamDriver';

export interface MethodDef<S extends z.ZodTypeAny = z.ZodTypeAny> {
  schema: S;
  run(req: z.infer<S>): Promise<Record<string, unknown>> | Record<string, unknown>;
}

export interface PluginDef {
  /** Socket name without .sock: cnmd-bridge, cnmd-ipam, ... */
  name: string;
  implements: Interface;
  methods: Record<string, MethodDef>;
}

/** Methods answered before the daemon has recovered its state: they read none of it. */
const STATELESS = new Set(['GetCapabilities', 'GetDefaultAddressSpaces']);

/** The field a reply carries its error in. */
export function errorField(iface: Interface): 'Err' | 'Error' {
  return iface === 'IpamDriver' ? 'Error' : 'Err';
}

/** Builds a method definition with its request type inferred from the schema. */
export function method<S extends z.ZodTypeAny>(
  schema: S,
  run: (req: z.infer<S>) => Promise<Record<string, unknown>> | Record<string, unknown>,
): MethodDef {
  return { schema, run };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': CONTENT_TYPE, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** What the transport reads on a non-200 answer is `Err`; IPAM clients that look at the body also find `Error`. */
function failure(iface: Interface, message: string): Record<string, string> {
  return iface === 'IpamDriver' ? { Err: message, Error: message } : { Err: message };
}

/** The body, or undefined when it is over MAX_BODY: then the rest is read and dropped, so a client that writes it all before reading gets the 413 (not a stall). */
async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) chunks.length = 0;
    else chunks.push(c as Buffer);
  }
  return size > MAX_BODY ? undefined : Buffer.concat(chunks).toString('utf8');
}

function describeZod(e: z.ZodError): string {
  return e.issues
    .map((i) => {
      const where = i.path.length ? i.path.join('.') : 'body';
      return i.code === 'invalid_type' && i.received === 'undefined'
        ? `${where} is missing`
        : `${where}: ${i.message}`;
    })
    .join('; ');
}

/** Handles one HTTP request for a plugin; never throws. */
export async function handle(
  def: PluginDef,
  req: IncomingMessage,
  res: ServerResponse,
  log: Logger,
  ready: Promise<void>,
): Promise<void> {
  const url = (req.url ?? '').split('?')[0];
  const started = process.hrtime.bigint();
  const name = url.replace(/^\//, '');
  let status = 200;
  try {
    if (req.method !== 'POST') {
      status = 405;
      return send(
        res,
        status,
        failure(
          def.implements,
          `${def.name}: use POST /${name || 'Plugin.Activate'} (the Docker plugin protocol)`,
        ),
      );
    }
    const text = await readBody(req);
    if (text === undefined) {
      status = 413;
      return send(
        res,
        status,
        failure(def.implements, `${name}: request body is larger than ${MAX_BODY} bytes`),
      );
    }
    if (name === 'Plugin.Activate') return send(res, status, { Implements: [def.implements] });
    const [iface, m] = name.split('.', 2);
    // Own methods only: `__proto__`, `constructor` or `toString` must not reach Object.prototype.
    const entry = iface === def.implements && Object.hasOwn(def.methods, m) ? def.methods[m] : undefined;
    if (!entry) {
      status = 404;
      const hint =
        iface === def.implements
          ? `it has ${Object.keys(def.methods).join(', ')}`
          : `it implements ${def.implements} only`;
      return send(res, status, failure(def.implements, `${def.name} does not implement ${name}: ${hint}`));
    }
    let json: unknown = {};
    if (text.trim() !== '') {
      try {
        json = JSON.parse(text);
      } catch (e) {
        status = 400;
        return send(
          res,
          status,
          failure(def.implements, `${name}: the request body is not JSON (${(e as Error).message})`),
        );
      }
    }
    const parsed = entry.schema.safeParse(json ?? {});
    if (!parsed.success) {
      status = 400;
      return send(res, status, failure(def.implements, `${name}: ${describeZod(parsed.error)}`));
    }
    try {
      // The sockets listen from the start (a plugin of cnmd's own may be what recovery needs to reach); state
      // waits for recovery.
      if (!STATELESS.has(m)) await ready;
      return send(res, status, await entry.run(parsed.data));
    } catch (e) {
      // A CnmdError's message is written for the engine's user; anything else is a bug, told as such.
      const message =
        e instanceof CnmdError
          ? e.message
          : `${name}: internal error in ${def.name} (the daemon's log has the details)`;
      log.warn({ err: e, plugin: def.name, method: name }, 'plugin call failed');
      return send(res, status, { [errorField(def.implements)]: message });
    }
  } catch (e) {
    status = 400;
    if (!res.headersSent)
      send(res, status, failure(def.implements, e instanceof Error ? e.message : String(e)));
  } finally {
    log.debug(
      { plugin: def.name, method: name, status, ms: Number(process.hrtime.bigint() - started) / 1e6 },
      'plugin',
    );
  }
}
