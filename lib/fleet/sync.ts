// sync.ts - the fleet's allow and deny lists, and forgets, shared.
//
// Driven by watches, as the writer is driven by a watch on the store: every
// dynamic list change on this host (engine/lists.ts) is stored in one hash
// and published; every forget of a reputation key (the store's watcher)
// deletes the stored entry and is published. Every host applies what the
// others publish within a second (quietly: a change applied from the store
// is not sent back). A removal is stored as a tombstone with its time, so
// that a host back from an outage can tell an entry removed elsewhere from
// one the store lost. The store away: a change holds on this host, is
// logged, and is kept to be sent. A host that (re)connects reconciles
// (load()): its own changes made while away are sent first and win; then,
// entry by entry, the later of the store's and its own (by when each was
// added or removed) wins on both sides; an entry the store does not have at
// all (it restarted empty) is written back.
//
// Store layout, under fleet.prefix: lists, a hash by value of list entries
// and tombstones ({value, removed}); events, the channel changes go out on
// (EVENTS_CHANNEL; the fleet subscribes).
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
  | { readonly from: string; readonly op: 'remove'; readonly value: string; readonly at?: number }
  | { readonly from: string; readonly op: 'forget'; readonly key: string };

/** What the lists hash holds for a value: an entry, or a tombstone. */
type Stored = ListEntry | { readonly value: string; readonly removed: number };

/** A list change made here, as it is stored and published (kept while the store cannot take it). */
type Mine = { readonly op: 'add'; readonly entry: ListEntry } | { readonly op: 'remove'; readonly value: string; readonly at: number };

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
  /** Changes made here that the store has not taken yet, by value (the last one). */
  readonly #unsent = new Map<string, Mine>();

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

  /** The store is (back) up: its entries and this host's, reconciled (see the top of this file). */
  async load(): Promise<void> {
    const conn = this.#conn;
    if (conn === undefined) return;
    const all = await conn.commands.hGetAll(`${this.#prefix()}lists`);
    const now = this.#clock.now();
    // This host's changes made while the store was away go first, and win.
    const unsent = [...this.#unsent.values()];
    this.#unsent.clear();
    const done = new Set<string>();
    for (const u of unsent) {
      this.#share(u);
      done.add(valueOf(u));
    }
    const mine = new Map(this.#lists.dynamic(now).map((e) => [e.value, e]));
    for (const [value, text] of Object.entries(all)) {
      if (done.has(value)) continue;
      done.add(value);
      let stored: Stored;
      try {
        stored = JSON.parse(text) as Stored;
      } catch {
        continue; // one bad entry does not stop the others
      }
      const here = mine.get(value);
      const hereAt = here?.added ?? -Infinity;
      if ('removed' in stored) {
        if (here === undefined) continue;
        if (stored.removed >= hereAt) this.#apply({ from: '', op: 'remove', value });
        else this.#share({ op: 'add', entry: here });
      } else if (here === undefined || (stored.added ?? 0) >= hereAt) {
        this.#apply({ from: '', op: 'add', entry: stored });
      } else {
        this.#share({ op: 'add', entry: here });
      }
    }
    // Entries the store does not have at all: it lost them (a restart without persistence).
    for (const [value, entry] of mine) if (!done.has(value)) this.#share({ op: 'add', entry });
  }

  #changed(c: ListChange): void {
    if (this.#applying) return;
    this.#share(c.op === 'add' ? c : { op: 'remove', value: c.value, at: this.#clock.now() });
  }

  /** Stores a change of this host's (an entry, or a removal's tombstone) and publishes it; kept for load() when the store cannot take it. */
  #share(m: Mine): void {
    const stored: Stored = m.op === 'add' ? m.entry : { value: m.value, removed: m.at };
    this.#send((s) => s.hSet(`${this.#prefix()}lists`, stored.value, JSON.stringify(stored)), { from: this.#self, ...m }, m);
  }

  #send(store: (c: Connection['commands']) => Promise<unknown>, event: Event, keep?: Mine): void {
    const conn = this.#conn;
    if (conn === undefined) return;
    store(conn.commands).then(() => conn.commands.publish(`${this.#prefix()}${EVENTS_CHANNEL}`, JSON.stringify(event))).then(
      () => this.#report.fleetOps('list', true),
      (err: unknown) => {
        this.#report.fleetOps('list', false);
        if (keep) this.#unsent.set(valueOf(keep), keep);
        this.#log().warn({ err: String(err), op: event.op }, 'fleet store: a list change could not be shared (it holds on this host, and is sent when the store is back)');
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
        // Added when it was added where it was made: the time a reconciliation compares.
        const added = entry.added ?? now;
        this.#lists.add(entry.kind, entry.value, added, entry.expires === undefined ? undefined : entry.expires - added, entry.reason);
      } else if (e.op === 'remove') this.#lists.remove(e.value);
      else this.#store.forget(e.key, true);
    } finally {
      this.#applying = false;
    }
  }
}

function valueOf(m: Mine): string {
  return m.op === 'add' ? m.entry.value : m.value;
}
