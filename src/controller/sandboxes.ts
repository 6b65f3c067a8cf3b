// Sandboxes: a network namespace with its endpoints, files (hostname, hosts,
// resolv.conf) and embedded DNS. Created in three steps with undo (endpoints
// addressed and recorded; the netns; the wiring, beside the files and DNS),
// deleted namespace first.
import { CnmdError, TeardownErrors } from '../errors';
import type { PortBinding } from '../portmap/spec';
import { runSteps, Step } from '../steps';
import type { Core } from './core';
import type { DnsView } from './dns-view';
import type { ConnectOptions, Endpoints, PendingEndpoint } from './endpoints';
import { LOCK } from './locks';
import { DnsConfig, EndpointRecord, KIND, NetworkRecord, SandboxRecord } from './records';
import { afterReply, newId, settleAll, yieldToEventLoop } from './util';
import { checkDnsConfig, checkHostname, checkName, invalidHostMix, invalidNone } from './validate';

export interface SandboxCreateRequest {
  name?: string;
  hostname?: string;
  networks?: ({ network: string } & ConnectOptions)[];
  dns?: Partial<DnsConfig>;
  labels?: Record<string, string>;
  /** Ports to publish (parsed -p specs). */
  ports?: PortBinding[];
}

export interface SandboxesDeps extends Core {
  view: DnsView;
  endpoints: Endpoints;
}

export class Sandboxes {
  private readonly d: SandboxesDeps;
  /** Cache: the path pinning the daemon's own netns, once pinned (host-network sandboxes' key). */
  private hostNetnsPinned?: string;

  constructor(d: SandboxesDeps) {
    this.d = d;
  }

  async create(req: SandboxCreateRequest): Promise<SandboxRecord> {
    const op = 'sandbox create';
    const { store, lookup, log } = this.d;
    const id = newId();
    const name = req.name ?? id.slice(0, 12);
    checkName(op, 'sandbox', name);
    const hostname = req.hostname ?? id.slice(0, 12);
    checkHostname(op, hostname);
    checkDnsConfig(op, req.dns);
    const nets = (req.networks ?? []).map((c) => ({ ...c, rec: lookup.network(c.network) }));
    for (const c of nets)
      lookup.refuseEngineNetwork(c.rec, op, 'connect containers to it with docker run --network');
    const hostNet = nets.find((c) => lookup.driverOf(c.rec)?.capabilities().usesHostNetns);
    if (nets.length > 1 && nets.some((c) => lookup.driverOf(c.rec)?.capabilities().noInterface))
      throw invalidNone(op, name);
    if (hostNet && nets.length > 1) throw invalidHostMix(op, name, true);
    return this.d.locks.lock([LOCK.sbName(name), LOCK.sb(id)], async () => {
      if (lookup.namesInUse().has(name)) {
        throw new CnmdError('ALREADY_EXISTS', `sandbox name "${name}" is already in use`, {
          op,
          object: name,
        });
      }
      const dns: DnsConfig = {
        servers: req.dns?.servers ?? [],
        search: req.dns?.search ?? [],
        options: req.dns?.options ?? [],
      };
      const sb: SandboxRecord = {
        id,
        name,
        hostname,
        key: this.d.netns.pathOf(id),
        created: new Date().toISOString(),
        endpoints: [],
        dns,
        hostNetns: !!hostNet,
        labels: req.labels ?? {},
        ports: req.ports ?? [],
        state: 'creating',
      };
      lookup.namesInUse().set(name, id);
      const eps: PendingEndpoint[] = [];
      try {
        await runSteps(
          [this.endpointsStep(sb, nets, eps), this.netnsStep(sb), this.wiringStep(sb, eps)],
          (step, e) => log.error({ err: e, sandbox: id, step }, 'rollback step failed'),
        );
      } catch (e) {
        store.delete(KIND.sandbox, id);
        lookup.namesInUse().delete(name);
        throw e;
      } finally {
        for (const p of eps) lookup.joining.delete(p.ep.id);
        this.d.live.get(id)?.dropPooled();
        // This sandbox's kernel work is over: the pool may make up for what it took.
        afterReply(() => this.d.pool?.done(id));
      }
      this.commitReady(sb, eps);
      afterReply(() => {
        this.d.view.serve(id);
        for (const p of eps) this.d.endpoints.logJoined(p, sb);
        log.info({ sandbox: id, name, networks: nets.map((n) => n.rec.name) }, 'sandbox created');
      });
      return sb;
    });
  }

  /**
   * The sandbox's endpoints, with their addresses, and the 'creating' records
   * that let a restart undo them: one commit, before any kernel work.
   */
  private endpointsStep(
    sb: SandboxRecord,
    nets: ({ rec: NetworkRecord } & ConnectOptions)[],
    eps: PendingEndpoint[],
  ): Step {
    const { store, endpoints } = this.d;
    return {
      name: 'endpoints',
      do: async () => {
        // Every check first: nothing is allocated for a request that names a bad network.
        for (const c of nets) eps.push(endpoints.newEndpoint(c.rec.id, sb, c));
        let allocating: Promise<void>[] = [];
        let failed: unknown;
        try {
          // The default IPAM allocates synchronously: its writes join this commit too.
          store.tx(() => {
            allocating = eps.map((p) => endpoints.allocate(p));
            store.put(KIND.sandbox, sb.id, sb);
            for (const p of eps) store.put(KIND.endpoint, p.ep.id, p.ep);
          });
        } catch (e) {
          failed = e;
        }
        // Nothing left running behind an error: the undo releases what was allocated.
        await settleAll(allocating);
        if (failed) throw failed;
      },
      undo: async () => {
        for (const p of [...eps].reverse()) if (p.stage === 'prepared') await endpoints.release(p, sb);
      },
    };
  }

  private netnsStep(sb: SandboxRecord): Step {
    const { netns, pool, live } = this.d;
    return {
      name: 'netns',
      do: async () => {
        if (sb.hostNetns) {
          sb.key = await this.hostNetnsKey();
          return;
        }
        const created = pool ? await pool.take(sb.id) : await netns.create(sb.id);
        live.of(sb).adopt(created);
      },
      undo: async () => {
        if (sb.hostNetns) return;
        live.close(sb.id);
        // A failed create may not have made it: gone is fine.
        const errs = new TeardownErrors('sandbox create rollback', sb.name);
        await errs.step('delete netns', () => netns.delete(sb.id));
        errs.throwIfFailed();
      },
    };
  }

  /**
   * The endpoints' interfaces, and meanwhile the embedded DNS and the files:
   * the kernel makes a veth on the netlink I/O thread while this thread would
   * otherwise sit idle waiting for it.
   */
  private wiringStep(sb: SandboxRecord, eps: PendingEndpoint[]): Step {
    return {
      name: 'networks',
      do: () => settleAll([this.d.endpoints.wireAll(sb, eps), this.startServices(sb)]),
      undo: async () => {
        this.d.view.stop(sb.id);
        this.d.files.remove(sb.id);
        const errs = new TeardownErrors('sandbox create rollback', sb.name);
        for (const p of [...eps].reverse())
          if (p.stage === 'wired') await this.d.endpoints.disconnectEndpoint(p.ep.id, sb, errs);
        errs.throwIfFailed();
      },
    };
  }

  /**
   * DNS and files need only the records (addresses are allocated), not the
   * interfaces. They wait for the event loop once: the wiring sends its
   * netlink requests first, then both are done while the kernel works on them
   * (docs/design-notes.md: the resolver served after the answer).
   */
  private async startServices(sb: SandboxRecord): Promise<void> {
    await yieldToEventLoop();
    // Written once: hosts already holds the sandbox's addresses.
    this.d.files.create(sb.id, this.d.view.filesOf(sb));
    await this.d.view.ensureDns(sb, true);
  }

  /** Endpoints and sandbox become ready in one commit. */
  private commitReady(sb: SandboxRecord, eps: PendingEndpoint[]): void {
    const { store } = this.d;
    sb.state = 'ready';
    for (const p of eps) p.ep.state = 'ready';
    this.d.view.changed();
    store.tx(() => {
      for (const p of eps) store.put(KIND.endpoint, p.ep.id, p.ep);
      store.put(KIND.sandbox, sb.id, sb);
    });
  }

  /** A stable path for the daemon's own netns: <exec-root>/netns/default. */
  async hostNetnsKey(): Promise<string> {
    if (this.hostNetnsPinned) return this.hostNetnsPinned;
    const { netns } = this.d;
    const p = netns.pathOf('default');
    if (!netns.exists('default')) await netns.pin('default');
    this.hostNetnsPinned = p;
    return p;
  }

  async delete(ref: string): Promise<void> {
    const { store, lookup, log } = this.d;
    const sb0 = lookup.sandbox(ref);
    const netIds = sb0.endpoints
      .map((e) => store.get<EndpointRecord>(KIND.endpoint, e)?.networkId)
      .filter((x): x is string => !!x);
    await this.d.locks.lock([LOCK.sb(sb0.id), LOCK.sbName(sb0.name), ...netIds.map(LOCK.net)], async () => {
      const sb = store.get<SandboxRecord>(KIND.sandbox, sb0.id);
      if (!sb) throw new CnmdError('NOT_FOUND', `No such sandbox: ${ref}`, { op: 'sandbox rm', object: ref });
      sb.state = 'deleting';
      store.put(KIND.sandbox, sb.id, sb);
      await this.finishDelete(sb);
      log.info({ sandbox: sb.id, name: sb.name }, 'sandbox removed');
    });
  }

  /**
   * Tears a sandbox down: every step runs whatever failed before it, the
   * records go, and the failures are reported together (logged as they happen).
   */
  async finishDelete(sb: SandboxRecord): Promise<void> {
    const { store, lookup } = this.d;
    const errs = new TeardownErrors('sandbox rm', sb.name, this.d.log);
    this.d.live.close(sb.id);
    if (!sb.hostNetns) {
      await this.d.endpoints.leases.releaseAll(sb);
      // The namespace goes first: its interfaces die with it, in the kernel's own
      // batched cleanup, instead of one RCU-synchronised delete per veth.
      // On the thread pool: the unmount waits for an RCU grace period, which other calls need not.
      await errs.step('remove netns', () => this.d.netns.remove(sb.id));
    }
    for (const epId of [...sb.endpoints].reverse())
      await this.d.endpoints.disconnectEndpoint(epId, sb, errs, !sb.hostNetns);
    await errs.step('remove files', () => this.d.files.remove(sb.id));
    store.delete(KIND.sandbox, sb.id);
    if (lookup.namesInUse().get(sb.name) === sb.id) lookup.namesInUse().delete(sb.name);
    errs.throwIfFailed();
  }
}
