// score.ts - scores that decay toward zero, as pure functions of time.
//
// A reputation entry keeps its score as of `at`; its value at time t is
// score * 0.5^((t - at) / halfLife). Nothing is rewritten to decay: reads
// compute it, writes store the decayed value plus the change.

export type { Entry } from './entry.js';

/**
 * Score s, as of time at, at time now. As e^(-ln2 t/h) rather than
 * 0.5^(t/h): the same value to the last bit or two, and Math.exp costs a
 * quarter of Math.pow (a decision reads four scores).
 */
export function decay(s: number, at: number, now: number, halfLifeMs: number): number {
  const dt = now - at;
  return dt <= 0 || s === 0 ? s : s * Math.exp(-Math.LN2 * (dt / halfLifeMs));
}

