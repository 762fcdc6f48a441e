// writer.ts - what this host learns, written to the fleet store behind.
//
// Every change to the local store (a delta and its counter, at a time) is
// gathered per key and sent every fleet.flush_interval: one script call per
// CHUNK keys (per key on a Cluster, where the keys of one call must share a
// slot), all issued in one tick so the client pipelines them. The script
// decays the stored score to the delta's time (or the delta to the stored
// time, when another host wrote later) with this host's half-life, adds it,
// bumps the counters and renews the key's TTL (reputation.ttl): hosts with
// the same half-life agree. Nothing is written on the decision path. While
// the store is away the deltas wait, at most MAX_PENDING keys (then new
// ones are dropped and counted), and go with the next flush that works.
// One flush runs at a time; at stop, drain() waits for it and sends the
// rest, and what still could not be written is abandoned: counted as
// dropped (the fleet logs how many), never lost without a word.
//
// Config keys: fleet.flush_interval, fleet.prefix, reputation.half_life,
// reputation.ttl.

import { createHash } from 'node:crypto';
import { setImmediate } from 'node:timers/promises';
import { AT, COUNTERS, ENTRY_FIELDS, FIRST, S, type Counter } from '../reputation/entry.js';
import type { StoreCommands } from './connect.js';

/** Keys with changes waiting at most; past it new keys' changes are dropped. */
export const MAX_PENDING = 100_000;

const LN2 = Math.LN2;

/** Keys per script call (standalone and Sentinel). */
export const CHUNK = 500;

const [FS, FAT, FFIRST] = [ENTRY_FIELDS[S], ENTRY_FIELDS[AT], ENTRY_FIELDS[FIRST]];

/**
 * KEYS: the entries' hashes. ARGV: half-life ms, ttl ms, and the changes,
 * one line per key in KEYS' order: the delta, its time, then one count per
 * counter in COUNTERS' order (one argument for them all: the client encodes
 * every argument, and a flush carries thousands of keys); then a channel
 * ("" for none) and this host's id. The field names come from
 * reputation/entry.ts. On the channel goes one message per call: the id,
 * then per key a line "hash values..." with the entry as now stored, so
 * that every other host takes what all hosts wrote at once.
 */
export const APPLY = `
local hl, ttl = tonumber(ARGV[1]), ARGV[2]
local names = {${COUNTERS.map((c) => `'${c}'`).join(', ')}}
local k = 0
local out = {}
for line in string.gmatch(ARGV[3], '[^\\n]+') do
  k = k + 1
  local h = KEYS[k]
  local f = {}
  for x in string.gmatch(line, '%S+') do f[#f + 1] = tonumber(x) end
  local d, at = f[1], f[2]
  local v = redis.call('HMGET', h, '${FS}', '${FAT}')
  local s, at0 = tonumber(v[1]), tonumber(v[2])
  if not s then
    redis.call('HSET', h, '${FS}', d, '${FAT}', at, '${FFIRST}', at)
  elseif at >= at0 then
    redis.call('HSET', h, '${FS}', s * math.exp(-${LN2} * (at - at0) / hl) + d, '${FAT}', at)
  else
    redis.call('HSET', h, '${FS}', s + d * math.exp(-${LN2} * (at0 - at) / hl))
  end
  for i = 1, #names do
    if f[i + 2] ~= 0 then redis.call('HINCRBY', h, names[i], f[i + 2]) end
  end
  redis.call('PEXPIRE', h, ttl)
  local now = redis.call('HMGET', h, ${ENTRY_FIELDS.map((f) => `'${f}'`).join(', ')})
  for i = 1, #now do now[i] = now[i] or '0' end
  out[#out + 1] = h .. ' ' .. table.concat(now, ' ')
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5] .. '\\n' .. table.concat(out, '\\n')) end
return #KEYS
`;
const APPLY_SHA = createHash('sha1').update(APPLY).digest('hex');

/** Script calls built between turns of the event loop. */
const YIELD_EVERY = 4;

/** Per key waiting: delta (decayed to `at`), at, then one count per counter (COUNTERS order). */
const WIDTH = 2 + COUNTERS.length;

/**
 * Keys with changes waiting, each an index into one slab of numbers: no
 * object per key. A batch lives for up to a flush interval, long enough for
 * V8 to promote what it holds; numbers in a typed array cost its collector
 * nothing.
 */
class Batch {
  readonly index = new Map<string, number>();
  slab = new Float64Array(WIDTH * 1024);

  /** The key's row (made zeroed at `at` when new), or -1 when the batch is full. */
  row(key: string, at: number): number {
    const i = this.index.get(key);
    if (i !== undefined) return i * WIDTH;
    const n = this.index.size;
    if (n >= MAX_PENDING) return -1;
    if ((n + 1) * WIDTH > this.slab.length) {
      const grown = new Float64Array(Math.min(this.slab.length * 2, MAX_PENDING * WIDTH));
      grown.set(this.slab);
      this.slab = grown;
    }
    this.index.set(key, n);
    const b = n * WIDTH;
    this.slab.fill(0, b, b + WIDTH);
    this.slab[b + 1] = at;
    return b;
  }
}

export interface WriterStats {
  /** Script calls that worked (each published what it wrote). */
  published: number;
  pending: number;
  dropped: number;
  written: number;
  failed: number;
  /** When the oldest change still waiting was made (0: none waiting). */
  oldest: number;
}

export class FleetWriter {
  #pending = new Batch();
  #oldest = 0;
  #dropped = 0;
  #written = 0;
  #published = 0;
  #failed = 0;
  /** The flush under way, and how many keys it carries. */
  #running: Promise<number> | undefined;
  #carrying = 0;

  /** The batch being written now (its changes are not yet in what the store publishes). */
  #flying: Batch | undefined;

  constructor(private readonly settings: () => { prefix: string; halfLifeMs: number; ttlMs: number; channel: string; self: string }) {}

  /**
   * This host's changes to a key not yet written (waiting, or under way), as
   * a delta as of `now` and one count per counter; undefined when none.
   */
  unsent(key: string, now: number): { delta: number; counts: number[] } | undefined {
    let out: { delta: number; counts: number[] } | undefined;
    const hl = this.settings().halfLifeMs;
    for (const batch of [this.#flying, this.#pending]) {
      const i = batch?.index.get(key);
      if (batch === undefined || i === undefined) continue;
      const b = i * WIDTH;
      out ??= { delta: 0, counts: COUNTERS.map(() => 0) };
      out.delta += batch.slab[b]! * Math.exp(-LN2 * Math.max(0, now - batch.slab[b + 1]!) / hl);
      for (let c = 0; c < COUNTERS.length; c++) out.counts[c]! += batch.slab[b + 2 + c]!;
    }
    return out;
  }

  /** One change to the local store. */
  push(key: string, delta: number, counter: Counter | undefined, at: number): void {
    this.#add(key, delta, at, counter === undefined ? -1 : COUNTERS.indexOf(counter), 1);
  }

  /** Adds a delta at `at` and `n` to one counter (-1: none) to the key's row. */
  #add(key: string, delta: number, at: number, counter: number, n: number): void {
    const batch = this.#pending;
    const b = batch.row(key, at);
    if (b < 0) {
      this.#dropped++;
      return;
    }
    if (this.#oldest === 0) this.#oldest = at;
    const slab = batch.slab;
    const hl = this.settings().halfLifeMs;
    const was = slab[b + 1]!;
    if (at >= was) {
      slab[b] = slab[b]! * Math.exp(-LN2 * (at - was) / hl) + delta;
      slab[b + 1] = at;
    } else {
      slab[b] = slab[b]! + delta * Math.exp(-LN2 * (was - at) / hl);
    }
    if (counter >= 0) slab[b + 2 + counter] = slab[b + 2 + counter]! + n;
  }

  /**
   * Sends what waits (`perKey`: one call per key, for a Cluster); what fails
   * waits for the next flush. Resolves with the number of calls that worked;
   * 0 at once while another flush is under way (the timer's next one takes
   * what came since; drain() waits for it).
   */
  flush(store: StoreCommands, perKey = false): Promise<number> {
    if (this.#running !== undefined || this.#pending.index.size === 0) return Promise.resolve(0);
    this.#carrying = this.#pending.index.size;
    const run = this.#send(store, perKey).finally(() => {
      this.#running = undefined;
      this.#flying = undefined;
      this.#carrying = 0;
    });
    this.#running = run;
    return run;
  }

  /** Changes wait, or a flush is under way. */
  get busy(): boolean {
    return this.#running !== undefined || this.#pending.index.size > 0;
  }

  /** At stop: waits for the flush under way, then sends what waits; resolves with the calls that worked. */
  async drain(store: StoreCommands, perKey = false): Promise<number> {
    let calls = 0;
    while (this.#running !== undefined) calls += await this.#running;
    return calls + await this.flush(store, perKey);
  }

  /** Gives up on what is still unwritten (at stop, past its bound): counted as dropped. Returns how many keys' changes that was. */
  abandon(): number {
    const n = this.#pending.index.size + this.#carrying;
    this.#dropped += n;
    this.#pending = new Batch();
    this.#oldest = 0;
    return n;
  }

  async #send(store: StoreCommands, perKey: boolean): Promise<number> {
    const batch = this.#pending;
    this.#flying = batch;
    this.#pending = new Batch();
    const oldest = this.#oldest;
    this.#oldest = 0;
    const { prefix, halfLifeMs, ttlMs, channel, self } = this.settings();
    const slab = batch.slab;
    const size = perKey ? 1 : CHUNK;
    const sent: Promise<boolean>[] = [];
    let keys: string[] = [];
    let changes = '';
    const send = (chunk: string[], text: string): void => {
      const o = { keys: chunk.map((k) => `${prefix}r:${k}`), arguments: [String(halfLifeMs), String(ttlMs), text, channel, self] };
      sent.push(store.evalSha(APPLY_SHA, o).catch((err: unknown) => {
        if (!String(err).includes('NOSCRIPT')) throw err;
        return store.eval(APPLY, o);
      }).then(() => true, () => {
        this.#carrying -= chunk.length;
        for (const k of chunk) this.#requeue(k, slab, batch.index.get(k)! * WIDTH);
        return false;
      }));
    };
    for (const [key, i] of batch.index) {
      const b = i * WIDTH;
      keys.push(key);
      changes += `${slab[b]} ${slab[b + 1]}`;
      for (let c = 2; c < WIDTH; c++) changes += ` ${slab[b + c]}`;
      changes += '\n';
      if (keys.length === size) {
        send(keys, changes);
        keys = [];
        changes = '';
        // A large flush (a flood of new clients or verdicts) is built a script call at a time between other work.
        if (sent.length % YIELD_EVERY === 0) await setImmediate();
      }
    }
    if (keys.length > 0) send(keys, changes);
    const done = await Promise.all(sent);
    const calls = done.filter(Boolean).length;
    if (channel !== '') this.#published += calls;
    const keysOk = batch.index.size - done.reduce((n, ok, c) => n + (ok ? 0 : Math.min(size, batch.index.size - c * size)), 0);
    this.#written += keysOk;
    this.#failed += batch.index.size - keysOk;
    if (keysOk < batch.index.size && this.#oldest === 0) this.#oldest = oldest;
    return calls;
  }

  stats(): WriterStats {
    return { published: this.#published, pending: this.#pending.index.size, dropped: this.#dropped, written: this.#written, failed: this.#failed, oldest: this.#oldest };
  }

  /** A change that could not be written goes back in, merged with what came since. */
  #requeue(key: string, slab: Float64Array, b: number): void {
    this.#add(key, slab[b]!, slab[b + 1]!, -1, 0);
    for (let c = 0; c < COUNTERS.length; c++) if (slab[b + 2 + c]! > 0) this.#add(key, 0, slab[b + 1]!, c, slab[b + 2 + c]!);
  }
}
