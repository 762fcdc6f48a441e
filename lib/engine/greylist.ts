// greylist.ts - greylisting by (client network, sender, recipient).
//
// The first delivery attempt of a triplet is deferred; a retry after
// greylist.min_delay and within greylist.retry_window passes. A network
// whose triplets passed greylist.auto_allow_after times is let through
// without greylisting for greylist.auto_allow_ttl. Real MTAs retry;
// zombies seldom do. Bounded by greylist.max_entries.

import type { LRUCache } from 'lru-cache';
import { boundedLru } from '../util/lru.js';

export interface GreylistSettings {
  readonly min_delay: number;
  readonly retry_window: number;
  readonly auto_allow_after: number;
  readonly auto_allow_ttl: number;
  readonly max_entries: number;
}

export type GreyResult = 'new' | 'early' | 'passed' | 'known' | 'auto-allowed';

export class Greylist {
  readonly #triplets: LRUCache<string, { first: number; passed: boolean }>;
  readonly #nets: LRUCache<string, { passes: number; until: number }>;

  constructor(max: number) {
    this.#triplets = boundedLru(max);
    this.#nets = boundedLru(Math.max(1000, Math.floor(max / 10)));
  }

  /** Checks (and unless dryRun, records) one delivery attempt. */
  check(net: string, sender: string, recipient: string, now: number, s: GreylistSettings, dryRun = false): GreyResult {
    const n = this.#nets.get(net);
    if (n && n.until > now) return 'auto-allowed';
    const key = `${net}|${sender.toLowerCase()}|${recipient.toLowerCase()}`;
    const t = this.#triplets.get(key);
    if (t?.passed) return 'known';
    if (!t || now - t.first > s.retry_window) {
      if (!dryRun) this.#triplets.set(key, { first: now, passed: false });
      return 'new';
    }
    if (now - t.first < s.min_delay) return 'early';
    if (!dryRun) {
      t.passed = true;
      const passes = (n?.passes ?? 0) + 1;
      this.#nets.set(net, { passes, until: passes >= s.auto_allow_after ? now + s.auto_allow_ttl : 0 });
    }
    return 'passed';
  }
}
