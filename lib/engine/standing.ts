// standing.ts - what the store says of a client, for one decision.
//
// Its address's, network's, HELO's and sender domain's decayed scores, and
// what its counters say: whether it is trusted, whether it or its network
// hung up under a hold. The sender domain is the one input a client chooses
// freely (zombies forge the domains that deliver most), so it counts only
// where the client has earned it: not at all for a client not known yet
// (neither credit nor blame), and a good domain only for a client trusted
// on its own record. Trust is a record of deliveries without hang-ups under
// holds and with few abandoned sessions (a rate, not a sum): one delivery
// does not make a zombie that drops half its sessions trusted. Its own
// record, good or bad, outweighs its network's. A client that abandons more
// than that rate, or
// whose network does, is a suspect, whom a hold probes whatever its score
// (a real MTA waits it out once; spamware hangs up).
//
// Config keys: weights.*_share, thresholds.trust_abandon_rate,
// tarpit.network_hangups.

import type { Config } from '../config/schema.js';
import type { ReputationStore, Ref } from '../reputation/store.js';

export interface Standing {
  readonly ip: number;
  readonly net: number;
  readonly helo: number;
  /** As it counts (0 where it is left out). */
  readonly domain: number;
  /** Why the domain's score was left out, for explain ('' when it counts). */
  readonly domainOut: string;
  /** Delivered, score >= 0, never hung up under a hold, few abandonments per delivery. */
  readonly trusted: boolean;
  /** It has delivered, never hung up under a hold, and its own score is 0 or more (trusted, but perhaps for its abandonment rate). */
  readonly earned: boolean;
  /** Its own address has an entry. */
  readonly known: boolean;

  /** The client itself hung up under a hold (within the entry's life). */
  readonly hungUp: boolean;
  /** Not trusted, and its network (or it) abandons more sessions per delivery than thresholds.trust_abandon_rate: held whatever its score, to see whether it waits. */
  readonly suspect: 'network' | 'client' | undefined;
  /** Whole abandoned sessions past the trusted rate (a probe of the client grows with it). */
  readonly excess: number;
  /** Clients of its network that hung up under holds. */
  readonly netHangups: number;
}

export function standing(store: ReputationStore, r: { readonly ip: Ref; readonly net: Ref; readonly helo: Ref; readonly domain: Ref }, now: number, c: Pick<Config, 'thresholds'>): Standing {
  const ip = store.scoreOf(r.ip, now);
  const ok = store.countOf(r.ip, 'ok', now);
  const abh = store.countOf(r.ip, 'abh', now);
  const ab = store.countOf(r.ip, 'ab', now);
  const netHangups = store.countOf(r.net, 'abh', now);
  const rate = c.thresholds.trust_abandon_rate;
  const earned = ip >= 0 && ok > 0 && abh === 0;
  const trusted = earned && ab <= ok * rate;
  // A network abandons too much when its clients' abandoned sessions (under holds or not) pass the trusted rate of its deliveries.
  const netBad = store.countOf(r.net, 'ab', now) + netHangups;
  const netOk = store.countOf(r.net, 'ok', now);
  const netSuspect = netBad > 0 && netBad > netOk * rate;
  const suspect = trusted ? undefined : netSuspect ? 'network' as const : ab > ok * rate ? 'client' as const : undefined;
  let domain = store.scoreOf(r.domain, now);
  const known = store.knows(r.ip, now);
  let domainOut = '';
  if (domain !== 0 && !known) domainOut = 'the client itself is not known yet';
  else if (domain > 0 && !trusted) domainOut = 'a good domain counts only for a client trusted on its own record';
  if (domainOut) domain = 0;
  return {
    ip, net: store.scoreOf(r.net, now), helo: store.scoreOf(r.helo, now), domain, domainOut, trusted,
    hungUp: abh > 0, earned, known, suspect, excess: Math.max(0, Math.floor(ab - ok * rate)), netHangups,
  };
}
