// replies.ts - milter replies as frames, one buffer each.
//
// REPLYCODE follows what both MTAs check: a 4xx or 5xx code, an enhanced code
// whose class digit equals the code's first digit, every "%" doubled (Sendmail
// reads the text as a format string), several lines joined by CRLF with
// "DDD-" on all but the last, no CR/LF/NUL inside a line, lines and line
// count bounded as libmilter's smfi_setmlreply bounds them.

import * as C from './constants.js';
import { encodeFrame } from './codec.js';

export const CONTINUE = encodeFrame(C.SMFIR_CONTINUE);
export const ACCEPT = encodeFrame(C.SMFIR_ACCEPT);
export const TEMPFAIL = encodeFrame(C.SMFIR_TEMPFAIL);
export const REJECT = encodeFrame(C.SMFIR_REJECT);
export const PROGRESS = encodeFrame(C.SMFIR_PROGRESS);

const MAX_LINE = 900;
const MAX_LINES = 32;

const cstr = (s: string): Buffer => Buffer.from(s.replace(/\0/g, '') + '\0', 'utf8');

/** The REPLYCODE text: "451 4.7.1 text" or multi-line "451-4.7.1 a\r\n451 4.7.1 b". */
export function replyCodeText(code: number, enhanced: string, text: string): string {
  const cls = Math.floor(code / 100);
  const c = cls === 4 || cls === 5 ? code : 451;
  const first = String(c)[0]!;
  const enh = /^[245]\.\d{1,3}\.\d{1,3}$/.test(enhanced) ? first + enhanced.slice(1) : `${first}.7.1`;
  const lines = text.split(/\r\n|\r|\n/)
    .map((l) => l.replace(/[\x00-\x1f\x7f]/g, ' ').replace(/%/g, '%%').slice(0, MAX_LINE).trim())
    .filter((l) => l !== '')
    .slice(0, MAX_LINES);
  if (lines.length === 0) lines.push(first === '4' ? 'Try again later' : 'Rejected');
  return lines.map((l, i) => `${c}${i === lines.length - 1 ? ' ' : '-'}${enh} ${l}`).join('\r\n');
}

export function replyCode(code: number, enhanced: string, text: string): Buffer {
  return encodeFrame(C.SMFIR_REPLYCODE, cstr(replyCodeText(code, enhanced, text)));
}

export function addHeader(name: string, value: string): Buffer {
  return encodeFrame(C.SMFIR_ADDHEADER, Buffer.concat([cstr(name), cstr(value.replace(/[\r\n]+/g, ' '))]));
}

/** Insert at a 0-based index across all headers (0: on top). */
export function insertHeader(index: number, name: string, value: string): Buffer {
  const idx = Buffer.allocUnsafe(4);
  idx.writeUInt32BE(index, 0);
  return encodeFrame(C.SMFIR_INSHEADER, Buffer.concat([idx, cstr(name), cstr(value.replace(/[\r\n]+/g, ' '))]));
}

export function quarantine(reason: string): Buffer {
  return encodeFrame(C.SMFIR_QUARANTINE, cstr(reason.replace(/[\r\n]+/g, ' ') || 'sluice'));
}

export interface Negotiated {
  readonly version: number;
  readonly actions: number;
  readonly protocol: number;
  readonly symlists: ReadonlyMap<number, string>;
}

/**
 * OPTNEG replies made before, by symlists and then by the numbers: an MTA
 * makes the same offer on every connection, so the reply is built once (six
 * buffers and a concat) and the same buffer written each time. What
 * negotiate() can answer is a few hundred combinations at most; the cap only
 * guards that.
 */
const OPTNEG_MADE = new WeakMap<ReadonlyMap<number, string>, Map<string, Buffer>>();
const OPTNEG_KEEP = 64;

export function optnegReply(n: Negotiated): Buffer {
  let made = OPTNEG_MADE.get(n.symlists);
  if (made === undefined) OPTNEG_MADE.set(n.symlists, made = new Map());
  const key = `${n.version}:${n.actions}:${n.protocol}`;
  let reply = made.get(key);
  if (reply === undefined) {
    reply = buildOptneg(n);
    if (made.size < OPTNEG_KEEP) made.set(key, reply);
  }
  return reply;
}

function buildOptneg(n: Negotiated): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.allocUnsafe(12);
  head.writeUInt32BE(n.version, 0);
  head.writeUInt32BE(n.actions, 4);
  head.writeUInt32BE(n.protocol, 8);
  parts.push(head);
  for (const [stage, names] of n.symlists) {
    const s = Buffer.allocUnsafe(4);
    s.writeUInt32BE(stage, 0);
    parts.push(s, cstr(names));
  }
  return encodeFrame(C.SMFIC_OPTNEG, Buffer.concat(parts));
}
