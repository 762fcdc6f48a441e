// repeats.ts - the questions Postfix asked lately, to recognise its repeats.
//
// Postfix re-sends a request after a timeout (on a new connection) and asks
// the same RCPT once per restriction list; each such question counts once
// within policy.dedupe_window. Every question is remembered for the same
// window, so the order questions were asked in is also the order they
// expire: a ring of (key, second) in arrival order, read from its oldest end
// both for expiry and for the policy.dedupe_entries cap, beside a Map from
// key to the second it was asked. No recency list is kept (an LRU cache
// moves an entry on every read, which a repeat check does not need), and no
// Map is iterated from its front (V8 walks past every deleted entry there).

/** Seconds are counted from here, so the stored times stay small integers. */
const EPOCH = Math.floor(Date.now() / 1000);

export class RecentQuestions {
  readonly #asked = new Map<string, number>();
  readonly #max: number;
  #ring: (string | undefined)[];
  #at: Int32Array;
  #head = 0;
  #count = 0;

  /**
   * `max`: policy.dedupe_entries, fixed at start; the window is read on
   * every question. The ring starts small and doubles as it fills, up to max.
   */
  constructor(max: number, private readonly windowMs: () => number) {
    this.#max = max;
    this.#ring = new Array<string | undefined>(Math.min(max, 1024)).fill(undefined);
    this.#at = new Int32Array(this.#ring.length);
  }

  /** True if `key` was asked within the window; otherwise it is remembered as asked now. */
  repeated(key: string, nowMs: number): boolean {
    const windowMs = this.windowMs();
    const now = Math.floor(nowMs / 1000) - EPOCH;
    const first = this.#asked.get(key);
    if (first !== undefined && (now - first) * 1000 < windowMs) return true;
    while (this.#count > 0 && (this.#count >= this.#max || (now - this.#at[this.#head]!) * 1000 >= windowMs)) {
      const old = this.#ring[this.#head]!;
      // A key asked again after its window has a newer second: that entry stays.
      if (this.#asked.get(old) === this.#at[this.#head]) this.#asked.delete(old);
      this.#ring[this.#head] = undefined;
      this.#head = (this.#head + 1) % this.#ring.length;
      this.#count--;
    }
    if (this.#count === this.#ring.length) this.#grow();
    this.#asked.set(key, now);
    const tail = (this.#head + this.#count) % this.#ring.length;
    this.#ring[tail] = key;
    this.#at[tail] = now;
    this.#count++;
    return false;
  }

  /** Questions remembered. */
  get size(): number {
    return this.#asked.size;
  }

  /** Twice the room (up to max), oldest first from slot 0. */
  #grow(): void {
    const cap = Math.min(this.#max, this.#ring.length * 2);
    const ring = new Array<string | undefined>(cap).fill(undefined);
    const at = new Int32Array(cap);
    for (let i = 0; i < this.#count; i++) {
      const from = (this.#head + i) % this.#ring.length;
      ring[i] = this.#ring[from];
      at[i] = this.#at[from]!;
    }
    this.#ring = ring;
    this.#at = at;
    this.#head = 0;
  }
}
