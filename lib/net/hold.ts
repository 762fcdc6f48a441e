// hold.ts - one held reply: the tarpit's mechanism, for both protocols.
//
// A reply that the engine says to hold is kept until its delay is up, then
// sent; on drain (SIGTERM) it is sent at once (flush); if the peer goes away
// it is never sent (cancel). Where the protocol has a keepalive (milter's
// SMFIR_PROGRESS), it goes out at its cadence while the reply is held. The
// timers are the shield's, on the injected clock: a failing answer is the
// shield's to handle, and tests advance the clock instead of sleeping.
// How long to hold is the protocol's business (config/policy-hold.ts, milter/mta.ts).

import type { Shield, ShieldContext } from '../shield/shield.js';
import type { Timer } from '../util/clock.js';

export interface Keepalive {
  readonly every: number;
  readonly send: () => void;
}

export class HeldReply {
  readonly #shield: Shield;
  readonly #answer: (heldMs: number) => void;
  readonly #started: number;
  readonly #timer: Timer;
  readonly #keepalive: Timer | undefined;
  #done = false;

  /** Sends the reply with `answer(heldMs)` after delayMs, or at flush(); never after cancel(). */
  constructor(shield: Shield, ctx: ShieldContext, delayMs: number, answer: (heldMs: number) => void, keepalive?: Keepalive) {
    this.#shield = shield;
    this.#answer = answer;
    this.#started = shield.clock.now();
    this.#timer = shield.setTimeout(ctx, delayMs, () => this.flush());
    this.#keepalive = keepalive ? shield.setInterval(ctx, keepalive.every, keepalive.send) : undefined;
  }

  /** How long it has been held, while it still is (undefined once answered or cancelled). */
  elapsed(): number | undefined {
    return this.#done ? undefined : this.#shield.clock.now() - this.#started;
  }

  /** Answers now (the delay is up, or the daemon drains). */
  flush(): void {
    if (this.#done) return;
    this.cancel();
    this.#answer(this.#shield.clock.now() - this.#started);
  }

  /** The peer went away, or another answer took its place: nothing is sent. */
  cancel(): void {
    this.#done = true;
    this.#shield.clear(this.#timer);
    this.#shield.clear(this.#keepalive);
  }
}
