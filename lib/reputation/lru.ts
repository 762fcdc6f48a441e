// lru.ts - an lru-cache bounded by entry count that grows as it fills.
//
// With `max`, lru-cache allocates its key and value lists for every entry up
// front: a million-key store would hold 16 MB before its first client. Bounded
// by `maxSize` with each entry counting 1, it evicts at the same count but
// its lists grow only as keys arrive.

import { LRUCache } from 'lru-cache';

const ONE = (): number => 1;

export function boundedLru<K extends {}, V extends {}>(
  max: number,
  options: Omit<LRUCache.Options<K, V, unknown>, 'max' | 'maxSize' | 'sizeCalculation'> = {},
): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: max, sizeCalculation: ONE });
}
