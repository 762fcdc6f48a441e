// verdicts.ts - a content scanner's verdict, as a channel message carries it.
//
// rspamd's metadata_exporter (formatter "json") publishes one JSON object
// per scan: among its fields `ip` (the client), `action` and `qid` (the
// queue id; "unknown" when the MTA gave none). Another publisher may say
// `verdict: "spam" | "ham"` instead of an action. Only a well-formed message
// is a verdict: one too long, not JSON, not an object, with no client
// address and no queue id, with an address that is not one, or with an
// action or verdict this file does not know is refused, with its reason. An
// action that says nothing of the content (greylist, soft reject: a rate
// limit, a temporary failure) is no verdict, and not an error either.

import { isIP } from 'node:net';
import type { Scan, Verdict } from '../engine/learn.js';

/** The longest message taken (rspamd's JSON with its symbols is a few KiB). */
export const MAX_MESSAGE = 64 * 1024;

export type Refusal = 'oversized' | 'json' | 'address' | 'action' | 'queue-id';

/** rspamd's actions, by what they say of the message. */
const ACTIONS: Readonly<Record<string, Verdict | 'unsure'>> = {
  'reject': 'spam', 'add header': 'spam', 'rewrite subject': 'spam', 'discard': 'spam', 'quarantine': 'spam',
  'no action': 'ham',
  'greylist': 'unsure', 'soft reject': 'unsure',
};

/** A queue id as Postfix and Sendmail make them (letters and digits), at most 64 long. */
export const QUEUE_ID = /^[A-Za-z0-9]{1,64}$/;

export type Parsed = { readonly scan: Omit<Scan, 'source'> } | { readonly unsure: string } | { readonly refused: Refusal; readonly detail: string };

export function parseVerdict(text: string): Parsed {
  if (text.length > MAX_MESSAGE) return { refused: 'oversized', detail: `${text.length} characters, more than ${MAX_MESSAGE}` };
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (err) {
    return { refused: 'json', detail: `not JSON: ${(err as Error).message}` };
  }
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return { refused: 'json', detail: 'not a JSON object' };
  const m = o as Record<string, unknown>;
  const ip = m['ip'];
  const qid = m['qid'];
  const client = typeof ip === 'string' && ip !== '' ? ip : undefined;
  if (ip !== undefined && (client === undefined || isIP(client) === 0)) return { refused: 'address', detail: `ip ${JSON.stringify(ip).slice(0, 80)} is not an IP address` };
  const queueId = typeof qid === 'string' && qid !== 'unknown' && qid !== '' ? qid : undefined;
  if (queueId !== undefined && !QUEUE_ID.test(queueId)) return { refused: 'queue-id', detail: `qid ${JSON.stringify(qid).slice(0, 80)} is not a queue id` };
  if (client === undefined && queueId === undefined) return { refused: 'address', detail: 'neither ip nor qid names the message' };
  const said = m['verdict'] ?? m['action'];
  const verdict = typeof said === 'string' ? (m['verdict'] !== undefined ? (said === 'spam' || said === 'ham' ? said : undefined) : ACTIONS[said]) : undefined;
  if (verdict === undefined) return { refused: 'action', detail: `${m['verdict'] !== undefined ? 'verdict' : 'action'} ${JSON.stringify(said).slice(0, 80)} is not one sluice knows` };
  if (verdict === 'unsure') return { unsure: said as string };
  return { scan: { verdict, ...(client ? { client } : {}), ...(queueId ? { queueId } : {}) } };
}
