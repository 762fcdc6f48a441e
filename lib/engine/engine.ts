// engine.ts - the decision pipeline: StageEvent in, Verdict out, outcomes learned.
//
// Per stage, in order:
//   1. lists    - deny rejects, allow accepts (and skips every later check);
//   2. rates    - connections, messages, recipients per client and network per
//                 window, and live sessions per client and network: over a
//                 limit defers (and costs weights.rate_exceeded);
//   3. score    - the client's decayed score, plus shares of its network's,
//                 HELO's and sender domain's (a bad domain counts only once
//                 the client itself is known: zombies forge the big
//                 freemail domains), plus the session's HELO and reverse-DNS
//                 findings, plus the points of first-contact lookups (DNS
//                 lists) that have arrived; a lookup that lists the client
//                 defers or rejects it here, or holds it (step 5), and one
//                 that vouches for it makes it trusted;
//   4. at RCPT  - at or below thresholds.reject rejects, thresholds.defer
//                 defers; then greylisting, when enabled;
//   5. tarpit   - at or below thresholds.hold the reply is held, longer the
//                 worse the score, within the hold budget; never under
//                 stress=yes, for a repeated question, while the event loop
//                 lags (shedHolds()), at CONNECT unless tarpit.at_connect, or
//                 for a trusted client (one that has delivered and has a
//                 score of 0 or more).
// First-contact lookups start at a session's first event (Lookups, from
// lib/enrich); a decision waits for them at most their budget.
// A repeated question (Postfix's retries and per-list RCPT queries) is
// answered the same way but counted nowhere. explain() runs the same
// pipeline as a dry run: it records nothing (what its lookups read is not
// kept) and grants no hold. A session's context carries its lookups' state
// (LookupSlot): its end, by outcome or by the sweep, ends them too.
// Learning (learn.ts): record() moves scores by weights.*, from the outcomes
// the protocols report (delivered; abandoned at stage S, held or not;
// ended); learn() from a content scanner's verdict on a message.
// The engine knows no protocol: how a protocol tells an outcome is its own
// business (policy/outcomes.ts infers them, the milter session sees them).
// Time comes from the injected clock.
//
// Config keys: reputation.*, weights.*, thresholds.*, tarpit.*, rates.*,
// greylist.*, lists.*, replies.*, feedback.remember*.

import type { Config } from '../config/schema.js';
import { addressKeys, keysFor } from '../reputation/keys.js';
import { ReputationStore } from '../reputation/store.js';
import type { Now } from '../util/clock.js';
import { Lists, type ListEntry } from './lists.js';
import { overLimit, RateWindows, Sessions, type Live } from './limits.js';
import { Greylist } from './greylist.js';
import { HoldBudget, holdFor } from './tarpit.js';
import { Patience, type StagePatience } from './patience.js';
import { standing } from './standing.js';
import { Learner, type Held, type Learned, type Part, type Scan } from './learn.js';
import { clientKey, fits, profileFor, type Profile } from './profile.js';
import type { Engine, Enrichment, LookupSlot, Lookups, Outcome, Reason, Reply, Rule, StageEvent, Verdict } from './types.js';

export type EngineConfig = Pick<Config, 'reputation' | 'weights' | 'thresholds' | 'tarpit' | 'rates' | 'greylist' | 'lists' | 'replies' | 'feedback'>;

export interface EngineStats {
  holdsActive: number;
  holdsRefused: number;
  sessions: number;
}

/**
 * What a live session keeps between its stages: its profile, worked out
 * again when HELO, sender or name change, and its list match, again when the
 * lists change.
 */
interface Context extends Live, LookupSlot {
  profile: Profile;
  listsVersion: number;
  listed: ListEntry | undefined;
  /** A first-contact lookup vouched for the client: nothing is learned against it. */
  vouched: boolean;
  /** The longest hold granted in this session (a scanner's spam verdict on its message says the hold failed). */
  held: Held | undefined;
}

/** What an engine is built on when its caller made them first (the fleet store shares both): else it makes its own. */
export interface EngineParts {
  readonly store?: ReputationStore;
  readonly lists?: Lists;
}

export class ReputationEngine implements Engine {
  readonly store: ReputationStore;
  readonly lists: Lists;
  readonly #config: () => EngineConfig;
  readonly #now: Now;
  readonly #rates: RateWindows;
  /** A session's end (its outcome, or the sweep) ends its lookups too. */
  readonly #sessions = new Sessions<Context>((x) => this.#lookups?.end(x));
  /** Made on first use: most sites never turn greylisting on. */
  #grey: Greylist | undefined;
  readonly #budget = new HoldBudget();
  readonly #patience = new Patience();
  readonly #learner: Learner;
  readonly #rules: readonly Rule[];
  #holdsRefused = 0;
  #shedding = false;

  readonly #lookups: Lookups | undefined;

  /**
   * `rules`: asked first, in order; the first verdict wins (types.ts, Rule).
   * `lookups`: the first-contact lookups. `parts`: a store and lists made
   * by the caller (newStore() makes one as the engine would).
   */
  constructor(config: () => EngineConfig, now: Now, rules: readonly Rule[] = [], lookups?: Lookups, parts: EngineParts = {}) {
    this.#lookups = lookups;
    const c = config();
    this.#config = config;
    this.#now = now;
    this.#rules = rules;
    this.store = parts.store ?? newStore(c, now);
    this.lists = parts.lists ?? new Lists();
    this.#rates = new RateWindows(c.rates.max_entries);
    this.lists.setStatic(c.lists.allow, c.lists.deny, now());
    this.#learner = new Learner(this.store, this.#patience, config, now);
  }

  /** While on (the event loop lags: shield/shedding.ts), no hold is granted. */
  shedHolds(on: boolean): void {
    this.#shedding = on;
  }

  /** Holds refused for want of budget since start. */
  get holdsRefused(): number {
    return this.#holdsRefused;
  }

  /** After a reload: the static lists come from the new config. */
  reloaded(): void {
    const c = this.#config();
    this.lists.setStatic(c.lists.allow, c.lists.deny, this.#now());
  }

  decide(e: StageEvent): Verdict | Promise<Verdict> {
    for (const r of this.#rules) {
      const v = r.decide(e);
      if (v !== undefined) return v;
    }
    const c = this.#config();
    const now = this.#now();
    const { x, first, changed } = this.#context(e, c, now, false);
    const wait = this.#lookups?.begin(e, x, changed);
    if (wait === undefined) return this.#decide(e, c, x, first, false, now);
    // A session that ended while it waited gets an answer that changes nothing (nobody reads it).
    return wait.then((alive) => {
      if (alive) return this.#decide(e, this.#config(), x, first, false);
      const now = this.#now();
      const dry = this.#context(e, this.#config(), now, true);
      return this.#decide(e, this.#config(), dry.x, dry.first, true);
    });
  }

  /** The same pipeline as a dry run, after the lookups: records nothing (what they read is not kept), grants no hold lease. */
  async explain(e: StageEvent): Promise<Verdict> {
    const c = this.#config();
    const { x, first, changed } = this.#context(e, c, this.#now(), true);
    try {
      await this.#lookups?.begin(e, x, changed, true);
      return this.#decide(e, this.#config(), x, first, true);
    } finally {
      this.#lookups?.end(x);
    }
  }

  /** The dry run now, with what the lookups have already found (a replay asks no lookups). */
  explainNow(e: StageEvent): Verdict {
    const c = this.#config();
    const { x, first } = this.#context(e, c, this.#now(), true);
    return this.#decide(e, c, x, first, true);
  }

  /**
   * The session's context, opened at its first stage (a dry run opens
   * nothing and gets a context of its own); `first` says it was opened now,
   * `changed` that its profile was made now (a new HELO, sender or name).
   */
  #context(e: StageEvent, c: EngineConfig, now: number, dry: boolean): { x: Context; first: boolean; changed: boolean } {
    let x = dry ? undefined : this.#sessions.get(e.session);
    const first = x === undefined;
    let changed = first;
    if (x === undefined) {
      const a = addressKeys(e.client);
      const ipCounts = this.#rates.get(clientKey(a?.ip, e.client), now, dry);
      const p = profileFor(e, c, dry, ipCounts, this.store, this.#rates, a);
      x = { ipCounts, netCounts: this.#rates.get(p.net, now, dry), seen: now, profile: p, listsVersion: -1, listed: undefined, vouched: false, lookup: undefined, held: undefined };
      if (!dry) this.#sessions.open(e.session, x);
    } else if (!fits(x.profile, e, c)) {
      x.profile = profileFor(e, c, dry, x.ipCounts, this.store, this.#rates);
      x.listsVersion = -1;
      changed = true;
    }
    if (!dry) x.seen = now;
    return { x, first, changed };
  }

  /** `now`: given when the caller has just read the clock (the common case: no lookup to wait for). */
  #decide(e: StageEvent, c: EngineConfig, x: Context, first: boolean, dry: boolean, now = this.#now()): Verdict {
    if (x.listsVersion !== this.lists.version || (x.listed?.expires ?? Infinity) <= now) {
      x.listed = this.lists.match(e.client, e.helo, e.sender, now);
      x.listsVersion = this.lists.version;
    }
    const { ip, net } = x.profile;
    // The trace and inputs are built for explain() only: on the hot path the
    // rule and score say enough, and string building is most of the cost.
    const trace: string[] | undefined = dry ? [] : undefined;
    const inputs: Record<string, number | string | boolean> | undefined = dry ? { stage: e.stage, client: e.client } : undefined;
    const reason = trace && inputs ? { inputs, trace } : undefined;
    const done = (kind: Verdict['kind'], rule: string, score: number, reply?: Reply, delayMs = 0): Verdict =>
      verdict(kind, rule, score, reply, delayMs, reason);

    // 1. lists
    const listed = x.listed;
    if (listed) {
      trace?.push(`${listed.kind}-listed: ${listed.value}${listed.reason ? ` (${listed.reason})` : ''}`);
      if (listed.kind === 'deny') return done('reject', `deny ${listed.value}`, 0, { code: 554, enhanced: '5.7.1', text: c.replies.deny });
      return done('accept', `allow ${listed.value}`, 0);
    }

    // 2. rates and concurrency, counted once per question
    if (!e.repeat) {
      const over = overLimit(e.stage, x, first, dry, c.rates, now);
      if (over) {
        trace?.push(`over rates.${over}`);
        if (!dry) this.store.add(ip, c.weights.rate_exceeded, 'rate');
        return done('defer', `rate ${over}`, this.store.score(ip), { code: 451, enhanced: '4.7.1', text: c.replies.rate });
      }
    }

    // 3. score
    const w = c.weights;
    const th = c.thresholds;
    const st = standing(this.store, x.profile.refs, now, c);
    const found = this.#lookups?.findings(e, x, dry) ?? NONE;
    let extra = 0;
    let vouched = false;
    let named: Enrichment | undefined;
    for (const f of found) {
      extra += f.points;
      vouched ||= f.trusted;
      if (f.listed !== undefined) named ??= f;
      if (trace) trace.push(...f.trace);
    }
    if (vouched) named = undefined;
    if (!dry) x.vouched = vouched;
    const score = st.ip + w.network_share * st.net + w.helo_share * st.helo + w.domain_share * st.domain + x.profile.points + extra;
    const trusted = vouched || st.trusted;
    // Holds are the probe, a deferral the answer: one that hung up under a hold (or whose network did, often enough) is not held again while it stays bad.
    // A network with enough hang-ups under holds (and abandoning too much) defers a known client with no good record of
    // its own; a new client there is probed with a hold from the spare half of the budget first, and deferred only when
    // none is spare: real MTAs share networks with zombies, and one deferred for ever could never show what it is.
    const netFlagged = c.tarpit.network_hangups > 0 && st.netHangups >= c.tarpit.network_hangups && st.net <= th.hold && st.suspect === 'network' && !st.earned;
    const hungUp = !trusted && score <= th.hold && (st.hungUp ? 'client' : netFlagged && st.known ? 'network' : undefined);
    if (inputs && trace) {
      Object.assign(inputs, { score_ip: round(st.ip), score_net: round(st.net), score_helo: round(st.helo), score_domain: round(st.domain), score: round(score), trusted });
      for (const f of x.profile.findings) trace.push(`${f.name} ${f.points}`);
      if (st.domainOut) trace.push(`sender domain's score left out: ${st.domainOut}`);
      trace.push(`score ${round(score)} = ip ${round(st.ip)} + ${w.network_share} x net ${round(st.net)} + ${w.helo_share} x helo ${round(st.helo)} + ${w.domain_share} x domain ${round(st.domain)}${x.profile.findings.length ? ' + findings' : ''}${found.length ? ` + lookups ${round(extra)}` : ''}`);
      if (trusted) trace.push(vouched ? 'trusted: a DNS allowlist vouches for it' : 'trusted: has delivered, score >= 0, no hang-up under a hold, few abandoned sessions');
      else if (st.hungUp) trace.push('hung up under a hold before: not held again while its score stays at or below thresholds.hold');
      else if (st.netHangups > 0) trace.push(`its network: ${st.netHangups} hang-ups under holds (tarpit.network_hangups ${c.tarpit.network_hangups})`);
      const spam = this.store.countOf(x.profile.refs.ip, 'spam', now);
      const ham = this.store.countOf(x.profile.refs.ip, 'ham', now);
      if (spam + ham > 0) trace.push(`the content scanner on its messages: ${spam} spam, ${ham} ham (weights.spam ${w.spam}, weights.ham ${w.ham})`);
    }
    if (named?.listed === 'reject') return done('reject', named.rule, score, { code: 554, enhanced: '5.7.1', text: c.replies.reject });
    if (named?.listed === 'defer') return done('defer', named.rule, score, { code: 451, enhanced: '4.7.1', text: c.replies.defer });
    const defer = (rule: string, why: string, text = c.replies.defer): Verdict => {
      trace?.push(why);
      return done('defer', rule, score, { code: 451, enhanced: '4.7.1', text });
    };
    // 4. at RCPT: thresholds, hang-ups under holds, then greylisting
    if (e.stage === 'rcpt' && !trusted) {
      if (score <= th.reject) {
        trace?.push(`score <= thresholds.reject ${th.reject}`);
        return done('reject', 'reputation-reject', score, { code: 550, enhanced: '5.7.1', text: c.replies.reject });
      }
      if (score <= th.defer) return defer('reputation-defer', `score <= thresholds.defer ${th.defer}`);
      if (hungUp === 'client') return defer('hung-up-under-hold', 'deferred: it hung up under a hold, and its score is still at or below thresholds.hold');
      if (hungUp === 'network') return defer('network-hung-up', `deferred: ${st.netHangups} clients of its network hung up under holds, and the network's score is at or below thresholds.hold`);
      if (c.greylist.enabled && !e.repeat) {
        const g = (this.#grey ??= new Greylist(c.greylist.max_entries)).check(net, e.sender, e.recipient, now, c.greylist, dry);
        trace?.push(`greylist: ${g}`);
        if (g === 'new' || g === 'early') return done('defer', `greylist-${g}`, score, { code: 451, enhanced: '4.7.1', text: c.replies.greylist });
        if (g === 'passed' && !dry) this.store.add(ip, w.greylist_passed, 'grey');
      }
    }

    // 5. tarpit
    const why = !c.tarpit.enabled ? 'tarpit disabled' : trusted ? undefined : e.stress ? 'stress=yes' : e.repeat ? 'repeated question'
      : this.#shedding ? 'the event loop lags (limits.max_loop_lag)'
      : hungUp ? 'it (or its network) hung up under a hold: deferred at RCPT instead'
      : e.stage === 'connect' && !c.tarpit.at_connect ? 'no holds at CONNECT' : undefined;
    if (!trusted && why === undefined) {
      // A suspect its score alone would not hold is probed at RCPT: the more it abandoned past the trusted rate, the longer.
      const probe = st.suspect !== undefined && e.stage === 'rcpt' && score > th.hold && !named;
      const learned = c.tarpit.learn_patience ? this.#patience.holdFor(e.stage, now, c.reputation.half_life) : 0;
      const floor = Math.max(c.tarpit.min_hold * (probe ? 1 + st.excess : 1), learned);
      const ms = holdFor(named || probe ? Math.min(score, th.hold) : score, th.hold, c.tarpit.hold_per_point, c.tarpit.max_hold, e.stage, floor);
      if (ms > 0) {
        // A hold that asks a question (a probe, a new client of a flagged network) takes only the spare half of the budget.
        const speculative = probe || (netFlagged && !st.known);
        const g = dry ? 'granted' : this.#budget.grant(net, ms, now, speculative ? Math.floor(c.tarpit.budget / 2) : c.tarpit.budget, c.tarpit.budget_per_network);
        const what = named ? named.rule : probe ? 'a suspect (it or its network abandons more than thresholds.trust_abandon_rate per delivery)' : `score <= thresholds.hold ${th.hold}`;
        if (g === 'granted') {
          if (!dry && ms > (x.held?.ms ?? 0)) x.held = { stage: e.stage, ms };
          trace?.push(`${what}: hold ${ms} ms (at least tarpit.min_hold${learned ? `, and the learned patience ${learned} ms` : ''})`);
          return done('pass', named ? `tarpit ${named.rule}` : probe ? 'tarpit-probe' : 'tarpit', score, undefined, ms);
        }
        this.#holdsRefused++;
        // When holds run out, a client its score would hold is deferred, and so is a suspect
        // network's, unless its own record is good (it delivered, never hung up); a client
        // suspect on its own record alone (a real MTA's early broken session looks the same)
        // passes: deferred, it could never build the record it lacks.
        if ((!probe || st.suspect === 'network') && !st.earned && c.tarpit.when_spent === 'defer' && e.stage === 'rcpt') return defer('tarpit-budget-spent', `${what}: hold of ${ms} ms not granted, ${g} hold budget spent; deferred (tarpit.when_spent)`);
        trace?.push(`${what}: hold of ${ms} ms not granted, ${g} hold budget spent; passes (${st.earned ? 'its own record is good' : 'a probe of a client on its own record alone'})`);
        return done('pass', 'tarpit-budget-spent', score);
      }
    } else if (why) {
      trace?.push(`no hold: ${why}`);
    }
    return done('pass', 'reputation', score);
  }

  /** Learns from how a session went. */
  record(o: Outcome): void {
    for (const r of this.#rules) r.record?.(o);
    const e = o.event;
    if (o.kind === 'ended') {
      // Nothing to learn (past end of message, refused, or not judged): the session only closes.
      this.#sessions.end(e.session);
      return;
    }
    const x = this.#sessions.get(e.session);
    const k = x && x.profile.helo === e.helo && x.profile.sender === e.sender ? x.profile.keys : keysFor(e.client, e.helo, e.sender);
    const ip = clientKey(k.ip, e.client);
    if (o.kind === 'delivered') {
      this.#learner.delivered(o, k, ip, x?.held);
      return;
    }
    if (!x?.vouched) this.#learner.abandoned(o, k, ip);
    this.#sessions.end(e.session);
  }

  /** A content scanner's verdict on a message (lib/feedback): what it changed, or why nothing; `part`: learn.ts. */
  learn(s: Scan, part?: Part): Learned {
    return this.#learner.scan(s, part);
  }

  /** This host saw the message with this queue id delivered (and remembers it). */
  delivered(queueId: string): boolean {
    return this.#learner.remembers(queueId);
  }

  /** Periodic work: live sessions silent far longer than rates.abandon_window end (their outcome never came). */
  tick(): void {
    const c = this.#config();
    const now = this.#now();
    this.#sessions.sweep(now, c.rates.abandon_window * 10);
  }

  stats(): EngineStats {
    return { holdsActive: this.#budget.active(this.#now()), holdsRefused: this.#holdsRefused, sessions: this.#sessions.size };
  }

  /** What has been learned of how long clients that hung up under holds lasted, per stage. */
  patience(): StagePatience[] {
    return this.#patience.report(this.#now(), this.#config().reputation.half_life);
  }
}

const NONE: readonly Enrichment[] = [];

/** A reputation store sized and timed by the config, as an engine makes its own. */
export function newStore(c: Pick<Config, 'reputation'>, now: Now): ReputationStore {
  return new ReputationStore({ maxEntries: c.reputation.max_entries, ttlMs: c.reputation.ttl, halfLifeMs: c.reputation.half_life, now });
}

/** One verdict, built in one go (the hot path makes one per question). */
function verdict(kind: Verdict['kind'], rule: string, score: number, reply: Reply | undefined, delayMs: number, reason: Reason | undefined): Verdict {
  const v: { -readonly [K in keyof Verdict]: Verdict[K] } = { kind, delayMs, rule, score: round(score) };
  if (reply) v.reply = reply;
  if (reason) v.reason = reason;
  return v;
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
