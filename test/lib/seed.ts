// Seeded randomness for the chaos lane: every test prints its seed, and
// CHAOS_SEED=<n> replays a failing run exactly (same inputs in the same order).
import type { TestContext } from 'node:test';

export interface Rng {
  seed: number;
  /** Uniform in [0, 1). */
  next(): number;
  /** Integer in [0, n). */
  int(n: number): number;
  pick<T>(list: readonly T[]): T;
  bytes(n: number): Buffer;
}

/** mulberry32: small, fast, and the same sequence on every machine for one seed. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    seed,
    next,
    int,
    pick: (list) => list[int(list.length)],
    bytes: (n) => Buffer.from(Array.from({ length: n }, () => int(256))),
  };
}

/** The test's generator: CHAOS_SEED if set, else a fresh seed; printed either way so a failure replays. */
export function chaosRng(t: TestContext): Rng {
  const env = process.env.CHAOS_SEED;
  const seed = env !== undefined && env !== '' ? Number(env) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  const line = `chaos seed ${seed} (replay: CHAOS_SEED=${seed} node --test ${process.argv[1] ?? ''})`;
  t.diagnostic(line);
  console.log(`# ${t.name}: ${line}`);
  return rng(seed);
}
