// lru.ts - an lru-cache bounded by entry count that grows as it fills.
//
// With `max`, lru-cache allocates its key and value lists for every entry up
// front (8 bytes each, twice). Bounded by `maxSize` with each entry counting
// 1, it evicts at the same count but its lists grow only as keys arrive: for
// the caches sized for a flood that most days never comes (rate counters,
// repeated questions, greylist). The reputation store, sized to be filled,
// keeps `max`.

import { LRUCache } from 'lru-cache';

const ONE = (): number => 1;

export function boundedLru<K extends {}, V extends {}>(max: number, dispose?: (value: V) => void): LRUCache<K, V> {
  return new LRUCache<K, V>({ maxSize: max, sizeCalculation: ONE, ...(dispose ? { dispose } : {}) });
}
