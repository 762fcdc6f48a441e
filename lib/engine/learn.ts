// learn.ts - what the engine learns after the fact: how a session ended, and
// what the content scanner said of a message it let through.
//
// How a session ended moves the scores of its client, network, HELO (and,
// for a delivery, sender domain) by weights.*. A scanner's verdict (rspamd's
// channel, `sluicectl learn`, a milter header: lib/feedback) moves the
// client's, its network's and its HELO's by weights.spam (divided by one
// more than the key's ham verdicts) or weights.ham - never the sender
// domain's, which zombies forge - and counts it (the
// entry's spam and ham counters, shared by the fleet store like the rest).
// A verdict names its message by queue id or its client by address: each
// delivery with a queue id is remembered (feedback.remember, at most
// feedback.remember_entries) with its client, HELO and the longest hold
// its session was given; a verdict by client alone moves its address and
// network. Spam that waited out a hold, from a client the scanner has not
// called ham more often than spam, is a hold that failed:
// it counts as a hang-up under a hold for the client and its network (no
// longer held, deferred at RCPT while its score stays low), and its hold
// goes into the stage's patience figures (a patient botnet lengthens the
// holds). A ham verdict adds weights.ham and nothing else: trust is earned
// by deliveries (standing.ts), never by a verdict alone.
//
// Config keys: weights.*, tarpit.learn_patience, reputation.half_life,
// feedback.remember, feedback.remember_entries.

import type { LRUCache } from 'lru-cache';
import type { Config } from '../config/schema.js';
import { addressKeys, type Keys } from '../reputation/keys.js';
import type { ReputationStore } from '../reputation/store.js';
import { boundedLru } from '../util/lru.js';
import type { Now } from '../util/clock.js';
import type { Patience } from './patience.js';
import type { Outcome, Stage } from './types.js';

export type Verdict = 'spam' | 'ham';

/** A content scanner's verdict on one message: by its queue id, or by the client that sent it. */
export interface Scan {
  readonly verdict: Verdict;
  /** Where it came from, for metrics and logs: rspamd, learn, header, a scenario's scanner. */
  readonly source: string;
  readonly queueId?: string;
  readonly client?: string;
}

/** What a verdict changed, or why it changed nothing. */
export type Learned =
  | { readonly learned: true; readonly client: string; readonly keys: readonly string[]; readonly heldMs: number; readonly by: 'queue-id' | 'client' }
  | { readonly learned: false; readonly why: string };

/** What of a verdict one host learns (scan()). */
export type Part = 'all' | 'client' | 'message';

/** The longest hold a session was given, and at which stage. */
export interface Held {
  readonly stage: Stage;
  readonly ms: number;
}

interface Delivery {
  readonly client: string;
  /** The keys a verdict moves: the client's address, its network, its HELO. */
  readonly keys: readonly [string, string, string];
  readonly held: Held | undefined;
}

type LearnConfig = Pick<Config, 'weights' | 'tarpit' | 'reputation' | 'feedback'>;

export class Learner {
  readonly #store: ReputationStore;
  readonly #patience: Patience;
  readonly #config: () => LearnConfig;
  readonly #now: Now;
  /** Deliveries by queue id. */
  readonly #byQueue: LRUCache<string, Delivery>;

  constructor(store: ReputationStore, patience: Patience, config: () => LearnConfig, now: Now) {
    this.#store = store;
    this.#patience = patience;
    this.#config = config;
    this.#now = now;
    this.#byQueue = boundedLru(config().feedback.remember_entries, { now, ttlMs: config().feedback.remember });
  }

  /** A message was delivered (`held`: the longest hold its session was given; `scanned`: what a header said of it). */
  delivered(o: Extract<Outcome, { kind: 'delivered' }>, k: Keys, ip: string, held: Held | undefined): void {
    const w = this.#config().weights;
    // A delivery after hang-ups under holds is no clean bill: it repairs a
    // client's score by weights.delivered / (1 + its hang-ups). Its network
    // takes the full credit: real MTAs share networks with zombies.
    this.#store.add(ip, w.delivered / (1 + this.#store.count(ip, 'abh')), 'ok');
    this.#store.add(k.net, w.delivered, 'ok');
    this.#store.add(k.helo, w.delivered, 'ok');
    this.#store.add(k.domain, w.delivered, 'ok');
    const e = o.event;
    // Remembered by queue id (feedback.remember is read at each set, so a reload applies).
    if (e.queueId !== '') this.#byQueue.set(e.queueId, { client: e.client, keys: [ip, k.net, k.helo], held }, { ttl: this.#config().feedback.remember });
    if (o.scanned) this.scan({ verdict: o.scanned, source: 'header', queueId: e.queueId, client: e.client });
  }

  /** A session was abandoned: under a hold it hung up, or it only went away. */
  abandoned(o: Extract<Outcome, { kind: 'abandoned' }>, k: Keys, ip: string): void {
    const c = this.#config();
    if (o.held && o.lasted !== undefined && c.tarpit.learn_patience) this.#patience.add(o.event.stage, o.lasted, this.#now(), c.reputation.half_life);
    // Gone under a hold is the zombie signal; a client seen to wait the hold out and leave later only abandoned.
    const underHold = o.held && o.waitedOut !== true;
    const d = underHold ? c.weights.abandoned_held : c.weights.abandoned;
    const counter = underHold ? 'abh' : 'ab';
    this.#store.add(ip, d, counter);
    this.#store.add(k.net, d, counter);
    this.#store.add(k.helo, d, counter);
  }

  /** The queue id is one this host saw delivered (and still remembers). */
  remembers(queueId: string): boolean {
    return this.#byQueue.has(queueId);
  }

  /**
   * A scanner's verdict: on the client's address and network, and, when the
   * message's queue id is remembered here, on its HELO and its hold. `part`:
   * with a fleet store every host hears a channel's verdict; one (the
   * claim's winner) learns it for the address and network ('client'), and
   * the host that took the message, which alone knows its HELO and hold,
   * learns those ('message'): each is counted once. 'all' is both.
   */
  scan(s: Scan, part: Part = 'all'): Learned {
    const byQueue = s.queueId ? this.#byQueue.get(s.queueId) : undefined;
    if (s.queueId && !byQueue && !s.client) return { learned: false, why: `queue id ${s.queueId} is not one sluice saw delivered (or was forgotten: feedback.remember)` };
    const client = byQueue?.client ?? s.client!;
    const a = byQueue ? undefined : addressKeys(client);
    if (!byQueue && !a) return { learned: false, why: `"${client}" is not an IP address` };
    const [ip, net, helo] = byQueue ? byQueue.keys : [a!.ip, a!.net, undefined];
    const c = this.#config();
    // Spam weighs weights.spam / (1 + the key's ham verdicts): one spam (or a
    // false positive) does not undo a record of clean mail, as one delivery
    // does not undo hang-ups.
    const weigh = (key: string): void => this.#store.add(key, s.verdict === 'ham' ? c.weights.ham : c.weights.spam / (1 + this.#store.count(key, 'ham')), s.verdict);
    const keys: string[] = [];
    if (part !== 'message') keys.push(ip, net);
    if (part !== 'client' && helo !== undefined) keys.push(helo);
    for (const key of keys) weigh(key);
    const held = part !== 'client' ? byQueue?.held : undefined;
    // It waited the hold out and it was spam: the hold failed - unless the
    // scanner has called more of the client's mail ham than spam (then this
    // is likelier its mistake, and a real MTA is not taken for a zombie).
    if (s.verdict === 'spam' && held !== undefined && this.#store.count(ip, 'ham') <= this.#store.count(ip, 'spam')) {
      this.#store.add(ip, 0, 'abh');
      this.#store.add(net, 0, 'abh');
      if (c.tarpit.learn_patience) this.#patience.add(held.stage, held.ms, this.#now(), c.reputation.half_life);
    }
    return { learned: true, client, keys, heldMs: held?.ms ?? 0, by: byQueue ? 'queue-id' : 'client' };
  }
}
