// engine.ts - the decision pipeline: StageEvent in, Verdict out, outcomes learned.
//
// Per stage, in order:
//   1. lists    - deny rejects, allow accepts (and skips every later check);
//   2. rates    - connections, messages, recipients per client and network per
//                 window, and live sessions per client and network: over a
//                 limit defers (and costs weights.rate_exceeded);
//   3. score    - the client's decayed score, plus shares of its network's,
//                 HELO's and sender domain's, plus the session's HELO and
//                 reverse-DNS findings;
//   4. at RCPT  - at or below thresholds.reject rejects, thresholds.defer
//                 defers; then greylisting, when enabled;
//   5. tarpit   - at or below thresholds.hold the reply is held, longer the
//                 worse the score, within the hold budget; never under
//                 stress=yes, for a repeated question, at CONNECT unless
//                 tarpit.at_connect, or for a trusted client (one that has
//                 delivered and has a score of 0 or more).
// A repeated question (Postfix's retries and per-list RCPT queries) is
// answered the same way but counted nowhere. explain() runs the same
// pipeline as a dry run: it records nothing and grants no hold.
// Learning: record() moves scores by weights.*; tick() turns silent policy
// sessions into outcomes (tracker.ts). Time comes from the injected clock.
//
// Config keys: reputation.*, weights.*, thresholds.*, tarpit.*, rates.*,
// greylist.*, lists.*, replies.*.

import type { Config } from '../config/schema.js';
import { keysFor } from '../reputation/keys.js';
import { ReputationStore, type Clock } from '../reputation/store.js';
import { Lists } from './lists.js';
import { RateWindows, Sessions } from './limits.js';
import { Greylist } from './greylist.js';
import { HoldBudget, holdFor } from './tarpit.js';
import { heuristics } from './heuristics.js';
import { PolicyTracker } from './tracker.js';
import type { Engine, Outcome, StageEvent, Verdict } from './types.js';

export type EngineConfig = Pick<Config, 'reputation' | 'weights' | 'thresholds' | 'tarpit' | 'rates' | 'greylist' | 'lists' | 'replies'>;

export interface EngineStats {
  holdsActive: number;
  holdsRefused: number;
  sessions: number;
}

export class ReputationEngine implements Engine {
  readonly store: ReputationStore;
  readonly lists = new Lists();
  readonly #config: () => EngineConfig;
  readonly #now: Clock;
  readonly #rates: RateWindows;
  readonly #sessions = new Sessions();
  readonly #grey: Greylist;
  readonly #budget = new HoldBudget();
  readonly #tracker: PolicyTracker;
  holdsRefused = 0;

  constructor(config: () => EngineConfig, now: Clock) {
    const c = config();
    this.#config = config;
    this.#now = now;
    this.store = new ReputationStore({ maxEntries: c.reputation.max_entries, ttlMs: c.reputation.ttl, halfLifeMs: c.reputation.half_life, now });
    this.#rates = new RateWindows(c.rates.max_entries);
    this.#grey = new Greylist(c.greylist.max_entries);
    this.#tracker = new PolicyTracker(c.rates.max_entries);
    this.lists.setStatic(c.lists.allow, c.lists.deny, now());
  }

  /** After a reload: the static lists come from the new config. */
  reloaded(): void {
    const c = this.#config();
    this.lists.setStatic(c.lists.allow, c.lists.deny, this.#now());
  }

  decide(e: StageEvent): Verdict {
    const v = this.#decide(e, false);
    if (e.via === 'policy') {
      // The milter session reports its own outcomes; for policy, end of
      // message passing is the delivery, and silence is the end (tick()).
      // Silence counts from when the answer goes out, after the hold.
      this.#tracker.seen(e, v.delayMs > 0, this.#now() + v.delayMs);
      if (e.stage === 'eom' && !e.repeat && (v.kind === 'pass' || v.kind === 'accept')) this.record({ kind: 'delivered', event: e });
    }
    return v;
  }

  /** The same pipeline as a dry run: records nothing, grants no hold lease. */
  explain(e: StageEvent): Verdict {
    return this.#decide(e, true);
  }

  #decide(e: StageEvent, dry: boolean): Verdict {
    const c = this.#config();
    const now = this.#now();
    const k = keysFor(e.client, e.helo, e.sender);
    const ip = k.ip ?? `ip:${e.client}`;
    const net = k.net ?? ip;
    // The trace and inputs are built for explain() only: on the hot path the
    // rule and score say enough, and string building is most of the cost.
    const trace: string[] | undefined = dry ? [] : undefined;
    const inputs: Record<string, number | string | boolean> | undefined = dry ? { stage: e.stage, client: e.client } : undefined;
    const done = (kind: Verdict['kind'], rule: string, score: number, extra: Partial<Verdict> = {}): Verdict =>
      ({ kind, delayMs: 0, rule, score: round(score), ...(trace && inputs ? { reason: { inputs, trace } } : {}), ...extra });

    // 1. lists
    const listed = this.lists.match(e.client, e.helo, e.sender, now);
    if (listed) {
      trace?.push(`${listed.kind}-listed: ${listed.value}${listed.reason ? ` (${listed.reason})` : ''}`);
      if (listed.kind === 'deny') return done('reject', `deny ${listed.value}`, 0, { reply: { code: 554, enhanced: '5.7.1', text: c.replies.deny } });
      return done('accept', `allow ${listed.value}`, 0);
    }

    // 2. rates and concurrency, counted once per question
    const first = dry ? false : this.#sessions.touch(e.session, ip, net, now);
    if (!e.repeat) {
      const over = this.#overLimit(e, ip, net, first, dry, c, now);
      if (over) {
        trace?.push(`over rates.${over}`);
        if (!dry) this.store.add(ip, c.weights.rate_exceeded, 'rate');
        return done('defer', `rate ${over}`, this.store.score(ip), { reply: { code: 451, enhanced: '4.7.1', text: c.replies.rate } });
      }
    }

    // 3. score
    const w = c.weights;
    const s = { ip: this.store.score(ip), net: this.store.score(net), helo: this.store.score(k.helo), domain: this.store.score(k.domain) };
    const findings = heuristics(e.helo, e.clientName, c.lists.our_names, c.lists.our_addresses, w);
    const score = s.ip + w.network_share * s.net + w.helo_share * s.helo + w.domain_share * s.domain + findings.reduce((a, f) => a + f.points, 0);
    const trusted = s.ip >= 0 && this.store.count(ip, 'ok') > 0;
    if (inputs && trace) {
      Object.assign(inputs, { score_ip: round(s.ip), score_net: round(s.net), score_helo: round(s.helo), score_domain: round(s.domain), score: round(score), trusted });
      for (const f of findings) trace.push(`${f.name} ${f.points}`);
      trace.push(`score ${round(score)} = ip ${round(s.ip)} + ${w.network_share} x net ${round(s.net)} + ${w.helo_share} x helo ${round(s.helo)} + ${w.domain_share} x domain ${round(s.domain)}${findings.length ? ' + findings' : ''}`);
      if (trusted) trace.push('trusted: has delivered, score >= 0');
    }

    // 4. at RCPT: thresholds, then greylisting
    if (e.stage === 'rcpt' && !trusted) {
      if (score <= c.thresholds.reject) {
        trace?.push(`score <= thresholds.reject ${c.thresholds.reject}`);
        return done('reject', 'reputation-reject', score, { reply: { code: 550, enhanced: '5.7.1', text: c.replies.reject } });
      }
      if (score <= c.thresholds.defer) {
        trace?.push(`score <= thresholds.defer ${c.thresholds.defer}`);
        return done('defer', 'reputation-defer', score, { reply: { code: 451, enhanced: '4.7.1', text: c.replies.defer } });
      }
      if (c.greylist.enabled && !e.repeat) {
        const g = this.#grey.check(net, e.sender, e.recipient, now, c.greylist, dry);
        trace?.push(`greylist: ${g}`);
        if (g === 'new' || g === 'early') return done('defer', `greylist-${g}`, score, { reply: { code: 451, enhanced: '4.7.1', text: c.replies.greylist } });
        if (g === 'passed' && !dry) this.store.add(ip, w.greylist_passed, 'grey');
      }
    }

    // 5. tarpit
    const why = !c.tarpit.enabled ? 'tarpit disabled' : trusted ? undefined : e.stress ? 'stress=yes' : e.repeat ? 'repeated question'
      : e.stage === 'connect' && !c.tarpit.at_connect ? 'no holds at CONNECT' : undefined;
    if (!trusted && why === undefined) {
      const ms = holdFor(score, c.thresholds.hold, c.tarpit.hold_per_point, c.tarpit.max_hold, e.stage);
      if (ms > 0) {
        const g = dry ? 'granted' : this.#budget.grant(net, ms, now, c.tarpit.budget, c.tarpit.budget_per_network);
        if (g === 'granted') {
          trace?.push(`score <= thresholds.hold ${c.thresholds.hold}: hold ${ms} ms`);
          return done('pass', 'tarpit', score, { delayMs: ms });
        }
        this.holdsRefused++;
        trace?.push(`hold of ${ms} ms not granted: ${g} hold budget spent`);
        return done('pass', 'tarpit-budget-spent', score);
      }
    } else if (why) {
      trace?.push(`no hold: ${why}`);
    }
    return done('pass', 'reputation', score);
  }

  #overLimit(e: StageEvent, ip: string, net: string, first: boolean, dry: boolean, c: EngineConfig, now: number): string | undefined {
    const r = c.rates;
    const hit = (key: string, count: boolean): number => this.#rates.hit(key, count && !dry ? 1 : 0, r.window, now);
    if (first || dry) {
      if (hit(`c|${ip}`, first) > r.connections_per_client) return 'connections_per_client';
      if (hit(`c|${net}`, first) > r.connections_per_network) return 'connections_per_network';
    }
    if (this.#sessions.live(ip) > r.concurrency_per_client) return 'concurrency_per_client';
    if (this.#sessions.live(net) > r.concurrency_per_network) return 'concurrency_per_network';
    if (e.stage === 'mail' && hit(`m|${ip}`, true) > r.messages_per_client) return 'messages_per_client';
    if (e.stage === 'rcpt') {
      if (hit(`r|${ip}`, true) > r.recipients_per_client) return 'recipients_per_client';
      if (hit(`r|${net}`, true) > r.recipients_per_network) return 'recipients_per_network';
    }
    return undefined;
  }

  /** Learns from how a session went. */
  record(o: Outcome): void {
    const c = this.#config();
    const k = keysFor(o.event.client, o.event.helo, o.event.sender);
    const ip = k.ip ?? `ip:${o.event.client}`;
    const w = c.weights;
    switch (o.kind) {
      case 'delivered':
        for (const key of [ip, k.net, k.helo, k.domain]) this.store.add(key, w.delivered, 'ok');
        return;
      case 'abandoned': {
        const d = o.held ? w.abandoned_held : w.abandoned;
        const counter = o.held ? 'abh' : 'ab';
        for (const key of [ip, k.net, k.helo]) this.store.add(key, d, counter);
        this.#sessions.end(o.event.session);
        return;
      }
      case 'ended':
        this.#sessions.end(o.event.session);
    }
  }

  /** Periodic work: policy sessions that went silent become outcomes; stale sessions end. */
  tick(): Outcome[] {
    const c = this.#config();
    const now = this.#now();
    const due = this.#tracker.due(now, c.rates.abandon_window);
    for (const o of due) this.record(o);
    this.#sessions.sweep(now, c.rates.abandon_window * 10);
    return due;
  }

  stats(): EngineStats {
    return { holdsActive: this.#budget.active(this.#now()), holdsRefused: this.holdsRefused, sessions: this.#sessions.size };
  }
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
