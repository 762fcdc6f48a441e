// profile.ts - what a client's HELO, sender and reverse name make of it,
// kept with its rate counts so a stage that repeats them costs no work.
//
// Config keys: weights.* (the HELO and reverse-DNS findings), lists.our_*.

import { addressKeys, keysFor, type Keys } from '../reputation/keys.js';
import type { ReputationStore, Ref } from '../reputation/store.js';
import type { Counts, RateWindows } from './limits.js';
import { heuristics, type Finding } from './heuristics.js';
import type { Config } from '../config/schema.js';
import type { StageEvent } from './types.js';

/** What a profile is made from (the engine passes its whole config: a profile is kept while that is the same object). */
export type ProfileConfig = Pick<Config, 'lists' | 'weights'>;

/**
 * What a client's HELO, sender and reverse name make of it: the keys it is
 * counted and scored under, refs to their entries (store.ref()), and the HELO
 * and reverse-DNS findings. One client's sessions mostly repeat all three, so
 * the client's latest profiles are kept with its rate counts (limits.ts),
 * which a session looks up anyway, and a stage that repeats them takes the
 * kept one as it is: no key building, no heuristics, no lookups for refs
 * whose slots are already known. They go when the counts are evicted; at
 * most 20,000 records keep them (RateWindows.keep). Never changed once made
 * (the refs inside are caches of where their keys live).
 */
export interface Profile {
  readonly helo: string;
  readonly sender: string;
  readonly clientName: string;
  readonly config: ProfileConfig;
  readonly keys: Keys;
  /** The client's and network's keys as counted (an unparsable address stands for both). */
  readonly ip: string;
  readonly net: string;
  readonly refs: { readonly ip: Ref; readonly net: Ref; readonly helo: Ref; readonly domain: Ref };
  readonly findings: readonly Finding[];
  readonly points: number;
}

/**
 * A client's latest profile for each of how far a session had got: before
 * HELO, after HELO, after MAIL FROM (reach()). A milter session, and a policy
 * service asked at several stages, passes through all three; with one kept
 * profile each stage would make its own anew, three per session.
 */
export type Profiles = [Profile | undefined, Profile | undefined, Profile | undefined];

export function reach(e: StageEvent): 0 | 1 | 2 {
  return e.sender !== '' ? 2 : e.helo !== '' ? 1 : 0;
}

/** The client's kept profile for this stage (kept with its counts) if the event repeats it, else a new one (kept, unless a dry run). */
export function profileFor(e: StageEvent, c: ProfileConfig, dry: boolean, counts: Counts, store: ReputationStore, rates: RateWindows, a?: ReturnType<typeof addressKeys>): Profile {
  const kept = counts.profile as Profiles | undefined;
  const at = reach(e);
  const known = kept?.[at];
  if (known !== undefined && fits(known, e, c)) return known;
  // Any profile of this client has its address keys and their refs.
  const like = known ?? kept?.[2] ?? kept?.[1] ?? kept?.[0];
  const keys = keysFor(e.client, e.helo, e.sender, a ?? like?.keys);
  const ip = clientKey(keys.ip, e.client);
  const net = keys.net || ip;
  const findings = heuristics(e.helo, e.clientName, c.lists.our_names, c.lists.our_addresses, c.weights);
  const p: Profile = {
    helo: e.helo, sender: e.sender, clientName: e.clientName, config: c, keys, ip, net,
    refs: {
      ip: like?.refs.ip ?? store.ref(ip), net: like?.refs.net ?? store.ref(net),
      helo: keptWith(kept, (k) => k.keys.helo === keys.helo)?.refs.helo ?? store.ref(keys.helo),
      domain: keptWith(kept, (k) => k.keys.domain === keys.domain)?.refs.domain ?? store.ref(keys.domain),
    },
    findings, points: findings.reduce((sum, f) => sum + f.points, 0),
  };
  if (!dry) {
    if (kept !== undefined) kept[at] = p;
    else {
      const made: Profiles = [undefined, undefined, undefined];
      made[at] = p;
      rates.keep(counts, made);
    }
  }
  return p;
}

/** The first kept profile that `match` accepts. */
function keptWith(kept: Profiles | undefined, match: (p: Profile) => boolean): Profile | undefined {
  if (kept === undefined) return undefined;
  for (const p of kept) if (p !== undefined && match(p)) return p;
  return undefined;
}

/** The profile was made from this HELO, sender and name, under this config. */
export function fits(p: Profile, e: StageEvent, c: ProfileConfig): boolean {
  return p.helo === e.helo && p.sender === e.sender && p.clientName === e.clientName && p.config === c;
}

/** The key a client is counted under: its address key, or the text it came as when that is not an address. */
export function clientKey(ipKey: string | undefined, client: string): string {
  return ipKey || `ip:${client}`;
}
