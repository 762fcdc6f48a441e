// feedback.ts - a content scanner's verdicts, learned as they come.
//
// Verdicts arrive on a Redis Pub/Sub channel (feedback.channel), on the
// fleet store's server or on one of their own (feedback.url): every MX host
// of a fleet subscribes (in a worker thread: subscriber.ts), so each learns
// from every scan. `sluicectl learn` comes through here too (counted under
// its source); a milter header reaches the engine with the delivery
// (engine.record). A message is queued as it
// arrives and learned in turns of at most TURN messages, each turn after a
// timer: a flood of verdicts waits its turn behind policy and milter
// answers rather than in front of them. At most MAX_QUEUED wait; past that,
// messages are refused as `overflow`. Bad messages change nothing; they are
// counted by reason, and said in one warning a minute at most.
// With a fleet store every host hears every verdict, and the store would
// count it once per host: each host claims the message (Fleet.claim, one
// call for a turn's messages); the one that wins learns the verdict for
// the client's address and network, and the host that took the message (it
// remembers the queue id) for its HELO and its hold. While the store is
// away each host learns what it hears.
//
// Config keys: feedback.channel, feedback.url.

import type { Config } from '../config/schema.js';
import type { Learned, Part, Scan } from '../engine/learn.js';
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log/logger.js';
import type { Clock, Timer } from '../util/clock.js';
import { Fifo } from '../util/fifo.js';
import { parseVerdict, type Refusal } from './verdicts.js';
import type { SubscriberData, SubscriberMessage } from './subscriber.js';

/** Messages learned per turn of the event loop. */
export const TURN = 100;
/** Messages waiting at most. */
export const MAX_QUEUED = 100_000;
const WARN_EVERY_MS = 60_000;

/** How long a claim on a verdict is kept: far longer than it takes every host to hear it. */
const CLAIM_MS = 10 * 60_000;

/** Where verdicts are learned (the engine). */
export interface Learns {
  learn(s: Scan, part?: Part): Learned;
  /** This host saw the message with this queue id delivered. */
  delivered(queueId: string): boolean;
}

/** What feedback counts, for metrics. */
export interface FeedbackReport {
  scanned(source: string, verdict: string): void;
  scanRefused(source: string, reason: string): void;
}

/** The fleet store, as feedback uses it: its claims. */
export interface Shared {
  readonly active: boolean;
  claim(ids: readonly string[], ttlMs: number): Promise<boolean[]>;
}

type FeedbackConfig = Pick<Config, 'feedback' | 'fleet'>;

export class Feedback {
  readonly #engine: Learns;
  readonly #fleet: Shared;
  /** Claims under way. */
  readonly #claims = new Set<Promise<void>>();
  readonly #clock: Clock;
  readonly #log: () => Logger;
  readonly #report: FeedbackReport;
  readonly #queue = new Fifo<string>();
  #timer: Timer | undefined;
  #worker: Worker | undefined;
  /** Refusals since the last warning, by reason. */
  #refused = new Map<string, number>();
  #warned = -Infinity;
  #up: boolean | undefined;

  constructor(engine: Learns, fleet: Shared, clock: Clock, log: () => Logger, report: FeedbackReport) {
    this.#engine = engine;
    this.#fleet = fleet;
    this.#clock = clock;
    this.#log = log;
    this.#report = report;
  }

  /**
   * Subscribes to feedback.channel, when set, on feedback.url's server or
   * else the fleet store's, in a worker thread (subscriber.ts) that posts
   * the messages on in batches.
   */
  start(c: FeedbackConfig): void {
    const f = c.feedback;
    if (f.channel === '') return;
    const store = f.url === '' ? c.fleet : { ...c.fleet, url: f.url, password_file: '', sentinels: [], cluster: [] };
    const data: SubscriberData = { store, channel: f.channel };
    const w = new Worker(new URL('./subscriber.js', import.meta.url), { workerData: data });
    this.#worker = w;
    w.on('message', (m: SubscriberMessage) => {
      if (m.kind === 'verdicts') for (const text of m.messages) this.take(text);
      else if (m.kind === 'failed') this.#log().warn({ why: m.why }, 'feedback: cannot subscribe to the scanner\'s verdicts');
      else if (m.up !== this.#up) {
        this.#up = m.up;
        if (m.up) this.#log().info({ channel: f.channel }, 'feedback: subscribed to the scanner\'s verdicts');
        else this.#log().warn({ why: m.why }, 'feedback: the verdicts\' server is away; trying again');
      }
    });
    w.on('error', (err) => this.#log().warn({ err: err.message }, 'feedback: the verdicts\' subscriber failed; verdicts from the channel stop until the next start'));
    w.unref();
  }

  async close(): Promise<void> {
    this.#clock.clear(this.#timer);
    this.#timer = undefined;
    const w = this.#worker;
    this.#worker = undefined;
    if (w === undefined) return;
    const gone = new Promise<void>((r) => w.once('exit', () => r()));
    w.postMessage('close');
    // Its connection closes at once; a worker that does not end within a second is ended.
    const timer = this.#clock.setTimeout(() => { void w.terminate(); }, 1000);
    await gone;
    this.#clock.clear(timer);
  }

  /** A channel message: queued, learned in a later turn. */
  take(message: string): void {
    if (this.#queue.size >= MAX_QUEUED) {
      this.#refuse('channel', 'overflow', `more than ${MAX_QUEUED} verdicts waiting`);
      return;
    }
    this.#queue.push(message);
    this.#timer ??= this.#clock.setTimeout(() => this.#turn(), 0);
  }

  /** Learns every waiting message now (a simulation's step; a test's); claims are settled by settled(). */
  drain(): void {
    while (this.#queue.size > 0) this.#batch(TURN);
  }

  /** Messages waiting. */
  get waiting(): number {
    return this.#queue.size;
  }

  /** Settles when the claims under way have been answered and learned. */
  async settled(): Promise<void> {
    while (this.#claims.size > 0) await Promise.all([...this.#claims]);
  }

  /** A verdict from elsewhere (`sluicectl learn`), learned at once and counted under its source. */
  learn(s: Scan): Learned {
    const r = this.#engine.learn(s);
    if (r.learned) this.#report.scanned(s.source, s.verdict);
    else this.#report.scanRefused(s.source, 'unknown');
    return r;
  }

  #turn(): void {
    this.#timer = undefined;
    this.#batch(TURN);
    if (this.#queue.size > 0) this.#timer = this.#clock.setTimeout(() => this.#turn(), 0);
  }

  /** Up to `n` waiting messages: parsed, then learned (with a fleet store, once the fleet's claims are in). */
  #batch(n: number): void {
    const claims: { scan: Scan; id: string; mine: boolean }[] = [];
    for (let i = 0; i < n && this.#queue.size > 0; i++) {
      const text = this.#queue.shift()!;
      const p = parseVerdict(text);
      if ('refused' in p) this.#refuse('channel', p.refused, p.detail);
      else if ('unsure' in p) this.#report.scanned('channel', 'unsure');
      else {
        const scan: Scan = { ...p.scan, source: 'channel' };
        if (!this.#fleet.active) this.#learned(scan, 'all');
        else claims.push({ scan, id: createHash('sha1').update(text).digest('hex'), mine: scan.queueId !== undefined && this.#engine.delivered(scan.queueId) });
      }
    }
    if (claims.length === 0) return;
    const claim = this.#fleet.claim(claims.map((c) => c.id), CLAIM_MS).then((won) => {
      this.#claims.delete(claim);
      claims.forEach((c, i) => {
        if (won[i]) this.#learned(c.scan, c.mine ? 'all' : 'client');
        else if (c.mine) this.#engine.learn(c.scan, 'message');
      });
    });
    this.#claims.add(claim);
  }

  #learned(scan: Scan, part: Part): void {
    const r = this.#engine.learn(scan, part);
    if (r.learned) this.#report.scanned('channel', scan.verdict);
    else this.#refuse('channel', 'unknown', r.why);
  }

  #refuse(source: string, reason: Refusal | 'overflow' | 'unknown', detail: string): void {
    this.#report.scanRefused(source, reason);
    this.#refused.set(reason, (this.#refused.get(reason) ?? 0) + 1);
    const now = this.#clock.now();
    if (now - this.#warned < WARN_EVERY_MS) return;
    this.#warned = now;
    const counts = Object.fromEntries(this.#refused);
    this.#refused = new Map();
    this.#log().warn({ refused: counts, last: detail }, 'feedback: verdicts refused (changed nothing); at most one such line a minute');
  }
}
