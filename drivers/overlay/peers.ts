// The remote endpoints of one overlay network, made true in the kernel: a
// static neighbour entry (ip -> mac) and an FDB entry (mac -> remote VTEP) on
// the network's vxlan device for each, and nothing else there. The vxlan
// device has learning off, so every entry on it is one this driver put.
import { CnmdError, invalidArgument } from '../../src/errors';
import type { Handle } from '../../src/netlink/handle';
import { bytesToIp, ipToBytes } from '../../src/net/addr';
import { NTF_SELF } from '../../src/netlink/rtnl/constants';
import type { OverlayPeer } from '../driver';

/** One remote endpoint of an overlay network: the Driver seam's (the contract with the control plane, src/cluster/). */
export type { OverlayPeer };

/** What one reconcile changed (all zeros when the kernel already matched). */
export interface ReconcileResult {
  neighAdded: number;
  neighRemoved: number;
  fdbAdded: number;
  fdbRemoved: number;
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
): { neigh: Map<string, string>; fdb: Map<string, string> } {
  const op = 'overlay peers';
  if (!Array.isArray(peers)) throw invalidArgument(op, undefined, 'peers must be a list');
  const neigh = new Map<string, string>(); // ip -> mac
  const fdb = new Map<string, string>(); // mac -> vtep
  const owner = new Map<string, OverlayPeer>();
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
  return { neigh, fdb };
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
