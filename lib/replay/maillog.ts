// maillog.ts - SMTP sessions rebuilt from Postfix's own log.
//
// Postfix logs where every client gave up: "connect from NAME[ADDR]",
// "QUEUEID: client=...", "NOQUEUE: reject: RCPT from ...; from=<S> to=<R>
// proto=ESMTP helo=<H>", "lost connection after RCPT from ...", "timeout
// after DATA from ...", and "disconnect from NAME[ADDR] ehlo=1 mail=1
// rcpt=0/1 data=0/1 commands=2/3" with a count per command (ok/tried). Lines
// come in the traditional syslog form ("Nov 27 14:55:36 host
// postfix/smtpd[123]: ...", the year taken from `year`) or RFC 3339
// ("2026-11-27T14:55:36.123+00:00 host postfix/smtpd[123]: ..."). A session
// is keyed by its smtpd process (one session at a time each) and is handed
// on at its disconnect line; memory is bounded by the sessions open at once.
// Other Postfix programs' lines (postscreen, cleanup, qmgr) are read past;
// lines that are not Postfix's are counted, never fatal.

import { STAGES, type Stage } from '../engine/types.js';

export interface LogSession {
  readonly client: string;
  readonly clientName: string;
  helo: string;
  sender: string;
  readonly start: number;
  end: number;
  /** Stages the client reached (asked at least once), in order. */
  readonly stages: Stage[];
  /** Where it was lost ("lost connection" / "timeout after"), if it was. */
  lostAt: Stage | undefined;
  /** Said QUIT. */
  quit: boolean;
  /** Messages accepted (DATA or BDAT LAST that succeeded). */
  delivered: number;
  readonly queueIds: string[];
}

const MONTHS: Readonly<Record<string, number>> = { Jan: 0, Feb: 1, Mar: 2, Apr: 3, May: 4, Jun: 5, Jul: 6, Aug: 7, Sep: 8, Oct: 9, Nov: 10, Dec: 11 };
const SYSLOG = /^([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.\d+)? \S+ ([\w/.-]+)\[(\d+)\]: (.*)$/;
const RFC3339 = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)) \S+ ([\w/.-]+)\[(\d+)\]: (.*)$/;
const CLIENT = /from ([^\s[]+)\[([^\]]+)\]/;
/** Postfix's name for the command a session was at, as our stage. */
const STAGE_OF: Readonly<Record<string, Stage>> = {
  CONNECT: 'connect', EHLO: 'helo', HELO: 'helo', STARTTLS: 'helo', AUTH: 'helo', MAIL: 'mail', RCPT: 'rcpt',
  DATA: 'data', BDAT: 'data', 'END-OF-MESSAGE': 'eom', RSET: 'mail', QUIT: 'end', NOOP: 'helo', VRFY: 'helo',
};

export interface ParsedLine {
  readonly at: number;
  /** The program after "postfix/" (smtpd, postscreen, cleanup, ...), or "" when not Postfix. */
  readonly program: string;
  readonly pid: string;
  readonly text: string;
}

/** One log line's time, program, process and message, or undefined when it is not a syslog line. */
export function parseLine(line: string, year: number): ParsedLine | undefined {
  let m = SYSLOG.exec(line);
  if (m) {
    const month = MONTHS[m[1]!];
    if (month === undefined) return undefined;
    const at = Date.UTC(year, month, Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5]));
    return { at, program: program(m[6]!), pid: m[7]!, text: m[8]! };
  }
  m = RFC3339.exec(line);
  if (m) {
    const at = Date.parse(m[1]!);
    if (Number.isNaN(at)) return undefined;
    return { at, program: program(m[2]!), pid: m[3]!, text: m[4]! };
  }
  return undefined;
}

function program(tag: string): string {
  const i = tag.lastIndexOf('/');
  return i < 0 ? (tag === 'smtpd' || tag === 'postscreen' ? tag : '') : tag.slice(i + 1);
}

/** Rebuilds sessions line by line; `done` gets each at its end. */
export class SessionBuilder {
  readonly #open = new Map<string, LogSession>();
  lines = 0;
  unparsed = 0;
  constructor(private readonly done: (s: LogSession) => void, private readonly year: number) {}

  get open(): number {
    return this.#open.size;
  }

  line(text: string): void {
    this.lines++;
    // Most of a mail log is other Postfix programs' (cleanup, qmgr, delivery): told apart without parsing.
    if (!text.includes('/smtpd[')) {
      if (!text.includes(' postfix')) this.unparsed++;
      return;
    }
    const l = parseLine(text, this.year);
    if (l === undefined || l.program === '') {
      this.unparsed++;
      return;
    }
    if (l.program !== 'smtpd') return;
    const t = l.text;
    let s = this.#open.get(l.pid);
    if (t.startsWith('connect from ')) {
      if (s) this.#close(l.pid, s);
      const c = CLIENT.exec(t);
      if (!c) return;
      this.#open.set(l.pid, {
        client: c[2]!, clientName: c[1]!, helo: '', sender: '', start: l.at, end: l.at, stages: ['connect'],
        lostAt: undefined, quit: false, delivered: 0, queueIds: [],
      });
      return;
    }
    if (s === undefined) return;
    s.end = l.at;
    if (t.startsWith('disconnect from ')) {
      this.#counts(s, t);
      this.#close(l.pid, s);
      return;
    }
    const lost = /^(?:lost connection|timeout) after ([A-Z-]+)/.exec(t);
    if (lost) {
      s.lostAt = STAGE_OF[lost[1]!] ?? 'connect';
      return;
    }
    const qid = /^([0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}): client=/.exec(t);
    if (qid) {
      s.queueIds.push(qid[1]!);
      return;
    }
    if (t.startsWith('NOQUEUE: reject: ') || t.includes(': reject: ')) {
      const helo = /\bhelo=<([^>]*)>/.exec(t);
      const from = /\bfrom=<([^>]*)>/.exec(t);
      if (helo && !s.helo) s.helo = helo[1]!;
      if (from && !s.sender) s.sender = from[1]!;
    }
  }

  /** Sessions still open when the log ends are handed on as they are. */
  finish(): void {
    for (const [pid, s] of this.#open) this.#close(pid, s);
  }

  #close(pid: string, s: LogSession): void {
    this.#open.delete(pid);
    this.done(s);
  }

  /** The disconnect line's counts: which stages were reached, QUIT, and messages accepted. */
  #counts(s: LogSession, t: string): void {
    const reached = new Set<Stage>(s.stages);
    for (const m of t.matchAll(/\b([a-z]+)=(\d+)(?:\/(\d+))?/g)) {
      const [, cmd, ok, tried] = m;
      const asked = Number(tried ?? ok);
      if (asked === 0) continue;
      if (cmd === 'quit') s.quit = true;
      else if (cmd === 'ehlo' || cmd === 'helo') reached.add('helo');
      else if (cmd === 'mail') reached.add('mail');
      else if (cmd === 'rcpt') reached.add('rcpt');
      else if (cmd === 'data' || cmd === 'bdat') {
        reached.add('data');
        // data=N: N messages accepted; bdat counts chunks, of which the LAST ones end messages.
        if (cmd === 'data') s.delivered += Number(ok);
        else if (Number(ok) > 0 && s.queueIds.length > 0) s.delivered += s.queueIds.length;
      }
    }
    s.stages.length = 0;
    // In SMTP's order; a log shows no end of headers, and end of message only as a delivery.
    for (const st of STAGES) if (reached.has(st) && st !== 'eom') s.stages.push(st);
    if (s.delivered > 0) s.stages.push('eom');
  }
}
