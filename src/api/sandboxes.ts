// cnmd's own sandbox endpoints: create, list, inspect, remove.
import { z } from 'zod';
import type { Controller } from '../controller/controller';
import type { SandboxFiles } from '../controller/sandbox-files';
import { parsePortSpecs } from '../portmap/spec';
import { checkStaticAddresses, parseBody, parseFilters, patternFilter } from './request';
import type { Router } from './router';
import { sandboxView } from './views';

const str = z.string();

export const SandboxCreateSchema = z
  .object({
    Name: str.optional(),
    Hostname: str.optional(),
    Networks: z
      .array(
        z.object({
          Network: z.string({ required_error: 'Network is required' }).min(1, 'Network is required'),
          Aliases: z.array(str).nullish(),
          IPv4Address: str.optional(),
          IPv6Address: str.optional(),
        }),
      )
      .nullish(),
    DNS: z
      .object({
        Servers: z.array(str).nullish(),
        Search: z.array(str).nullish(),
        Options: z.array(str).nullish(),
      })
      .nullish(),
    Labels: z.record(str, str).nullish(),
    /** Port specs in docker run -p syntax: "8080:80", "127.0.0.1::53/udp", "8000-8099:80-179". */
    Ports: z.array(str).nullish(),
  })
  .strict();

export function mountSandboxRoutes(router: Router, c: Controller, files: SandboxFiles): void {
  router
    .add('GET', '/sandboxes', (req) => {
      const f = parseFilters(req, ['name', 'id', 'network']);
      const byName = patternFilter(f, 'name');
      // Read once per request: a list of n sandboxes must not read every endpoint n times.
      const endpoints = f.has('network') ? c.endpoints() : [];
      const networks = new Map(f.has('network') ? c.networks().map((n) => [n.id, n]) : []);
      const list = c.sandboxes().filter((sb) => {
        const any = (k: string, pred: (v: string) => boolean) => !f.has(k) || f.get(k)!.some(pred);
        const nets = endpoints.filter((e) => e.sandboxId === sb.id).map((e) => networks.get(e.networkId));
        return (
          byName(sb.name) &&
          any('id', (v) => sb.id.startsWith(v)) &&
          any('network', (v) => nets.some((n) => n && (n.name === v || n.id.startsWith(v))))
        );
      });
      return { body: list.map((sb) => sandboxView(c, sb, files.dir(sb.id))) };
    })
    .add('GET', '/sandboxes/{id}', (req) => {
      const sb = c.sandbox(req.params.id);
      return { body: sandboxView(c, sb, files.dir(sb.id)) };
    })
    .add('POST', '/sandboxes', async (req) => {
      const b = await parseBody(req, SandboxCreateSchema, 'sandbox create');
      for (const n of b.Networks ?? []) checkStaticAddresses('sandbox create', n.IPv4Address, n.IPv6Address);
      const sb = await c.createSandbox({
        name: b.Name,
        hostname: b.Hostname,
        networks: (b.Networks ?? []).map((n) => ({
          network: n.Network,
          aliases: n.Aliases ?? [],
          ipv4: n.IPv4Address || undefined,
          ipv6: n.IPv6Address || undefined,
        })),
        dns: { servers: b.DNS?.Servers ?? [], search: b.DNS?.Search ?? [], options: b.DNS?.Options ?? [] },
        labels: b.Labels ?? {},
        ports: parsePortSpecs(b.Ports ?? []),
      });
      return { status: 201, body: { Id: sb.id } };
    })
    .add('DELETE', '/sandboxes/{id}', async (req) => {
      await c.deleteSandbox(req.params.id);
      return { status: 204 };
    });
}
