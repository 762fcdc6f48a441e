// tarpit.ts - how long to hold a reply, and the hold budget.
//
// The hold grows with how far the score is below thresholds.hold, by
// tarpit.hold_per_point a point, is never shorter than tarpit.min_hold or
// the learned patience (patience.ts), and is cut to tarpit.max_hold and to the
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

/** The hold for a score: perPointMs a point at or below holdAt, at least floorMs, cut to maxMs and the client's patience at the stage. */
export function holdFor(score: number, holdAt: number, perPointMs: number, maxMs: number, stage: Stage, floorMs = 0): number {
  if (score > holdAt) return 0;
  const points = holdAt - score + 1;
  return Math.round(Math.min(Math.max(points * perPointMs, floorMs), maxMs, PATIENCE_MS[stage]));
}

interface Lease {
  readonly end: number;
  readonly net: string;
}

export class HoldBudget {
  /** Live leases as a binary min-heap on their end time, so expiry costs log n per lease. */
  readonly #heap: Lease[] = [];
  readonly #perNet = new Map<string, number>();

  #prune(now: number): void {
    const h = this.#heap;
    while (h.length > 0 && h[0]!.end <= now) {
      const { net } = h[0]!;
      const last = h.pop()!;
      if (h.length > 0) this.#down(last);
      const n = this.#perNet.get(net)! - 1;
      if (n === 0) this.#perNet.delete(net);
      else this.#perNet.set(net, n);
    }
  }

  /** Puts `l` at the root and sifts it down. */
  #down(l: Lease): void {
    const h = this.#heap;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= h.length) break;
      if (c + 1 < h.length && h[c + 1]!.end < h[c]!.end) c++;
      if (h[c]!.end >= l.end) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = l;
  }

  #up(l: Lease): void {
    const h = this.#heap;
    let i = h.length;
    h.push(l);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.end <= l.end) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = l;
  }

  /** Grants a hold of ms for this network, or says which budget is spent. */
  grant(net: string, ms: number, now: number, total: number, perNet: number): 'granted' | 'total' | 'network' {
    this.#prune(now);
    if (this.#heap.length >= total) return 'total';
    const n = this.#perNet.get(net) ?? 0;
    if (n >= perNet) return 'network';
    this.#perNet.set(net, n + 1);
    this.#up({ end: now + ms, net });
    return 'granted';
  }

  active(now: number): number {
    this.#prune(now);
    return this.#heap.length;
  }
}
