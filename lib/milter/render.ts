// render.ts - a Verdict as milter reply frames for one stage.
//
// pass -> CONTINUE; accept -> ACCEPT at end of message, CONTINUE before it
// (an ACCEPT at CONNECT would end the events sluice learns from); defer ->
// REPLYCODE 4xx; reject -> REPLYCODE 5xx, or QUARANTINE then CONTINUE at end
// of message when milter.quarantine is set. At end of message a passed
// message may get the score header first. All frames of one answer are
// joined into one buffer: one write.

import { failVerdict, scoreLine, type Stage, type Verdict } from '../engine/types.js';
import * as R from './replies.js';

/**
 * `header`: the header name to add at end of message, when the MTA allowed
 * ADDHDRS, else empty; `quarantine`: quarantine instead of reject at end of
 * message, when the MTA allowed it; `failMode`: what an unknown verdict
 * renders as (fail_mode), in both protocols.
 */
export function renderVerdict(v: Verdict, stage: Stage, header: string, quarantine: boolean, failMode: 'pass' | 'defer'): Buffer {
  const eom = stage === 'eom';
  switch (v.kind) {
    case 'defer':
      return v.reply ? R.replyCode(v.reply.code, v.reply.enhanced, v.reply.text) : R.TEMPFAIL;
    case 'reject':
      if (eom && quarantine) return Buffer.concat([R.quarantine(`sluice ${v.rule} score ${v.score.toFixed(1)}`), R.CONTINUE]);
      return v.reply ? R.replyCode(v.reply.code, v.reply.enhanced, v.reply.text) : R.REJECT;
    case 'pass':
    case 'accept': {
      const final = eom && v.kind === 'accept' ? R.ACCEPT : R.CONTINUE;
      if (eom && header !== '') return Buffer.concat([R.addHeader(header, scoreLine(v)), final]);
      return final;
    }
    default:
      // Cannot come through the typed seam (safeDecide checks every verdict).
      return renderVerdict(failVerdict(failMode), stage, '', false, failMode);
  }
}
