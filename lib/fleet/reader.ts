// reader.ts - what the fleet store knows of a client, read at its first
// event here (a Provider of lib/enrich).
//
// A client this host has no entry for is read from the store at its first
// event: its address's entry and its network's (IPv4 /32 and /24, IPv6 /64
// and /48), each a key of its own, each read only while this host has no
// entry for it. A decision waits for them at most fleet.read_wait; one that
// did not wait finds them at its next stage. What a session deciding for
// real read is copied into the local store (keep), unless the store has an
// entry by then; what explain's dry run read is only shown in its trace,
// never kept. A key read is not read again for READ_AGAIN_MS (lru-cache's
// own ttl on the injected clock): its changes here are written there
// anyway. The store away never holds up an answer: the read fails at once
// and counts as nothing stored.
//
// Config keys: fleet.read_wait, fleet.prefix.

import type { LRUCache } from 'lru-cache';
import type { Config } from '../config/schema.js';
import type { Enrichment, StageEvent } from '../engine/types.js';
import type { Provider } from '../enrich/enricher.js';
import { addressKeys } from '../reputation/keys.js';
import { AT, S, valuesOf } from '../reputation/entry.js';
import { decay } from '../reputation/score.js';
import type { ReputationStore } from '../reputation/store.js';
import type { Clock } from '../util/clock.js';
import { boundedLru } from '../util/lru.js';
import type { StoreCommands } from './connect.js';

/** A key read from the store is not read again for this long. */
export const READ_AGAIN_MS = 60_000;
/** Keys remembered as read at most (the least recently read go first). */
const READ_KEPT = 100_000;

/** One key's entry as stored (its values in slab order), or null: nothing stored. */
export type Stored = { readonly values: readonly number[] | null };

const NOTHING: Stored = Object.freeze({ values: null });

/** What the reader counts, for metrics. */
export interface ReadReport {
  fleetOps(op: 'read', ok: boolean): void;
}

type ReaderConfig = Pick<Config, 'fleet' | 'reputation'>;

export class FleetReader implements Provider<Stored> {
  readonly name = 'fleet';
  readonly #config: () => ReaderConfig;
  readonly #store: ReputationStore;
  readonly #clock: Clock;
  readonly #report: ReadReport;
  /** The store's commands while it is up; undefined: nothing to ask. */
  #commands: (() => StoreCommands | undefined) | undefined;
  /** Keys read lately. */
  readonly #read: LRUCache<string, true>;

  constructor(config: () => ReaderConfig, store: ReputationStore, clock: Clock, report: ReadReport) {
    this.#config = config;
    this.#store = store;
    this.#clock = clock;
    this.#report = report;
    this.#read = boundedLru<string, true>(READ_KEPT, { ttlMs: READ_AGAIN_MS, now: clock.now });
  }

  /** Where to read (called once the connection is made); `commands` says undefined while the store is away. */
  attach(commands: () => StoreCommands | undefined): void {
    this.#commands = commands;
  }

  active(): boolean {
    return this.#commands !== undefined;
  }

  budget(): number {
    return this.#config().fleet.read_wait;
  }

  /** The client's address and network, each while this host has no entry for it. */
  wants(e: StageEvent, add: (key: string) => void): void {
    const k = addressKeys(e.client);
    if (k === undefined) return;
    const now = this.#clock.now();
    if (!this.#store.has(k.ip, now)) add(k.ip);
    if (!this.#store.has(k.net, now)) add(k.net);
  }

  known(key: string): Stored | undefined {
    return this.#read.get(key) ? NOTHING : undefined;
  }

  async fetch(key: string): Promise<Stored> {
    const commands = this.#commands?.();
    if (commands === undefined) return NOTHING;
    try {
      const h = await commands.hGetAll(`${this.#config().fleet.prefix}r:${key}`);
      this.#report.fleetOps('read', true);
      return h['at'] === undefined ? NOTHING : { values: valuesOf(h) };
    } catch {
      this.#report.fleetOps('read', false);
      return NOTHING;
    }
  }

  /** Copies what was read into the local store, unless it has an entry for the key by now. */
  keep(key: string, answer: Stored): void {
    this.#read.set(key, true);
    if (answer.values !== null && !this.#store.has(key)) this.#store.put(key, answer.values);
  }

  /** What was read is in the local store already (the engine finds it there); explain's reads are shown, not counted. */
  judge(_e: StageEvent, answers: ReadonlyMap<string, Stored>, explain: boolean): Enrichment | undefined {
    if (!explain || answers.size === 0) return undefined;
    const now = this.#clock.now();
    const hl = this.#config().reputation.half_life;
    const trace: string[] = [];
    for (const [key, a] of answers) {
      if (a.values === null) trace.push(`fleet store: nothing stored for ${key}`);
      else trace.push(`fleet store: ${key} has score ${Math.round(decay(a.values[S]!, a.values[AT]!, now, hl) * 10) / 10} there; read for explain, not kept here and not in this score`);
    }
    return { source: 'fleet', points: 0, listed: undefined, trusted: false, rule: 'fleet', trace };
  }
}
