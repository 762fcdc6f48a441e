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
  readonly #ring: (string | undefined)[];
  readonly #at: Int32Array;
  #head = 0;
  #count = 0;

  /** `max`: policy.dedupe_entries, fixed at start; the window is read on every question. */
  constructor(max: number, private readonly windowMs: () => number) {
    this.#ring = new Array<string | undefined>(max).fill(undefined);
    this.#at = new Int32Array(max);
  }

  /** True if `key` was asked within the window; otherwise it is remembered as asked now. */
  repeated(key: string, nowMs: number): boolean {
    const windowMs = this.windowMs();
    const now = Math.floor(nowMs / 1000) - EPOCH;
    const first = this.#asked.get(key);
    if (first !== undefined && (now - first) * 1000 < windowMs) return true;
    const cap = this.#ring.length;
    while (this.#count > 0 && (this.#count >= cap || (now - this.#at[this.#head]!) * 1000 >= windowMs)) {
      const old = this.#ring[this.#head]!;
      // A key asked again after its window has a newer second: that entry stays.
      if (this.#asked.get(old) === this.#at[this.#head]) this.#asked.delete(old);
      this.#ring[this.#head] = undefined;
      this.#head = (this.#head + 1) % cap;
      this.#count--;
    }
    this.#asked.set(key, now);
    const tail = (this.#head + this.#count) % cap;
    this.#ring[tail] = key;
    this.#at[tail] = now;
    this.#count++;
    return false;
  }

  /** Questions remembered. */
  get size(): number {
    return this.#asked.size;
  }
}
