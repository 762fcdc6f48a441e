// breaker.ts - the circuit breaker for a storm of internal errors.
//
// Counts 9xx errors in a sliding window. When the count reaches the limit the
// breaker trips once: the daemon restarts its services in place (after
// flushing state) and logs why; it never exits silently. It re-arms after a
// full quiet window. Time comes from the injected clock.
//
// Config keys: shield.breaker_limit, shield.breaker_window.

import type { Now } from '../util/clock.js';

export class CircuitBreaker {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #now: Now;
  #times: number[] = [];
  #tripped = false;

  constructor(limit: number, windowMs: number, now: Now) {
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /** Records one internal error; true exactly when this one trips the breaker. */
  record(): boolean {
    const now = this.#now();
    const since = now - this.#windowMs;
    // The array never holds more than `limit` entries: old ones fall out first.
    this.#times = this.#times.filter((t) => t > since);
    this.#times.push(now);
    if (this.#times.length > this.#limit) this.#times.shift();
    if (this.#tripped) return false;
    if (this.#times.length >= this.#limit) {
      this.#tripped = true;
      return true;
    }
    return false;
  }

  /** Re-arms the breaker (after the restart it asked for). */
  reset(): void {
    this.#times = [];
    this.#tripped = false;
  }

  get count(): number {
    return this.#times.length;
  }
}
