// report.ts - what is said of each answer and each abandoned session.
//
// Every answer is counted (stage x verdict x protocol); a held reply also in
// the holds counter and the held-seconds histogram. One log line per verdict
// that is not a plain pass, and per held reply, with queue id, client,
// stage, verdict, rule, score and held ms, so it joins up with the MTA's own
// log. In observe mode (the verdict was not enforced) the line is marked
// would_have, with the hold it would have had, and counted apart. An
// abandoned session is counted by its last stage and whether it was held,
// and logged: at info after a held reply (the zombie signal), else at debug.

import type { Logger } from '../log/logger.js';
import type { Outcome, StageEvent, Verdict } from '../engine/types.js';
import type { Metrics } from './metrics.js';

export class Report {
  constructor(private readonly metrics: Metrics) {}

  answered(log: Logger, event: StageEvent | undefined, verdict: Verdict, heldMs: number, observed: boolean): void {
    if (!event) return;
    const m = this.metrics;
    m.verdict(event.stage, verdict.kind, event.via);
    if (heldMs > 0) {
      m.holds.inc();
      m.heldSeconds.observe(heldMs / 1000);
    }
    const plain = verdict.kind === 'pass' && heldMs === 0 && (!observed || verdict.delayMs === 0);
    if (plain) return;
    if (observed) m.wouldHaveBeen(event.stage, verdict.kind === 'pass' ? 'hold' : verdict.kind, event.via);
    log.info({
      queue_id: event.queueId || undefined, client: event.client, stage: event.stage, verdict: verdict.kind,
      rule: verdict.rule, score: verdict.score, held_ms: heldMs, code: verdict.reply?.code,
      ...(observed ? { would_have: true, would_hold_ms: verdict.delayMs } : {}),
    }, observed ? `${event.stage} would have been ${verdict.kind === 'pass' ? 'held' : verdict.kind} (mode observe: answered at once)` : `${event.stage} ${verdict.kind}`);
  }

  abandoned(log: Logger, o: Outcome): void {
    if (o.kind !== 'abandoned') return;
    this.metrics.abandonedAt(o.event.stage, o.held, o.event.via);
    const level = o.held ? 'info' : 'debug';
    if (!log.isLevelEnabled(level)) return;
    log[level]({ client: o.event.client, stage: o.event.stage, held: o.held, via: o.event.via, queue_id: o.event.queueId || undefined }, `abandoned at ${o.event.stage}`);
  }
}
