// fleet.ts - one reputation for several MX hosts, shared through Redis or Valkey.
//
// The local store stays the hot path. Four parts share one connection
// (connect.ts): the reader (reader.ts), a first-contact lookup that reads a
// client's address and network entries; the writer (writer.ts), which a
// watch on the local store feeds and which writes behind every
// fleet.flush_interval, publishing the entries as written; the share
// (share.ts), which takes in what the other hosts published, so that one
// reputation holds everywhere within a flush interval; and list sync
// (sync.ts), which a watch on the lists (and the store's forgets) feeds. The store and the lists are made first
// and handed in: the fleet needs no engine. Rates, concurrency, greylisting
// and the hold budget stay per host. The store away, slow or failing over
// never stops an answer: reads fail at once (no offline queue) and the
// decision is made on local data; writes wait (bounded). One warning when
// it goes away, one line when it is back. At stop the writes under way are
// waited for and the rest sent, within FLUSH_AT_STOP_MS; what is still
// unwritten is counted as dropped and said in one line.
//
// Store layout, under fleet.prefix: r:<key> a hash per reputation key (the
// fields of reputation/entry.ts), with the reputation TTL; lists and events
// (sync.ts); claim:<id>, work one host does for all (claim()).
//
// Config keys: fleet.* (the connection: connect.ts).

import type { Config } from '../config/schema.js';
import type { Lists } from '../engine/lists.js';
import type { Logger } from '../log/logger.js';
import type { ReputationStore } from '../reputation/store.js';
import type { Clock, Timer } from '../util/clock.js';
import { connect, type Connection } from './connect.js';
import { FleetReader } from './reader.js';
import { randomUUID } from 'node:crypto';
import { ReputationShare, SHARE_CHANNEL } from './share.js';
import { EVENTS_CHANNEL, ListSync } from './sync.js';
import { FleetWriter } from './writer.js';

/** Claims each key (SET NX PX); 1 where this call took it. */
const CLAIM = `local out = {}
for i, k in ipairs(KEYS) do
  out[i] = redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
end
return out`;

/** How long a stop waits for the last writes. */
export const FLUSH_AT_STOP_MS = 5000;

/** What the fleet counts, for metrics. */
export interface FleetReport {
  /** `n` calls to the store of one kind, with their result. */
  fleetOps(op: 'read' | 'write' | 'list', ok: boolean, n?: number): void;
}

type FleetConfig = Pick<Config, 'fleet' | 'reputation'>;

export class Fleet {
  /** The first-contact read, a Provider for the Enricher (inactive until start() connects). */
  readonly reader: FleetReader;
  readonly #config: () => FleetConfig;
  readonly #store: ReputationStore;
  readonly #clock: Clock;
  readonly #log: () => Logger;
  readonly #report: FleetReport;
  readonly #writer: FleetWriter;
  readonly #sync: ListSync;
  readonly #share: ReputationShare;
  /** This process, so that it skips what it published itself. */
  readonly id = randomUUID();
  /** Channels subscribed to (full names). */
  readonly #subscribed = new Set<string>();
  #conn: Connection | undefined;
  #up = false;
  /** What the log last said of the store. */
  #said: 'up' | 'down' | undefined;
  #flushTimer: Timer | undefined;
  #flushEvery = 0;
  /** Failed writes as last reported. */
  #failedSeen = 0;

  constructor(config: () => FleetConfig, made: { readonly store: ReputationStore; readonly lists: Lists }, clock: Clock, log: () => Logger, report: FleetReport) {
    this.#config = config;
    this.#store = made.store;
    this.#clock = clock;
    this.#log = log;
    this.#report = report;
    this.reader = new FleetReader(config, made.store, clock, report);
    this.#sync = new ListSync(this.id, made.lists, made.store, clock, log, report, () => config().fleet.prefix);
    this.#writer = new FleetWriter(() => {
      const c = config();
      return { prefix: c.fleet.prefix, halfLifeMs: c.reputation.half_life, ttlMs: c.reputation.ttl, channel: `${c.fleet.prefix}${SHARE_CHANNEL}`, self: this.id };
    });
    this.#share = new ReputationShare(this.id, made.store, this.#writer, clock, log, () => config().fleet.prefix);
  }

  /** Connects when a store is configured; throws a ConfigError for an unreadable password file. */
  start(): void {
    const f = this.#config().fleet;
    if (f.url === '' && f.sentinels.length === 0 && f.cluster.length === 0) return;
    const conn = connect(f, (up, why) => this.#state(up, why));
    this.#conn = conn;
    this.reader.attach(() => (this.#up ? conn.commands : undefined));
    this.#sync.attach(conn);
    this.#store.watch({
      changed: (key, delta, counter, at) => this.#writer.push(key, delta, counter, at),
      forgot: (key) => this.#sync.forgot(key),
    });
    this.reload();
  }

  /** After a reload: re-times the flush (fleet.flush_interval). */
  reload(): void {
    if (this.#conn === undefined) return;
    const every = this.#config().fleet.flush_interval;
    if (every === this.#flushEvery) return;
    this.#clock.clear(this.#flushTimer);
    this.#flushEvery = every;
    this.#flushTimer = this.#clock.setInterval(() => { void this.flush(); }, every).unref();
  }

  /** Writes what waits now (the timer's: skipped while another flush is under way). */
  async flush(): Promise<void> {
    if (this.#conn === undefined || !this.#up) return;
    this.#wrote(await this.#writer.flush(this.#conn.commands, this.#perKey()));
  }

  /** Waits for a flush under way, then writes what waits: everything changed so far is in the store (the simulation's step). */
  async flushed(): Promise<void> {
    if (this.#conn === undefined || !this.#up) return;
    this.#wrote(await this.#writer.drain(this.#conn.commands, this.#perKey()));
  }

  /** Stops sharing: the last writes (waited for within FLUSH_AT_STOP_MS), then the connection. */
  async close(): Promise<void> {
    this.#clock.clear(this.#flushTimer);
    this.#flushEvery = 0;
    const conn = this.#conn;
    if (conn === undefined) return;
    this.#conn = undefined;
    this.#store.watch(undefined);
    this.#sync.detach();
    if (this.#up) {
      let timer: Timer | undefined;
      const bound = new Promise<void>((resolve) => { timer = this.#clock.setTimeout(resolve, FLUSH_AT_STOP_MS); });
      await Promise.race([this.#writer.drain(conn.commands, this.#perKey()).then((calls) => this.#wrote(calls)), bound]);
      this.#clock.clear(timer);
    }
    const dropped = this.#writer.abandon();
    if (dropped > 0) this.#log().warn({ dropped }, `fleet store: ${dropped} keys' changes could not be written before stop: dropped (this host keeps them in its snapshot)`);
    await conn.close();
  }

  /** Messages of shared entries taken in from each other host (by its id), and how many this host's flushes published. */
  shared(): { heard: ReadonlyMap<string, number>; published: number } {
    return { heard: this.#share.heard, published: this.#writer.stats().published };
  }

  /** Changes wait to be written, or a write is under way. */
  writing(): boolean {
    return this.#writer.busy;
  }

  /** Writes waiting, and dropped since start. */
  writes(): { pending: number; dropped: number } {
    const w = this.#writer.stats();
    return { pending: w.pending, dropped: w.dropped };
  }

  status(): Record<string, unknown> | undefined {
    if (this.#conn === undefined) return undefined;
    const w = this.#writer.stats();
    const f = this.#config().fleet;
    return {
      store: f.cluster.length ? `cluster ${f.cluster.map((n) => n.text).join(',')}` : f.sentinels.length ? `sentinel ${f.master_name}` : f.url.replace(/\/\/[^@/]*@/, '//'),
      state: this.#up ? 'up' : 'down', pending_writes: w.pending, dropped_writes: w.dropped, written: w.written,
      lag_ms: w.oldest === 0 ? 0 : this.#clock.now() - w.oldest,
    };
  }

  #perKey(): boolean {
    return this.#config().fleet.cluster.length > 0;
  }

  #wrote(calls: number): void {
    this.#report.fleetOps('write', true, calls);
    if (this.#writer.stats().failed > this.#failedSeen) this.#report.fleetOps('write', false, 1);
    this.#failedSeen = this.#writer.stats().failed;
  }

  /**
   * Claims pieces of work for this host, each once for the fleet (SET NX
   * with a TTL under fleet.prefix, all in one script call): true for each the
   * one host that claims it first; also true with no store, or while it is
   * away (each host then does it itself).
   */
  async claim(ids: readonly string[], ttlMs: number): Promise<boolean[]> {
    const conn = this.#conn;
    if (conn === undefined || !this.#up || ids.length === 0) return ids.map(() => true);
    const prefix = this.#config().fleet.prefix;
    try {
      if (this.#perKey()) {
        // A cluster spreads the keys over its nodes: one call each.
        const got = await Promise.all(ids.map((id) => conn.commands.set(`${prefix}claim:${id}`, this.id, { condition: 'NX', expiration: { type: 'PX', value: ttlMs } })));
        return got.map((g) => g !== null);
      }
      const got = await conn.commands.eval(CLAIM, { keys: ids.map((id) => `${prefix}claim:${id}`), arguments: [this.id, String(ttlMs)] }) as number[];
      return ids.map((_, i) => got[i] === 1);
    } catch {
      return ids.map(() => true);
    }
  }

  /** A store is configured. */
  get active(): boolean {
    return this.#conn !== undefined;
  }

  /** Subscribes to a channel (its full name) once (the client subscribes again itself after a reconnection); a failure is tried again when the store is next up. */
  #subscribe(channel: string, fn: (message: string) => void, what: string): void {
    if (this.#conn === undefined || this.#subscribed.has(channel)) return;
    this.#subscribed.add(channel);
    this.#conn.subscribe(channel, fn).catch((err: unknown) => {
      this.#subscribed.delete(channel);
      this.#log().warn({ err: String(err) }, `fleet store: cannot subscribe to ${what}; trying again when it is next up`);
    });
  }

  #state(up: boolean, why?: string): void {
    const was = this.#up;
    this.#up = up;
    if (up && !was) {
      this.#log().info(this.#said === 'down' ? 'fleet store is back: shared reputation and list changes resume' : 'fleet store connected');
      this.#said = 'up';
      void this.#sync.load().catch((err: unknown) => this.#log().warn({ err: String(err) }, 'fleet store: list entries could not be read'));
      const prefix = this.#config().fleet.prefix;
      this.#subscribe(`${prefix}${EVENTS_CHANNEL}`, (m) => this.#sync.take(m), 'list changes');
      this.#subscribe(`${prefix}${SHARE_CHANNEL}`, (m) => this.#share.take(m), 'shared entries');
      void this.flush();
    } else if (!up && this.#said !== 'down') {
      this.#said = 'down';
      this.#log().warn({ why }, 'fleet store is away: answering from local data; writes wait (bounded) until it is back');
    }
  }
}
