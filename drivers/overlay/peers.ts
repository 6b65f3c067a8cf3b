// The remote endpoints of one overlay network, made true in the kernel: a
// static neighbour entry (ip -> mac) and an FDB entry (mac -> remote VTEP) on
// the network's vxlan device for each, and nothing else there. The vxlan
// device has learning off, so every entry on it is one this driver put.
import { CnmdError, invalidArgument } from '../../src/errors';
import type { Handle } from '../../src/netlink/handle';
import { bytesToIp, ipToBytes } from '../../src/net/addr';
import { NTF_SELF } from '../../src/netlink/rtnl/constants';
import type { OverlayPeer, PeerChange } from '../driver';

/** One remote endpoint of an overlay network, and a change of them: the Driver seam's (the contract with the control plane, src/cluster/). */
export type { OverlayPeer, PeerChange };

/** What one reconcile changed (all zeros when the kernel already matched). */
export interface ReconcileResult {
  neighAdded: number;
  neighRemoved: number;
  fdbAdded: number;
  fdbRemoved: number;
}

/** The entries a peer set asks for; clashes counts the peers left out for claiming a taken address or MAC. */
export interface DesiredEntries {
  neigh: Map<string, string>; // ip -> mac
  fdb: Map<string, string>; // mac -> vtep
  clashes: number;
}

const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/** The canonical text of an IP given plain or as a CIDR (the kernel's spelling, for comparisons), or undefined. */
function canonicalIp(s: unknown, allowPrefix: boolean): string | undefined {
  if (typeof s !== 'string') return undefined;
  const slash = s.indexOf('/');
  const b = ipToBytes(slash < 0 ? s : s.slice(0, slash));
  if (!b) return undefined;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!allowPrefix || !/^\d{1,3}$/.test(p) || Number(p) > b.length * 8) return undefined;
  }
  return bytesToIp(b);
}

/** The desired entries, checked: a bad peer refuses the whole set (nothing is changed). */
export function desiredEntries(
  peers: OverlayPeer[],
  localVtep: string | undefined,
  onDuplicate: (what: string, kept: OverlayPeer, dropped: OverlayPeer) => void,
): DesiredEntries {
  const op = 'overlay peers';
  if (!Array.isArray(peers)) throw invalidArgument(op, undefined, 'peers must be a list');
  const neigh = new Map<string, string>(); // ip -> mac
  const fdb = new Map<string, string>(); // mac -> vtep
  const owner = new Map<string, OverlayPeer>();
  let clashes = 0;
  const local = canonicalIp(localVtep, false);
  // A few hosts carry many endpoints: each VTEP's text is checked once.
  const vteps = new Map<string, string | undefined>();
  // In a fixed order, so which of two clashing records wins does not depend on the caller's order.
  const sorted = [...peers].sort((a, b) =>
    a.endpointId < b.endpointId ? -1 : a.endpointId > b.endpointId ? 1 : 0,
  );
  for (const p of sorted) {
    const id = typeof p?.endpointId === 'string' ? p.endpointId : '?';
    const mac = typeof p?.mac === 'string' && MAC.test(p.mac) ? p.mac.toLowerCase() : undefined;
    if (!mac || (parseInt(mac.slice(0, 2), 16) & 1) === 1 || mac === '00:00:00:00:00:00')
      throw invalidArgument(op, id, `peer ${id}: "${p?.mac}" is not a unicast MAC address`);
    let vtep = vteps.get(p.vtep);
    if (vtep === undefined) vteps.set(p.vtep, (vtep = canonicalIp(p.vtep, false)));
    if (!vtep) throw invalidArgument(op, id, `peer ${id}: VTEP "${p.vtep}" is not an IP address`);
    const v4 = canonicalIp(p.address, true);
    if (!v4) throw invalidArgument(op, id, `peer ${id}: address "${p.address}" is not an IP address`);
    const v6 = p.address6 === undefined || p.address6 === '' ? undefined : canonicalIp(p.address6, true);
    if (p.address6 && !v6)
      throw invalidArgument(op, id, `peer ${id}: address6 "${p.address6}" is not an IP address`);
    // An endpoint on this host is on the bridge itself.
    if (vtep === local) continue;
    const ips = v6 ? [v4, v6] : [v4];
    const taken = ips.find((ip) => neigh.has(ip)) ?? (fdb.has(mac) ? mac : undefined);
    if (taken !== undefined) {
      clashes++;
      onDuplicate(taken, owner.get(taken)!, p);
      continue;
    }
    for (const ip of ips) {
      neigh.set(ip, mac);
      owner.set(ip, p);
    }
    fdb.set(mac, vtep);
    owner.set(mac, p);
  }
  return { neigh, fdb, clashes };
}

function ignoreNotFound(e: unknown): void {
  if (!(e instanceof CnmdError && e.code === 'NOT_FOUND')) throw e;
}

/**
 * Makes the vxlan device's neighbour and FDB entries exactly `want`: adds the
 * missing, replaces the altered, removes the rest. Two dumps when nothing
 * changed; entries deleted by hand come back on the next call.
 */
export async function reconcilePeers(
  h: Handle,
  vxlan: number,
  want: { neigh: Map<string, string>; fdb: Map<string, string> },
): Promise<ReconcileResult> {
  const [neighs, fdbs] = await Promise.all([h.neighList({ dev: vxlan }), h.fdbList({ dev: vxlan })]);
  const r: ReconcileResult = { neighAdded: 0, neighRemoved: 0, fdbAdded: 0, fdbRemoved: 0 };
  const work: Promise<void>[] = [];
  const seenIp = new Set<string>();
  for (const n of neighs) {
    if (!n.ip) continue;
    const mac = want.neigh.get(n.ip);
    if (mac !== undefined && n.mac === mac && n.permanent) {
      seenIp.add(n.ip);
      continue;
    }
    if (mac !== undefined) continue; // altered: replaced below
    r.neighRemoved++;
    work.push(h.neighDel({ dev: vxlan, ip: n.ip }).catch(ignoreNotFound));
  }
  for (const [ip, mac] of want.neigh) {
    if (seenIp.has(ip)) continue;
    r.neighAdded++;
    work.push(h.neighAdd({ dev: vxlan, ip, mac, state: 'permanent' }));
  }
  // The device's own entries (NTF_SELF with a destination); the bridge's view of the port (master) is the bridge's.
  const own = fdbs.filter((f) => f.flags & NTF_SELF && f.mac && f.masterIndex === undefined);
  const right = new Set(own.filter((f) => f.permanent && want.fdb.get(f.mac!) === f.dst).map((f) => f.mac!));
  const kept = new Set<string>();
  // Removals first: a MAC whose every remote is wrong loses them all, then gets its one (same socket, in order).
  for (const f of own) {
    if (right.has(f.mac!) && f.dst === want.fdb.get(f.mac!) && !kept.has(f.mac!)) {
      kept.add(f.mac!);
      continue;
    }
    r.fdbRemoved++;
    work.push(h.fdbDel({ dev: vxlan, mac: f.mac!, dst: f.dst }).catch(ignoreNotFound));
  }
  for (const [mac, dst] of want.fdb) {
    if (kept.has(mac)) continue;
    r.fdbAdded++;
    work.push(h.fdbReplace({ dev: vxlan, mac, dst, state: 'permanent' }));
  }
  // Pipelined on the netns socket; the first failure is reported once all are answered.
  const failed = (await Promise.allSettled(work)).find(
    (x): x is PromiseRejectedResult => x.status === 'rejected',
  );
  if (failed) throw failed.reason;
  return r;
}

/** Kernel entries to write: neigh ip -> mac (undefined: delete), fdb mac -> vtep (undefined: delete, was: the old one). */
export interface EntryDelta {
  neigh: Map<string, string | undefined>;
  fdb: Map<string, { vtep?: string; was?: string }>;
}

/**
 * A network's remote endpoints and the entries they ask for, kept so that
 * one change costs its own entries: apply() updates the desired entries in
 * place and says which kernel entries to write, without reading the kernel
 * (the periodic reconcile does that, and heals drift). When two peers claim
 * one address or MAC, which one wins depends on the whole set (the lowest
 * endpoint id): the set is then recomputed, still without a dump.
 */
export class PeerSet {
  private readonly peers = new Map<string, OverlayPeer>();
  want: DesiredEntries = { neigh: new Map(), fdb: new Map(), clashes: 0 };

  constructor(
    private readonly localVtep: () => string | undefined,
    private readonly onDuplicate: (what: string, kept: OverlayPeer, dropped: OverlayPeer) => void,
  ) {}

  /** The whole set (checked first: a bad peer refuses it and nothing changes). */
  replaceAll(peers: OverlayPeer[]): DesiredEntries {
    const want = desiredEntries(peers, this.localVtep(), this.onDuplicate);
    this.peers.clear();
    for (const p of peers) this.peers.set(p.endpointId, p);
    return (this.want = want);
  }

  /** Applies a change (checked first: a bad peer refuses it and nothing changes); returns the entries to write. */
  apply(change: PeerChange): EntryDelta {
    const op = 'overlay peers';
    if (!Array.isArray(change?.put) || !Array.isArray(change?.remove))
      throw invalidArgument(op, undefined, 'a peer change has put and remove lists');
    const local = this.localVtep();
    const entriesOf = (p: OverlayPeer) => desiredEntries([p], local, () => undefined);
    // A peer published again as it was (a host's restart) changes nothing.
    const puts = change.put.filter((p) => {
      const o = this.peers.get(p?.endpointId);
      return !(
        o &&
        o.address === p.address &&
        o.address6 === p.address6 &&
        o.mac === p.mac &&
        o.vtep === p.vtep
      );
    });
    // Each new peer's own entries, checked on its own (as desiredEntries checks each in a set).
    const fresh = puts.map((p) => ({ p, e: entriesOf(p) }));
    const w = this.want;
    // With no clash in the set, every entry has exactly one owner: the peer whose entry it equals.
    const leaving = [...change.remove, ...puts.map((p) => p.endpointId)]
      .map((id) => this.peers.get(id))
      .filter((p): p is OverlayPeer => !!p)
      .map(entriesOf);
    const freedIps = new Set<string>();
    const freedMacs = new Set<string>();
    for (const e of leaving) {
      for (const [ip, mac] of e.neigh) if (w.neigh.get(ip) === mac) freedIps.add(ip);
      for (const [mac, vtep] of e.fdb) if (w.fdb.get(mac) === vtep) freedMacs.add(mac);
    }
    const claimedIps = new Set<string>();
    const claimedMacs = new Set<string>();
    let clash = w.clashes > 0;
    for (const { e } of fresh) {
      for (const ip of e.neigh.keys()) {
        if ((w.neigh.has(ip) && !freedIps.has(ip)) || claimedIps.has(ip)) clash = true;
        claimedIps.add(ip);
      }
      for (const mac of e.fdb.keys()) {
        if ((w.fdb.has(mac) && !freedMacs.has(mac)) || claimedMacs.has(mac)) clash = true;
        claimedMacs.add(mac);
      }
    }
    if (clash) return this.recompute({ put: puts, remove: change.remove });
    const delta: EntryDelta = { neigh: new Map(), fdb: new Map() };
    for (const id of change.remove) this.peers.delete(id);
    for (const ip of freedIps) {
      w.neigh.delete(ip);
      delta.neigh.set(ip, undefined);
    }
    for (const mac of freedMacs) {
      delta.fdb.set(mac, { was: w.fdb.get(mac) });
      w.fdb.delete(mac);
    }
    for (const { p, e } of fresh) {
      this.peers.set(p.endpointId, p);
      for (const [ip, mac] of e.neigh) {
        w.neigh.set(ip, mac);
        delta.neigh.set(ip, mac);
      }
      for (const [mac, vtep] of e.fdb) {
        w.fdb.set(mac, vtep);
        delta.fdb.set(mac, { vtep, was: delta.fdb.get(mac)?.was });
      }
    }
    return delta;
  }

  /** The whole set decides who owns a contested entry (still no dump). */
  private recompute(change: PeerChange): EntryDelta {
    const before = this.want;
    const next = new Map(this.peers);
    for (const id of change.remove) next.delete(id);
    for (const p of change.put) next.set(p.endpointId, p);
    const want = desiredEntries([...next.values()], this.localVtep(), this.onDuplicate);
    this.peers.clear();
    for (const [id, p] of next) this.peers.set(id, p);
    this.want = want;
    return diffEntries(before, want);
  }
}

/** What turns one desired state into another, entry by entry. */
export function diffEntries(before: DesiredEntries, after: DesiredEntries): EntryDelta {
  const delta: EntryDelta = { neigh: new Map(), fdb: new Map() };
  for (const [ip, mac] of after.neigh) if (before.neigh.get(ip) !== mac) delta.neigh.set(ip, mac);
  for (const ip of before.neigh.keys()) if (!after.neigh.has(ip)) delta.neigh.set(ip, undefined);
  for (const [mac, vtep] of after.fdb) {
    const was = before.fdb.get(mac);
    if (was !== vtep) delta.fdb.set(mac, { vtep, was });
  }
  for (const [mac, was] of before.fdb) if (!after.fdb.has(mac)) delta.fdb.set(mac, { was });
  return delta;
}

/**
 * Writes a delta to the vxlan device, pipelined: one request per changed
 * entry, no dump. Removals of FDB entries go before additions (same socket, in
 * order). A delete of an entry already gone is fine; any other failure is
 * thrown once every request is answered (the caller then reconciles in full).
 */
export async function applyDelta(h: Handle, vxlan: number, delta: EntryDelta): Promise<ReconcileResult> {
  const r: ReconcileResult = { neighAdded: 0, neighRemoved: 0, fdbAdded: 0, fdbRemoved: 0 };
  const work: Promise<void>[] = [];
  for (const [mac, d] of delta.fdb)
    if (d.vtep === undefined && d.was !== undefined) {
      r.fdbRemoved++;
      work.push(h.fdbDel({ dev: vxlan, mac, dst: d.was }).catch(ignoreNotFound));
    }
  for (const [mac, d] of delta.fdb)
    if (d.vtep !== undefined) {
      r.fdbAdded++;
      work.push(h.fdbReplace({ dev: vxlan, mac, dst: d.vtep, state: 'permanent' }));
    }
  for (const [ip, mac] of delta.neigh) {
    if (mac === undefined) {
      r.neighRemoved++;
      work.push(h.neighDel({ dev: vxlan, ip }).catch(ignoreNotFound));
    } else {
      r.neighAdded++;
      work.push(h.neighAdd({ dev: vxlan, ip, mac, state: 'permanent' }));
    }
  }
  const failed = (await Promise.allSettled(work)).find(
    (x): x is PromiseRejectedResult => x.status === 'rejected',
  );
  if (failed) throw failed.reason;
  return r;
}
