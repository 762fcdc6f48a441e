// types.ts - the seam between protocols and the engine.
//
// Protocol code turns what the MTA sends into a StageEvent and renders the
// Verdict it gets back; the engine sees neither sockets nor protocol
// constants. Both sides import only this file.

/** The SMTP stages in the order a session passes them: the only place that order is written. */
export const STAGES = ['connect', 'helo', 'mail', 'rcpt', 'data', 'eoh', 'eom', 'end'] as const;
export type Stage = (typeof STAGES)[number];
/** The stages a client can be asked about (every one but the session's end). */
export const ASKED: readonly Stage[] = STAGES.filter((s) => s !== 'end');

export interface StageEvent {
  readonly stage: Stage;
  /** Our id for the SMTP session (policy: derived from the client and instance; milter: per connection). */
  readonly session: string;
  readonly via: 'policy' | 'milter';
  readonly mta: 'postfix' | 'sendmail' | 'unknown';
  /** Canonical client address (IPv4 dotted quad, compressed IPv6), or "unknown". */
  readonly client: string;
  readonly port: number | undefined;
  /** Reverse (PTR) name as the MTA saw it, or "unknown". */
  readonly clientName: string;
  readonly helo: string;
  /** Envelope sender without angle brackets; "" for the null sender. */
  readonly sender: string;
  readonly recipient: string;
  readonly recipientCount: number;
  readonly size: number;
  readonly queueId: string;
  readonly saslUser: string;
  readonly tls: { readonly protocol: string; readonly cipher: string } | undefined;
  /** Postfix says it is overloaded (stress=yes): do not delay. */
  readonly stress: boolean;
  /** The MTA asked this before (a retry, or the same RCPT for another restriction list). */
  readonly repeat: boolean;
}

export type VerdictKind = 'pass' | 'accept' | 'defer' | 'reject';

export interface Reply {
  /** 4xx for defer, 5xx for reject. */
  readonly code: number;
  /** Enhanced status code, e.g. "4.7.1"; its class digit matches `code`. */
  readonly enhanced: string;
  readonly text: string;
}

export interface Verdict {
  readonly kind: VerdictKind;
  /** Hold the answer this long (the tarpit); 0 answers at once. */
  readonly delayMs: number;
  /** Present for defer and reject. */
  readonly reply?: Reply;
  /** The rule that decided, for logs and explain. */
  readonly rule: string;
  readonly score: number;
  /** The inputs that produced it and each step taken, for logs and explain. */
  readonly reason?: Reason;
}

export interface Reason {
  readonly inputs: Readonly<Record<string, number | string | boolean>>;
  readonly trace: readonly string[];
}

/** The short score line for a header added to passed mail (policy PREPEND, milter ADDHEADER). */
export function scoreLine(v: Verdict): string {
  return `score=${v.score.toFixed(1)} rule=${v.rule}`;
}

/** What the engine learns after the fact: how a session ended. */
export type Outcome =
  /** `scanned`: what a content scanner's header on the message said of it (the milter sees it; feedback.header). */
  | { readonly kind: 'delivered'; readonly event: StageEvent; readonly scanned?: 'spam' | 'ham' }
  /**
   * `held`: its last reply was held. Where the protocol sees more (the
   * milter does; the policy protocol cannot): `lasted`, it hung up while
   * the reply was still held, after this long; `waitedOut`, it waited the
   * hold out and left later (a broken connection, not a zombie's hang-up).
   */
  | { readonly kind: 'abandoned'; readonly event: StageEvent; readonly held: boolean; readonly lasted?: number; readonly waitedOut?: boolean }
  /** The session ended normally (QUIT after its messages). */
  | { readonly kind: 'ended'; readonly event: StageEvent };

/**
 * What a first-contact lookup (lib/enrich) found about a client, as the
 * engine uses it: points added to the score, and whether a list named the
 * client (shaped per the list's action) or vouches for it (trusted: no
 * tarpit, no learned penalty).
 */
export interface Enrichment {
  /** The provider, e.g. "dnsbl". */
  readonly source: string;
  readonly points: number;
  readonly listed: 'hold' | 'defer' | 'reject' | undefined;
  readonly trusted: boolean;
  /** For the verdict's rule, e.g. "dnsbl zen.spamhaus.org". */
  readonly rule: string;
  /** One line per answer and what it weighed, for explain. */
  readonly trace: readonly string[];
}

/**
 * Where a session's lookups keep their state: a field of the engine's own
 * session context, which only the lookups read or write. A session's end
 * (or its sweep) is then one end() call, and the lookups keep no table of
 * sessions of their own.
 */
export interface LookupSlot {
  lookup: unknown;
}

/** The lookup seam as the engine sees it (lib/enrich/enricher.ts). */
export interface Lookups {
  /**
   * Starts the lookups this event calls for (deduplicated, concurrent).
   * `changed`: the event brought a client, HELO, sender or name the session
   * had not shown (the engine made its profile again). `dry`: a dry run
   * (explain), whose answers are not kept. undefined: nothing to wait for;
   * else a promise that settles when they have arrived or the budget is
   * spent: false if the session ended meanwhile.
   */
  begin(e: StageEvent, slot: LookupSlot, changed: boolean, dry?: boolean): Promise<boolean> | undefined;
  /** What has arrived about this session's client so far; with `explain`, each with its trace. */
  findings(e: StageEvent, slot: LookupSlot, explain?: boolean): readonly Enrichment[];
  /** The session is over: what it started is no longer needed by it. */
  end(slot: LookupSlot): void;
}

/** The decision side of the seam. */
export interface Engine {
  decide(event: StageEvent): Verdict | Promise<Verdict>;
  record(outcome: Outcome): void;
}

/**
 * A rule put in front of the engine's pipeline: it may decide an event
 * itself (anything but undefined is the verdict), and it sees every outcome
 * the engine learns from. Tests script their decisions this way.
 */
export interface Rule {
  decide(event: StageEvent): Verdict | Promise<Verdict> | undefined;
  record?(outcome: Outcome): void;
}

export const PASS: Verdict = Object.freeze({ kind: 'pass', delayMs: 0, rule: 'default', score: 0 });

/** The fail-mode answer when deciding fails. */
export function failVerdict(mode: 'pass' | 'defer'): Verdict {
  if (mode === 'pass') return { kind: 'pass', delayMs: 0, rule: 'fail-mode', score: 0 };
  return {
    kind: 'defer', delayMs: 0, rule: 'fail-mode', score: 0,
    reply: { code: 451, enhanced: '4.3.0', text: 'Temporary policy failure, try again later' },
  };
}

/** True when a value that came back from a rule really is a verdict. */
export function isVerdict(v: unknown): v is Verdict {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  if (!['pass', 'accept', 'defer', 'reject'].includes(o['kind'] as string)) return false;
  if (typeof o['delayMs'] !== 'number' || !Number.isFinite(o['delayMs']) || (o['delayMs'] as number) < 0) return false;
  if (o['kind'] === 'defer' || o['kind'] === 'reject') {
    const r = o['reply'] as Record<string, unknown> | undefined;
    if (!r || typeof r['code'] !== 'number' || typeof r['text'] !== 'string' || typeof r['enhanced'] !== 'string') return false;
    const want = o['kind'] === 'defer' ? 4 : 5;
    if (Math.floor((r['code'] as number) / 100) !== want) return false;
  }
  return true;
}
