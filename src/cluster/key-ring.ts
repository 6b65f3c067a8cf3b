// The encrypted overlays' key ring as a pure state machine (issue 17): at
// most three keys, rotated in libnetwork's safe order with explicit
// acknowledgements instead of "one rotation period later":
//   steady      [old, primary]            every host receives with both, sends with primary
//   installing  [old, primary, new]       hosts add `new` for receive only, and say so
//   switching   [old, primary', new=']    once every live host receives with `new`, it is the send key
//   steady      [primary, new]            once every live host sends with it, the oldest goes
// A host that is not live is not waited for; when it comes back it installs
// the ring as it then is (receive with all, send with the primary), which
// disturbs no one. Only tags are here; the keys are sealed beside them.

export type RingPhase = 'steady' | 'installing' | 'switching';

export interface RingState {
  /** Key tags, ascending (a new key's tag is the highest plus one). */
  tags: number[];
  /** The send key's tag. */
  primary: number;
  phase: RingPhase;
}

/** What one host reports it has installed: receive SAs for rx, send SAs for tx. */
export interface HostKeys {
  rx: number[];
  tx: number;
}

export const RING_MAX = 3;

/** A ring with its first key: receive and send with it. */
export function initialRing(tag = 1): RingState {
  return { tags: [tag], primary: tag, phase: 'steady' };
}

/** What a host must install for the ring as it is now: receive with every key, send with the primary. */
export function wanted(r: RingState): HostKeys {
  return { rx: [...r.tags], tx: r.primary };
}

/** The next tag: one above the highest (2^32-1 is half a million years of hourly rotations away). */
export function nextTag(r: RingState): number {
  return (r.tags[r.tags.length - 1] ?? 0) + 1;
}

/** Starts a rotation: a new key for receive only. Refused (undefined) while one is under way. */
export function beginRotation(r: RingState): RingState | undefined {
  if (r.phase !== 'steady') return undefined;
  // Steady holds at most two keys, so the new one makes three; a lone first key makes two.
  const tags = [...r.tags, nextTag(r)];
  if (tags.length > RING_MAX || tags[tags.length - 1] > 0xffffffff) return undefined;
  return { ...r, tags, phase: 'installing' };
}

/**
 * One step forward when every live host's report allows it; the same state
 * otherwise. `reports`: host id -> its installed keys; `live`: hosts that count.
 */
export function advance(r: RingState, live: string[], reports: Map<string, HostKeys>): RingState {
  const newest = r.tags[r.tags.length - 1];
  const all = (ok: (k: HostKeys) => boolean) =>
    live.every((h) => {
      const k = reports.get(h);
      return k !== undefined && ok(k);
    });
  if (r.phase === 'installing' && all((k) => k.rx.includes(newest)))
    return { ...r, primary: newest, phase: 'switching' };
  if (r.phase === 'switching' && all((k) => k.tx === r.primary)) {
    // Only the key just replaced stays for receive (packets in flight, hosts that were slow to switch).
    const at = r.tags.indexOf(r.primary);
    return { tags: r.tags.slice(Math.max(0, at - 1)), primary: r.primary, phase: 'steady' };
  }
  return r;
}

/** Whether a ring read from the cluster store is one this machine can produce; a bad one is never installed. */
export function validRing(r: unknown): r is RingState {
  const x = r as RingState;
  if (!x || !Array.isArray(x.tags) || x.tags.length < 1 || x.tags.length > RING_MAX) return false;
  if (!x.tags.every((t) => Number.isInteger(t) && t >= 1 && t <= 0xffffffff)) return false;
  for (let i = 1; i < x.tags.length; i++) if (x.tags[i] <= x.tags[i - 1]) return false;
  if (!x.tags.includes(x.primary)) return false;
  if (x.phase === 'steady') return x.tags.length <= 2 && x.primary === x.tags[x.tags.length - 1];
  if (x.phase === 'installing') return x.tags.length >= 2 && x.primary === x.tags[x.tags.length - 2];
  if (x.phase === 'switching') return x.tags.length >= 2 && x.primary === x.tags[x.tags.length - 1];
  return false;
}
