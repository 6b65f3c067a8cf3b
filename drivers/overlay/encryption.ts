// The XFRM side of encrypted overlays (issue 17), per peer VTEP: ESP
// transport, rfc4106(gcm(aes)) with a 128-bit ICV and extended sequence
// numbers, one SA per direction per peer per key (receive: every ring key;
// send: the primary), and one outbound policy per peer on VXLAN's UDP port
// for packets carrying cnmd's mark (set by the firewall for encrypted VNIs
// only, so plain networks between the same hosts stay as they are).
// Reconciled like setPeers: the desired set for the whole peer list, then
// only the differences, in an order that never lets marked VXLAN out in clear.
// A guard policy (block every marked VXLAN from the local VTEP, below the
// per-peer policies) makes "never in clear" hold for peers not set up yet.
import { buildSpi, pairKey } from '../../src/cluster/keys';
import { CnmdError } from '../../src/errors';
import type { Handle } from '../../src/netlink/handle';
import type { XfrmPolicy, XfrmPolicySpec, XfrmStateSpec } from '../../src/netlink/xfrm/xfrm';

/** cnmd's reqid on every SA and template, and the mark (value and mask) of encrypted VXLAN. */
export const ENC_REQID = 0x0c4d0e5c;
export const ENC_MARK = { value: 0x0c4d0e5c, mask: 0xffffffff };
export const ESN_WINDOW = 128;
export const ICV_BITS = 128;
/** ESP over IPv4 as libnetwork counts it (SPI, sequence, IV, ICV of 8, pad, trailer): 26, then MTU down to a multiple of 4. */
export const ESP_OVERHEAD = 26;

export function encryptedMtu(plainMtu: number): number {
  return (plainMtu - ESP_OVERHEAD) & ~3;
}

export interface RingKeys {
  /** Ring keys by tag (opened from the cluster store). */
  keys: Map<number, Buffer>;
  /** The send key's tag. */
  primary: number;
}

export interface DesiredXfrm {
  states: XfrmStateSpec[];
  /** The allow policy per peer; a new peer's is first installed as a block (see applyXfrm). */
  policies: XfrmPolicySpec[];
  /** The block policy for marked VXLAN to any address (absent: no encrypted network is left). */
  guard?: XfrmPolicySpec;
}

/** Per-peer policies win over the guard (the kernel takes the lowest priority value). */
export const PEER_PRIORITY = 0;
export const GUARD_PRIORITY = 0x10000;

/** Marked VXLAN from `local` to anywhere is dropped unless a peer's policy carries it in ESP. */
export function guardPolicy(local: string, port: number): XfrmPolicySpec {
  return {
    selector: {
      src: host(local),
      dst: local.includes(':') ? '::/0' : '0.0.0.0/0',
      proto: 'udp',
      dport: port,
    },
    dir: 'out',
    mark: ENC_MARK,
    action: 'block',
    priority: GUARD_PRIORITY,
  };
}

const host = (ip: string) => `${ip}/${ip.includes(':') ? 128 : 32}`;

function sa(src: string, dst: string, tag: number, ring: Buffer, port: number, out: boolean): XfrmStateSpec {
  return {
    src,
    dst,
    proto: 'esp',
    spi: buildSpi(src, dst, tag),
    mode: 'transport',
    reqid: ENC_REQID,
    esnWindow: ESN_WINDOW,
    aead: { name: 'rfc4106(gcm(aes))', key: pairKey(ring, tag, src, dst), icvBits: ICV_BITS },
    // Only the send SA has the mark: an inbound SA is looked up with the packet's mark, which is 0.
    mark: out ? ENC_MARK : undefined,
    selector: { src: host(src), dst: host(dst), proto: 'udp', dport: port },
  };
}

/** What the kernel must hold for these peers (their VTEPs; the local one and duplicates are ignored). */
export function desiredXfrm(
  local: string,
  peers: string[],
  ring: RingKeys,
  port: number,
  guard = false,
): DesiredXfrm {
  const primary = ring.keys.get(ring.primary);
  if (!primary)
    throw new CnmdError('INTERNAL', `xfrm desired state: the send key ${ring.primary} is not in the ring`, {
      op: 'xfrm desired state',
      object: String(ring.primary),
    });
  const out: DesiredXfrm = { states: [], policies: [] };
  if (guard) out.guard = guardPolicy(local, port);
  for (const peer of [...new Set(peers)].filter((p) => p !== local).sort()) {
    for (const [tag, key] of [...ring.keys].sort((a, b) => a[0] - b[0]))
      out.states.push(sa(peer, local, tag, key, port, false));
    const tx = sa(local, peer, ring.primary, primary, port, true);
    out.states.push(tx);
    out.policies.push({
      selector: { src: host(local), dst: host(peer), proto: 'udp', dport: port },
      dir: 'out',
      mark: ENC_MARK,
      priority: PEER_PRIORITY,
      templates: [{ src: local, dst: peer, proto: 'esp', mode: 'transport', reqid: ENC_REQID, spi: tx.spi }],
    });
  }
  return out;
}

const stateKey = (s: { src: string; dst: string; spi: number }) => `${s.src}>${s.dst}#${s.spi >>> 0}`;
const policyKey = (p: { selector: { src: string; dst: string } }) =>
  `${p.selector.src.replace(/\/\d+$/, '')}>${p.selector.dst.replace(/\/\d+$/, '')}`;

export interface XfrmChanges {
  blocked: string[];
  statesAdded: string[];
  policiesSet: string[];
  policiesRemoved: string[];
  statesRemoved: string[];
  /** Per state found (src>dst#spi): packets its anti-replay check dropped (in or behind the window). */
  replays: Map<string, number>;
}

/**
 * Makes h's cnmd SAs and policies exactly `want`: a new peer's policy is a
 * block first (marked VXLAN to it is dropped, never sent in clear), then the
 * SAs (new receive keys before anything sends with them), then each policy
 * points at its send SA, then what is no longer wanted goes, policies before
 * SAs (a key still receiving is dropped last).
 */
export async function applyXfrm(h: Handle, want: DesiredXfrm): Promise<XfrmChanges> {
  const ch: XfrmChanges = {
    blocked: [],
    statesAdded: [],
    policiesSet: [],
    policiesRemoved: [],
    statesRemoved: [],
    replays: new Map(),
  };
  const mine = (m?: { value: number; mask?: number }) =>
    m !== undefined && m.value === ENC_MARK.value && m.mask === ENC_MARK.mask;
  const havePolicies = (await h.xfrmPolicyList()).filter((p) => p.dir === 'out' && mine(p.mark));
  const haveStates = (await h.xfrmStateList()).filter((s) => s.reqid === ENC_REQID);
  const isGuard = (p: { action?: string; priority?: number }) =>
    p.action === 'block' && p.priority === GUARD_PRIORITY;
  const haveGuard = havePolicies.find(isGuard);
  const policyByKey = new Map(havePolicies.filter((p) => !isGuard(p)).map((p) => [policyKey(p), p]));
  const stateKeys = new Set(haveStates.map(stateKey));
  for (const s of haveStates) ch.replays.set(stateKey(s), s.stats.replay + s.stats.outOfWindow);

  // The guard before anything: from then on no marked VXLAN leaves in clear.
  if (want.guard && (!haveGuard || policyKey(haveGuard) !== policyKey(want.guard))) {
    await h.xfrmPolicyUpdate(want.guard);
    ch.blocked.push(policyKey(want.guard));
  }
  for (const p of want.policies)
    if (!policyByKey.has(policyKey(p))) {
      await h.xfrmPolicyAdd({ selector: p.selector, dir: 'out', mark: p.mark, action: 'block' });
      ch.blocked.push(policyKey(p));
    }
  for (const s of want.states)
    if (!stateKeys.has(stateKey(s))) {
      await h.xfrmStateAdd(s);
      ch.statesAdded.push(stateKey(s));
    }
  for (const p of want.policies) {
    const have = policyByKey.get(policyKey(p));
    const spi = p.templates![0].spi;
    if (have && have.action === 'allow' && have.templates.length === 1 && have.templates[0].spi === spi)
      continue;
    await h.xfrmPolicyUpdate(p);
    ch.policiesSet.push(policyKey(p));
  }
  const wantedPolicies = new Set(want.policies.map(policyKey));
  if (want.guard) wantedPolicies.add(policyKey(want.guard));
  for (const p of havePolicies)
    // The guard (even one of another local address) goes last, after every state (below).
    if (!isGuard(p) && !wantedPolicies.has(policyKey(p))) {
      await delPolicy(h, p);
      ch.policiesRemoved.push(policyKey(p));
    }
  const wantedStates = new Set(want.states.map(stateKey));
  for (const s of haveStates)
    if (!wantedStates.has(stateKey(s))) {
      await h
        .xfrmStateDel({ src: s.src, dst: s.dst, spi: s.spi, proto: 'esp', mark: s.mark })
        .catch(notFound);
      ch.statesRemoved.push(stateKey(s));
    }
  for (const p of havePolicies)
    if (isGuard(p) && !wantedPolicies.has(policyKey(p))) {
      await delPolicy(h, p);
      ch.policiesRemoved.push(policyKey(p));
    }
  return ch;
}

async function delPolicy(h: Handle, p: XfrmPolicy): Promise<void> {
  const { src, dst, proto, dport } = p.selector;
  await h.xfrmPolicyDel({ selector: { src, dst, proto, dport }, dir: 'out', mark: p.mark }).catch(notFound);
}

function notFound(e: unknown): undefined {
  if (e instanceof CnmdError && e.code === 'NOT_FOUND') return undefined;
  throw e;
}
