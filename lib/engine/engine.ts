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
// Learning: record() moves scores by weights.*, from the outcomes the
// protocols report (delivered; abandoned at stage S, held or not; ended).
// The engine knows no protocol: how a protocol tells an outcome is its own
// business (policy/outcomes.ts infers them, the milter session sees them).
// Time comes from the injected clock.
//
// Config keys: reputation.*, weights.*, thresholds.*, tarpit.*, rates.*,
// greylist.*, lists.*, replies.*.

import type { Config } from '../config/schema.js';
import { addressKeys, keysFor } from '../reputation/keys.js';
import { ReputationStore } from '../reputation/store.js';
import type { Now } from '../util/clock.js';
import { Lists, type ListEntry } from './lists.js';
import { current, RateWindows, Sessions, type Live } from './limits.js';
import { Greylist } from './greylist.js';
import { HoldBudget, holdFor } from './tarpit.js';
import { clientKey, fits, profileFor, type Profile } from './profile.js';
import type { Engine, Enrichment, LookupSlot, Lookups, Outcome, Reason, Reply, Rule, StageEvent, Verdict } from './types.js';

export type EngineConfig = Pick<Config, 'reputation' | 'weights' | 'thresholds' | 'tarpit' | 'rates' | 'greylist' | 'lists' | 'replies'>;

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
    const { x, first, changed } = this.#context(e, c, this.#now(), false);
    const wait = this.#lookups?.begin(e, x, changed);
    if (wait === undefined) return this.#decide(e, c, x, first, false);
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
      x = { ipCounts, netCounts: this.#rates.get(p.net, now, dry), seen: now, profile: p, listsVersion: -1, listed: undefined, vouched: false, lookup: undefined };
      if (!dry) this.#sessions.open(e.session, x);
    } else if (!fits(x.profile, e, c)) {
      x.profile = profileFor(e, c, dry, x.ipCounts, this.store, this.#rates);
      x.listsVersion = -1;
      changed = true;
    }
    if (!dry) x.seen = now;
    return { x, first, changed };
  }

  #decide(e: StageEvent, c: EngineConfig, x: Context, first: boolean, dry: boolean): Verdict {
    const now = this.#now();
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
      const over = this.#overLimit(e, x, first, dry, c, now);
      if (over) {
        trace?.push(`over rates.${over}`);
        if (!dry) this.store.add(ip, c.weights.rate_exceeded, 'rate');
        return done('defer', `rate ${over}`, this.store.score(ip), { code: 451, enhanced: '4.7.1', text: c.replies.rate });
      }
    }

    // 3. score
    const w = c.weights;
    const r = x.profile.refs;
    const s = { ip: this.store.scoreOf(r.ip, now), net: this.store.scoreOf(r.net, now), helo: this.store.scoreOf(r.helo, now), domain: this.store.scoreOf(r.domain, now) };
    // At first contact a bad sender domain says nothing of this client.
    const fresh = s.domain < 0 && !this.store.knows(r.ip, now);
    if (fresh) s.domain = 0;
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
    const score = s.ip + w.network_share * s.net + w.helo_share * s.helo + w.domain_share * s.domain + x.profile.points + extra;
    const trusted = vouched || (s.ip >= 0 && this.store.countOf(r.ip, 'ok', now) > 0);
    if (inputs && trace) {
      Object.assign(inputs, { score_ip: round(s.ip), score_net: round(s.net), score_helo: round(s.helo), score_domain: round(s.domain), score: round(score), trusted });
      for (const f of x.profile.findings) trace.push(`${f.name} ${f.points}`);
      if (fresh) trace.push('sender domain\'s bad score left out: the client itself is not known yet');
      trace.push(`score ${round(score)} = ip ${round(s.ip)} + ${w.network_share} x net ${round(s.net)} + ${w.helo_share} x helo ${round(s.helo)} + ${w.domain_share} x domain ${round(s.domain)}${x.profile.findings.length ? ' + findings' : ''}${found.length ? ` + lookups ${round(extra)}` : ''}`);
      if (trusted) trace.push(vouched ? 'trusted: a DNS allowlist vouches for it' : 'trusted: has delivered, score >= 0');
    }
    if (named?.listed === 'reject') return done('reject', named.rule, score, { code: 554, enhanced: '5.7.1', text: c.replies.reject });
    if (named?.listed === 'defer') return done('defer', named.rule, score, { code: 451, enhanced: '4.7.1', text: c.replies.defer });
    // 4. at RCPT: thresholds, then greylisting
    if (e.stage === 'rcpt' && !trusted) {
      if (score <= c.thresholds.reject) {
        trace?.push(`score <= thresholds.reject ${c.thresholds.reject}`);
        return done('reject', 'reputation-reject', score, { code: 550, enhanced: '5.7.1', text: c.replies.reject });
      }
      if (score <= c.thresholds.defer) {
        trace?.push(`score <= thresholds.defer ${c.thresholds.defer}`);
        return done('defer', 'reputation-defer', score, { code: 451, enhanced: '4.7.1', text: c.replies.defer });
      }
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
      : e.stage === 'connect' && !c.tarpit.at_connect ? 'no holds at CONNECT' : undefined;
    if (!trusted && why === undefined) {
      const ms = holdFor(named ? Math.min(score, c.thresholds.hold) : score, c.thresholds.hold, c.tarpit.hold_per_point, c.tarpit.max_hold, e.stage);
      if (ms > 0) {
        const g = dry ? 'granted' : this.#budget.grant(net, ms, now, c.tarpit.budget, c.tarpit.budget_per_network);
        if (g === 'granted') {
          trace?.push(named ? `${named.rule}: hold ${ms} ms` : `score <= thresholds.hold ${c.thresholds.hold}: hold ${ms} ms`);
          return done('pass', named ? `tarpit ${named.rule}` : 'tarpit', score, undefined, ms);
        }
        this.#holdsRefused++;
        trace?.push(`hold of ${ms} ms not granted: ${g} hold budget spent`);
        return done('pass', 'tarpit-budget-spent', score);
      }
    } else if (why) {
      trace?.push(`no hold: ${why}`);
    }
    return done('pass', 'reputation', score);
  }

  #overLimit(e: StageEvent, x: Context, first: boolean, dry: boolean, c: EngineConfig, now: number): string | undefined {
    const r = c.rates;
    const ip = current(x.ipCounts, now, r.window);
    const net = current(x.netCounts, now, r.window);
    const add = dry ? 0 : 1;
    if (first || dry) {
      if (first && !dry) { ip.connections++; net.connections++; }
      if (ip.connections > r.connections_per_client) return 'connections_per_client';
      if (net.connections > r.connections_per_network) return 'connections_per_network';
    }
    if (ip.live > r.concurrency_per_client) return 'concurrency_per_client';
    if (net.live > r.concurrency_per_network) return 'concurrency_per_network';
    if (e.stage === 'mail' && (ip.messages += add) > r.messages_per_client) return 'messages_per_client';
    if (e.stage === 'rcpt') {
      if ((ip.recipients += add) > r.recipients_per_client) return 'recipients_per_client';
      if ((net.recipients += add) > r.recipients_per_network) return 'recipients_per_network';
    }
    return undefined;
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
    const c = this.#config();
    const x = this.#sessions.get(e.session);
    const k = x && x.profile.helo === e.helo && x.profile.sender === e.sender ? x.profile.keys : keysFor(e.client, e.helo, e.sender);
    const ip = clientKey(k.ip, e.client);
    const w = c.weights;
    switch (o.kind) {
      case 'delivered':
        this.store.add(ip, w.delivered, 'ok');
        this.store.add(k.net, w.delivered, 'ok');
        this.store.add(k.helo, w.delivered, 'ok');
        this.store.add(k.domain, w.delivered, 'ok');
        return;
      case 'abandoned': {
        if (x?.vouched) {
          this.#sessions.end(e.session);
          return;
        }
        const d = o.held ? w.abandoned_held : w.abandoned;
        const counter = o.held ? 'abh' : 'ab';
        this.store.add(ip, d, counter);
        this.store.add(k.net, d, counter);
        this.store.add(k.helo, d, counter);
        this.#sessions.end(e.session);
      }
    }
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
