// lag.ts - how late the event loop runs.
//
// A heartbeat every resolution ms on the real timers (not the injected
// clock: this measures the real loop) notes how late it fired; read() takes
// the worst lateness since the last read, counting a beat that is overdue
// right now, and starts afresh. The daemon reads once a second, sheds holds
// while it passes limits.max_loop_lag, and the metrics gauge reports the last
// reading. perf_hooks' monitorEventLoopDelay was used before: it takes no
// sample while the loop is blocked, so one long synchronous stall - the case
// that matters - never showed in its maximum (nodejs/node#34661; a 400 ms
// block read as 10 ms here). Knows no protocol.

export class LoopLag {
  readonly #every: number;
  readonly #timer: NodeJS.Timeout;
  #due: number;
  #worst = 0;
  /** The worst lateness of the last reading, in milliseconds. */
  lastMs = 0;

  constructor(resolutionMs = 20) {
    this.#every = resolutionMs;
    this.#due = performance.now() + resolutionMs;
    this.#timer = setInterval(() => this.#beat(), resolutionMs);
    this.#timer.unref();
  }

  #beat(): void {
    const now = performance.now();
    this.#worst = Math.max(this.#worst, now - this.#due);
    this.#due = now + this.#every;
  }

  /** The worst lateness since the last read, in milliseconds. */
  read(): number {
    this.lastMs = Math.max(0, this.#worst, performance.now() - this.#due);
    this.#worst = 0;
    return this.lastMs;
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
