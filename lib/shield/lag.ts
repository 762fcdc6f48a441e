// lag.ts - is the event loop keeping up?
//
// Samples how late the loop runs (perf_hooks' event-loop delay histogram)
// and, each time it is asked, says whether the worst delay since the last
// time passed the limit, and whether that changed. The daemon asks once a
// second and, while the loop lags, grants no holds (DESIGN: 4xx overload,
// shed and logged on the transition). A limit of 0 turns the check off.
// Knows no protocol.

import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

export interface LagReading {
  readonly lagging: boolean;
  readonly changed: boolean;
  /** The worst delay since the last reading, in milliseconds. */
  readonly worstMs: number;
}

export class LoopLag {
  readonly #h: IntervalHistogram;
  #lagging = false;

  constructor(resolutionMs = 10) {
    this.#h = monitorEventLoopDelay({ resolution: resolutionMs });
    this.#h.enable();
  }

  read(limitMs: number): LagReading {
    const worstMs = this.#h.count > 0 ? this.#h.max / 1e6 : 0;
    this.#h.reset();
    const lagging = limitMs > 0 && worstMs > limitMs;
    const changed = lagging !== this.#lagging;
    this.#lagging = lagging;
    return { lagging, changed, worstMs };
  }

  get lagging(): boolean {
    return this.#lagging;
  }

  stop(): void {
    this.#h.disable();
  }
}
