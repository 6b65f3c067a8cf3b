// The per-host gateway bridge (Docker's docker_gwbridge, here cnmd_gwbridge):
// an overlay sandbox's way out of the host and in through published ports. An
// overlay network's own bridge lives in a netns of its own with no route out,
// so a sandbox on one or more non-internal overlay networks gets a second
// interface here, carries its default route, and is masqueraded out.
import { CnmdError, type WarnSink, bestEffort } from '../../src/errors';
import { bigToIp, Cidr, formatCidr, overlaps, parseCidr, stripPrefix } from '../../src/net/addr';
import { predefinedSubnets } from '../../src/ipam/pools';
import type { Handle } from '../../src/netlink/handle';
import type { BridgeFirewall, BridgeNetworkSpec } from '../bridge/firewall';
import { randomMac } from '../../src/net/addr';
import type { SandboxRef } from '../driver';

export const GWBRIDGE = 'cnmd_gwbridge';
const GW_ALIAS = 'cnmd:ovgwbridge';
/** The sandbox's interface on the gateway bridge (eth* names are the controller's, in join order). */
export const GW_IFNAME = 'gwbridge';
const gwPortAlias = (sandboxId: string, cidr: string) => `cnmd:ovgw:${sandboxId}:${cidr}`;
const GW_PORT = /^cnmd:ovgw:([0-9a-zA-Z_.-]+):([0-9a-f.:]+\/\d+)$/;

export const gwVethName = (sandboxId: string) => `gw${sandboxId.slice(0, 13)}`;

interface Attached {
  sandboxId: string;
  cidr: string;
  /** Overlay endpoints of the sandbox that use it. */
  users: Set<string>;
  /** Settles once the interface is made (a second join of the sandbox waits for the first's). */
  made: Promise<void>;
}

export class GatewayBridge {
  private readonly host: Handle;
  private readonly fw: BridgeFirewall;
  private readonly wanted?: string;
  private subnet?: Cidr;
  private index = 0;
  private readonly bySandbox = new Map<string, Attached>();
  private readonly used = new Set<string>();
  private ready?: Promise<void>;

  private readonly log?: WarnSink;

  constructor(deps: { host: Handle; firewall: BridgeFirewall; subnet?: string; log?: WarnSink }) {
    this.log = deps.log;
    this.host = deps.host;
    this.fw = deps.firewall;
    this.wanted = deps.subnet;
  }

  get gateway(): string | undefined {
    return this.subnet && bigToIp(this.subnet.base + 1n, 4);
  }

  private rules(): BridgeNetworkSpec {
    // Docker's docker_gwbridge: no traffic between sandboxes through it (icc off), masqueraded out.
    return {
      bridge: GWBRIDGE,
      subnets: { v4: formatCidr(this.subnet!) },
      icc: false,
      masquerade: true,
      internal: false,
    };
  }

  /** Makes (or finds, after a restart) the bridge, its gateway address and its rules. */
  ensure(): Promise<void> {
    this.ready ??= this.setup().catch((e) => {
      this.ready = undefined;
      throw e;
    });
    return this.ready;
  }

  private async setup(): Promise<void> {
    const existing = await this.host.linkGet(GWBRIDGE).catch((e) => {
      if (e instanceof CnmdError && e.code === 'NOT_FOUND') return undefined;
      throw e;
    });
    if (existing && existing.alias !== GW_ALIAS)
      throw new CnmdError('CONFLICT', `overlay gateway bridge: device ${GWBRIDGE} exists and is not cnmd's`, {
        op: 'network create',
        object: GWBRIDGE,
      });
    let made = false;
    if (existing) {
      this.index = existing.index;
      const addr = (await this.host.addrList({ link: existing.index, family: 4 }))[0];
      if (addr) this.subnet = parseCidr(addr.cidr)!;
    }
    if (!this.subnet) this.subnet = await this.pickSubnet();
    const gw = `${bigToIp(this.subnet.base + 1n, 4)}/${this.subnet.prefixLen}`;
    await this.fw.setupBase();
    try {
      if (!existing) {
        const link = await this.host.linkAdd({
          kind: 'bridge',
          name: GWBRIDGE,
          mac: randomMac(),
          alias: GW_ALIAS,
          // icc=false is enforced by iptables, which bridged frames only traverse with nf_call_iptables.
          nfCallIptables: true,
        });
        made = true;
        this.index = link!.index;
      }
      const have = await this.host.addrList({ link: this.index, family: 4 });
      if (!have.some((a) => a.cidr === gw)) await this.host.addrAdd(this.index, gw);
      await this.fw.addNetwork(this.rules());
      await this.host.linkSet(this.index, { up: true });
    } catch (e) {
      // The setup's error is the answer; a failed removal of what it made is logged.
      if (made)
        await bestEffort(this.log, 'gateway bridge rollback', GWBRIDGE, () => this.host.linkDel(GWBRIDGE));
      throw e;
    }
    this.used.add(stripPrefix(gw));
  }

  /** The configured subnet, or the first local predefined /16 that no route of the host overlaps. */
  private async pickSubnet(): Promise<Cidr> {
    if (this.wanted) {
      const c = parseCidr(this.wanted, true);
      if (!c || c.family !== 4 || c.prefixLen > 29)
        throw new CnmdError(
          'INVALID_ARGUMENT',
          `overlay gateway bridge: subnet "${this.wanted}" is not an IPv4 CIDR of /29 or larger`,
          {
            op: 'network create',
            object: this.wanted,
          },
        );
      return c;
    }
    const routes = (await this.host.routeList({ family: 4, table: 0 }))
      .map((r) => (r.dst === 'default' ? undefined : parseCidr(r.dst)))
      .filter((c): c is Cidr => !!c && c.prefixLen > 0);
    for (const c of predefinedSubnets('local', false)) if (!routes.some((r) => overlaps(r, c))) return c;
    throw new CnmdError(
      'EXHAUSTED',
      'overlay gateway bridge: every predefined subnet overlaps a route of this host',
      {
        op: 'network create',
        object: GWBRIDGE,
      },
    );
  }

  private allocate(): string {
    const c = this.subnet!;
    for (let v = c.base + 2n; v < c.base + c.size - 1n; v++) {
      const ip = bigToIp(v, 4);
      if (!this.used.has(ip)) {
        this.used.add(ip);
        return `${ip}/${c.prefixLen}`;
      }
    }
    throw new CnmdError('EXHAUSTED', `overlay gateway bridge: no free address in ${formatCidr(c)}`, {
      op: 'endpoint join',
      object: GWBRIDGE,
    });
  }

  /** The sandbox's address on the bridge, when it has one (published ports go there). */
  addressOf(sandboxId: string): string | undefined {
    return this.bySandbox.get(sandboxId)?.cidr;
  }

  sandboxOf(endpointId: string): string | undefined {
    for (const a of this.bySandbox.values()) if (a.users.has(endpointId)) return a.sandboxId;
    return undefined;
  }

  /** Gives the sandbox its interface on the bridge (once per sandbox); resolves with the gateway to route through. */
  async attach(endpointId: string, sb: SandboxRef & { handle: Handle }, mtu?: number): Promise<string> {
    await this.ensure();
    const had = this.bySandbox.get(sb.id);
    if (had) {
      had.users.add(endpointId);
      try {
        await had.made;
      } catch (e) {
        had.users.delete(endpointId);
        throw e;
      }
      return this.gateway!;
    }
    const cidr = this.allocate();
    const made = this.make(sb, cidr, mtu);
    // Recorded before any await: a concurrent join of the same sandbox shares this interface.
    const a: Attached = { sandboxId: sb.id, cidr, users: new Set([endpointId]), made };
    this.bySandbox.set(sb.id, a);
    try {
      await made;
    } catch (e) {
      if (this.bySandbox.get(sb.id) === a) this.bySandbox.delete(sb.id);
      this.used.delete(stripPrefix(cidr));
      throw e;
    }
    return this.gateway!;
  }

  private async make(sb: SandboxRef & { handle: Handle }, cidr: string, mtu?: number): Promise<void> {
    const veth = gwVethName(sb.id);
    try {
      await this.host.linkAdd({
        kind: 'veth',
        name: veth,
        master: this.index,
        alias: gwPortAlias(sb.id, cidr),
        queues: 1,
        mtu,
        peer: { name: GW_IFNAME, netns: sb.handle, queues: 1, mtu },
        echo: false,
      });
      // Sent back to back on each socket (the kernel takes them in order): no link-local before up.
      await Promise.all([
        this.host.linkSet(veth, { addrGenMode: 'none' }),
        this.host.linkSet(veth, { up: true }),
        sb.handle.linkSet(GW_IFNAME, { up: true }),
        sb.handle.addrAdd(GW_IFNAME, cidr),
      ]);
    } catch (e) {
      await bestEffort(this.log, 'gateway attach rollback', veth, () => this.host.linkDel(veth));
      throw e;
    }
  }

  /** The endpoint no longer uses the bridge; the sandbox's interface goes with its last user. */
  async detach(endpointId: string, opts: { onOwnSocket?: boolean } = {}): Promise<void> {
    const sandboxId = this.sandboxOf(endpointId);
    if (sandboxId === undefined) return;
    const a = this.bySandbox.get(sandboxId)!;
    a.users.delete(endpointId);
    if (a.users.size > 0) return;
    this.bySandbox.delete(sandboxId);
    await this.host.linkDel(gwVethName(sandboxId), opts).catch((e) => {
      if (!(e instanceof CnmdError && e.code === 'NOT_FOUND')) throw e;
    });
    this.used.delete(stripPrefix(a.cidr));
  }

  /**
   * After a restart: the bridge's ports say which sandbox holds which address
   * (their alias); `users` maps sandboxes to their live overlay endpoints. A
   * port of a sandbox with none is removed.
   */
  async restore(users: Map<string, string[]>): Promise<string[]> {
    const ports = (await this.host.linkList()).filter((l) => GW_PORT.test(l.alias ?? ''));
    if (ports.length === 0 && users.size === 0) return [];
    await this.ensure();
    const removed: string[] = [];
    for (const l of ports) {
      const [, sandboxId, cidr] = GW_PORT.exec(l.alias!)!;
      const eps = users.get(sandboxId);
      if (!eps?.length) {
        await this.host.linkDel(l.index).catch((e) => {
          if (!(e instanceof CnmdError && e.code === 'NOT_FOUND')) throw e;
        });
        removed.push(l.name);
        continue;
      }
      if (l.masterIndex !== this.index) await this.host.linkSet(l.index, { master: this.index, up: true });
      this.used.add(stripPrefix(cidr));
      this.bySandbox.set(sandboxId, { sandboxId, cidr, users: new Set(eps), made: Promise.resolve() });
    }
    return removed;
  }

  /** The bridge's subnet, once made. */
  subnetText(): string | undefined {
    return this.subnet && formatCidr(this.subnet);
  }
}
