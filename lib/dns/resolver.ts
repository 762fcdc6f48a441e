// resolver.ts - A-record lookups for DNS lists, cached with a clamped TTL.
//
// Node's resolver (c-ares, never the thread pool) asks the configured
// servers, or the system's resolv.conf when dns.resolvers is empty, one try
// each bounded by dns.timeout. Answers and NXDOMAIN are cached per name:
// an answer for its DNS TTL clamped to [dns.min_ttl, dns.max_ttl] as
// postscreen does; NXDOMAIN (whose negative TTL c-ares does not pass on)
// for dns.min_ttl. Failures (timeout, SERVFAIL, refusal) are not cached:
// they count as "not listed" for the session that asked, and the next
// session asks again. The cache runs on the injected clock.
//
// Config keys: dns.*.

import { Resolver } from 'node:dns/promises';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/schema.js';
import type { Clock } from '../util/clock.js';

export type Failure = 'timeout' | 'servfail' | 'refused' | 'error';

export type Answer =
  | { readonly kind: 'listed'; readonly addresses: readonly string[]; readonly ttl: number }
  | { readonly kind: 'clean' }
  | { readonly kind: 'failed'; readonly why: Failure };

const CLEAN: Answer = Object.freeze({ kind: 'clean' });

/** A cached answer and when it stops being one (on the injected clock). */
interface Kept {
  readonly answer: Answer;
  readonly expires: number;
}

/** c-ares error codes, as what they tell us. */
const FAILURES: Readonly<Record<string, Failure | 'clean'>> = {
  ENOTFOUND: 'clean', ENODATA: 'clean',
  ETIMEOUT: 'timeout', ESERVFAIL: 'servfail', EREFUSED: 'refused',
};

export class CachedResolver {
  readonly #settings: () => Config['dns'];
  readonly #clock: Clock;
  #resolver: Resolver | undefined;
  /** The settings the resolver was made from. */
  #made: Config['dns'] | undefined;
  /** Expiry is kept with each answer and checked on read: cheaper than the LRU's own TTL on a path taken per new client and zone. */
  #cache: LRUCache<string, Kept> | undefined;

  constructor(settings: () => Config['dns'], clock: Clock) {
    this.#settings = settings;
    this.#clock = clock;
  }

  /** The cached answer for a name, if any. */
  cached(name: string): Answer | undefined {
    const k = this.#cache?.get(name);
    if (k === undefined) return undefined;
    if (k.expires > this.#clock.now()) return k.answer;
    this.#cache!.delete(name);
    return undefined;
  }

  /** How long a cached answer is kept yet (ms); 0 when there is none. */
  remaining(name: string): number {
    const k = this.#cache?.get(name);
    return k === undefined ? 0 : Math.max(0, k.expires - this.#clock.now());
  }

  /** Cached entries now. */
  get size(): number {
    return this.#cache?.size ?? 0;
  }

  /** Asks the servers; never rejects (a failure is an answer). `ms` is how long it took. */
  async query(name: string): Promise<{ answer: Answer; ms: number }> {
    const s = this.#settings();
    const resolver = this.#resolverFor(s);
    const start = this.#clock.now();
    let answer: Answer;
    try {
      const records = await resolver.resolve4(name, { ttl: true });
      if (records.length === 0) answer = CLEAN;
      else {
        const ttl = Math.min(...records.map((r) => r.ttl)) * 1000;
        answer = { kind: 'listed', addresses: records.map((r) => r.address), ttl: Math.min(Math.max(ttl, s.min_ttl), s.max_ttl) };
      }
    } catch (err) {
      const told = FAILURES[(err as NodeJS.ErrnoException).code ?? ''] ?? 'error';
      answer = told === 'clean' ? CLEAN : { kind: 'failed', why: told };
    }
    if (answer.kind !== 'failed' && this.#made === s) {
      this.#cache!.set(name, { answer, expires: this.#clock.now() + (answer.kind === 'listed' ? answer.ttl : s.min_ttl) });
    }
    return { answer, ms: this.#clock.now() - start };
  }

  /** Stops every query under way (they answer "error"). */
  cancel(): void {
    this.#resolver?.cancel();
  }

  /** The resolver and cache for these settings: made again after a reload changes them. */
  #resolverFor(s: Config['dns']): Resolver {
    if (this.#made === s && this.#resolver) return this.#resolver;
    const before = this.#made;
    const r = new Resolver({ timeout: s.timeout, tries: 1 });
    if (s.resolvers.length > 0) r.setServers([...s.resolvers]);
    this.#resolver = r;
    if (!this.#cache || before?.cache_entries !== s.cache_entries || before.min_ttl !== s.min_ttl || before.max_ttl !== s.max_ttl) {
      this.#cache = new LRUCache<string, Kept>({ max: s.cache_entries });
    }
    this.#made = s;
    return r;
  }
}
