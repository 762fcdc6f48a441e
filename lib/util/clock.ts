// clock.ts - the time sluice runs on, injected everywhere it is read.
//
// Holds, idle timeouts, rate windows, decay, repeats and the daemon's
// periodic work all take their time and their timers from one Clock, passed
// in. The system clock is the real one. A ManualClock stands still until it
// is advanced, and runs the timers that come due on the way, in time order:
// tests of holds and timeouts advance it instead of sleeping, and a log can
// be replayed on its own timeline. This is the only module that reads the
// system's time.

/** Milliseconds since the epoch. */
export type Now = () => number;

/** A pending timer; clear() it to cancel. */
export interface Timer {
  /** Lets the process exit while only this timer is pending (no-op on a ManualClock). */
  unref(): Timer;
}

export interface Clock {
  readonly now: Now;
  setTimeout(fn: () => void, ms: number): Timer;
  setInterval(fn: () => void, ms: number): Timer;
  /** Cancels a timeout or an interval; a timer already run or cleared is ignored. */
  clear(timer: Timer | undefined): void;
}

/**
 * The longest delay Node's timers take (2^31 - 1 ms, about 24.8 days): a
 * longer one would fire after 1 ms (a config's 30d interval as a busy loop),
 * so it is cut to this.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const timerMs = (ms: number): number => (ms > MAX_TIMER_MS ? MAX_TIMER_MS : ms);

/** The real clock and Node's timers. */
export const SYSTEM_CLOCK: Clock = Object.freeze({
  now: Date.now,
  setTimeout: (fn: () => void, ms: number): Timer => setTimeout(fn, timerMs(ms)),
  setInterval: (fn: () => void, ms: number): Timer => setInterval(fn, timerMs(ms)),
  clear: (timer: Timer | undefined): void => { if (timer) clearTimeout(timer as NodeJS.Timeout); },
});

interface Pending extends Timer {
  at: number;
  readonly seq: number;
  readonly every: number;
  readonly fn: () => void;
}

/** A clock that moves only when advanced; timers run as their time is passed. */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #pending = new Set<Pending>();

  constructor(start = 1_800_000_000_000) {
    this.#now = start;
  }

  readonly now: Now = () => this.#now;

  setTimeout(fn: () => void, ms: number): Timer {
    return this.#add(fn, ms, 0);
  }

  setInterval(fn: () => void, ms: number): Timer {
    return this.#add(fn, ms, Math.max(1, ms));
  }

  clear(timer: Timer | undefined): void {
    if (timer) this.#pending.delete(timer as Pending);
  }

  /** Timers waiting to run. */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * Moves time forward by ms, running every timer that comes due on the way
   * at its own time, earliest first (ties in the order they were set); an
   * interval runs as many times as it comes due. A timer set by a timer
   * runs too if it falls within the step.
   */
  advance(ms: number): void {
    const end = this.#now + Math.max(0, ms);
    for (;;) {
      let next: Pending | undefined;
      for (const p of this.#pending) if (p.at <= end && (next === undefined || p.at < next.at || (p.at === next.at && p.seq < next.seq))) next = p;
      if (next === undefined) break;
      this.#now = Math.max(this.#now, next.at);
      if (next.every > 0) next.at += next.every;
      else this.#pending.delete(next);
      next.fn();
    }
    this.#now = end;
  }

  #add(fn: () => void, ms: number, every: number): Timer {
    const p: Pending = { at: this.#now + Math.max(0, ms), seq: this.#seq++, every, fn, unref: () => p };
    this.#pending.add(p);
    return p;
  }
}
