// writer.ts - what this host learns, written to the fleet store behind.
//
// Every change to the local store (a delta and its counter, at a time) is
// gathered per key and sent every fleet.flush_interval: one script call per
// key, all issued in one tick so the client pipelines them. The script
// decays the stored score to the delta's time (or the delta to the stored
// time, when another host wrote later) with this host's half-life, adds it,
// bumps the counters and renews the key's TTL (reputation.ttl): hosts with
// the same half-life agree. Nothing is written on the decision path. While
// the store is away the deltas wait, at most MAX_PENDING keys (then new
// ones are dropped and counted), and go with the next flush that works.
//
// Config keys: fleet.flush_interval, fleet.prefix, reputation.half_life,
// reputation.ttl.

import { createHash } from 'node:crypto';
import type { Counter } from '../reputation/store.js';
import type { StoreCommands } from './connect.js';

/** Keys with changes waiting at most; past it new keys' changes are dropped. */
export const MAX_PENDING = 100_000;

const LN2 = Math.LN2;

/** KEYS[1]: the entry's hash. ARGV: delta, at, half-life ms, ttl ms, then counter/count pairs. */
export const APPLY = `
local h = KEYS[1]
local v = redis.call('HMGET', h, 's', 'at')
local d, at, hl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local s, at0 = tonumber(v[1]), tonumber(v[2])
if not s then
  redis.call('HSET', h, 's', d, 'at', at, 'first', at)
elseif at >= at0 then
  redis.call('HSET', h, 's', s * math.exp(-${LN2} * (at - at0) / hl) + d, 'at', at)
else
  redis.call('HSET', h, 's', s + d * math.exp(-${LN2} * (at0 - at) / hl))
end
for i = 5, #ARGV, 2 do redis.call('HINCRBY', h, ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', h, ARGV[4])
return 1
`;
const APPLY_SHA = createHash('sha1').update(APPLY).digest('hex');

interface Pending {
  /** The deltas so far, as one delta at `at` (earlier ones decayed to it). */
  delta: number;
  at: number;
  counts: Partial<Record<Counter, number>>;
}

export interface WriterStats {
  pending: number;
  dropped: number;
  written: number;
  failed: number;
  /** When the oldest change still waiting was made (0: none waiting). */
  oldest: number;
}

export class FleetWriter {
  #pending = new Map<string, Pending>();
  #oldest = 0;
  #dropped = 0;
  #written = 0;
  #failed = 0;
  #flushing = false;

  constructor(private readonly settings: () => { prefix: string; halfLifeMs: number; ttlMs: number }) {}

  /** One change to the local store. */
  push(key: string, delta: number, counter: Counter | undefined, at: number): void {
    let p = this.#pending.get(key);
    if (p === undefined) {
      if (this.#pending.size >= MAX_PENDING) {
        this.#dropped++;
        return;
      }
      p = { delta: 0, at, counts: {} };
      this.#pending.set(key, p);
      if (this.#oldest === 0) this.#oldest = at;
    }
    const hl = this.settings().halfLifeMs;
    p.delta = p.delta * Math.exp(-LN2 * Math.max(0, at - p.at) / hl) + delta;
    p.at = Math.max(p.at, at);
    if (counter) p.counts[counter] = (p.counts[counter] ?? 0) + 1;
  }

  /** Sends what waits; what fails waits for the next flush. Resolves with the number of keys written. */
  async flush(store: StoreCommands): Promise<number> {
    if (this.#flushing || this.#pending.size === 0) return 0;
    this.#flushing = true;
    const batch = this.#pending;
    this.#pending = new Map();
    const oldest = this.#oldest;
    this.#oldest = 0;
    const { prefix, halfLifeMs, ttlMs } = this.settings();
    try {
      const sent = [...batch].map(([key, p]) => {
        const args = [String(p.delta), String(p.at), String(halfLifeMs), String(ttlMs)];
        for (const [c, n] of Object.entries(p.counts)) args.push(c, String(n));
        const o = { keys: [`${prefix}r:${key}`], arguments: args };
        return store.evalSha(APPLY_SHA, o).catch((err: unknown) => {
          if (!String(err).includes('NOSCRIPT')) throw err;
          return store.eval(APPLY, o);
        }).then(() => true, () => { this.#requeue(key, p, halfLifeMs); return false; });
      });
      const ok = (await Promise.all(sent)).filter(Boolean).length;
      this.#written += ok;
      this.#failed += batch.size - ok;
      if (ok < batch.size && this.#oldest === 0) this.#oldest = oldest;
      return ok;
    } finally {
      this.#flushing = false;
    }
  }

  stats(): WriterStats {
    return { pending: this.#pending.size, dropped: this.#dropped, written: this.#written, failed: this.#failed, oldest: this.#oldest };
  }

  /** A change that could not be written goes back in front of what came since. */
  #requeue(key: string, p: Pending, hl: number): void {
    const later = this.#pending.get(key);
    if (later === undefined) {
      if (this.#pending.size >= MAX_PENDING) {
        this.#dropped++;
        return;
      }
      this.#pending.set(key, p);
      return;
    }
    later.delta += p.delta * Math.exp(-LN2 * Math.max(0, later.at - p.at) / hl);
    for (const [c, n] of Object.entries(p.counts) as [Counter, number][]) later.counts[c] = (later.counts[c] ?? 0) + n;
  }
}
