// idle.ts - the idle timeout of a listener's connections, as one sweep.
//
// A sweep over the connections rather than a timer per socket: node refreshes
// a socket's timer on every read and every write, which cost more per
// request than the rest of the listener. Here a read or a write only notes
// the sweep's clock (`now`, set at each sweep), and each sweep closes the
// connections idle for at least the timeout: a connection goes between
// idle_timeout and idle_timeout + 2 sweeps after its last activity, and a
// sweep comes every eighth of the timeout (at most every second, at least
// every 50 ms). A connection with a reply held or a decision in flight is
// not idle. Time and timers are the shield's injected clock.
//
// Config keys: limits.idle_timeout (through the listener).

import { TransportError } from '../shield/errors.js';
import type { Shield, ShieldContext } from '../shield/shield.js';
import type { Timer } from '../util/clock.js';

/** What the sweep needs of a connection. */
export interface Idler extends ShieldContext {
  /** When it last read or wrote, as the sweep's `now` had it then. */
  activeAt: number;
  readonly closed: boolean;
  /** Deciding or holding: not idle, however long it has been. */
  readonly busy: boolean;
}

export class IdleSweep<C extends Idler> {
  now: number;
  #timer: Timer | undefined;

  constructor(private readonly shield: Shield, private readonly each: () => Iterable<C>) {
    this.now = shield.clock.now();
  }

  /** Sweeps for this timeout from now on; 0 stops sweeping. */
  set(idleMs: number): void {
    this.stop();
    if (!(idleMs > 0)) return;
    const period = Math.min(1000, Math.max(50, Math.floor(idleMs / 8)));
    this.now = this.shield.clock.now();
    this.#timer = this.shield.clock.setInterval(() => this.#sweep(idleMs, period), period).unref();
  }

  stop(): void {
    this.shield.clear(this.#timer);
    this.#timer = undefined;
  }

  #sweep(idleMs: number, period: number): void {
    this.now = this.shield.clock.now();
    // activeAt is this clock as of the sweep before the activity, up to a period early.
    const before = this.now - idleMs - period;
    for (const c of this.each()) {
      if (c.activeAt <= before && !c.closed) this.shield.guard(c, 'timer', idle, c);
    }
  }
}

function idle(c: Idler): void {
  if (c.busy) return; // a held reply is not idleness
  throw new TransportError('TRANSPORT_IDLE_TIMEOUT', 'idle timeout');
}
