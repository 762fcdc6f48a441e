// shedding.ts - sluice's own overload, looked at once a second.
//
// While the event loop runs later than limits.max_loop_lag, no reply is held
// (a held reply is a promise of a timely answer later, which a lagging loop
// cannot keep); when holds were refused for want of budget since the last
// look, the hold budget is spent. Each condition is one Overload: a warning
// when it starts, an info line when it ends. What "holding" means is the
// engine's; this only switches it through HoldControl.
//
// Config keys: limits.max_loop_lag, tarpit.budget, tarpit.budget_per_network
// (through Limits).

import { Overload } from './overload.js';
import type { LoopLag } from './lag.js';
import type { Shield } from './shield.js';

/** What the engine lets the daemon do about holds. */
export interface HoldControl {
  /** While on, no hold is granted. */
  shedHolds(on: boolean): void;
  /** Holds refused for want of budget since start. */
  readonly holdsRefused: number;
}

export interface Limits {
  readonly maxLoopLagMs: number;
  readonly budget: number;
  readonly budgetPerNetwork: number;
}

interface Log {
  warn(fields: object, msg: string): void;
  info(fields: object, msg: string): void;
}

export class LoadShedding {
  readonly #lag: LoopLag;
  readonly #holds: HoldControl;
  readonly #limits: () => Limits;
  readonly #lagging: Overload;
  readonly #budgetSpent: Overload;
  #refused: number;

  constructor(shield: Shield, log: () => Log, lag: LoopLag, holds: HoldControl, limits: () => Limits) {
    this.#lag = lag;
    this.#holds = holds;
    this.#limits = limits;
    this.#refused = holds.holdsRefused;
    this.#lagging = new Overload(shield, log, 'OVERLOAD_LOOP_LAG', 'the event loop keeps up again: holding replies again');
    this.#budgetSpent = new Overload(shield, log, 'OVERLOAD_HOLD_BUDGET', 'hold budget available again');
  }

  /** Reads the loop's lag since the last check and sets both conditions. */
  check(): void {
    const lagMs = this.#lag.read();
    const l = this.#limits();
    const lagging = l.maxLoopLagMs > 0 && lagMs > l.maxLoopLagMs;
    this.#holds.shedHolds(lagging);
    this.#lagging.set(lagging, () => `the event loop ran ${Math.round(lagMs)} ms late (limits.max_loop_lag ${l.maxLoopLagMs} ms): holding no replies`, { lag_ms: Math.round(lagMs) });
    const refused = this.#holds.holdsRefused;
    this.#budgetSpent.set(refused > this.#refused, () => `hold budget spent (tarpit.budget ${l.budget}, tarpit.budget_per_network ${l.budgetPerNetwork}): answering at once`, { refused });
    this.#refused = refused;
  }
}
