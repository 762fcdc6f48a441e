// commands.ts - what sluicectl can ask of sluiced.
//
// status, stats, show, top, explain, allow, deny, forget, lists, reload,
// snapshot, log-level, learn (a content scanner's verdict, or a person's). Each validates its arguments (bad_request), reaches
// the daemon only through the Controller (what an operator may ask of the
// engine: engine/operator.ts; reload, snapshot, the logger level) and
// returns plain data for
// sluicectl to print as a table or as JSON. explain is a dry run: it records
// nothing and grants no hold.

import { isIP } from 'node:net';
import { parseDuration } from '../config/units.js';
import { LOG_LEVELS } from '../config/schema.js';
import { parseListValue } from '../config/list-value.js';
import { keyFromText, addressKeys } from '../reputation/keys.js';
import type { Operator } from '../engine/operator.js';
import { STAGES, type Stage, type StageEvent, type Verdict } from '../engine/types.js';
import { CommandError, type Request } from './protocol.js';
import { policyHold } from '../config/policy-hold.js';
import { firstFew } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { Learned, Scan } from '../engine/learn.js';
import { QUEUE_ID } from '../feedback/verdicts.js';

export interface Controller {
  /** What an operator may ask of the engine. */
  readonly engine: Operator;
  /** The running policy settings: explain holds as the policy service would. */
  policy(): Pick<Config['policy'], 'timeout' | 'hold_margin'>;
  status(): Record<string, unknown>;
  stats(): Promise<Record<string, unknown>>;
  /** Rereads the config file: the problems that refused it, [] when taken. */
  reload(): Promise<readonly string[]>;
  snapshot(): Promise<{ file: string; entries: number }>;
  setLogLevel(level: string): void;
  /** A verdict on a message, by its queue id or its client (lib/feedback). */
  learn(s: Scan): Learned;
}


interface TopRow {
  key: string;
  score: number;
  holds: number;
  drops: number;
  delivered: number;
}

/** Inserts row into best (kept in order, at most n long) when it ranks among the first n; ties keep arrival order. */
function keepBest<T>(best: T[], n: number, row: T, order: (a: T, b: T) => number): void {
  if (best.length === n && order(row, best[n - 1]!) >= 0) return;
  let lo = 0;
  let hi = best.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (order(row, best[mid]!) < 0) hi = mid;
    else lo = mid + 1;
  }
  best.splice(lo, 0, row);
  if (best.length > n) best.pop();
}

/** The verdict with the hold the policy service would really give it, and why when that is shorter. */
function capped(v: Verdict, stress: boolean, p: Pick<Config['policy'], 'timeout' | 'hold_margin'>): Verdict {
  const held = policyHold(v.delayMs, stress, p);
  if (held === v.delayMs) return v;
  const why = stress ? 'stress=yes' : `policy.timeout ${p.timeout} ms minus policy.hold_margin ${p.hold_margin} ms`;
  return { ...v, delayMs: held, reason: { inputs: v.reason?.inputs ?? {}, trace: [...(v.reason?.trace ?? []), `hold cut to ${held} ms: ${why}`] } };
}

function str(args: Record<string, unknown> | undefined, name: string, required = true): string {
  const v = args?.[name];
  if (v === undefined || v === null || v === '') {
    if (required) throw new CommandError('bad_request', `missing ${name}`);
    return '';
  }
  if (typeof v !== 'string') throw new CommandError('bad_request', `${name} must be a string`);
  return v;
}

export function commands(ctl: Controller, now: () => number): (req: Request) => Promise<unknown> | unknown {
  const engine = ctl.engine;
  const row = (key: string) => {
    const st = engine.standing(key);
    if (!st) return undefined;
    const e = st.entry;
    return {
      key, score: Math.round(st.score * 10) / 10, delivered: e.ok, abandoned: e.ab, abandoned_held: e.abh,
      rate_exceeded: e.rate, greylist_passed: e.grey, spam: e.spam, ham: e.ham, first_seen: new Date(e.first).toISOString(), last_change: new Date(e.at).toISOString(),
    };
  };

  return async (req) => {
    const a = req.args;
    const t = now();
    switch (req.cmd) {
      case 'status':
        return ctl.status();
      case 'stats':
        return ctl.stats();
      case 'show': {
        const target = str(a, 'target');
        const key = keyFromText(target);
        if (!key) throw new CommandError('bad_request', `"${target}" is not an address, CIDR, HELO name or @domain`);
        const keys = isIP(target) ? [key, addressKeys(target)!.net] : [key];
        const rows = keys.map((k) => row(k)).filter((r) => r !== undefined);
        const listed = isIP(target) ? engine.listed(target) : undefined;
        const lookups = isIP(target) ? engine.lookedUp(target) : {};
        const cached = Object.values(lookups).some((v) => Array.isArray(v) && v.some((z: { answer?: string }) => z.answer !== 'not cached'));
        if (rows.length === 0 && !listed && !cached) {
          const hint = key.startsWith('helo:') && target.includes('.') ? ` as a HELO name (a sender domain is shown as @${target})` : '';
          throw new CommandError('not_found', `nothing known about ${target}${hint}`);
        }
        return { target, entries: rows, listed: listed ?? null, ...(Object.keys(lookups).length ? { lookups } : {}) };
      }
      case 'top': {
        const n = Number(a?.['n'] ?? 20);
        const by = String(a?.['by'] ?? 'score');
        if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new CommandError('bad_request', 'n must be a whole number from 1 to 10000');
        if (!['score', 'holds', 'drops'].includes(by)) throw new CommandError('bad_request', 'by must be score, holds or drops');
        // A full store is a million keys, and `top --watch` asks every few
        // seconds: one pass over the store keeps only the best n (no sort of all).
        const order = by === 'score' ? (x: TopRow, y: TopRow) => x.score - y.score
          : by === 'holds' ? (x: TopRow, y: TopRow) => y.holds - x.holds
            : (x: TopRow, y: TopRow) => y.drops - x.drops;
        const rows: TopRow[] = [];
        let total = 0;
        engine.scan((key, score, ok, ab, abh) => {
          if (!key.startsWith('ip:') && !key.startsWith('net:')) return;
          total++;
          keepBest(rows, n, { key, score: Math.round(score * 10) / 10, holds: abh, drops: ab + abh, delivered: ok }, order);
        });
        return { by, total, rows };
      }
      case 'explain': {
        const client = str(a, 'client');
        if (isIP(client) === 0) throw new CommandError('bad_request', `"${client}" is not an IP address`);
        const stage = (str(a, 'stage', false) || 'rcpt') as Stage;
        if (!STAGES.includes(stage)) throw new CommandError('bad_request', `stage must be one of ${STAGES.join(', ')}`);
        const event: StageEvent = {
          stage, session: `explain:${t}`, via: 'policy', mta: 'unknown', client, port: undefined,
          clientName: str(a, 'client_name', false) || 'unknown', helo: str(a, 'helo', false), sender: str(a, 'sender', false),
          recipient: str(a, 'recipient', false), recipientCount: 0, size: 0, queueId: '', saslUser: '', tls: undefined,
          stress: a?.['stress'] === true, repeat: false,
        };
        const v = capped(await engine.explain(event), event.stress, ctl.policy());
        return { event: { stage, client, client_name: event.clientName, helo: event.helo, sender: event.sender, recipient: event.recipient }, verdict: v };
      }
      case 'allow':
      case 'deny': {
        const value = str(a, 'value');
        const ttlText = str(a, 'ttl', false);
        const ttl = ttlText ? parseDuration(ttlText) : undefined;
        if (ttlText && (ttl === undefined || ttl <= 0)) throw new CommandError('bad_request', `"${ttlText}" is not a duration (e.g. 30m, 12h, 7d)`);
        const entry = engine.list(req.cmd, value, ttl, str(a, 'reason', false) || undefined);
        if (typeof entry === 'string') throw new CommandError('bad_request', entry);
        return entry;
      }
      case 'forget': {
        const value = str(a, 'value');
        const inList = engine.unlist(value);
        const key = typeof parseListValue(value) === 'string' ? undefined : keyFromText(value);
        const inStore = key ? engine.forget(key) : false;
        if (!inList && !inStore) throw new CommandError('not_found', `nothing known about ${value}`);
        return { value, list_entry_removed: inList, reputation_forgotten: inStore };
      }
      case 'lists':
        return { entries: engine.lists() };
      case 'learn': {
        const verdict = str(a, 'verdict');
        if (verdict !== 'spam' && verdict !== 'ham') throw new CommandError('bad_request', 'verdict must be spam or ham');
        const client = str(a, 'client', false);
        const queueId = str(a, 'queue_id', false);
        if (!client && !queueId) throw new CommandError('bad_request', 'give a client address or a queue id');
        if (client && isIP(client) === 0) throw new CommandError('bad_request', `"${client}" is not an IP address`);
        if (queueId && !QUEUE_ID.test(queueId)) throw new CommandError('bad_request', `"${queueId}" is not a queue id (letters and digits)`);
        const r = ctl.learn({ verdict, source: 'learn', ...(client ? { client } : {}), ...(queueId ? { queueId } : {}) });
        if (!r.learned) throw new CommandError('unknown_message', r.why);
        return { verdict, client: r.client, by: r.by, keys: r.keys, held_ms: r.heldMs };
      }
      case 'reload':
      {
        const problems = await ctl.reload();
        if (problems.length > 0) throw new CommandError('failed', ['reload refused; the running configuration is kept:', ...firstFew(problems, (n) => `(and ${n} more in the daemon log)`)].join('\n'));
      }
        return { reloaded: true };
      case 'snapshot':
        return ctl.snapshot();
      case 'log-level': {
        const level = str(a, 'level');
        if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new CommandError('bad_request', `level must be one of ${LOG_LEVELS.join(', ')}`);
        ctl.setLogLevel(level);
        return { level };
      }
      default:
        throw new CommandError('unknown_command', `unknown command "${req.cmd}"`);
    }
  };
}
