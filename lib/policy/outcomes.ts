// outcomes.ts - where policy clients give up: the policy protocol's outcomes.
//
// The policy protocol never says that an SMTP session ended. A session (the
// client address and port with the server port) whose last request was stage
// S, and which asks nothing more within rates.abandon_window, ended there: if
// S is not end of message, it was abandoned at S - held or not, as its last
// reply was - unless that reply refused (reject or defer): then the client
// left because we told it to, and the session simply ended. A request
// repeated by Postfix changes nothing. due() gives the outcomes that have
// come due. Most sessions need not wait: when the next session begins on a
// policy connection, the one before is over, and over() gives its outcome at
// once. A session that passes end of message delivered. Every outcome goes
// to the engine's record(), which knows no protocol: this is the policy
// side's inference of what the milter protocol says outright.
//
// Abandonment is judged only once an end-of-message request has been seen:
// where Postfix asks sluice at RCPT alone, every session's last stage is
// RCPT, delivered or not, and counting each as abandoned would push every
// client down. Until then a session simply ends, unjudged (counted, so the
// daemon can say why nothing is learned).

import type { Engine, Outcome, StageEvent, VerdictKind } from '../engine/types.js';
import { YoungMap } from '../util/young-map.js';

interface Open {
  event: StageEvent;
  held: boolean;
  /** The last reply was a reject or a defer. */
  refused: boolean;
  at: number;
}

export class PolicyOutcomes {
  readonly #open = new YoungMap<string, Open>();
  readonly #engine: Pick<Engine, 'record'>;
  readonly #max: number;
  /** An end-of-message request has been seen: sessions that stop short of it were abandoned. */
  #judging = false;
  #unjudged = 0;

  /** `max`: sessions followed at once (rates.max_entries); the oldest is let go past it. */
  constructor(engine: Pick<Engine, 'record'>, max: number) {
    this.#engine = engine;
    this.#max = max;
  }

  /** Sessions that ended before any end of message was seen, so were not judged. */
  get unjudged(): number {
    return this.#unjudged;
  }

  /**
   * The answer to `event` went out (or goes out, after its hold) at `at`;
   * `told` is what the MTA was told, `held` whether it was held. A pass at
   * end of message is a delivery.
   */
  answered(event: StageEvent, told: VerdictKind, held: boolean, at: number): void {
    const refused = told === 'reject' || told === 'defer';
    this.#seen(event, held, refused, at);
    if (event.stage === 'eom' && !event.repeat && !refused) this.#engine.record({ kind: 'delivered', event });
  }

  #seen(event: StageEvent, held: boolean, refused: boolean, now: number): void {
    if (event.stage === 'eom') this.#judging = true;
    const o = this.#open.get(event.session);
    // Delete and re-insert, so the Map stays ordered by time and due() can stop early.
    if (o !== undefined) this.#open.delete(event.session);
    if (event.repeat && o) this.#open.set(event.session, { ...o, at: Math.max(o.at, now) });
    else this.#open.set(event.session, { event, held, refused, at: now });
    if (this.#open.size > this.#max) {
      const oldest = this.#open.first();
      if (oldest !== undefined) this.#open.delete(oldest);
    }
  }

  /** Sessions silent for longer than windowMs, recorded; their outcomes, oldest first. */
  due(now: number, windowMs: number): Outcome[] {
    const out: Outcome[] = [];
    for (const [id, o] of this.#open) {
      if (now - o.at <= windowMs) break;
      this.#open.delete(id);
      out.push(this.#record(o));
    }
    return out;
  }

  /** The session is known to be over: its outcome, recorded now, if it was still open. */
  over(session: string): Outcome | undefined {
    const o = this.#open.get(session);
    if (o === undefined) return undefined;
    this.#open.delete(session);
    return this.#record(o);
  }

  #record(o: Open): Outcome {
    const outcome = this.#outcome(o);
    this.#engine.record(outcome);
    return outcome;
  }

  get size(): number {
    return this.#open.size;
  }

  /** Past end of message, or after we refused, a session ended; anywhere else it was abandoned there, held or not. */
  #outcome(o: Open): Outcome {
    if (o.event.stage === 'eom' || o.refused) return { kind: 'ended', event: o.event };
    if (!this.#judging) {
      this.#unjudged++;
      return { kind: 'ended', event: o.event };
    }
    return { kind: 'abandoned', event: o.event, held: o.held };
  }
}
