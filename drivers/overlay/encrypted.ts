// Encrypted overlay networks on one host (issue 17): what the driver adds to
// a network with `-o encrypted`, host-wide because ESP is between hosts:
// - before the network's vxlan device exists: the XFRM guard (marked VXLAN
//   from this VTEP to anywhere is blocked) and the firewall's rules for its
//   VNI (cleartext VXLAN for it dropped on receive; its outgoing VXLAN marked);
// - SAs and policies for every peer VTEP of every encrypted network, per key
//   of the ring (encryption.ts), reconciled like the FDB: on every setPeers,
//   on a new ring, and on the cluster's reconcile tick;
// - removal in reverse: the VNI's rules, and with the last encrypted network
//   every SA and policy with cnmd's reqid/mark, the guard last.
// Without a ring (a restart before the cluster store answered) the kernel's
// SAs are left as they are (traffic keeps flowing) and the guard is ensured.
import { CnmdError } from '../../src/errors';
import type { Handle } from '../../src/netlink/handle';
import type { Logger } from '../../src/log';
import type { ClusterSecret } from '../../src/cluster/keys';
import type { FirewallBackend } from '../../src/firewall/firewall';
import {
  ENCRYPTED_CHAIN,
  encryptedVniRules,
  parseEncryptedVniRule,
  removeEncryptedVniRules,
} from '../../src/firewall/encrypted-vni';
import { FAMILIES, mergeBatches, type Family } from '../../src/firewall/firewall';
import type { Step } from '../../src/steps';
import {
  applyXfrm,
  desiredXfrm,
  ENC_MARK,
  ENC_REQID,
  guardPolicy,
  GUARD_PRIORITY,
  RingKeys,
  XfrmChanges,
} from './encryption';
import type { EncryptionProbe } from './kernel-probe';

export interface OverlayEncryptionConfig {
  host: Handle;
  /** The host netns's firewall: the VNI's drop and mark rules. */
  firewall?: FirewallBackend;
  secret?: ClusterSecret;
  probe: EncryptionProbe;
  port: number;
  log: Logger;
  /**
   * A send SA was made again with its sequence restarted (it vanished here,
   * or the peer kept its receive SA while this host dropped it): the
   * receiver's anti-replay window drops it until a rotation gives new SPIs.
   * Called with the peers when this host made one again, or when a receive SA
   * here counts replays; the ring agent asks the leader for a rotation now.
   */
  onSendStateLost?: (peers: string[]) => void;
}

/** What inspect shows of one peer host of an encrypted network. */
export interface PeerEncryption {
  IP: string;
  /** encrypted: its SAs and policy are in place; blocked: not yet (its VXLAN is dropped by the guard, never sent in clear). */
  State: 'encrypted' | 'blocked';
  RxKeyTags: number[];
  TxKeyTag?: number;
}

export interface NetworkEncryption {
  KeyTags: number[];
  PrimaryKeyTag?: number;
  Error?: string;
  Peers: PeerEncryption[];
}

const notFound = (e: unknown): undefined => {
  if (e instanceof CnmdError && e.code === 'NOT_FOUND') return undefined;
  throw e;
};

export class OverlayEncryption {
  private readonly c: OverlayEncryptionConfig;
  private ring?: RingKeys;
  private ringError?: CnmdError;
  /** What the last successful reconcile installed, per peer VTEP. */
  private installed = new Map<string, { rx: number[]; tx: number }>();
  private lastError?: string;
  /** Replay drops per receive SA at the last reconcile. */
  private replays = new Map<string, number>();
  private queue: Promise<unknown> = Promise.resolve();
  /** A reconcile queued and not started yet: later callers share it (it will read the newest state). */
  private pending?: Promise<XfrmChanges | undefined>;

  constructor(c: OverlayEncryptionConfig) {
    this.c = c;
  }

  /** Whether this host can make an encrypted network now; else the error that says what to fix. */
  async check(op: string, object: string, vtep: string): Promise<void> {
    if (!this.c.secret)
      throw new CnmdError(
        'FORBIDDEN',
        `${op} ${object}: encrypted overlay networks need the cluster secret; start cnmd with --cluster-secret-file (the same file on every host)`,
        { op, object },
      );
    if (this.ringError)
      throw new CnmdError('FORBIDDEN', `${op} ${object}: ${this.ringError.message}`, {
        op,
        object,
        cause: this.ringError,
      });
    if (!this.ring)
      throw new CnmdError(
        'UNAVAILABLE',
        `${op} ${object}: the encryption key ring has not been read from the cluster store yet; try again`,
        { op, object },
      );
    if (!this.c.firewall)
      throw new CnmdError('FORBIDDEN', `${op} ${object}: encrypted overlay networks need the firewall`, {
        op,
        object,
      });
    await this.c.probe.check(op, object, familyOf(vtep) === 'ipv6');
  }

  /** The ring the cluster says (undefined + error: this host cannot open it). */
  setRing(ring: RingKeys | undefined, error?: CnmdError): void {
    this.ring = ring;
    this.ringError = error;
  }

  ringTags(): { tags: number[]; primary?: number } {
    return { tags: [...(this.ring?.keys.keys() ?? [])].sort((a, b) => a - b), primary: this.ring?.primary };
  }

  /** The first step of an encrypted network's setup: guard and firewall rules before its vxlan device. */
  guardStep(vni: number, vtep: string, others: () => number): Step {
    return {
      name: 'setup encryption guard',
      do: async () => {
        await this.ensureGuard(vtep);
        await this.c.firewall!.apply(
          encryptedVniRules({ vni, port: this.c.port, mark: ENC_MARK.value, family: familyOf(vtep) }),
        );
      },
      undo: () => this.removeRules(vni, others() === 0, vtep),
    };
  }

  async ensureGuard(vtep: string): Promise<void> {
    const g = guardPolicy(vtep, this.c.port);
    await this.c.host.xfrmPolicyUpdate(g);
  }

  /** The VNI's rules in the family of the VTEP they were made for (with `last`, the chains too). */
  async removeRules(vni: number, last: boolean, vtep: string): Promise<void> {
    await this.c.firewall?.apply(
      removeEncryptedVniRules({ vni, port: this.c.port, mark: ENC_MARK.value, family: familyOf(vtep) }, last),
    );
  }

  /**
   * Makes SAs and policies match `peers` (the peer VTEPs of every encrypted
   * network here; `any`: whether one exists). One at a time; a call while one
   * is queued shares it.
   */
  reconcile(
    vtep: string,
    peers: () => { any: boolean; known: boolean; vteps: string[] },
  ): Promise<XfrmChanges | undefined> {
    if (this.pending) return this.pending;
    const run = this.queue.then(async () => {
      if (this.pending === run) this.pending = undefined;
      const { any, known, vteps } = peers();
      try {
        const r = await this.apply(vtep, any, known, vteps);
        this.lastError = undefined;
        return r;
      } catch (e) {
        this.lastError = (e as Error).message;
        throw e;
      }
    });
    this.pending = run;
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async apply(
    vtep: string,
    any: boolean,
    known: boolean,
    vteps: string[],
  ): Promise<XfrmChanges | undefined> {
    if (!any) {
      // No encrypted network: nothing of cnmd's stays (a ring is not needed for that).
      const r = await applyXfrm(this.c.host, { states: [], policies: [] });
      this.installed.clear();
      return r;
    }
    if (!this.ring || !known) {
      // No ring yet, or a network's peers not heard yet (a restart): what the kernel has stays.
      await this.ensureGuard(vtep);
      return undefined;
    }
    const want = desiredXfrm(vtep, vteps, this.ring, this.c.port, true);
    const r = await applyXfrm(this.c.host, want);
    const primary = this.ring.primary;
    const lost = r.statesAdded
      .map((k) => /^([^>]+)>([^#]+)#/.exec(k)!)
      .filter((m) => m[1] === vtep && this.installed.get(m[2])?.tx === primary)
      .map((m) => m[2]);
    // Receive SAs dropping replays since the last pass: a peer's send SA restarted its sequence.
    const replaying = [...r.replays]
      .filter(([k, n]) => k.split('>')[1].startsWith(`${vtep}#`) && n > (this.replays.get(k) ?? 0))
      .map(([k]) => k.split('>')[0]);
    this.replays = r.replays;
    if (lost.length || replaying.length) {
      this.c.log.warn(
        { peers: lost, replaying },
        'overlay encryption: a send SA restarted its sequence (made again here, or replays counted); asking for a key rotation',
      );
      this.c.onSendStateLost?.([...new Set([...lost, ...replaying])]);
    }
    const tags = this.ringTags().tags;
    this.installed = new Map(
      vteps.filter((v) => v !== vtep).map((v) => [v, { rx: tags, tx: this.ring!.primary }]),
    );
    const changed = r.blocked.length + r.statesAdded.length + r.policiesSet.length + r.policiesRemoved.length;
    if (changed + r.statesRemoved.length > 0) this.c.log.info({ ...r }, 'overlay encryption reconciled');
    return r;
  }

  /** For inspect: the ring's tags and each peer's state (never a key). */
  status(peerVteps: string[]): NetworkEncryption {
    const { tags, primary } = this.ringTags();
    return {
      KeyTags: tags,
      PrimaryKeyTag: primary,
      ...(this.ringError
        ? { Error: this.ringError.message }
        : this.lastError
          ? { Error: this.lastError }
          : {}),
      Peers: [...new Set(peerVteps)].sort().map((ip) => {
        const k = this.installed.get(ip);
        return k
          ? { IP: ip, State: 'encrypted' as const, RxKeyTags: k.rx, TxKeyTag: k.tx }
          : { IP: ip, State: 'blocked' as const, RxKeyTags: [] };
      }),
    };
  }

  /** Rules of VNIs that are no encrypted network here any more (a kill mid-removal), in either family (the VTEP's may have changed). */
  async sweepRules(known: Set<number>): Promise<string[]> {
    const fw = this.c.firewall;
    if (!fw) return [];
    const removed: string[] = [];
    const batches = [];
    for (const family of FAMILIES) {
      for (const table of ['filter', 'mangle'] as const) {
        const rules = await fw.chainRules(table, ENCRYPTED_CHAIN, family).catch(notFound);
        for (const r of rules ?? []) {
          const v = parseEncryptedVniRule(r);
          if (!v || known.has(v.vni)) continue;
          batches.push(removeEncryptedVniRules({ vni: v.vni, port: v.port, mark: ENC_MARK.value, family }));
          removed.push(`${family} ${table} ${ENCRYPTED_CHAIN} ${r}`);
        }
      }
      if (known.size === 0)
        batches.push(
          removeEncryptedVniRules({ vni: 1, port: this.c.port, mark: ENC_MARK.value, family }, true),
        );
    }
    if (batches.length) await fw.apply(mergeBatches(...batches));
    return removed;
  }
}

const familyOf = (ip: string): Family => (ip.includes(':') ? 'ipv6' : 'ipv4');

export { ENC_REQID, GUARD_PRIORITY };
