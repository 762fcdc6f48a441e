// store.ts - the reputation store: one LRU of entries, bounded by count and age.
//
// lru-cache bounded by reputation.max_entries; an entry expires
// reputation.ttl after its last change (checked on read). The LRU maps a key to a slot number;
// the entry itself is ten doubles in one Float64Array slab (score, when,
// first seen, seven counters: entry.ts), so a million entries cost no objects and no
// boxed numbers. A slot freed by eviction or expiry is reused. Only changes
// make an entry recent, so eviction and the TTL agree on what is old, and a
// read is a plain lookup. A session reads its keys at every stage through
// refs (slot and generation), which skip the lookup while the slot is theirs.
// Scores decay on read (score.ts); time comes from the injected clock.
// Iteration for snapshots and `top` goes by slot (each slot knows its key),
// ordered by time of last change, which is the LRU's own order: walking the
// LRU (rkeys()) costs a map lookup per key, a second for a million, and
// dump() is quadratic in lru-cache 11 (measured: 100k entries took ~4 s, a
// million did not finish in ten minutes).
//
// Config keys: reputation.max_entries, reputation.ttl, reputation.half_life.

import { LRUCache } from 'lru-cache';
import { decay } from './score.js';
import { AT, COUNTER_AT, ENTRY_FIELDS, FIELDS, FIRST, S, type Counter, type Entry } from './entry.js';
import type { Now } from '../util/clock.js';

export type { Counter } from './entry.js';

/**
 * A session's hold on a key's entry: reading it again costs an array read,
 * not a lookup in a map of a million keys. It stays good while its slot's
 * generation is unchanged (a slot freed by eviction, expiry or forget gets a
 * new one); a key without an entry is looked up again once any key has been
 * added since.
 */
export interface Ref {
  readonly key: string;
  slot: number;
  gen: number;
  added: number;
}

/** What watches a store: its changes and its forgets. */
export interface StoreWatcher {
  changed(key: string, delta: number, counter: Counter | undefined, at: number): void;
  forgot(key: string): void;
}

export interface StoreOptions {
  readonly maxEntries: number;
  readonly ttlMs: number;
  readonly halfLifeMs: number;
  readonly now: Now;
}

const COUNTER = COUNTER_AT;

export class ReputationStore {
  readonly #lru: LRUCache<string, number>;
  readonly #opts: StoreOptions;
  readonly #slab: Float64Array;
  readonly #gen: Uint32Array;
  /** The key in each slot; undefined while the slot is free. */
  readonly #keyOf: (string | undefined)[];
  readonly #free: number[] = [];
  #next = 0;
  /** Bumped whenever a key gets a slot (so that refs to absent keys look again). */
  #added = 0;
  evictions = 0;
  /** Told of every change add() makes and every forget() (the fleet store shares them). */
  #watcher: StoreWatcher | undefined;

  constructor(opts: StoreOptions) {
    this.#opts = opts;
    // One spare slot: a new entry takes its slot before set() evicts the oldest.
    this.#slab = new Float64Array((opts.maxEntries + 1) * FIELDS);
    this.#gen = new Uint32Array(opts.maxEntries + 1);
    // Sized once, like the LRU's own lists (8 bytes a slot).
    this.#keyOf = new Array<string | undefined>(opts.maxEntries + 1).fill(undefined);
    // No lru-cache TTL: each entry already holds when it was last written
    // (AT), so #get() expires it; that spares two arrays and a clock call per read.
    // `max`, not boundedLru(): lru-cache then keeps its links in typed
    // arrays sized once; with lists grown on demand, sluiced restoring a
    // million keys took 409 MB instead of 261 (bench:engine). The store is
    // sized to be filled.
    this.#lru = new LRUCache<string, number>({
      max: opts.maxEntries,
      // A slot is freed when its key is evicted, deleted (forget, expiry) or
      // given another slot (put() over a key already there).
      dispose: (slot, _k, reason) => {
        if (reason === 'evict') this.evictions++;
        this.#gen[slot]!++;
        this.#keyOf[slot] = undefined;
        this.#free.push(slot);
      },
    });
  }

  /**
   * The live slot for a key, expiring it when its TTL has passed. Only writes
   * make an entry the most recent (`touch`): recency then runs in the same
   * order as the TTL, and reads on the hot path stay cheap.
   */
  #get(key: string, now: number, touch = false): number | undefined {
    const slot = touch ? this.#lru.get(key) : this.#lru.peek(key);
    if (slot === undefined) return undefined;
    if (!this.#fresh(slot, now)) {
      this.#lru.delete(key);
      return undefined;
    }
    return slot;
  }

  /** The slot was written within the TTL. */
  #fresh(slot: number, now: number): boolean {
    return now - this.#slab[slot * FIELDS + AT]! < this.#opts.ttlMs;
  }

  #slot(): number {
    this.#added++;
    return this.#free.pop() ?? this.#next++;
  }

  #score(slot: number, now: number): number {
    const b = slot * FIELDS;
    return decay(this.#slab[b + S]!, this.#slab[b + AT]!, now, this.#opts.halfLifeMs);
  }

  /** The decayed score; 0 for a key never seen (or ""). */
  score(key: string | undefined, now = this.#opts.now()): number {
    if (!key) return 0;
    const slot = this.#get(key, now);
    return slot === undefined ? 0 : this.#score(slot, now);
  }

  /** A ref to read a key's score and counters again cheaply ("" never has an entry). */
  ref(key: string): Ref {
    return { key, slot: -1, gen: 0, added: -1 };
  }

  /** The ref's live slot, looked up again only when it may have changed. */
  #deref(r: Ref, now: number): number | undefined {
    if (!r.key) return undefined;
    if (r.slot >= 0 ? this.#gen[r.slot] !== r.gen : r.added !== this.#added) {
      r.slot = this.#get(r.key, now) ?? -1;
      r.gen = r.slot >= 0 ? this.#gen[r.slot]! : 0;
      if (r.slot < 0) r.added = this.#added;
    }
    if (r.slot < 0) return undefined;
    if (!this.#fresh(r.slot, now)) {
      this.#lru.delete(r.key);
      r.slot = -1;
      r.added = this.#added;
      return undefined;
    }
    return r.slot;
  }

  /** score() through a ref. */
  scoreOf(r: Ref, now: number): number {
    const slot = this.#deref(r, now);
    return slot === undefined ? 0 : this.#score(slot, now);
  }

  /** True when the ref's key has a live entry. */
  knows(r: Ref, now: number): boolean {
    return this.#deref(r, now) !== undefined;
  }

  /** count() through a ref. */
  countOf(r: Ref, counter: Counter, now: number): number {
    const slot = this.#deref(r, now);
    return slot === undefined ? 0 : this.#slab[slot * FIELDS + COUNTER[counter]]!;
  }

  /** A copy of the entry as stored (score as of `at`). */
  entry(key: string): Entry | undefined {
    const slot = this.#get(key, this.#opts.now());
    return slot === undefined ? undefined : this.#read(slot * FIELDS);
  }

  /** How many times a counter was bumped for this key. */
  count(key: string, counter: Counter, now = this.#opts.now()): number {
    const slot = this.#get(key, now);
    return slot === undefined ? 0 : this.#slab[slot * FIELDS + COUNTER[counter]]!;
  }

  /** The entry whose values start at offset b of the slab. */
  #read(b: number): Entry {
    const v = this.#slab;
    return Object.fromEntries(ENTRY_FIELDS.map((f, i) => [f, v[b + i]!])) as Entry;
  }

  /** Moves a key's score by delta and bumps a counter; creates the entry when new. */
  add(key: string | undefined, delta: number, counter?: Counter): void {
    if (!key) return;
    const now = this.#opts.now();
    let slot = this.#get(key, now, true);
    if (slot === undefined) {
      slot = this.#slot();
      this.#slab.fill(0, slot * FIELDS, slot * FIELDS + FIELDS);
      this.#slab[slot * FIELDS + FIRST] = now;
      this.#slab[slot * FIELDS + AT] = now;
      this.#keyOf[slot] = key;
      this.#lru.set(key, slot);
    }
    // (An entry found by #get() is already the most recent.)
    const b = slot * FIELDS;
    this.#slab[b + S] = this.#score(slot, now) + delta;
    this.#slab[b + AT] = now;
    if (counter) this.#slab[b + COUNTER[counter]]!++;
    this.#watcher?.changed(key, delta, counter, now);
  }

  /** Tells `w` of every change add() makes and every forget() from now on (put() and load() are not told: they copy entries in). */
  watch(w: StoreWatcher | undefined): void {
    this.#watcher = w;
  }

  /** True when the key has a live entry. */
  has(key: string, now = this.#opts.now()): boolean {
    return this.#get(key, now) !== undefined;
  }

  /** Drops a key's entry (an operator's forget; `quiet`: not told to the watcher, for one that came from it). */
  forget(key: string, quiet = false): boolean {
    if (!quiet) this.#watcher?.forgot(key);
    return this.#lru.delete(key);
  }

  get size(): number {
    return this.#lru.size;
  }

  /** Copies of every entry, oldest first (the order a snapshot is written in). */
  entries(): [string, Entry][] {
    const now = this.#opts.now();
    const out: [string, Entry][] = [];
    for (const slot of this.exportOrder(now)) this.exportSlot(slot, now, (k, _values, at) => out.push([k, this.#read(at)]));
    return out;
  }

  /** The live slots, least recently changed first: the LRU's own order, since only changes make an entry recent. */
  exportOrder(now: number): Uint32Array {
    const live: number[] = [];
    for (let slot = 0; slot < this.#next; slot++) if (this.#keyOf[slot] !== undefined && this.#fresh(slot, now)) live.push(slot);
    const slab = this.#slab;
    return leastRecentFirst(live.length, (i) => slab[live[i]! * FIELDS + AT]!).map((i) => live[i]!);
  }

  /**
   * Every live entry in no particular order, with its decayed score and
   * counters (for `top`, which ranks them itself): one pass over the slots,
   * no lookups, no objects.
   */
  scan(now: number, fn: (key: string, score: number, ok: number, ab: number, abh: number) => void): void {
    const keys = this.#keyOf;
    const v = this.#slab;
    for (let slot = 0; slot < this.#next; slot++) {
      const key = keys[slot];
      if (key === undefined || !this.#fresh(slot, now)) continue;
      const b = slot * FIELDS;
      fn(key, this.#score(slot, now), v[b + COUNTER.ok]!, v[b + COUNTER.ab]!, v[b + COUNTER.abh]!);
    }
  }

  /** Hands the slot's entry to fn, without copying; false when it has gone since (evicted, expired, forgotten). */
  /** Slots 0 to this may hold an entry (exportSlot says which do): the snapshot writer walks them in order. */
  get exportSlots(): number {
    return this.#next;
  }

  exportSlot(slot: number, now: number, fn: (key: string, values: Float64Array, at: number) => void): boolean {
    const key = this.#keyOf[slot];
    if (key === undefined || !this.#fresh(slot, now)) return false;
    fn(key, this.#slab, slot * FIELDS);
    return true;
  }

  /** Puts back one entry (eight values from `at`, as exportSlot gave them); false when it is past the TTL. */
  put(key: string, values: ArrayLike<number>, at = 0): boolean {
    const age = this.#opts.now() - values[at + AT]!;
    if (age >= this.#opts.ttlMs) return false;
    const slot = this.#slot();
    for (let i = 0; i < FIELDS; i++) this.#slab[slot * FIELDS + i] = values[at + i]!;
    this.#keyOf[slot] = key;
    this.#lru.set(key, slot);
    return true;
  }

  /**
   * Takes another copy's value for a key (the fleet store's, with what every
   * host wrote): the entry's values replaced, or made; the watcher is not
   * told (it is no change of ours). False when it is past the TTL.
   */
  adopt(key: string, values: ArrayLike<number>): boolean {
    const now = this.#opts.now();
    const slot = this.#get(key, now, true);
    if (slot === undefined) return this.put(key, values);
    if (now - values[AT]! >= this.#opts.ttlMs) return false;
    for (let i = 0; i < FIELDS; i++) this.#slab[slot * FIELDS + i] = values[i]!;
    return true;
  }

  /** Adds a change of ours not yet in an adopted value (a delta as of now and counts per counter), without telling the watcher. */
  nudge(key: string, delta: number, counts: ArrayLike<number>): void {
    const now = this.#opts.now();
    const slot = this.#get(key, now);
    if (slot === undefined) return;
    const b = slot * FIELDS;
    this.#slab[b + S] = this.#score(slot, now) + delta;
    this.#slab[b + AT] = now;
    for (let c = 0; c < counts.length; c++) this.#slab[b + FIRST + 1 + c]! += counts[c]!;
  }

  /** Loads entries (oldest first); ones past the TTL are dropped. */
  load(entries: Iterable<[string, Entry]>): number {
    let n = 0;
    for (const [k, e] of entries) {
      if (this.put(k, ENTRY_FIELDS.map((f) => e[f]))) n++;
    }
    return n;
  }

}

/**
 * 0 .. n-1 ordered by `changed(i)`, the time entry i last changed, earliest
 * first (ties in index order), with one native sort: each index becomes one
 * number, its time (ms after the earliest) above the index.
 */
export function leastRecentFirst(n: number, changed: (i: number) => number): Uint32Array {
  let oldest = Infinity;
  for (let i = 0; i < n; i++) oldest = Math.min(oldest, changed(i));
  const scale = 2 ** Math.ceil(Math.log2(n + 1));
  // Past 2^53 a double no longer holds whole numbers; changes further apart
  // than that (over 99 days at a million entries) tie, in index order.
  const latest = Math.floor(Number.MAX_SAFE_INTEGER / scale);
  const keyed = new Float64Array(n);
  for (let i = 0; i < n; i++) keyed[i] = Math.min(Math.floor(changed(i) - oldest), latest) * scale + i;
  keyed.sort();
  const order = new Uint32Array(n);
  for (let j = 0; j < n; j++) order[j] = keyed[j]! % scale;
  return order;
}
