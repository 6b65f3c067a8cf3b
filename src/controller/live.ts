// A sandbox's runtime state (what its record does not hold and a restart
// rebuilds): one LiveSandbox per sandbox, owned by LiveSandboxes, released by
// one close(). Guarded by the sandbox's `sb:` lock, as its record is.
import type { DnsNetwork } from '../dns/records';
import type { EmbeddedDns } from '../dns/service';
import { Handle } from '../netlink/handle';
import { type CreatedNetns, closeFds } from '../netns/netns';

/** The default gateway cnmd last installed per family (undefined: none). */
export type Gateways = { 4?: string; 6?: string };

export class LiveSandbox {
  private netlink?: Handle;
  /** Resolver sockets a pooled netns came with (bound, listening), until the resolver adopts them. */
  private pooledSockets: number[] = [];
  /** An ifindex free in a new netns, for its first interface (SandboxRef.freeIndex); used once. */
  private freeIndex?: number;
  /** The default routes as cnmd last set them; undefined: unknown (after a restart), read from the kernel. */
  gateways?: Gateways;
  /** The embedded DNS's view of this sandbox, valid while its generation is current (DnsView). */
  view?: { generation: number; networks: DnsNetwork[] };

  constructor(
    readonly id: string,
    private readonly key: string,
    private readonly dns: EmbeddedDns,
  ) {}

  /** Takes what a new netns came with: its handle, pooled sockets and free ifindex; no default route yet. */
  adopt(created: CreatedNetns): void {
    this.netlink?.close();
    this.netlink = created.handle;
    closeFds(this.pooledSockets);
    this.pooledSockets = created.sockets;
    this.freeIndex = created.freeIndex;
    this.gateways = {};
  }

  /** A netlink handle inside the sandbox's netns, opened again if closed. */
  handle(): Handle {
    if (!this.netlink || this.netlink.closed) this.netlink = Handle.at(this.key);
    return this.netlink;
  }

  takeFreeIndex(): number | undefined {
    const i = this.freeIndex;
    this.freeIndex = undefined;
    return i;
  }

  /** The pooled resolver sockets, now owned by the caller. */
  takePooledSockets(): number[] {
    return this.pooledSockets.splice(0);
  }

  /** Closes pooled sockets no resolver took and forgets the free ifindex (the sandbox's creation is over). */
  dropPooled(): void {
    closeFds(this.takePooledSockets());
    this.freeIndex = undefined;
  }

  /** Releases everything: the resolver, the netlink handle, unadopted sockets. The kernel objects stay. */
  close(): void {
    this.dns.stop(this.id);
    this.netlink?.close();
    this.netlink = undefined;
    this.dropPooled();
    this.gateways = undefined;
    this.view = undefined;
  }
}

/** Every sandbox's LiveSandbox, by sandbox id: the one owner of sandbox runtime state. */
export class LiveSandboxes {
  private readonly byId = new Map<string, LiveSandbox>();

  constructor(private readonly dns: EmbeddedDns) {}

  get(id: string): LiveSandbox | undefined {
    return this.byId.get(id);
  }

  /** The sandbox's runtime state, made empty if it has none yet (after a restart). */
  of(sb: { id: string; key: string }): LiveSandbox {
    let l = this.byId.get(sb.id);
    if (!l) {
      l = new LiveSandbox(sb.id, sb.key, this.dns);
      this.byId.set(sb.id, l);
    }
    return l;
  }

  /** Closes and forgets a sandbox's runtime state. */
  close(id: string): void {
    this.byId.get(id)?.close();
    this.byId.delete(id);
  }

  closeAll(): void {
    for (const id of [...this.byId.keys()]) this.close(id);
  }
}
