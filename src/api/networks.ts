// Engine-API network endpoints: list (filters), inspect, create, remove,
// connect, disconnect, prune.
import { z } from 'zod';
import type { Controller } from '../controller/controller';
import type { NetworkRecord } from '../controller/records';
import { CnmdError, invalidArgument } from '../errors';
import { POOL_OVERLAP } from '../ipam/ipam';
import { overlaps, parseCidr } from '../net/addr';
import { checkStaticAddresses, parseBody, parseFilters, patternFilter } from './request';
import type { Router } from './router';
import { networkView } from './views';

const str = z.string();
const strMap = z.record(z.string(), z.string()).nullish();

const IpamConfigSchema = z
  .object({
    Subnet: str.optional(),
    IPRange: str.optional(),
    Gateway: str.optional(),
    AuxiliaryAddresses: strMap,
    AuxAddress: strMap,
  })
  .passthrough();

export const NetworkCreateSchema = z
  .object({
    Name: z.string({ required_error: 'Name is required' }).min(1, 'Name is required'),
    CheckDuplicate: z.boolean().optional(),
    Driver: str.optional(),
    Scope: str.optional(),
    Internal: z.boolean().optional(),
    Attachable: z.boolean().optional(),
    Ingress: z.boolean().optional(),
    EnableIPv6: z.boolean().nullish(),
    IPAM: z
      .object({
        Driver: str.optional(),
        Config: z.array(IpamConfigSchema).nullish(),
        Options: strMap,
      })
      .passthrough()
      .nullish(),
    Options: strMap,
    Labels: strMap,
    ConfigOnly: z.boolean().optional(),
    ConfigFrom: z.unknown().optional(),
  })
  .passthrough();

const ConnectSchema = z
  .object({
    Container: z.string({ required_error: 'Container is required' }).min(1, 'Container is required'),
    EndpointConfig: z
      .object({
        IPAMConfig: z
          .object({
            IPv4Address: str.optional(),
            IPv6Address: str.optional(),
            LinkLocalIPs: z.array(str).nullish(),
          })
          .passthrough()
          .nullish(),
        Aliases: z.array(str).nullish(),
      })
      .passthrough()
      .nullish(),
  })
  .passthrough();

const DisconnectSchema = z
  .object({
    Container: z.string({ required_error: 'Container is required' }).min(1, 'Container is required'),
    Force: z.boolean().optional(),
  })
  .passthrough();

/** Two subnets of one create request that overlap are refused before IPAM, naming both as this request's. */
function checkRequestSubnets(name: string, subnets: string[]): void {
  const given = subnets.map((s) => ({ s, c: parseCidr(s) })).filter((x) => x.c);
  for (let i = 0; i < given.length; i++)
    for (let j = i + 1; j < given.length; j++)
      if (overlaps(given[i].c!, given[j].c!))
        throw new CnmdError(
          'IN_USE',
          `network create ${name}: ${POOL_OVERLAP}: subnet ${given[j].s} overlaps with ${given[i].s}, another ` +
            `subnet of this request; give each subnet once, without overlap`,
          { op: 'network create', object: name },
        );
}

function matchLabel(labels: Record<string, string>, f: string): boolean {
  const eq = f.indexOf('=');
  const key = eq === -1 ? f : f.slice(0, eq);
  // Own keys only: `label=toString` must not match through Object.prototype.
  if (!Object.prototype.hasOwnProperty.call(labels, key)) return false;
  return eq === -1 || labels[key] === f.slice(eq + 1);
}

/** Docker's filters.Args.MatchKVList: every label filter must hold (AND), unlike the other keys (OR). */
function matchLabels(labels: Record<string, string>, filters: string[]): boolean {
  return filters.every((f) => matchLabel(labels, f));
}

export function filterNetworks(
  c: Controller,
  list: NetworkRecord[],
  f: Map<string, string[]>,
): NetworkRecord[] {
  const used = new Set(c.endpoints().map((e) => e.networkId));
  const dangling = f.get('dangling') ?? [];
  if (dangling.length > 1)
    throw invalidArgument('filters', 'dangling', 'got more than one value for filter key "dangling"');
  if (dangling.length && !['true', '1', 'false', '0'].includes(dangling[0])) {
    throw invalidArgument(
      'filters',
      dangling[0],
      `invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")`,
    );
  }
  for (const v of f.get('type') ?? []) {
    if (v !== 'custom' && v !== 'builtin')
      throw invalidArgument('filters', v, `invalid filter: 'type'='${v}' (use custom or builtin)`);
  }
  const byName = patternFilter(f, 'name');
  const byId = patternFilter(f, 'id');
  return list.filter((n) => {
    const any = (k: string, pred: (v: string) => boolean) =>
      !f.has(k) || f.get(k)!.length === 0 || f.get(k)!.some(pred);
    return (
      byName(n.name) &&
      byId(n.id) &&
      any('driver', (v) => n.driver === v) &&
      any('scope', (v) => n.scope === v) &&
      matchLabels(n.labels, f.get('label') ?? []) &&
      any('type', (v) => (v === 'builtin' ? n.isDefault : !n.isDefault)) &&
      // dangling=true: custom networks nobody uses; dangling=false: the others (in use, or pre-defined).
      any('dangling', (v) => (v === 'true' || v === '1') === (!used.has(n.id) && !n.isDefault))
    );
  });
}

function flattenAux(cfg: z.infer<typeof IpamConfigSchema>): Record<string, string> | undefined {
  const aux = cfg.AuxiliaryAddresses ?? cfg.AuxAddress;
  return aux ?? undefined;
}

export function mountNetworkRoutes(router: Router, c: Controller): void {
  router
    .add('GET', '/networks', (req) => {
      const f = parseFilters(req, ['name', 'id', 'driver', 'scope', 'label', 'type', 'dangling']);
      return { body: filterNetworks(c, c.networks(), f).map((n) => networkView(c, n)) };
    })
    .add('GET', '/networks/{id}', (req) => ({ body: networkView(c, c.network(req.params.id)) }))
    .add('POST', '/networks/create', async (req) => {
      const b = await parseBody(req, NetworkCreateSchema, 'network create');
      if (b.ConfigOnly || b.ConfigFrom)
        throw invalidArgument('network create', b.Name, 'config-only networks are not supported');
      if (b.Scope && b.Scope !== 'local')
        throw invalidArgument(
          'network create',
          b.Name,
          `scope "${b.Scope}" is not supported by the local drivers (use local)`,
        );
      checkRequestSubnets(
        b.Name,
        (b.IPAM?.Config ?? []).map((cfg) => cfg.Subnet ?? ''),
      );
      const n = await c.createNetwork({
        name: b.Name,
        driver: b.Driver,
        internal: b.Internal,
        attachable: b.Attachable,
        enableIPv6: b.EnableIPv6 ?? false,
        options: b.Options ?? {},
        labels: b.Labels ?? {},
        ipam: {
          driver: b.IPAM?.Driver,
          options: b.IPAM?.Options ?? {},
          config: (b.IPAM?.Config ?? []).map((cfg) => ({
            subnet: cfg.Subnet || undefined,
            ipRange: cfg.IPRange || undefined,
            gateway: cfg.Gateway || undefined,
            auxAddresses: flattenAux(cfg),
          })),
        },
      });
      return { status: 201, body: { Id: n.id, Warning: '' } };
    })
    .add('DELETE', '/networks/{id}', async (req) => {
      // cnmd's own (Docker's API has no force for networks): an engine network whose engine is gone.
      const force = ['1', 'true'].includes(req.query.get('force') ?? '');
      await c.deleteNetwork(req.params.id, { force });
      return { status: 204 };
    })
    .add('POST', '/networks/{id}/connect', async (req) => {
      const b = await parseBody(req, ConnectSchema, 'network connect');
      checkStaticAddresses(
        'network connect',
        b.EndpointConfig?.IPAMConfig?.IPv4Address,
        b.EndpointConfig?.IPAMConfig?.IPv6Address,
      );
      await c.connect(req.params.id, b.Container, {
        aliases: b.EndpointConfig?.Aliases ?? [],
        ipv4: b.EndpointConfig?.IPAMConfig?.IPv4Address || undefined,
        ipv6: b.EndpointConfig?.IPAMConfig?.IPv6Address || undefined,
      });
      return { status: 200 };
    })
    .add('POST', '/networks/{id}/disconnect', async (req) => {
      const b = await parseBody(req, DisconnectSchema, 'network disconnect');
      try {
        await c.disconnect(req.params.id, b.Container);
      } catch (e) {
        // With Force, a sandbox that is already gone is not an error.
        if (!(b.Force && e instanceof CnmdError && e.code === 'NOT_FOUND')) throw e;
      }
      return { status: 200 };
    })
    .add('POST', '/networks/prune', async (req) => {
      const f = parseFilters(req, ['label', 'label!', 'until']);
      if (f.has('until'))
        throw invalidArgument('network prune', 'until', "the 'until' filter is not supported yet");
      // Docker's prune matchLabels: every label filter holds, and not every label! filter holds.
      const keep = f.get('label!') ?? [];
      const deleted = await c.pruneNetworks(
        (n) =>
          matchLabels(n.labels, f.get('label') ?? []) && !(keep.length > 0 && matchLabels(n.labels, keep)),
      );
      return { body: { NetworksDeleted: deleted } };
    });
}
