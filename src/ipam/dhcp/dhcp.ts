// The `dhcp` IPAM (--ipam-driver dhcp): each endpoint's address, gateway and
// DNS servers from the LAN's DHCP server, asked from the endpoint's own
// interface (client.ts), and kept: renewed at T1, rebound at T2, never
// dropped without a word (a lease the server stops renewing stays on the
// interface, logged as an error once expired, while requests continue).
import { CnmdError, invalidArgument } from '../../errors';
import type { Logger } from '../../log';
import type { Ipam, KeepOptions, LeaseLink, LinkIpam, LinkLease } from '../ipam';
import { NoLease, acquire, decline, release, renew } from './client';

export const DHCP_IPAM = 'dhcp';
/** --ipam-opt: seconds an attach waits for the server (default 10, as CNI's dhcp daemon). */
export const DHCP_TIMEOUT_OPT = 'cnmd.dhcp.timeout';
const DEFAULT_TIMEOUT_S = 10;

/** Retries of an unanswered renewal: half the time left to the next deadline, within these bounds. */
const MIN_RETRY_MS = 2000;
const MAX_RETRY_MS = 60_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Kept {
  link: LeaseLink;
  lease: LinkLease;
  timeoutMs: number;
  onChange: (lease: LinkLease) => Promise<void>;
  /** The address is someone else's to configure (the engine's): a NAK is reported, never answered with a new one. */
  fixedAddress: boolean;
  timer?: NodeJS.Timeout;
  /** After an unanswered renewal: when to try again. */
  retryAt?: number;
  stopped: boolean;
}

function timeoutOf(op: string, options: Record<string, string>): number {
  const text = options[DHCP_TIMEOUT_OPT];
  if (text === undefined || text === '') return DEFAULT_TIMEOUT_S * 1000;
  const s = Number(text);
  if (!/^\d+$/.test(text) || s < 1 || s > 300)
    throw invalidArgument(
      op,
      DHCP_TIMEOUT_OPT,
      `ipam option ${DHCP_TIMEOUT_OPT}: "${text}" is not a number of seconds from 1 to 300`,
    );
  return s * 1000;
}

const plain = (cidr: string) => cidr.split('/')[0];

export class DhcpIpam implements Ipam, LinkIpam {
  readonly name = DHCP_IPAM;
  readonly leases: LinkIpam = this;
  private readonly log: Logger;
  private readonly kept = new Map<string, Kept>();

  constructor(log: Logger) {
    this.log = log;
  }

  // The pool and address methods of the Ipam seam: a link-bound IPAM has no pools (the controller never asks).
  private noPools(op: string): never {
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `${op}: the dhcp IPAM has no pools: addresses come from the LAN's DHCP server`,
      {
        op,
        object: DHCP_IPAM,
      },
    );
  }
  async defaultAddressSpaces() {
    return { local: 'LocalDefault', global: 'GlobalDefault' };
  }
  async requestPool(): Promise<never> {
    this.noPools('ipam request pool');
  }
  async releasePool(): Promise<never> {
    this.noPools('ipam release pool');
  }
  async requestAddress(): Promise<never> {
    this.noPools('ipam request address');
  }
  async releaseAddress(): Promise<never> {
    this.noPools('ipam release address');
  }

  checkOptions(op: string, options: Record<string, string>): void {
    for (const k of Object.keys(options))
      if (k !== DHCP_TIMEOUT_OPT)
        throw invalidArgument(op, k, `ipam option ${k} is not a dhcp option (it takes ${DHCP_TIMEOUT_OPT})`);
    timeoutOf(op, options);
  }

  async acquire(link: LeaseLink, options: Record<string, string>, op = 'endpoint join'): Promise<LinkLease> {
    const timeoutMs = timeoutOf(op, options);
    try {
      const lease = await acquire(link, timeoutMs);
      this.log.info(
        {
          endpoint: link.endpointId,
          address: lease.address,
          server: lease.server,
          lease: lease.leaseSeconds,
        },
        'dhcp lease acquired',
      );
      return lease;
    } catch (e) {
      if (!(e instanceof NoLease)) throw e;
      throw new CnmdError(
        'UNAVAILABLE',
        `${op}: dhcp on parent ${link.parent}: ${e.message}; check the LAN's DHCP server (or give the network --subnet with the default IPAM)`,
        { op, object: link.parent, cause: e },
      );
    }
  }

  keep(
    link: LeaseLink,
    lease: LinkLease,
    options: Record<string, string>,
    onChange: (lease: LinkLease) => Promise<void>,
    { now = false, fixedAddress = false }: KeepOptions = {},
  ): void {
    this.forget(link.endpointId);
    const k: Kept = {
      link,
      lease,
      timeoutMs: timeoutOf('dhcp renew', options),
      onChange,
      fixedAddress,
      stopped: false,
    };
    if (now) k.retryAt = Date.now();
    this.kept.set(link.endpointId, k);
    this.schedule(k);
  }

  private schedule(k: Kept): void {
    if (k.stopped) return;
    const at = k.retryAt ?? k.lease.boundAt + k.lease.t1 * 1000;
    // Unref'd: a daemon stopping does not wait for a renewal (the lease stays for its next start).
    // A long lease (0xffffffff is "infinite") waits in steps: setTimeout fires at once past 2^31-1 ms.
    const wait = Math.max(0, at - Date.now());
    if (wait > MAX_TIMER_MS) {
      k.timer = setTimeout(() => this.schedule(k), MAX_TIMER_MS).unref();
      return;
    }
    k.timer = setTimeout(() => void this.renewal(k), wait).unref();
  }

  private async renewal(k: Kept): Promise<void> {
    const { link, lease } = k;
    const now = Date.now();
    const t2At = lease.boundAt + lease.t2 * 1000;
    const expiresAt = lease.boundAt + lease.leaseSeconds * 1000;
    const ctx = {
      endpoint: link.endpointId,
      parent: link.parent,
      address: lease.address,
      server: lease.server,
    };
    try {
      let next: LinkLease;
      try {
        next = await renew(link, lease, now >= t2At, k.timeoutMs);
      } catch (e) {
        if (!(e instanceof NoLease && e.why === 'nak')) throw e;
        if (k.fixedAddress) {
          // The container keeps its address (the engine configured it); a new one would be the engine's to ask.
          this.log.error(
            { ...ctx, reason: e.message },
            `dhcp renewal refused: ${plain(lease.address)} stays on the container; disconnect and connect it again for a new address`,
          );
          throw e;
        }
        this.log.error(
          { ...ctx, reason: e.message },
          'dhcp renewal refused: asking the LAN for a new address',
        );
        next = await acquire(link, k.timeoutMs);
      }
      if (k.stopped) return;
      if (k.fixedAddress && plain(next.address) !== plain(lease.address)) {
        // Not this endpoint's lease: the one it has is what is renewed (asked again until the server takes it).
        this.log.error(
          { ...ctx, offered: next.address },
          `dhcp renewal answered with another address: ${plain(lease.address)} stays on the container and is asked for again`,
        );
        throw new NoLease('nak', `the DHCP server answered with ${next.address}`);
      }
      k.lease = next;
      k.retryAt = undefined;
      await k.onChange(next);
      this.log.debug({ ...ctx, address: next.address, lease: next.leaseSeconds }, 'dhcp lease renewed');
    } catch (e) {
      if (k.stopped) return;
      if (!(e instanceof NoLease)) {
        if (e instanceof CnmdError && e.code === 'NOT_FOUND') {
          // The interface or its netns is gone: nothing can speak for this lease any more.
          this.log.warn(
            { ...ctx, err: e },
            'dhcp renewal: the endpoint interface is gone; lease no longer kept',
          );
          this.forget(link.endpointId);
          return;
        }
        this.log.warn({ ...ctx, err: e }, 'dhcp renewal failed; retrying');
      } else if (e.why === 'nak') {
        // Said above; asked again until the server takes it back or the endpoint goes.
      } else if (now >= expiresAt)
        this.log.error(
          { ...ctx, expiredSecondsAgo: Math.round((now - expiresAt) / 1000) },
          `dhcp lease expired: no DHCP server answered on parent ${link.parent}; ${plain(lease.address)} stays on the interface and requests continue`,
        );
      else
        this.log.warn(
          { ...ctx, expiresInSeconds: Math.round((expiresAt - now) / 1000) },
          `dhcp renewal: no DHCP server answered on parent ${link.parent}; retrying before the lease expires`,
        );
      const deadline = now < t2At ? t2At : now < expiresAt ? expiresAt : now + lease.leaseSeconds * 250;
      k.retryAt = now + Math.min(MAX_RETRY_MS, Math.max(MIN_RETRY_MS, (deadline - now) / 2));
    }
    this.schedule(k);
  }

  async release(link: LeaseLink, lease: LinkLease): Promise<void> {
    this.forget(link.endpointId);
    await release(link, lease);
    this.log.info(
      { endpoint: link.endpointId, address: lease.address, server: lease.server },
      'dhcp lease released',
    );
  }

  async decline(link: LeaseLink, lease: LinkLease): Promise<void> {
    this.forget(link.endpointId);
    await decline(link, lease);
    this.log.warn(
      { endpoint: link.endpointId, address: lease.address, server: lease.server },
      'dhcp offer declined: the address is in use by another endpoint',
    );
  }

  forget(endpointId: string): void {
    const k = this.kept.get(endpointId);
    if (!k) return;
    k.stopped = true;
    clearTimeout(k.timer);
    this.kept.delete(endpointId);
  }

  close(): void {
    for (const id of [...this.kept.keys()]) this.forget(id);
  }
}
