// store.ts - the reputation store: one LRU of entries, bounded by count and age.
//
// lru-cache bounded by reputation.max_entries, each entry expiring
// reputation.ttl after its last change. Scores decay on read (score.ts);
// time comes from the injected clock. Iteration for snapshots and `top`
// walks rkeys() (oldest first) rather than dump(), which is quadratic in
// lru-cache 11 (../shared/STACK.md).
//
// Config keys: reputation.max_entries, reputation.ttl, reputation.half_life.

import { LRUCache } from 'lru-cache';
import { decayed, fresh, type Entry } from './score.js';

export type Clock = () => number;
export type Counter = 'ok' | 'ab' | 'abh' | 'rate' | 'grey';

export interface StoreOptions {
  readonly maxEntries: number;
  readonly ttlMs: number;
  readonly halfLifeMs: number;
  readonly now: Clock;
}

export class ReputationStore {
  readonly #lru: LRUCache<string, Entry>;
  readonly #opts: StoreOptions;
  evictions = 0;

  constructor(opts: StoreOptions) {
    this.#opts = opts;
    this.#lru = new LRUCache<string, Entry>({
      max: opts.maxEntries,
      ttl: opts.ttlMs,
      ttlAutopurge: false,
      updateAgeOnGet: false,
      perf: { now: opts.now },
      // Ask the injected clock every time: lru-cache otherwise caches "now" for a while.
      ttlResolution: 0,
      dispose: (_v, _k, reason) => { if (reason === 'evict') this.evictions++; },
    });
  }

  /** The decayed score; 0 for a key never seen. */
  score(key: string | undefined): number {
    if (!key) return 0;
    const e = this.#lru.get(key);
    return e ? decayed(e, this.#opts.now(), this.#opts.halfLifeMs) : 0;
  }

  entry(key: string): Entry | undefined {
    return this.#lru.get(key);
  }

  /** Moves a key's score by delta and bumps a counter; creates the entry when new. */
  add(key: string | undefined, delta: number, counter?: Counter): void {
    if (!key) return;
    const now = this.#opts.now();
    const e = this.#lru.get(key) ?? fresh(now);
    e.s = decayed(e, now, this.#opts.halfLifeMs) + delta;
    e.at = now;
    if (counter) e[counter]++;
    this.#lru.set(key, e);
  }

  forget(key: string): boolean {
    return this.#lru.delete(key);
  }

  get size(): number {
    return this.#lru.size;
  }

  /** Oldest first, so that loading them back in order keeps recency. */
  *entries(): Generator<[string, Entry]> {
    for (const k of this.#lru.rkeys()) {
      const e = this.#lru.peek(k);
      if (e) yield [k, e];
    }
  }

  /** Loads entries (oldest first); ones older than the TTL are dropped. */
  load(entries: Iterable<[string, Entry]>): number {
    const now = this.#opts.now();
    let n = 0;
    for (const [k, e] of entries) {
      const age = now - e.at;
      if (age >= this.#opts.ttlMs) continue;
      this.#lru.set(k, e, { ttl: this.#opts.ttlMs - Math.max(0, age) });
      n++;
    }
    return n;
  }

  clear(): void {
    this.#lru.clear();
  }
}
