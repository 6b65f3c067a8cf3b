// Keyed locks: API calls on the same objects run one after another; calls on
// unrelated objects run concurrently. Keys are taken in sorted order, so two
// calls locking overlapping sets cannot deadlock.

export class KeyedMutex {
  private tails = new Map<string, Promise<void>>();

  async lock<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const waits: Promise<void>[] = [];
    for (const k of sorted) {
      const prev = this.tails.get(k);
      if (prev) waits.push(prev);
      this.tails.set(k, mine);
    }
    await Promise.all(waits);
    try {
      return await fn();
    } finally {
      release();
      for (const k of sorted) if (this.tails.get(k) === mine) this.tails.delete(k);
    }
  }
}
