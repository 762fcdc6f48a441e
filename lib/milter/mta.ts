// mta.ts - which MTA is on the other end, and what that allows while holding.
//
// Postfix restarts its read timer on every SMFIR_PROGRESS at every stage
// (milter8.c, since 2.3), so a reply can be held with PROGRESS frames at a
// cadence below its timeout. Sendmail 8.13-8.18 accepts PROGRESS only after
// end of message (bounded by T=E:); anywhere else a PROGRESS puts the filter
// in error state, so there the hold must end before T=R: (measured against
// Sendmail 8.17.1; sluiced(8) says the same). An unknown MTA is treated like
// Sendmail.
//
// Config keys: milter.mta, milter.progress_interval, milter.hold_margin,
// milter.sendmail_read_timeout, milter.sendmail_eom_timeout.

import type { Stage } from '../engine/types.js';

export type MtaKind = 'postfix' | 'sendmail' | 'unknown';

/** From the `v` macro: "Postfix 3.7.11" or Sendmail's "8.17.1". */
export function mtaFromVersion(v: string | undefined): MtaKind {
  if (!v) return 'unknown';
  if (/^postfix\b/i.test(v)) return 'postfix';
  if (/^8\.\d+\.\d+/.test(v)) return 'sendmail';
  return 'unknown';
}

export interface HoldSettings {
  readonly progress_interval: number;
  readonly hold_margin: number;
  readonly sendmail_read_timeout: number;
  readonly sendmail_eom_timeout: number;
}

export interface HoldPlan {
  /** Longest hold this MTA survives at this stage. */
  readonly cap: number;
  /** Send PROGRESS every progress_interval while holding. */
  readonly progress: boolean;
}

export function holdPlan(mta: MtaKind, stage: Stage, s: HoldSettings): HoldPlan {
  if (mta === 'postfix') return { cap: Number.POSITIVE_INFINITY, progress: true };
  if (stage === 'eom') return { cap: Math.max(0, s.sendmail_eom_timeout - s.hold_margin), progress: true };
  return { cap: Math.max(0, s.sendmail_read_timeout - s.hold_margin), progress: false };
}
