// report.ts - what a simulation found, per population and in total, as a
// table for a terminal (within 100 columns) and as JSON under stable keys
// (sluice-scenario(5), REPORT).
//
// Messages are new messages (a retry is the same message again). Added
// delay is, for each accepted message, the time from its first try to its
// acceptance minus how long the same session takes unshaped, and minus the
// time the client lost to sessions it broke off itself (abandon_after_rcpt)
// and the retry waits after them: delay the client caused, not sluice.

import { formatDuration } from '../config/units.js';

/** What is counted for one population. */
export class Tally {
  messages = 0;
  accepted = 0;
  acceptedFirst = 0;
  deferredOnce = 0;
  rejected = 0;
  lost = 0;
  sessions = 0;
  /** Sessions that waited for a free smtpd process. */
  waited = 0;
  holds = 0;
  holdsRefused = 0;
  holdsAbandoned = 0;
  /** Added delay of each accepted message, ms. */
  delays: number[] = [];
}

export interface HostReport {
  readonly host: number;
  readonly sessions: number;
  readonly peak_holds: number;
  readonly peak_busy_processes: number;
  readonly busy_process_seconds: number;
}

export interface PopulationReport {
  readonly name: string;
  readonly kind: 'legitimate' | 'zombie';
  readonly messages: number;
  readonly accepted_pct: number;
  readonly accepted_first_try_pct: number;
  readonly deferred_once_pct: number;
  readonly rejected: number;
  readonly lost: number;
  readonly delay_p50_s: number;
  readonly delay_p99_s: number;
  readonly delay_max_s: number;
  readonly sessions: number;
  readonly waited_for_process: number;
  readonly holds_granted: number;
  readonly holds_refused_budget: number;
  readonly holds_abandoned: number;
}

export interface Report {
  readonly scenario: string;
  readonly seed: number;
  readonly duration_s: number;
  readonly populations: readonly PopulationReport[];
  /** Every population of a kind together: legitimate (real mail) and zombie (botnet mail). */
  readonly totals: readonly PopulationReport[];
  readonly hosts: readonly HostReport[];
  readonly store_calls: number;
  readonly dns_queries: number;
  readonly lookups_failed: number;
}

const pct = (n: number, of: number): number => (of === 0 ? 0 : Math.round((1000 * n) / of) / 10);
const secs = (ms: number): number => Math.round(ms / 100) / 10;

/** The q-quantile (0..1) of sorted values; 0 for none. */
function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0;
}

export function populationReport(name: string, kind: 'legitimate' | 'zombie', t: Tally): PopulationReport {
  const d = Float64Array.from(t.delays).sort();
  return {
    name, kind, messages: t.messages,
    accepted_pct: pct(t.accepted, t.messages), accepted_first_try_pct: pct(t.acceptedFirst, t.messages),
    deferred_once_pct: pct(t.deferredOnce, t.messages), rejected: t.rejected, lost: t.lost,
    delay_p50_s: secs(quantile(d, 0.5)), delay_p99_s: secs(quantile(d, 0.99)), delay_max_s: secs(d.length ? d[d.length - 1]! : 0),
    sessions: t.sessions, waited_for_process: t.waited,
    holds_granted: t.holds, holds_refused_budget: t.holdsRefused, holds_abandoned: t.holdsAbandoned,
  };
}

/** Tallies added together. */
export function sum(ts: readonly Tally[]): Tally {
  const out = new Tally();
  for (const t of ts) {
    for (const k of ['messages', 'accepted', 'acceptedFirst', 'deferredOnce', 'rejected', 'lost', 'sessions', 'waited', 'holds', 'holdsRefused', 'holdsAbandoned'] as const) out[k] += t[k];
    for (const d of t.delays) out.delays.push(d);
  }
  return out;
}

/** The report as a terminal table, with a line saying what the columns mean. */
export function formatReport(r: Report): string {
  const out: string[] = [];
  out.push(`${r.scenario} (seed ${r.seed}, ${formatDuration(r.duration_s * 1000)} simulated)`);
  out.push('');
  const head = ['population', 'kind', 'msgs', 'acc%', '1st%', 'def%', 'rej', 'lost', 'p50 s', 'p99 s', 'max s', 'waited', 'holds', 'refused', 'gone'];
  const widths = [13, 5, 7, 5, 5, 5, 7, 7, 6, 6, 6, 7, 7, 8, 6];
  const row = (cells: (string | number)[]): string => cells.map((c, i) => (i < 2 ? String(c).slice(0, widths[i]! - 1).padEnd(widths[i]!) : String(c).padStart(widths[i]!))).join('').trimEnd();
  out.push(row(head));
  // A delay of 1,000 s or more in whole seconds: with its tenth it would fill its column.
  const s = (n: number): number => (n >= 1000 ? Math.round(n) : n);
  const line = (p: PopulationReport, name = p.name): string => row([name, p.kind === 'zombie' ? 'bot' : 'real', p.messages, p.accepted_pct, p.accepted_first_try_pct, p.deferred_once_pct, p.rejected, p.lost, s(p.delay_p50_s), s(p.delay_p99_s), s(p.delay_max_s), p.waited_for_process, p.holds_granted, p.holds_refused_budget, p.holds_abandoned]);
  for (const p of r.populations) out.push(line(p));
  for (const p of r.totals) out.push(line(p, p.kind === 'zombie' ? 'all bots' : 'all real'));
  out.push('');
  out.push('msgs: new messages; acc%: accepted; 1st%: accepted at the first try; def%: deferred (4xx) at least');
  out.push('once; rej: rejected (5xx); lost: never accepted; p50/p99/max s: added delay of accepted mail;');
  out.push('waited: sessions that waited for an smtpd process; holds: granted; refused: holds the budget');
  out.push('refused; gone: clients that hung up under a hold.');
  out.push('');
  for (const h of r.hosts) out.push(`host ${h.host}: ${h.sessions} sessions, peak ${h.peak_holds} holds and ${h.peak_busy_processes} busy smtpd processes, ${h.busy_process_seconds} process-seconds`);
  out.push(`store calls ${r.store_calls}, DNS queries ${r.dns_queries}${r.lookups_failed ? `, lookups that failed ${r.lookups_failed}` : ''}`);
  return out.join('\n') + '\n';
}
