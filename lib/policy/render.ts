// render.ts - a Verdict as exactly one policy reply, `action=...\n\n`.
//
// Rules from Postfix's reply parser (smtpd_check.c, access(5)):
//   - never OK: it stops the restriction list and can open a relay; pass and
//     accept both render as DUNNO;
//   - never a bare code: `action=450` with no text reads as PERMIT;
//   - never CR: Postfix splits on LF only, "DUNNO\r" is an unknown restriction;
//   - the enhanced code's class digit must equal the reply code's first digit;
//   - text printable ASCII, short (Postfix cuts the SMTP line at 510).
// PREPEND continues like DUNNO and adds a header; it is not allowed at
// END-OF-MESSAGE, so callers only ask for it at earlier stages.

import { failVerdict, type Reply, type Verdict } from '../engine/types.js';

const MAX_TEXT = 300;

export interface RenderOptions {
  readonly deferIfPermit: boolean;
  /** What an unknown verdict renders as (fail_mode), in both protocols. */
  readonly failMode: 'pass' | 'defer';
}

/** Printable ASCII only, one line, bounded; never empty. */
export function replyText(text: string, fallback: string): string {
  const clean = text.replace(/[^\x20-\x7e]+/g, ' ').trim().slice(0, MAX_TEXT).trim();
  return clean === '' ? fallback : clean;
}

function enhanced(reply: Reply, cls: 4 | 5): string {
  const ok = /^[245]\.\d{1,3}\.\d{1,3}$/.test(reply.enhanced);
  const code = ok ? reply.enhanced : `${cls}.7.1`;
  return `${cls}${code.slice(1)}`;
}

function code(reply: Reply, cls: 4 | 5): number {
  return Math.floor(reply.code / 100) === cls && reply.code % 100 < 100 ? reply.code : cls * 100 + 50;
}

/** The action text (without `action=` and the terminator). */
export function renderAction(v: Verdict, opts: RenderOptions): string {
  switch (v.kind) {
    case 'defer': {
      const r = v.reply ?? { code: 450, enhanced: '4.7.1', text: '' };
      const text = replyText(r.text, 'Try again later');
      if (opts.deferIfPermit) return `DEFER_IF_PERMIT ${enhanced(r, 4)} ${text}`;
      return `${code(r, 4)} ${enhanced(r, 4)} ${text}`;
    }
    case 'reject': {
      const r = v.reply ?? { code: 550, enhanced: '5.7.1', text: '' };
      return `${code(r, 5)} ${enhanced(r, 5)} ${replyText(r.text, 'Rejected by policy')}`;
    }
    case 'pass':
    case 'accept':
      return 'DUNNO';
    default:
      // An unknown kind cannot reach here through the typed seam (safeDecide
      // checks every verdict); if it does, it is the configured fail mode.
      return renderAction(failVerdict(opts.failMode), opts);
  }
}

/** The reply to nearly every request, encoded once. */
export const DUNNO_REPLY = Buffer.from('action=DUNNO\n\n', 'latin1');

/** The whole reply; DUNNO comes back as the shared buffer. */
export function renderReply(v: Verdict, opts: RenderOptions): string | Buffer {
  const action = v.kind === 'pass' || v.kind === 'accept' ? 'DUNNO' : renderAction(v, opts);
  return action === 'DUNNO' ? DUNNO_REPLY : `action=${action}\n\n`;
}

/** `action=PREPEND Name: value\n\n` for a passed message. */
export function renderPrepend(header: string, value: string): string {
  return `action=PREPEND ${header}: ${replyText(value, 'pass')}\n\n`;
}
