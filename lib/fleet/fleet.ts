// fleet.ts - one reputation for several MX hosts, shared through Redis or Valkey.
//
// The local store stays the hot path. What this host learns is written
// behind (writer.ts). A client this host has no entry for is read from the
// store at its first event, as a first-contact lookup (a Provider of
// lib/enrich): its address's and network's entries, copied into the local
// store if it still has none when they arrive; a decision waits for them at
// most fleet.read_wait, and one that did not wait finds them at its next
// stage. A client read once is not read again for READ_AGAIN_MS. Dynamic
// allow/deny entries and forgets from sluicectl are stored in one hash and
// published: every host applies them within a second, and a host that
// (re)connects reads the hash. Rates, concurrency, greylisting and the hold
// budget stay per host. The store away, slow or failing over never stops an
// answer: reads fail at once (no offline queue) and the decision is made on
// local data; writes wait (bounded). One warning when it goes away, one
// line when it is back.
//
// Store layout, under fleet.prefix: r:<key> a hash per reputation key (s,
// at, first, ok, ab, abh, rate, grey), with the reputation TTL; lists, a
// hash of list entries by value; events, the channel changes go out on.
//
// Config keys: fleet.* (the connection: connect.ts).

import { randomUUID } from 'node:crypto';
import type { Config } from '../config/schema.js';
import type { Enrichment, StageEvent } from '../engine/types.js';
import type { ListEntry, Lists } from '../engine/lists.js';
import type { Provider } from '../enrich/enricher.js';
import type { Logger } from '../log/logger.js';
import { addressKeys } from '../reputation/keys.js';
import { boundedLru } from '../reputation/lru.js';
import { FIELDS, type ReputationStore } from '../reputation/store.js';
import type { Clock, Timer } from '../util/clock.js';
import { connect, type Connection } from './connect.js';
import { FleetWriter } from './writer.js';

/** A client read from the store is not read again for this long (its changes here are written there anyway). */
export const READ_AGAIN_MS = 60_000;
/** Clients remembered as read at most (the least recently read go first). */
const READ_KEPT = 100_000;

/** What the fleet counts, for metrics. */
export interface FleetReport {
  /** `n` calls to the store of one kind, with their result. */
  fleetOps(op: 'read' | 'write' | 'list', ok: boolean, n?: number): void;
}

type FleetConfig = Pick<Config, 'fleet' | 'reputation'>;

/** A change to the lists, as published. */
type ListEvent =
  | { readonly from: string; readonly op: 'add'; readonly entry: ListEntry }
  | { readonly from: string; readonly op: 'remove'; readonly value: string }
  | { readonly from: string; readonly op: 'forget'; readonly key: string };

export class Fleet implements Provider<true> {
  readonly name = 'fleet';
  readonly #config: () => FleetConfig;
  readonly #engine: () => { readonly store: ReputationStore; readonly lists: Lists };
  readonly #clock: Clock;
  readonly #log: () => Logger;
  readonly #report: FleetReport;
  readonly #writer: FleetWriter;
  /** This process, so that it skips its own published changes. */
  readonly #self = randomUUID();
  #conn: Connection | undefined;
  #up = false;
  /** What the log last said of the store. */
  #said: 'up' | 'down' | undefined;
  #subscribed = false;
  #flushTimer: Timer | undefined;
  #flushEvery = 0;
  /** Clients read lately, with when. */
  readonly #read = boundedLru<string, number>(READ_KEPT);

  /** `engine`: where the local store and lists are (made after the lookups that include this). */
  constructor(config: () => FleetConfig, engine: () => { readonly store: ReputationStore; readonly lists: Lists }, clock: Clock, log: () => Logger, report: FleetReport) {
    this.#config = config;
    this.#engine = engine;
    this.#clock = clock;
    this.#log = log;
    this.#report = report;
    this.#writer = new FleetWriter(() => {
      const c = config();
      return { prefix: c.fleet.prefix, halfLifeMs: c.reputation.half_life, ttlMs: c.reputation.ttl };
    });
  }

  /** Connects when a store is configured; throws a ConfigError for an unreadable password file. */
  start(): void {
    const f = this.#config().fleet;
    if (f.url === '' && f.sentinels.length === 0 && f.cluster.length === 0) return;
    this.#conn = connect(f, (up, why) => this.#state(up, why));
    this.#engine().store.watch((key, delta, counter, at) => this.#writer.push(key, delta, counter, at));
    this.retime();
  }

  /** Re-times the flush after a reload (fleet.flush_interval). */
  retime(): void {
    if (this.#conn === undefined) return;
    const every = this.#config().fleet.flush_interval;
    if (every === this.#flushEvery) return;
    this.#clock.clear(this.#flushTimer);
    this.#flushEvery = every;
    this.#flushTimer = this.#clock.setInterval(() => { void this.flush(); }, every).unref();
  }

  /** Writes what waits now (also at stop). */
  async flush(): Promise<void> {
    if (this.#conn === undefined || !this.#up) return;
    const before = this.#writer.stats().failed;
    const calls = await this.#writer.flush(this.#conn.commands, this.#config().fleet.cluster.length > 0);
    this.#report.fleetOps('write', true, calls);
    if (this.#writer.stats().failed > before) this.#report.fleetOps('write', false, 1);
  }

  async close(): Promise<void> {
    this.#clock.clear(this.#flushTimer);
    if (this.#conn === undefined) return;
    await this.flush();
    await this.#conn.close();
    this.#conn = undefined;
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
      store: f.cluster.length ? `cluster ${f.cluster.join(',')}` : f.sentinels.length ? `sentinel ${f.master_name}` : f.url.replace(/\/\/[^@/]*@/, '//'),
      state: this.#up ? 'up' : 'down', pending_writes: w.pending, dropped_writes: w.dropped, written: w.written,
      lag_ms: w.oldest === 0 ? 0 : this.#clock.now() - w.oldest,
    };
  }

  // --- the first-contact read (Provider) ---

  active(): boolean {
    return this.#conn !== undefined;
  }

  budget(): number {
    return this.#config().fleet.read_wait;
  }

  wants(e: StageEvent, add: (key: string) => void): void {
    const k = addressKeys(e.client);
    if (k !== undefined && !this.#engine().store.has(k.ip)) add(k.ip);
  }

  known(key: string): true | undefined {
    const at = this.#read.get(key);
    return at !== undefined && this.#clock.now() - at < READ_AGAIN_MS ? true : undefined;
  }

  /** Reads the address's and its network's entries; copies each in that this host still has none of. */
  async fetch(key: string): Promise<true> {
    const conn = this.#conn;
    if (conn === undefined || !this.#up) return true;
    const now = this.#clock.now();
    this.#read.set(key, now);
    const net = key.startsWith('ip:') ? addressKeys(key.slice(3))?.net : undefined;
    const prefix = this.#config().fleet.prefix;
    await Promise.all([key, net].filter((k): k is string => k !== undefined).map(async (k) => {
      try {
        const h = await conn.commands.hGetAll(`${prefix}r:${k}`);
        this.#report.fleetOps('read', true);
        if (h['at'] !== undefined && !this.#engine().store.has(k)) this.#engine().store.put(k, entryValues(h));
      } catch {
        this.#report.fleetOps('read', false);
      }
    }));
    return true;
  }

  /** What was read is in the local store already: the engine finds it there. */
  judge(): Enrichment | undefined {
    return undefined;
  }

  // --- lists ---

  /** A dynamic entry added here: stored and published. */
  listed(entry: ListEntry): void {
    const f = this.#config().fleet;
    this.#send((c) => c.hSet(`${f.prefix}lists`, entry.value, JSON.stringify(entry)), { from: this.#self, op: 'add', entry });
  }

  /** A dynamic entry removed here. */
  unlisted(value: string): void {
    const f = this.#config().fleet;
    this.#send((c) => c.hDel(`${f.prefix}lists`, value), { from: this.#self, op: 'remove', value });
  }

  /** A reputation key forgotten here: forgotten everywhere. */
  forgot(key: string): void {
    const f = this.#config().fleet;
    this.#send((c) => c.del(`${f.prefix}r:${key}`), { from: this.#self, op: 'forget', key });
  }

  #send(store: (c: Connection['commands']) => Promise<unknown>, event: ListEvent): void {
    const conn = this.#conn;
    if (conn === undefined) return;
    const f = this.#config().fleet;
    store(conn.commands).then(() => conn.commands.publish(`${f.prefix}events`, JSON.stringify(event))).then(
      () => this.#report.fleetOps('list', true),
      (err: unknown) => {
        this.#report.fleetOps('list', false);
        this.#log().warn({ err: String(err), op: event.op }, 'fleet store: a list change could not be shared (it holds on this host)');
      },
    );
  }

  #event(message: string): void {
    let e: ListEvent;
    try {
      e = JSON.parse(message) as ListEvent;
    } catch {
      this.#log().warn({ message: message.slice(0, 200) }, 'fleet store: an unreadable list change was ignored');
      return;
    }
    if (e.from === this.#self) return;
    this.#apply(e);
  }

  #apply(e: ListEvent): void {
    const now = this.#clock.now();
    if (e.op === 'add') {
      const { entry } = e;
      if (entry.expires !== undefined && entry.expires <= now) return;
      this.#engine().lists.add(entry.kind, entry.value, now, entry.expires === undefined ? undefined : entry.expires - now, entry.reason);
    } else if (e.op === 'remove') this.#engine().lists.remove(e.value);
    else this.#engine().store.forget(e.key);
  }

  /** The stored list entries, applied at every (re)connection. */
  async #loadLists(): Promise<void> {
    const conn = this.#conn;
    if (conn === undefined) return;
    const all = await conn.commands.hGetAll(`${this.#config().fleet.prefix}lists`);
    for (const text of Object.values(all)) {
      try {
        this.#apply({ from: '', op: 'add', entry: JSON.parse(text) as ListEntry });
      } catch { /* one bad entry does not stop the others */ }
    }
  }

  #state(up: boolean, why?: string): void {
    const was = this.#up;
    this.#up = up;
    if (up && !was) {
      this.#log().info(this.#said === 'down' ? 'fleet store is back: shared reputation and list changes resume' : 'fleet store connected');
      this.#said = 'up';
      // Subscribed once, when first up (the client subscribes again itself after a reconnection).
      if (!this.#subscribed && this.#conn) {
        this.#subscribed = true;
        const f = this.#config().fleet;
        void this.#conn.subscribe(`${f.prefix}events`, (m) => this.#event(m)).catch((err: unknown) => {
          this.#subscribed = false;
          this.#log().warn({ err: String(err) }, 'fleet store: cannot subscribe to list changes; trying again when it is next up');
        });
      }
      void this.#loadLists().catch((err: unknown) => this.#log().warn({ err: String(err) }, 'fleet store: list entries could not be read'));
      void this.flush();
    } else if (!up && this.#said !== 'down') {
      this.#said = 'down';
      this.#log().warn({ why }, 'fleet store is away: answering from local data; writes wait (bounded) until it is back');
    }
  }
}

/** A stored hash as the local store's values (score, at, first, five counters). */
function entryValues(h: Record<string, string>): number[] {
  const n = (k: string): number => Number(h[k] ?? 0) || 0;
  const v = [n('s'), n('at'), n('first') || n('at'), n('ok'), n('ab'), n('abh'), n('rate'), n('grey')];
  return v.length === FIELDS ? v : v.slice(0, FIELDS);
}
