// drive.ts - one SMTP session put to an engine, stage by stage.
//
// A sequence of StageEvents in, the verdicts and the outcome out: each
// event is decided after the verdict before it came (a stage waits for the
// lookups the engine waits for), and `go` says, from each verdict, whether
// the client goes on to the next event (by default a deferral or a
// rejection ends the session, as the MTA ends it). conclude() then tells the
// engine how the session ended, as the policy service and the milter tell
// it: delivered (or not), then ended or abandoned (held or not). Replay
// (lib/replay), the simulation (lib/sim) and the tests drive sessions only
// this way. Synchronous while the engine answers at once, a promise
// otherwise.

import { STAGES, type Engine, type Stage, type StageEvent, type Verdict } from './types.js';

export interface Step {
  readonly event: StageEvent;
  readonly verdict: Verdict;
}

/** Whether the client goes on after this step (`i`: its index in the events). */
export type Go = (step: Step, i: number) => boolean;

export interface Driven {
  /** The steps decided, in order; the last is where the session stopped. */
  readonly steps: Step[];
  /** Every event was decided and went on. */
  readonly finished: boolean;
}

/** How a session ended, as the engine learns it. */
export interface Ending {
  /** A message was accepted in it. */
  readonly delivered: boolean;
  /** The client left without QUIT (or hung up under a hold: `held`). */
  readonly abandoned: boolean;
  readonly held?: boolean;
  /** How long it waited under the hold before it hung up, where that is seen. */
  readonly lasted?: number;
  /** It waited a held reply out and left later. */
  readonly waitedOut?: boolean;
}

/** The default: a deferral or a rejection ends the session. */
export const refusedEnds: Go = (s) => s.verdict.kind !== 'defer' && s.verdict.kind !== 'reject';

/**
 * Puts the events to the engine in order, until `go` says stop; `before` is
 * called right before each is decided (to move a simulated clock to it).
 */
export function drive(engine: Engine, events: readonly StageEvent[], go: Go = refusedEnds, before?: (e: StageEvent, i: number) => void): Driven | Promise<Driven> {
  const steps: Step[] = [];
  const from = (i: number): Driven | Promise<Driven> => {
    for (; i < events.length; i++) {
      const event = events[i]!;
      before?.(event, i);
      const v = engine.decide(event);
      if (v instanceof Promise) {
        const at = i;
        return v.then((verdict) => (take(event, verdict, at) ? from(at + 1) : { steps, finished: false }));
      }
      if (!take(event, v, i)) return { steps, finished: false };
    }
    return { steps, finished: true };
  };
  const take = (event: StageEvent, verdict: Verdict, i: number): boolean => {
    const step = { event, verdict };
    steps.push(step);
    return go(step, i);
  };
  return from(0);
}

/** Tells the engine how the session ended. */
export function conclude(engine: Engine, last: StageEvent, end: Ending): void {
  if (end.delivered) engine.record({ kind: 'delivered', event: last });
  engine.record(end.abandoned ? {
    kind: 'abandoned', event: last, held: end.held ?? false,
    ...(end.lasted === undefined ? {} : { lasted: end.lasted }), ...(end.waitedOut === undefined ? {} : { waitedOut: end.waitedOut }),
  } : { kind: 'ended', event: last });
}

/** -1, 0 or 1 as stage a comes before, with or after b in an SMTP session. */
export function stageOrder(a: Stage, b: Stage): number {
  return Math.sign(STAGES.indexOf(a) - STAGES.indexOf(b));
}
