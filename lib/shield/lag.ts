// lag.ts - how late the event loop runs.
//
// One event-loop delay histogram (perf_hooks) for the whole daemon. read()
// takes the worst delay since the last read and starts afresh; the daemon
// reads once a second, sheds holds while it passes limits.max_loop_lag, and
// the metrics gauge reports the last reading. Knows no protocol.

import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

export class LoopLag {
  readonly #h: IntervalHistogram;
  /** The worst delay of the last reading, in milliseconds. */
  lastMs = 0;

  constructor(resolutionMs = 10) {
    this.#h = monitorEventLoopDelay({ resolution: resolutionMs });
    this.#h.enable();
  }

  /** The worst delay since the last read, in milliseconds. */
  read(): number {
    this.lastMs = this.#h.count > 0 ? this.#h.max / 1e6 : 0;
    this.#h.reset();
    return this.lastMs;
  }

  stop(): void {
    this.#h.disable();
  }
}
