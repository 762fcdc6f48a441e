// sync.ts - the fleet's allow and deny lists, and forgets, shared.
//
// Driven by watches, as the writer is driven by a watch on the store: every
// dynamic list change on this host (engine/lists.ts) is stored in one hash
// and published; every forget of a reputation key (the store's watcher)
// deletes the stored entry and is published. Every host applies what the
// others publish within a second (quietly: a change applied from the store
// is not sent back), and a host that (re)connects reads the hash. The store
// away: a change holds on this host and is logged.
//
// Store layout, under fleet.prefix: lists, a hash of list entries by value;
// events, the channel changes go out on (EVENTS_CHANNEL; the fleet subscribes).
//
// Config keys: fleet.prefix.

import type { ListChange, ListEntry, Lists } from '../engine/lists.js';
import type { Logger } from '../log/logger.js';
import type { ReputationStore } from '../reputation/store.js';
import type { Clock } from '../util/clock.js';
import type { Connection } from './connect.js';

/** The channel list changes go out on, under fleet.prefix. */
export const EVENTS_CHANNEL = 'events';

/** A change, as published. */
type Event =
  | { readonly from: string; readonly op: 'add'; readonly entry: ListEntry }
  | { readonly from: string; readonly op: 'remove'; readonly value: string }
  | { readonly from: string; readonly op: 'forget'; readonly key: string };

/** What list sync counts, for metrics. */
export interface SyncReport {
  fleetOps(op: 'list', ok: boolean): void;
}

export class ListSync {
  readonly #lists: Lists;
  readonly #store: ReputationStore;
  readonly #clock: Clock;
  readonly #log: () => Logger;
  readonly #report: SyncReport;
  readonly #prefix: () => string;
  /** This process, so that it skips its own published changes. */
  readonly #self: string;
  #conn: Connection | undefined;
  /** True while a change from the store is applied here: the watches do not send it back. */
  #applying = false;

  constructor(self: string, lists: Lists, store: ReputationStore, clock: Clock, log: () => Logger, report: SyncReport, prefix: () => string) {
    this.#self = self;
    this.#lists = lists;
    this.#store = store;
    this.#clock = clock;
    this.#log = log;
    this.#report = report;
    this.#prefix = prefix;
  }

  /** Shares this host's changes through `conn` from now on. */
  attach(conn: Connection): void {
    this.#conn = conn;
    this.#lists.watch((c) => this.#changed(c));
  }

  /** Told of a reputation key forgotten here (the store's watcher). */
  forgot(key: string): void {
    if (this.#applying) return;
    this.#send((c) => c.del(`${this.#prefix()}r:${key}`), { from: this.#self, op: 'forget', key });
  }

  detach(): void {
    this.#lists.watch(undefined);
    this.#conn = undefined;
  }

  /** The store is (back) up: the stored entries, read and applied. */
  async load(): Promise<void> {
    const conn = this.#conn;
    if (conn === undefined) return;
    const all = await conn.commands.hGetAll(`${this.#prefix()}lists`);
    for (const text of Object.values(all)) {
      try {
        this.#apply({ from: '', op: 'add', entry: JSON.parse(text) as ListEntry });
      } catch { /* one bad entry does not stop the others */ }
    }
  }

  #changed(c: ListChange): void {
    if (this.#applying) return;
    const key = `${this.#prefix()}lists`;
    if (c.op === 'add') this.#send((s) => s.hSet(key, c.entry.value, JSON.stringify(c.entry)), { from: this.#self, op: 'add', entry: c.entry });
    else this.#send((s) => s.hDel(key, c.value), { from: this.#self, op: 'remove', value: c.value });
  }

  #send(store: (c: Connection['commands']) => Promise<unknown>, event: Event): void {
    const conn = this.#conn;
    if (conn === undefined) return;
    store(conn.commands).then(() => conn.commands.publish(`${this.#prefix()}${EVENTS_CHANNEL}`, JSON.stringify(event))).then(
      () => this.#report.fleetOps('list', true),
      (err: unknown) => {
        this.#report.fleetOps('list', false);
        this.#log().warn({ err: String(err), op: event.op }, 'fleet store: a list change could not be shared (it holds on this host)');
      },
    );
  }

  /** A change published on the events channel (the fleet subscribes). */
  take(message: string): void {
    let e: Event;
    try {
      e = JSON.parse(message) as Event;
    } catch {
      this.#log().warn({ message: message.slice(0, 200) }, 'fleet store: an unreadable list change was ignored');
      return;
    }
    if (e.from === this.#self) return;
    this.#apply(e);
  }

  /** A change from the store, applied here without being sent back. */
  #apply(e: Event): void {
    const now = this.#clock.now();
    this.#applying = true;
    try {
      if (e.op === 'add') {
        const { entry } = e;
        if (entry.expires !== undefined && entry.expires <= now) return;
        this.#lists.add(entry.kind, entry.value, now, entry.expires === undefined ? undefined : entry.expires - now, entry.reason);
      } else if (e.op === 'remove') this.#lists.remove(e.value);
      else this.#store.forget(e.key, true);
    } finally {
      this.#applying = false;
    }
  }
}
