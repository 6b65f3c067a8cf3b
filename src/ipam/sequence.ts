// A compressed allocation bitmap: the set bits kept as sorted, disjoint,
// non-adjacent runs [start, end). Constant size for a /64, cheap to persist
// as JSON, and "lowest free" / "next free after" are O(runs). The same role
// as libnetwork's bitseq, in a shape that is easy to reason about.

export interface SequenceJSON {
  size: string;
  runs: [string, string][];
}

export class Sequence {
  readonly size: bigint;
  private runs: [bigint, bigint][] = [];

  constructor(size: bigint) {
    this.size = size;
  }

  static fromJSON(j: SequenceJSON): Sequence {
    const s = new Sequence(BigInt(j.size));
    s.runs = j.runs.map(([a, b]) => [BigInt(a), BigInt(b)]);
    return s;
  }

  toJSON(): SequenceJSON {
    return { size: this.size.toString(), runs: this.runs.map(([a, b]) => [a.toString(), b.toString()]) };
  }

  /** How many bits are set. */
  count(): bigint {
    return this.runs.reduce((n, [a, b]) => n + (b - a), 0n);
  }

  isSet(i: bigint): boolean {
    return this.runs.some(([a, b]) => i >= a && i < b);
  }

  /** Sets bit i; false if it was already set. */
  set(i: bigint): boolean {
    if (i < 0n || i >= this.size) throw new RangeError(`bit ${i} outside 0..${this.size - 1n}`);
    let k = 0;
    while (k < this.runs.length && this.runs[k][1] < i) k++;
    const r = this.runs[k];
    if (r && i >= r[0] && i < r[1]) return false;
    if (r && r[1] === i) {
      r[1] = i + 1n;
      const next = this.runs[k + 1];
      if (next && next[0] === r[1]) {
        r[1] = next[1];
        this.runs.splice(k + 1, 1);
      }
      return true;
    }
    if (r && r[0] === i + 1n) {
      r[0] = i;
      return true;
    }
    this.runs.splice(k, 0, [i, i + 1n]);
    return true;
  }

  /** Clears bit i; false if it was not set. */
  unset(i: bigint): boolean {
    const k = this.runs.findIndex(([a, b]) => i >= a && i < b);
    if (k === -1) return false;
    const [a, b] = this.runs[k];
    const parts: [bigint, bigint][] = [];
    if (a < i) parts.push([a, i]);
    if (i + 1n < b) parts.push([i + 1n, b]);
    this.runs.splice(k, 1, ...parts);
    return true;
  }

  /** Lowest clear bit in [from, to), or undefined. */
  firstClear(from: bigint, to: bigint): bigint | undefined {
    let candidate = from;
    for (const [a, b] of this.runs) {
      if (b <= candidate) continue;
      if (a > candidate) break;
      candidate = b;
    }
    return candidate < to ? candidate : undefined;
  }
}
