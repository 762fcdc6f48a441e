// resolver.ts - A-record lookups for DNS lists, with the TTL clamped.
//
// Node's resolver (c-ares, never the thread pool) asks the configured
// servers, or the system's resolv.conf when dns.resolvers is empty, one try
// each bounded by dns.timeout. An answer carries its DNS TTL clamped to
// [dns.min_ttl, dns.max_ttl], as postscreen clamps it; NXDOMAIN and "no
// records" are "clean"; a timeout, SERVFAIL or refusal is a failure, which
// the caller counts as "not listed". Caching is the caller's (dnsbl.ts keeps
// an address's or a name's answers from all its zones together). A reload
// that changes dns.* makes a new resolver.
//
// Config keys: dns.resolvers, dns.timeout, dns.min_ttl, dns.max_ttl.

import { Resolver } from 'node:dns/promises';
import type { Config } from '../config/schema.js';
import type { Clock } from '../util/clock.js';

export type Failure = 'timeout' | 'servfail' | 'refused' | 'error';

export type Answer =
  | { readonly kind: 'listed'; readonly addresses: readonly string[]; readonly ttl: number }
  | { readonly kind: 'clean' }
  | { readonly kind: 'failed'; readonly why: Failure };

const CLEAN: Answer = Object.freeze({ kind: 'clean' });

/** c-ares error codes, as what they tell us. */
const FAILURES: Readonly<Record<string, Failure | 'clean'>> = {
  ENOTFOUND: 'clean', ENODATA: 'clean',
  ETIMEOUT: 'timeout', ESERVFAIL: 'servfail', EREFUSED: 'refused',
};

export class ListResolver {
  readonly #settings: () => Config['dns'];
  readonly #clock: Clock;
  #resolver: Resolver | undefined;
  /** The settings the resolver was made from. */
  #made: Config['dns'] | undefined;

  constructor(settings: () => Config['dns'], clock: Clock) {
    this.#settings = settings;
    this.#clock = clock;
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
    return { answer, ms: this.#clock.now() - start };
  }

  /** Stops every query under way (they answer "error"). */
  cancel(): void {
    this.#resolver?.cancel();
  }

  #resolverFor(s: Config['dns']): Resolver {
    if (this.#made === s && this.#resolver) return this.#resolver;
    const r = new Resolver({ timeout: s.timeout, tries: 1 });
    if (s.resolvers.length > 0) r.setServers([...s.resolvers]);
    this.#resolver = r;
    this.#made = s;
    return r;
  }
}
