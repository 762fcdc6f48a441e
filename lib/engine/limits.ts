// limits.ts - rate limits over fixed windows, and live sessions per client.
//
// Each client address and each network has one Counts record: connections,
// messages and recipients in its current window (restarted when older than
// rates.window) and its live sessions. Records live in a bounded LRU (an
// attacker with many addresses evicts old records rather than growing
// memory). A session holds its client's and network's records from its first
// stage to its outcome (or until it has been silent too long), so later
// stages count without a lookup. A record evicted while sessions still hold it
// keeps counting for them; a new session from that address starts a new one.
// Time comes from the injected clock.
//
// Config keys: rates.*.

import type { LRUCache } from 'lru-cache';
import type { Config } from '../config/schema.js';
import type { Stage } from './types.js';
import { boundedLru } from '../util/lru.js';
import { YoungMap } from '../util/young-map.js';

/** A client's or a network's counts in its current window, and its live sessions. */
export interface Counts {
  start: number;
  connections: number;
  messages: number;
  recipients: number;
  live: number;
  /** The engine's latest profiles of this client (engine.ts), kept and evicted with its counts (RateWindows.keep). */
  profile: unknown;
}

/** The counts as of now: a window older than windowMs starts again at zero. */
export function current(c: Counts, now: number, windowMs: number): Counts {
  if (now - c.start >= windowMs) {
    c.start = now;
    c.connections = 0;
    c.messages = 0;
    c.recipients = 0;
  }
  return c;
}

/** Records that may carry profiles at once: a few hundred bytes each (up to three), where the counts take about a hundred. */
const PROFILED = 20_000;

export class RateWindows {
  readonly #lru: LRUCache<string, Counts>;
  /** Records kept now that carry a profile. */
  #profiled = 0;
  constructor(max: number) {
    this.#lru = boundedLru(max, { dispose: (c) => { if (c.profile !== undefined) this.#profiled--; } });
  }

  /**
   * Keeps a profile with the record, while fewer than PROFILED records carry
   * one (a flood of new clients would otherwise add a profile to every record
   * the LRU holds); a record that has one always takes the newer.
   */
  keep(c: Counts, profile: unknown): void {
    if (c.profile === undefined) {
      if (this.#profiled >= PROFILED) return;
      this.#profiled++;
    }
    c.profile = profile;
  }

  /** The key's record; a new one is kept unless `peek` (explain's dry run). */
  get(key: string, now: number, peek = false): Counts {
    const c = peek ? this.#lru.peek(key) : this.#lru.get(key);
    if (c) return c;
    const made: Counts = { start: now, connections: 0, messages: 0, recipients: 0, live: 0, profile: undefined };
    if (!peek) this.#lru.set(key, made);
    return made;
  }
}

/** What a live session holds: its client's and network's counts, and when it last spoke. */
export interface Live {
  readonly ipCounts: Counts;
  readonly netCounts: Counts;
  seen: number;
}

export class Sessions<L extends Live> {
  readonly #live = new YoungMap<string, L>();
  /** Told of every session that ends, by its outcome or the sweep: what else it held goes with it. */
  readonly #ended: ((l: L) => void) | undefined;

  constructor(ended?: (l: L) => void) {
    this.#ended = ended;
  }

  get(session: string): L | undefined {
    return this.#live.get(session);
  }

  open(session: string, l: L): void {
    this.#live.set(session, l);
    l.ipCounts.live++;
    l.netCounts.live++;
  }

  end(session: string): void {
    const l = this.#live.get(session);
    if (!l) return;
    this.#live.delete(session);
    l.ipCounts.live--;
    l.netCounts.live--;
    this.#ended?.(l);
  }

  /** Ends sessions silent for longer than idleMs; returns how many. */
  sweep(now: number, idleMs: number): number {
    let n = 0;
    for (const [id, l] of this.#live) {
      if (now - l.seen > idleMs) { this.end(id); n++; }
    }
    return n;
  }

  get size(): number {
    return this.#live.size;
  }
}

/**
 * The first limit this question goes over, or undefined: connections at a
 * session's first stage, live sessions, messages at MAIL, recipients at
 * RCPT, per client and per network (a dry run counts nothing).
 */
export function overLimit(stage: Stage, x: Live, first: boolean, dry: boolean, r: Config['rates'], now: number): string | undefined {
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
  if (stage === 'mail' && (ip.messages += add) > r.messages_per_client) return 'messages_per_client';
  if (stage === 'rcpt') {
    if ((ip.recipients += add) > r.recipients_per_client) return 'recipients_per_client';
    if ((net.recipients += add) > r.recipients_per_network) return 'recipients_per_network';
  }
  return undefined;
}
