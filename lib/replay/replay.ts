// replay.ts - what sluice would have done with the sessions of a Postfix log.
//
// Each session rebuilt from the log (maillog.ts) is put to the engine stage
// by stage, on the log's own timeline (a ManualClock moved to each line's
// time), with the candidate configuration: CONNECT at its connect time, the
// stages after at the time its last line was logged or, when later, when
// the hold before them ends (a hold at HELO delays MAIL, as it would have).
// The first verdict that is not a plain pass is what sluice would have done
// to it (for lost sessions); the first deferral or rejection, held or not
// before it, is what it would have refused of a delivery. A hold is added
// up and counted against the hold budget as it would have run. The engine
// then learns what really happened (delivered; abandoned where it was lost
// or left without QUIT; ended), so later sessions of the same client meet
// what it learned. DNS lists and the fleet store are not asked: a replay
// reads nothing but the log.
//
// Config keys: every engine key (thresholds.*, tarpit.*, weights.*, ...).

import type { Config } from '../config/schema.js';
import { ReputationEngine } from '../engine/engine.js';
import type { Stage, StageEvent, Verdict } from '../engine/types.js';
import { conclude, drive, stageOrder } from '../engine/drive.js';
import { ManualClock } from '../util/clock.js';
import { SessionBuilder, type LogSession } from './maillog.js';

export interface RiskRow {
  client: string;
  name: string;
  stage: Stage;
  verdict: string;
  rule: string;
  /** Sessions of this client that delivered in the log but would have been deferred or rejected. */
  sessions: number;
  reason: string[];
}

export interface ReplayReport {
  lines: number;
  unparsed: number;
  sessions: number;
  delivered: number;
  lost: number;
  /** Would-have verdicts by stage: pass, hold, defer, reject. */
  verdicts: Record<string, Record<string, number>>;
  /** Sessions that delivered in the log but would have been deferred or rejected. */
  deliveredButRefused: number;
  risk: RiskRow[];
  /** Sessions lost in the log that would have been held, deferred or rejected before the stage they were lost at. */
  lostShapedEarlier: number;
  holdSeconds: number;
  peakHolds: number;
  holdBudget: number;
  /** Holds the budget did not grant (the client was let through at once). */
  holdsRefused: number;
}

/** Risky clients kept at most (the report lists the first 20 by sessions). */
const RISK_KEPT = 10_000;

export class Replay {
  readonly #clock: ManualClock;
  readonly #engine: ReputationEngine;
  readonly #builder: SessionBuilder;
  readonly #report: ReplayReport;
  readonly #risk = new Map<string, RiskRow>();
  #seq = 0;

  /** `year`: the year of traditional syslog timestamps, which have none. */
  constructor(config: Config, year: number) {
    this.#clock = new ManualClock(0);
    this.#engine = new ReputationEngine(() => config, this.#clock.now);
    this.#builder = new SessionBuilder((s) => this.#session(s), year);
    this.#report = {
      lines: 0, unparsed: 0, sessions: 0, delivered: 0, lost: 0, verdicts: {}, deliveredButRefused: 0, risk: [],
      lostShapedEarlier: 0, holdSeconds: 0, peakHolds: 0, holdBudget: config.tarpit.budget, holdsRefused: 0,
    };
  }

  /** Feeds one log line. */
  line(text: string): void {
    this.#builder.line(text);
  }

  /** Ends the log: open sessions are taken as they are. */
  finish(): ReplayReport {
    this.#builder.finish();
    const r = this.#report;
    r.lines = this.#builder.lines;
    r.unparsed = this.#builder.unparsed;
    r.holdsRefused = this.#engine.stats().holdsRefused;
    r.risk = [...this.#risk.values()].sort((a, b) => b.sessions - a.sessions).slice(0, 20);
    return r;
  }

  #session(s: LogSession): void {
    const r = this.#report;
    r.sessions++;
    if (s.delivered > 0) r.delivered++;
    const lost = s.lostAt !== undefined || (!s.quit && s.delivered === 0);
    if (lost) r.lost++;
    const session = `replay:${++this.#seq}`;
    let would: { stage: Stage; v: Verdict; e: StageEvent } | undefined;
    let refused: { stage: Stage; v: Verdict; e: StageEvent } | undefined;
    // When the next stage comes: not before it was logged, nor before the last one's hold ends.
    let next = s.start;
    const events = s.stages.map((stage) => event(s, stage, session));
    // A replay asks no lookups: the engine answers at once.
    drive(this.#engine, events, ({ event: e, verdict: v }) => {
      const stage = e.stage;
      const kind = v.kind === 'pass' && v.delayMs > 0 ? 'hold' : v.kind === 'accept' ? 'pass' : v.kind;
      const byStage = (r.verdicts[stage] ??= { pass: 0, hold: 0, defer: 0, reject: 0 });
      byStage[kind] = (byStage[kind] ?? 0) + 1;
      if (kind === 'hold') this.#held(v.delayMs);
      if (kind !== 'pass' && would === undefined) would = { stage, v, e };
      if ((kind === 'defer' || kind === 'reject') && refused === undefined) refused = { stage, v, e };
      next = this.#clock.now() + v.delayMs;
      return kind !== 'defer' && kind !== 'reject';
    }, (e) => {
      // CONNECT at the session's connect time, the stages after at the time its last line was logged, or when the hold before them ends.
      const at = Math.max(e.stage === 'connect' ? s.start : s.end, next);
      if (at > this.#clock.now()) this.#clock.advance(at - this.#clock.now());
    });
    // A session that delivered but would have been refused, whatever held it before (a hold is a pass).
    if (refused && s.delivered > 0) {
      r.deliveredButRefused++;
      this.#risky(s, refused);
    }
    if (lost && would) {
      const lostAt = s.lostAt ?? s.stages.at(-1)!;
      if (stageOrder(would.stage, lostAt) <= 0) r.lostShapedEarlier++;
    }
    // The engine learns what really happened.
    conclude(this.#engine, event(s, s.lostAt ?? s.stages.at(-1) ?? 'connect', session), { delivered: s.delivered > 0, abandoned: lost });
  }

  /** A hold the engine granted: its budget's leases are the holds in progress. */
  #held(ms: number): void {
    this.#report.holdSeconds += ms / 1000;
    this.#report.peakHolds = Math.max(this.#report.peakHolds, this.#engine.stats().holdsActive);
  }

  #risky(s: LogSession, would: { stage: Stage; v: Verdict; e: StageEvent }): void {
    const row = this.#risk.get(s.client);
    if (row) {
      row.sessions++;
      return;
    }
    if (this.#risk.size >= RISK_KEPT) return;
    const added: RiskRow = { client: s.client, name: s.clientName, stage: would.stage, verdict: would.v.kind, rule: would.v.rule, sessions: 1, reason: [] };
    this.#risk.set(s.client, added);
    // The trace as explain gives it, taken now (what the engine knew then).
    added.reason = [...(this.#engine.explainNow(would.e).reason?.trace ?? [])];
  }
}

function event(s: LogSession, stage: Stage, session: string): StageEvent {
  return {
    stage, session, via: 'policy', mta: 'postfix', client: s.client, port: undefined, clientName: s.clientName,
    helo: stage === 'connect' ? '' : s.helo, sender: stage === 'connect' || stage === 'helo' ? '' : s.sender,
    recipient: '', recipientCount: 0, size: 0, queueId: s.queueIds[0] ?? '', saslUser: '', tls: undefined, stress: false, repeat: false,
  };
}
