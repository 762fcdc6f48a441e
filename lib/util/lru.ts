// lru.ts - an lru-cache bounded by entry count that grows as it fills.
//
// With `max`, lru-cache allocates its key and value lists for every entry up
// front (8 bytes each, twice). Bounded by `maxSize` with each entry counting
// 1, it evicts at the same count but its lists grow only as keys arrive: for
// the caches sized for a flood that most days never comes (rate counters,
// repeated questions, greylist, DNS answers, fleet reads). The reputation
// store, sized to be filled, keeps `max`. An expiry is lru-cache's own `ttl`
// (a default, or per set()), timed by the injected clock: `now` is its perf
// source and every check reads it (ttlResolution 0), so a ManualClock that
// moves is seen at once.

import { LRUCache } from 'lru-cache';

const ONE = (): number => 1;

export interface LruOptions<V> {
  readonly dispose?: (value: V) => void;
  /** Entries expire this long after they are set, unless set() says otherwise (needs `now`). */
  readonly ttlMs?: number;
  /** The clock entries expire by; set: set() may give a per-entry ttl. */
  readonly now?: () => number;
}

export function boundedLru<K extends {}, V extends {}>(max: number, o: LruOptions<V> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({
    maxSize: max, sizeCalculation: ONE,
    ...(o.dispose ? { dispose: o.dispose } : {}),
    ...(o.now ? { perf: { now: o.now }, ttlResolution: 0, ttl: o.ttlMs ?? 0, allowStale: false } : {}),
  });
}
