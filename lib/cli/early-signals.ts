// early-signals.ts - stop and reload signals that arrive before the daemon can take them.
//
// From the moment bin/sluiced runs until the daemon has installed its handlers
// (module loading, config, a snapshot of a million keys to restore: seconds),
// SIGTERM, SIGINT and SIGHUP would take their default action and end the
// process with nothing logged. bin/sluiced loads this small module first;
// each such signal is kept, once, and acted on when the daemon is up, by
// sending it again to this process (so it goes through the daemon's own
// handlers: a stop drains, a reload rereads the file). Where no daemon
// starts (--check-config, the detaching parent), the signals are released
// and a kept stop signal takes its default action after all.

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

export class EarlySignals {
  readonly #kept: NodeJS.Signals[] = [];
  readonly #keep = (sig: NodeJS.Signals): void => {
    if (!this.#kept.includes(sig)) this.#kept.push(sig);
  };
  #holding = true;

  constructor() {
    for (const sig of SIGNALS) process.on(sig, this.#keep);
  }

  /**
   * Stops keeping and sends each kept signal again: to the daemon's handlers
   * once it is up, or to the default action (stops only) where none exist.
   */
  release(): void {
    if (!this.#holding) return;
    this.#holding = false;
    for (const sig of SIGNALS) process.off(sig, this.#keep);
    for (const sig of this.#kept) {
      if (sig === 'SIGHUP' && process.listenerCount(sig) === 0) continue; // nothing to reload
      process.kill(process.pid, sig);
    }
  }
}

/** Starts keeping stop and reload signals (called by bin/sluiced before it loads the daemon). */
export function holdSignals(): EarlySignals {
  return new EarlySignals();
}
