// repeats.ts - the questions Postfix asked lately, to recognise its repeats.
//
// Postfix re-sends a request after a timeout (on a new connection) and asks
// the same RCPT once per restriction list; each such question counts once
// within policy.dedupe_window. Every question is remembered for the same
// window, so the order questions were asked in is also the order they
// expire: a ring in arrival order, read from its oldest end both for expiry
// and for the policy.dedupe_entries cap.
//
// A question is remembered as a 64-bit hash of its key (two 32-bit hashes
// of one pass over its parts), not as the key: at the default 100,000 entries the
// key strings and a Map of them took ~14 MB that the garbage collector had
// to carry into the old generation and mark again and again (the repeat
// check cost the policy bench ~6% of its throughput then, about half that
// now). Ring and index are typed arrays (~2.2 MB at 100,000): no object per
// question at all. Two different questions are taken for one only if both
// hashes agree - about once in 10^14 questions at a full 100,000 - and the
// cost of that is one question counted once too few.
//
// The index is open addressing with linear probing over ring slots, at most
// half full; a slot leaving the ring is taken out of the index by shifting
// later members of its probe run back (no tombstones, so probes stay short
// under constant turnover).

const FIRST_RING = 1024;
/** Between the parts of a question, as "|" would be in the key joined. */
const SEPARATOR = 0x7c;

export class RecentQuestions {
  readonly #max: number;
  // The ring, oldest at #head: each question's two hashes and the second it was asked.
  #h1: Uint32Array;
  #h2: Uint32Array;
  #at: Int32Array;
  #head = 0;
  #count = 0;
  /** Ring slot + 1 for each remembered question, 0 where empty; size a power of two. */
  #index: Int32Array;
  #mask: number;
  /** Seconds are counted from the first question, so the stored times stay small integers. */
  #epoch: number | undefined;

  /**
   * `max`: policy.dedupe_entries, fixed at start; the window is read on
   * every question. The ring starts small and doubles as it fills, up to max.
   */
  constructor(max: number, private readonly windowMs: () => number) {
    this.#max = max;
    const ring = Math.min(max, FIRST_RING);
    this.#h1 = new Uint32Array(ring);
    this.#h2 = new Uint32Array(ring);
    this.#at = new Int32Array(ring);
    this.#index = new Int32Array(indexSize(ring));
    this.#mask = this.#index.length - 1;
  }

  /**
   * True if the question `key` (its parts, as if joined by "|") was asked
   * within the window; otherwise it is remembered as asked now. The parts are
   * hashed where they lie: joined first, the key would be built and then
   * flattened again for the hash, which took as long as hashing it.
   */
  repeated(key: readonly string[], nowMs: number): boolean {
    const windowMs = this.windowMs();
    const seconds = Math.floor(nowMs / 1000);
    const now = seconds - (this.#epoch ??= seconds);
    // Two hashes in one pass: FNV-1a, and a multiply-xorshift with another constant.
    let h1 = 0x811c9dc5;
    let h2 = 0x9747b28c;
    let length = 0;
    for (let p = 0; p < key.length; p++) {
      const part = key[p]!;
      for (let i = p === 0 ? 0 : -1; i < part.length; i++) {
        const c = i < 0 ? SEPARATOR : part.charCodeAt(i);
        h1 = Math.imul(h1 ^ c, 0x01000193);
        h2 = Math.imul(h2 ^ c, 0x5bd1e995);
        h2 ^= h2 >>> 13;
      }
      length += part.length + (p === 0 ? 0 : 1);
    }
    h1 = fmix(h1 ^ length);
    h2 = fmix(h2);
    const found = this.#find(h1, h2);
    if (found >= 0 && (now - this.#at[found]!) * 1000 < windowMs) return true;
    // Expire from the oldest end. A question found but out of its window is
    // older than every live one, so it goes here too before it is asked anew.
    while (this.#count > 0 && (this.#count >= this.#max || (now - this.#at[this.#head]!) * 1000 >= windowMs)) {
      this.#unindex(this.#head);
      this.#head = (this.#head + 1) % this.#h1.length;
      this.#count--;
    }
    if (this.#count === this.#h1.length) this.#grow();
    const tail = (this.#head + this.#count) % this.#h1.length;
    this.#h1[tail] = h1;
    this.#h2[tail] = h2;
    this.#at[tail] = now;
    this.#count++;
    this.#place(tail);
    return false;
  }

  /** Questions remembered. */
  get size(): number {
    return this.#count;
  }

  /** The ring slot holding this hash pair, or -1. */
  #find(h1: number, h2: number): number {
    const index = this.#index;
    for (let i = h1 & this.#mask; ; i = (i + 1) & this.#mask) {
      const cell = index[i]!;
      if (cell === 0) return -1;
      if (this.#h1[cell - 1] === h1 && this.#h2[cell - 1] === h2) return cell - 1;
    }
  }

  /** Takes ring slot `slot` out of the index, moving later members of its probe run back. */
  #unindex(slot: number): void {
    const index = this.#index;
    const mask = this.#mask;
    let hole = this.#h1[slot]! & mask;
    while (index[hole] !== slot + 1) hole = (hole + 1) & mask;
    for (let j = (hole + 1) & mask; index[j] !== 0; j = (j + 1) & mask) {
      const home = this.#h1[index[j]! - 1]! & mask;
      // The member at j may move back to the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      index[hole] = index[j]!;
      hole = j;
    }
    index[hole] = 0;
  }

  /** Twice the room (up to max), oldest first from slot 0; the index is built again. */
  #grow(): void {
    const cap = Math.min(this.#max, this.#h1.length * 2);
    const h1 = new Uint32Array(cap);
    const h2 = new Uint32Array(cap);
    const at = new Int32Array(cap);
    for (let i = 0; i < this.#count; i++) {
      const from = (this.#head + i) % this.#h1.length;
      h1[i] = this.#h1[from]!;
      h2[i] = this.#h2[from]!;
      at[i] = this.#at[from]!;
    }
    this.#h1 = h1;
    this.#h2 = h2;
    this.#at = at;
    this.#head = 0;
    this.#index = new Int32Array(indexSize(cap));
    this.#mask = this.#index.length - 1;
    for (let s = 0; s < this.#count; s++) this.#place(s);
  }

  /** Enters ring slot `slot` in the index, at the first free cell from its hash's home. */
  #place(slot: number): void {
    let i = this.#h1[slot]! & this.#mask;
    while (this.#index[i] !== 0) i = (i + 1) & this.#mask;
    this.#index[i] = slot + 1;
  }
}

/** A power of two at least twice the ring: the index stays at most half full. */
function indexSize(ring: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(2, ring * 2)));
}

/** Murmur3's finaliser: every input bit moves every output bit. */
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
