// The encrypted overlays' key ring in the cluster store (issue 17), one agent
// per daemon that has the cluster secret. Keys under /cnmd/v1/:
//   enc/ring          RingRecord: the ring's tags and phase (key-ring.ts) and each key
//                     sealed under the cluster secret (keys.ts): etcd never holds a key in clear
//   enc/leader        { host }: under the leader's lease; one daemon at a time rotates
//   enc/rotate        { host, at }: a host asks for a rotation now (its send SA was lost)
//   enc/acks/<host>   AckRecord: what the host installed, under its lease (so only live
//                     hosts count), written only if the ring is still the one it installed
// Every agent: reads the ring, opens its keys, has them installed (the driver's
// SAs), then acks. The leader: starts a rotation when it is due, and moves the
// ring one step when every live host's ack allows it (libnetwork's safe order:
// receive on every host first, then send, the oldest dropped last). A daemon
// whose secret does not open the ring never acks and never leads: the others
// neither wait for it nor are disturbed by it.
import * as crypto from 'node:crypto';
import { CnmdError } from '../errors';
import type { Logger } from '../log';
import type { ClusterStore } from './etcd';
import { ClusterSecret, newRingKey, openRingKey, sealRingKey, SealedRingKey } from './keys';
import {
  advance,
  beginRotation,
  HostKeys,
  initialRing,
  RingPhase,
  RingState,
  validRing,
  wanted,
} from './key-ring';

export const ringKey = {
  ring: 'enc/ring',
  leader: 'enc/leader',
  acks: 'enc/acks/',
  ack: (host: string) => `enc/acks/${host}`,
  rotate: 'enc/rotate',
  prefix: 'enc/',
};

export interface RingRecord extends RingState {
  /** One sealed key per tag, in tag order. */
  keys: SealedRingKey[];
  /** The fingerprint of the secret the keys are sealed under (not the secret: an HKDF of it). */
  fingerprint: string;
  /** When the last rotation began (or the ring was made), ms since the epoch. */
  rotated: number;
}

export interface AckRecord extends HostKeys {
  host: string;
  /** The ring's mod revision the host installed. */
  ringRev: string;
  fingerprint: string;
}

/** The opened ring as the driver takes it. */
export interface OpenedRing {
  keys: Map<number, Buffer>;
  primary: number;
  phase: RingPhase;
}

export interface KeyRingAgentOptions {
  store: ClusterStore;
  hostId: string;
  secret: ClusterSecret;
  /** --encryption-key-rotation, in ms. */
  rotationMs: number;
  ttlSeconds: number;
  log: Logger;
  /**
   * Installs the ring, or says why this host cannot; true once the SAs for it
   * are in place (only then is it acked; otherwise the tick tries again).
   */
  install(ring: OpenedRing | undefined, error?: CnmdError): Promise<boolean>;
  now?: () => number;
}

export interface RingStatus {
  Tags: number[];
  PrimaryTag?: number;
  Phase?: RingPhase;
  Leader: boolean;
  Error?: string;
}

export class KeyRingAgent {
  private readonly o: KeyRingAgentOptions;
  private readonly now: () => number;
  private leaseId?: string;
  private dropLease?: () => Promise<void>;
  private cancelWatch?: () => Promise<void>;
  private timer?: NodeJS.Timeout;
  private started = false;
  private closed = false;
  /** One job at a time (load, ack, leader step): they read and write the same keys. */
  private queue: Promise<void> = Promise.resolve();
  private current?: { rec: RingRecord; rev: string };
  private acked?: string;
  private error?: CnmdError;
  private leader = false;

  constructor(o: KeyRingAgentOptions) {
    this.o = o;
    this.now = o.now ?? Date.now;
  }

  /** Joins: a lease, the ring (made if there is none), installed and acked, then the watch and the tick. */
  async start(): Promise<void> {
    if (this.started) return;
    try {
      const lease = await this.o.store.lease(this.o.ttlSeconds, (e) => this.leaseLost(lease.id, e));
      this.leaseId = lease.id;
      this.dropLease = lease.revoke;
      const rev = await this.ensureRing();
      this.cancelWatch = await this.o.store.watch<unknown>(ringKey.prefix, rev, {
        put: (k) => this.changed(k),
        delete: (k) => this.changed(k),
        resumed: () => this.enqueue('reload', () => this.reload()),
      });
      await this.run(() => this.reload());
      const tickMs = Math.min(2000, Math.max(200, Math.floor(this.o.rotationMs / 10)));
      this.timer = setInterval(() => this.tick(), tickMs);
      this.timer.unref();
      this.started = true;
    } catch (e) {
      await this.stopWatch();
      await this.dropLease?.();
      this.leaseId = undefined;
      throw e;
    }
  }

  status(): RingStatus {
    const r = this.current?.rec;
    return {
      Tags: r?.tags ?? [],
      PrimaryTag: r?.primary,
      Phase: r?.phase,
      Leader: this.leader,
      ...(this.error ? { Error: this.error.message } : {}),
    };
  }

  private changed(k: string): void {
    if (k === ringKey.ring) this.enqueue('ring load', () => this.reload());
    else if (this.leader && (k.startsWith(ringKey.acks) || k === ringKey.rotate))
      this.enqueue('ring step', () => this.step());
    else if (k === ringKey.leader) this.enqueue('leader claim', () => this.lead());
  }

  private tick(): void {
    // A failed install or ack is retried here; so is the leader's claim and its step.
    if (!this.current || this.acked !== this.current.rev) this.enqueue('ring load', () => this.reload());
    this.enqueue('leader claim', () => this.lead());
  }

  private run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.queue.then(fn);
    this.queue = r.then(
      () => undefined,
      () => undefined,
    );
    return r;
  }

  private enqueue(what: string, fn: () => Promise<void>): void {
    if (this.closed) return;
    void this.run(fn).catch((e) => this.o.log.warn({ err: e }, `encryption key ring: ${what} failed`));
  }

  /** The ring's revision after making sure one exists (the first daemon with a secret makes it). */
  private async ensureRing(): Promise<string> {
    const op = 'key ring create';
    for (let i = 0; i < 5; i++) {
      const { items, revision, undecodable } = await this.o.store.list<unknown>(op, ringKey.prefix);
      // A ring that is not JSON is still the cluster's (its load says it is unusable): never replaced here.
      if (items.some((x) => x.key === ringKey.ring) || undecodable.includes(ringKey.ring)) return revision;
      // A random first tag: a ring made again (etcd wiped) never reuses the SPIs of the old one.
      const tag = crypto.randomInt(1, 0x7fffffff);
      const r = initialRing(tag);
      const rec: RingRecord = {
        ...r,
        keys: [sealRingKey(this.o.secret, tag, newRingKey())],
        fingerprint: this.o.secret.fingerprint,
        rotated: this.now(),
      };
      if (
        await this.o.store.txn(
          op,
          ringKey.ring,
          [{ key: ringKey.ring }],
          [{ put: { key: ringKey.ring, value: rec } }],
        )
      )
        this.o.log.info({ tags: r.tags, fingerprint: rec.fingerprint }, 'encryption key ring created');
    }
    throw new CnmdError('CONFLICT', `${op}: the key ring kept changing in the cluster store; try again`, {
      op,
      object: ringKey.ring,
    });
  }

  /** Reads the ring, installs it and acks it (what every host does on every change). */
  private async reload(): Promise<void> {
    const op = 'key ring load';
    const got = await this.o.store.get<RingRecord>(op, ringKey.ring);
    if (!got) return;
    if (this.current?.rev === got.rev && (this.acked === got.rev || this.error)) return;
    const rec = got.value;
    if (!validRing(rec) || !Array.isArray(rec.keys) || rec.keys.length !== rec.tags.length) {
      this.o.log.error(
        { ring: { tags: rec?.tags, phase: rec?.phase } },
        'encryption key ring in the cluster store is malformed: not installed',
      );
      return;
    }
    let keys: Map<number, Buffer>;
    try {
      keys = new Map(rec.tags.map((t, i) => [t, openRingKey(this.o.secret, { ...rec.keys[i], tag: t })]));
    } catch (e) {
      const err =
        e instanceof CnmdError && e.code === 'FORBIDDEN'
          ? new CnmdError(
              'FORBIDDEN',
              `the cluster's encryption key ring (sealed under secret ${rec.fingerprint}) does not open with this ` +
                `host's --cluster-secret-file (fingerprint ${this.o.secret.fingerprint}); give every host the same file`,
              { op, object: ringKey.ring, cause: e },
            )
          : (e as Error);
      if (!this.error)
        this.o.log.error({ err }, 'encryption key ring: not usable here; encrypted networks are refused');
      this.error = err instanceof CnmdError ? err : new CnmdError('MALFORMED_REPLY', String(err), { op });
      this.current = { rec, rev: got.rev };
      await this.o.install(undefined, this.error);
      return;
    }
    this.error = undefined;
    this.current = { rec, rev: got.rev };
    if (await this.o.install({ keys, primary: rec.primary, phase: rec.phase })) await this.ack(got.rev, rec);
  }

  /** Says what this host installed, only if the ring is still the one installed (else the next load acks). */
  private async ack(rev: string, rec: RingRecord): Promise<void> {
    if (!this.leaseId) return;
    const ack: AckRecord = {
      host: this.o.hostId,
      ...wanted(rec),
      ringRev: rev,
      fingerprint: this.o.secret.fingerprint,
    };
    const ok = await this.o.store.txn(
      'key ring ack',
      ringKey.ack(this.o.hostId),
      [{ key: ringKey.ring, rev }],
      [{ put: { key: ringKey.ack(this.o.hostId), value: ack, lease: this.leaseId } }],
    );
    if (ok) {
      this.acked = rev;
      this.o.log.debug({ rx: ack.rx, tx: ack.tx, phase: rec.phase }, 'encryption key ring installed');
    }
  }

  /** Claims the leader key when free (only a host that opens the ring may lead), then steps if leader. */
  private async lead(): Promise<void> {
    const op = 'key ring leader';
    if (!this.leaseId || this.error || !this.current) {
      this.leader = false;
      return;
    }
    const cur = await this.o.store.get<{ host: string }>(op, ringKey.leader);
    if (!cur) {
      this.leader = await this.o.store.txn(
        op,
        ringKey.leader,
        [{ key: ringKey.leader }],
        [{ put: { key: ringKey.leader, value: { host: this.o.hostId }, lease: this.leaseId } }],
      );
      if (this.leader)
        this.o.log.info({ host: this.o.hostId }, 'encryption key ring: this host drives rotation');
    } else this.leader = cur.value.host === this.o.hostId;
    if (this.leader) await this.step();
  }

  /** The leader's move: a rotation when due, else one step when every live host's ack allows it. */
  private async step(): Promise<void> {
    const op = 'key ring rotate';
    const got = await this.o.store.get<RingRecord>(op, ringKey.ring);
    if (!got || !validRing(got.value)) return;
    const rec = got.value;
    let next: RingRecord | undefined;
    let asked: { rev: string } | undefined;
    if (rec.phase === 'steady') {
      // A request is taken by the rotation that begins (deleted in its transaction): no clocks compared.
      asked = await this.o.store.get<{ host: string }>(op, ringKey.rotate);
      if (this.now() - rec.rotated < this.o.rotationMs && !asked) return;
      const r = beginRotation(rec);
      if (!r) return;
      const tag = r.tags[r.tags.length - 1];
      next = {
        ...rec,
        ...r,
        keys: [...rec.keys, sealRingKey(this.o.secret, tag, newRingKey())],
        rotated: this.now(),
      };
    } else {
      const { items } = await this.o.store.list<AckRecord>(op, ringKey.acks);
      // Live hosts that hold the secret: their acks exist (under their leases) with its fingerprint.
      const acks = items.map((i) => i.value).filter((a) => a.fingerprint === this.o.secret.fingerprint);
      const r = advance(
        rec,
        acks.map((a) => a.host),
        new Map(acks.map((a) => [a.host, a])),
      );
      if (r === rec) return;
      next = { ...rec, ...r, keys: rec.keys.filter((k) => r.tags.includes(k.tag)) };
    }
    const ok = await this.o.store.txn(
      op,
      ringKey.ring,
      [{ key: ringKey.ring, rev: got.rev }, ...(asked ? [{ key: ringKey.rotate, rev: asked.rev }] : [])],
      [{ put: { key: ringKey.ring, value: next } }, ...(asked ? [{ delete: { key: ringKey.rotate } }] : [])],
    );
    if (ok)
      this.o.log.info(
        { tags: next.tags, primary: next.primary, phase: next.phase },
        'encryption key ring moved',
      );
  }

  /** Asks the leader for a rotation now (a send SA lost: new keys give new SPIs and fresh sequences). */
  requestRotation(): void {
    this.enqueue('rotation request', async () => {
      await this.o.store.put('key ring rotation request', ringKey.rotate, {
        host: this.o.hostId,
        at: this.now(),
      });
    });
  }

  private leaseLost(id: string, e: unknown): void {
    if (this.closed || id !== this.leaseId) return;
    this.o.log.warn({ err: e }, 'encryption key ring: lease lost, acking again');
    this.leaseId = undefined;
    this.leader = false;
    this.acked = undefined;
    const retry = async (): Promise<void> => {
      if (this.closed) return;
      try {
        const lease = await this.o.store.lease(this.o.ttlSeconds, (err) => this.leaseLost(lease.id, err));
        this.leaseId = lease.id;
        this.dropLease = lease.revoke;
        this.enqueue('ring load', () => this.reload());
      } catch {
        setTimeout(() => void retry(), 1000).unref();
      }
    };
    void retry();
  }

  /** Stops; the lease is not revoked (as the cluster's: the host's SAs keep working while it is down). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.stopWatch();
    await this.queue;
  }

  /** A watch that fails to cancel is logged, not thrown: the start's own error or the close wins. */
  private async stopWatch(): Promise<void> {
    const cancel = this.cancelWatch;
    this.cancelWatch = undefined;
    await cancel?.().catch((err) =>
      this.o.log.warn({ err }, 'encryption key ring: cancelling its watch failed'),
    );
  }
}
