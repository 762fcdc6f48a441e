// limits.ts - rate limits over fixed windows, and live sessions per client.
//
// Counters live in a bounded LRU (an attacker with many addresses evicts old
// counters rather than growing memory). A window resets when its start is
// older than rates.window. Sessions are tracked from their first stage until
// their outcome (or until rates.session_idle passes without a word), for the
// concurrency limits. Time comes from the injected clock.
//
// Config keys: rates.*.

import { LRUCache } from 'lru-cache';

interface Window {
  start: number;
  n: number;
}

export class RateWindows {
  readonly #lru: LRUCache<string, Window>;
  constructor(max: number) {
    this.#lru = new LRUCache({ max });
  }

  /** Adds n to the key's current window and returns the new count (peek: n = 0). */
  hit(key: string, n: number, windowMs: number, now: number): number {
    let w = this.#lru.get(key);
    if (!w || now - w.start >= windowMs) {
      w = { start: now, n: 0 };
    }
    w.n += n;
    this.#lru.set(key, w);
    return w.n;
  }
}

interface Live {
  readonly ip: string;
  readonly net: string;
  seen: number;
}

export class Sessions {
  readonly #live = new Map<string, Live>();
  readonly #count = new Map<string, number>();

  /** Marks a session as live; returns true the first time it is seen. */
  touch(session: string, ip: string, net: string, now: number): boolean {
    const s = this.#live.get(session);
    if (s) {
      s.seen = now;
      return false;
    }
    this.#live.set(session, { ip, net, seen: now });
    this.#bump(ip, 1);
    this.#bump(net, 1);
    return true;
  }

  end(session: string): void {
    const s = this.#live.get(session);
    if (!s) return;
    this.#live.delete(session);
    this.#bump(s.ip, -1);
    this.#bump(s.net, -1);
  }

  live(key: string): number {
    return this.#count.get(key) ?? 0;
  }

  /** Ends sessions silent for longer than idleMs; returns how many. */
  sweep(now: number, idleMs: number): number {
    let n = 0;
    for (const [id, s] of this.#live) {
      if (now - s.seen > idleMs) { this.end(id); n++; }
    }
    return n;
  }

  get size(): number {
    return this.#live.size;
  }

  #bump(key: string, d: number): void {
    const n = (this.#count.get(key) ?? 0) + d;
    if (n <= 0) this.#count.delete(key);
    else this.#count.set(key, n);
  }
}
