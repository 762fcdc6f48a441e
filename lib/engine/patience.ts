// patience.ts - how long clients that hung up under a hold lasted, per stage.
//
// A hold that ends before the client would have given up teaches nothing:
// the client waits it out and delivers. So the engine learns, per SMTP
// stage, how long clients lasted under a hold before hanging up (the milter
// sees the moment; the policy protocol cannot, and tells nothing), keeps it
// as a histogram whose weights halve every half-life, and makes a hold at
// least the 90th percentile of that, times a margin: longer than most
// clients that give up will wait. Until PATIENCE_MIN_SEEN hang-ups are
// weighed at a stage, nothing is known there. `sluicectl stats` and a
// metric show the figures.
//
// Config keys: reputation.half_life (the decay), tarpit.learn_patience.

import type { Stage } from './types.js';

/** Bucket upper bounds, in seconds: a hang-up is counted in the first that holds it. */
export const BUCKETS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 90, 120, 180, 240, 300] as const;
/** Weighed hang-ups a stage needs before its figure is used. */
export const PATIENCE_MIN_SEEN = 5;
/** The share of hang-ups a hold must outlast, and the margin on top. */
export const QUANTILE = 0.9;
export const MARGIN = 1.5;

interface Histogram {
  readonly weights: Float64Array;
  /** When the weights were last decayed. */
  at: number;
}

export interface StagePatience {
  readonly stage: Stage;
  /** Hang-ups weighed (decayed). */
  readonly seen: number;
  /** The QUANTILE of how long they lasted, seconds. */
  readonly p90_s: number;
}

export class Patience {
  readonly #by = new Map<Stage, Histogram>();

  /** A client hung up at `stage` after `lastedMs` under a hold. */
  add(stage: Stage, lastedMs: number, now: number, halfLifeMs: number): void {
    let h = this.#by.get(stage);
    if (h === undefined) {
      h = { weights: new Float64Array(BUCKETS.length + 1), at: now };
      this.#by.set(stage, h);
    }
    decay(h, now, halfLifeMs);
    const s = lastedMs / 1000;
    let i = BUCKETS.findIndex((b) => s <= b);
    if (i < 0) i = BUCKETS.length;
    h.weights[i]! += 1;
  }

  /** The hold that outlasts most clients that give up at this stage (ms), or 0 while too little is known. */
  holdFor(stage: Stage, now: number, halfLifeMs: number): number {
    const q = this.#quantile(stage, now, halfLifeMs);
    return q === undefined ? 0 : Math.round(q * 1000 * MARGIN);
  }

  /** What is known, per stage, for stats and explain. */
  report(now: number, halfLifeMs: number): StagePatience[] {
    const out: StagePatience[] = [];
    for (const [stage, h] of this.#by) {
      decay(h, now, halfLifeMs);
      const seen = h.weights.reduce((a, b) => a + b, 0);
      out.push({ stage, seen: Math.round(seen * 10) / 10, p90_s: this.#quantile(stage, now, halfLifeMs) ?? 0 });
    }
    return out;
  }

  #quantile(stage: Stage, now: number, halfLifeMs: number): number | undefined {
    const h = this.#by.get(stage);
    if (h === undefined) return undefined;
    decay(h, now, halfLifeMs);
    const total = h.weights.reduce((a, b) => a + b, 0);
    if (total < PATIENCE_MIN_SEEN) return undefined;
    let sum = 0;
    for (let i = 0; i < h.weights.length; i++) {
      sum += h.weights[i]!;
      if (sum >= QUANTILE * total) return BUCKETS[i] ?? BUCKETS[BUCKETS.length - 1]! * 2;
    }
    return BUCKETS[BUCKETS.length - 1]!;
  }
}

function decay(h: Histogram, now: number, halfLifeMs: number): void {
  const dt = now - h.at;
  if (dt <= 0) return;
  const f = Math.exp(-Math.LN2 * dt / halfLifeMs);
  for (let i = 0; i < h.weights.length; i++) h.weights[i]! *= f;
  h.at = now;
}
