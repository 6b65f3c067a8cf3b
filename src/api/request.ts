// What every Engine-API route shares: a body validated against its schema,
// Docker's filters parameter and its name/id patterns, and the static-address
// check of an endpoint's settings.
import { z } from 'zod';
import { invalidArgument } from '../errors';
import { ipToBig } from '../net/addr';
import { compilePattern } from './pattern';
import type { Request } from './router';

/** Validates a body with a zod schema; a failure names the field and what is wrong. */
export async function parseBody<T>(req: Request, schema: z.ZodType<T>, op: string): Promise<T> {
  const body = await req.body();
  const r = schema.safeParse(body ?? {});
  if (!r.success) {
    const msg = r.error.issues
      .map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message))
      .join('; ');
    throw invalidArgument(op, undefined, `invalid request body: ${msg}`);
  }
  return r.data;
}

/** Docker's filters: {"name":{"x":true}} or the older {"name":["x"]}. */
export function parseFilters(req: Request, allowed: string[]): Map<string, string[]> {
  const raw = req.query.get('filters');
  const out = new Map<string, string[]>();
  if (!raw) return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw invalidArgument('filters', raw, 'filters is not valid JSON');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
    throw invalidArgument('filters', raw, 'filters must be a JSON object such as {"name":{"web":true}}');
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
    if (!allowed.includes(k))
      throw invalidArgument('filters', k, `invalid filter '${k}' (supported: ${allowed.join(', ')})`);
    if (!v || typeof v !== 'object')
      throw invalidArgument(
        'filters',
        k,
        `filter '${k}' must map to {"value": true} or ["value"], not ${JSON.stringify(v)}`,
      );
    // As Go's filters.Args.Get: every key of the set counts, whatever its boolean.
    const values = Array.isArray(v) ? v.map(String) : Object.keys(v);
    out.set(k, values);
  }
  return out;
}

/**
 * Docker's validateEndpointSettings: a static IPv4Address must be an IPv4 address and an IPv6Address an IPv6
 * one, checked before IPAM.
 */
export function checkStaticAddresses(op: string, ipv4: string | undefined, ipv6: string | undefined): void {
  for (const [ip, family] of [
    [ipv4, 4],
    [ipv6, 6],
  ] as const) {
    if (!ip) continue;
    const a = ipToBig(ip);
    if (!a || a.family !== family || a.value === 0n)
      throw invalidArgument(
        op,
        ip,
        `invalid IPv${family} address: ${ip} (want a plain address such as ` +
          `${family === 4 ? '10.1.0.5' : 'fd00::5'}, no prefix length)`,
      );
  }
}

/** One matcher per value of a `name`/`id` filter key (OR), compiled once for the request. */
export function patternFilter(f: Map<string, string[]>, key: string): (field: string) => boolean {
  const ms = (f.get(key) ?? []).map((v) => compilePattern(key, v));
  return (field) => ms.length === 0 || ms.some((m) => m(field));
}
