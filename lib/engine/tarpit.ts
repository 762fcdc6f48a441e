// tarpit.ts - how long to hold a reply, and the hold budget.
//
// The hold grows with how far the score is below thresholds.hold, by
// tarpit.hold_per_point a point, and is cut to tarpit.max_hold and to the
// remote client's patience at that stage (RFC 5321 section 4.5.3.2: 5
// minutes for the greeting, MAIL and RCPT, 2 for DATA, 10 for end of data).
// The protocol side cuts it further to the MTA's own timeout. Every held
// Postfix policy reply pins an smtpd process, so concurrent holds are
// budgeted in total and per network; a granted hold is a lease that ends
// when its delay does.
//
// Config keys: tarpit.*, thresholds.hold.

import type { Stage } from './types.js';

/** RFC 5321 minimum client timeouts, less a little: the client must not give up because of us. */
const PATIENCE_MS: Readonly<Record<Stage, number>> = {
  connect: 240_000, helo: 240_000, mail: 240_000, rcpt: 240_000,
  data: 90_000, eoh: 480_000, eom: 480_000, end: 0,
};

export function holdFor(score: number, holdAt: number, perPointMs: number, maxMs: number, stage: Stage): number {
  if (score > holdAt) return 0;
  const points = holdAt - score + 1;
  return Math.round(Math.min(points * perPointMs, maxMs, PATIENCE_MS[stage]));
}

export class HoldBudget {
  /** Lease end times, by network. */
  readonly #leases = new Map<string, number[]>();
  #total = 0;

  #prune(now: number): void {
    for (const [net, ends] of this.#leases) {
      const live = ends.filter((e) => e > now);
      this.#total -= ends.length - live.length;
      if (live.length === 0) this.#leases.delete(net);
      else this.#leases.set(net, live);
    }
  }

  /** Grants a hold of ms for this network, or says which budget is spent. */
  grant(net: string, ms: number, now: number, total: number, perNet: number): 'granted' | 'total' | 'network' {
    this.#prune(now);
    if (this.#total >= total) return 'total';
    const ends = this.#leases.get(net) ?? [];
    if (ends.length >= perNet) return 'network';
    ends.push(now + ms);
    this.#leases.set(net, ends);
    this.#total++;
    return 'granted';
  }

  active(now: number): number {
    this.#prune(now);
    return this.#total;
  }
}
