// young-map.ts - a Map for entries that come and go by the thousand a second.
//
// Live sessions, open policy sessions and accepted connections are each kept
// in a long-lived Map that sees a set and a delete per session. Such a Map
// soon lives in V8's old generation, and so do the hash tables it grows and
// rehashes into. A table replaced while its entries were still live keeps
// pointing at them, and the young-generation collector treats every slot of
// an old object as a root, dead table or not: so every entry, though deleted
// a few milliseconds later, is copied twice and promoted, and only a full
// mark-compact frees it. Renewing the Map (a new Map with the live entries)
// every so many insertions keeps its table young, and deleted entries die
// young with it. Measured on the policy bench's load (100 connections, a new
// session each request): 1.3-1.7 MB promoted per scavenge and 5-7 ms pauses
// before; 0.24 MB and 2 ms after (most of what was still promoted then was
// the repeat check's key strings, since replaced by hashes: repeats.ts).
//
// Renewal copies the live entries, so it comes no more often than every
// max(RENEW_MIN, 2 x size) insertions: at most half a copy per insertion.
// Insertion order is kept (a renewal copies in order). An iteration begun
// before a set() that renews goes on over the entries as they were.

const RENEW_MIN = 512;

export class YoungMap<K, V> {
  #map = new Map<K, V>();
  #inserts = 0;

  get(key: K): V | undefined {
    return this.#map.get(key);
  }

  set(key: K, value: V): this {
    if (++this.#inserts >= RENEW_MIN && this.#inserts >= 2 * this.#map.size) {
      this.#map = new Map(this.#map);
      this.#inserts = 0;
    }
    this.#map.set(key, value);
    return this;
  }

  delete(key: K): boolean {
    return this.#map.delete(key);
  }

  get size(): number {
    return this.#map.size;
  }

  /** The oldest key (first inserted of those left), or undefined. */
  first(): K | undefined {
    return this.#map.keys().next().value;
  }

  values(): IterableIterator<V> {
    return this.#map.values();
  }

  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.#map.entries();
  }
}
