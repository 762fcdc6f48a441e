// session.ts - one policy connection: requests in order, one reply each.
//
// A Postfix policy connection is persistent and carries the requests of many
// SMTP sessions from one smtpd process, strictly one at a time. For each
// request: decode -> typed request -> StageEvent -> engine -> Verdict ->
// (hold) -> exactly one reply. A held reply is a guarded timer, so other
// connections are never blocked; the hold is cut to policy.timeout minus
// policy.hold_margin so Postfix never times out and resends, and dropped
// entirely when Postfix says stress=yes. On SIGTERM flush() answers at once.
// If the connection closes while a reply is held, the timer is cancelled.
//
// Sessions follow each other on a connection: an smtpd process serves one
// SMTP client at a time, so a request from another session means the one
// before it is over: its outcome is concluded then and there (outcomes.ts,
// from all its stages: with several check_policy_service strings, a
// connection sees only some) and told to the engine. Only a connection's last
// session waits for rates.abandon_window of silence.
//
// Bad bytes (1xx) and internal trouble (9xx) close the connection with no
// reply: Postfix retries on a new connection, then applies its
// default_action (SMTPD_POLICY_README). A failing engine (3xx) gets the fail
// mode as its answer instead, through safeDecide().
//
// In observe mode (mode: observe) every request is decided and reported as
// usual, and answered DUNNO at once.
//
// Config keys: mode, policy.timeout, policy.hold_margin, policy.defer_if_permit,
// policy.prepend_header, fail_mode, and the codec limits.

import type { Config } from '../config/schema.js';
import type { Connection, ConnectionHandler } from '../net/listener.js';
import type { Shield, ShieldContext } from '../shield/shield.js';
import { InternalError, type SluiceError } from '../shield/errors.js';
import { safeDecide } from '../engine/decide.js';
import { PASS, scoreLine, type Engine, type Outcome, type StageEvent, type Verdict, type VerdictKind } from '../engine/types.js';
import { PolicyDecoder, type PolicyAttributes } from './codec.js';
import { REQUEST_ATTRS, repeatKey, toRequest, toStageEvent } from './request.js';
import { DUNNO_REPLY, renderPrepend, renderReply } from './render.js';
import type { RecentQuestions } from './repeats.js';
import { policyHold } from '../config/policy-hold.js';
import type { PolicyOutcomes } from './outcomes.js';
import { HeldReply } from '../net/hold.js';
import { Inbox } from '../net/inbox.js';


export interface PolicyDeps {
  readonly shield: Shield;
  readonly engine: Engine;
  readonly config: () => Config;
  /** Shared by all connections: Postfix resends on a new connection. */
  readonly repeats: RecentQuestions;
  /** Shared by all connections: how sessions ended, told to the engine. */
  readonly outcomes: PolicyOutcomes;
  /** Called once per answered request (logs, metrics); `observed`: the verdict was not enforced (mode observe). */
  readonly answered: (conn: Connection, event: StageEvent | undefined, verdict: Verdict, heldMs: number, observed: boolean) => void;
  /** Called once per session found abandoned when the next one began (logs, metrics). */
  readonly abandoned?: (conn: Connection, outcome: Outcome) => void;
}

export function policyHandler(deps: PolicyDeps): (conn: Connection) => ConnectionHandler {
  return (conn) => new PolicySession(conn, deps);
}

class PolicySession implements ConnectionHandler {
  readonly #conn: Connection;
  readonly #deps: PolicyDeps;
  readonly #decoder: PolicyDecoder;
  /** Requests a client may send ahead of our reply before it is cut off: Postfix sends one. */
  readonly #inbox = new Inbox<PolicyAttributes>(4, 'requests');
  #working = false;
  #hold: HeldReply | undefined;
  /** The SMTP session this connection served last. */
  #session = '';
  /**
   * The context for bookkeeping around an answer: a failure there is logged
   * and counted, and neither closes the connection nor stands in for the
   * answer (the connection itself as context would do both).
   */
  readonly #quiet: ShieldContext;

  constructor(conn: Connection, deps: PolicyDeps) {
    this.#conn = conn;
    this.#deps = deps;
    this.#quiet = { label: conn.label };
    const p = deps.config().policy;
    this.#decoder = new PolicyDecoder({
      maxLineLength: p.max_line_length,
      maxRequestSize: p.max_request_size,
      maxAttributes: p.max_attributes,
    }, REQUEST_ATTRS);
  }

  get busy(): boolean {
    return this.#working;
  }

  readonly #decode = (chunk: Buffer, into: PolicyAttributes[]): void => {
    for (const attrs of this.#decoder.push(chunk)) into.push(attrs);
  };

  onData(chunk: Buffer): void {
    this.#inbox.take(this.#decode, chunk);
    this.#next();
  }

  onClose(): void {
    this.#hold?.cancel();
    this.#hold = undefined;
    // A request cut short is worth one warning; a clean close between requests
    // is normal; after an error the connection has had its one warning.
    this.#inbox.close(() => this.#decoder.end());
  }

  flush(): void {
    this.#hold?.flush();
  }

  failMode(_err: SluiceError): void {
    // Policy: no reply on internal trouble; Postfix retries, then applies its default action.
    this.#conn.close();
  }

  #next(): void {
    if (this.#working || this.#conn.closed) return;
    const attrs = this.#inbox.items.shift();
    if (!attrs) return;
    this.#working = true;
    this.#deps.shield.guard(this.#conn, 'read', () => this.#handle(attrs));
  }

  #handle(attrs: PolicyAttributes): void {
    const cfg = this.#deps.config();
    let req;
    try {
      req = toRequest(attrs);
    } catch (err) {
      throw this.#inbox.broke(err);
    }
    if (!req.stage) {
      // VRFY, ETRN and anything newer: not a stage sluice shapes.
      this.#reply(DUNNO_REPLY, undefined, PASS, 0);
      return;
    }
    const repeat = this.#deps.repeats.repeated(repeatKey(req), this.#deps.shield.clock.now());
    const event = toStageEvent(req, req.stage, repeat);
    if (event.session !== this.#session) {
      if (this.#session !== '') this.#over(this.#session);
      this.#session = event.session;
    }
    const verdict = safeDecide(this.#deps.engine, event, cfg.fail_mode, (err) =>
      this.#deps.shield.raise(this.#conn, err, 'read', [event.stage]));
    if (verdict instanceof Promise) {
      // safeDecide's promise never rejects; the answer still runs guarded.
      void verdict.then((v) => this.#deps.shield.guard(this.#conn, 'read', () => this.#respond(event, v, cfg)));
      return;
    }
    this.#respond(event, verdict, cfg);
  }

  #respond(event: StageEvent, verdict: Verdict, cfg: Config): void {
    if (this.#conn.closed) return;
    // In observe mode the MTA is told to go on at once (decided, logged and
    // counted all the same); what is learned follows what it was told.
    const observed = cfg.mode === 'observe';
    const told = observed ? PASS : verdict;
    let reply = renderReply(told, { deferIfPermit: cfg.policy.defer_if_permit, failMode: cfg.fail_mode });
    if (!observed && told.kind === 'pass' && event.stage === 'data' && cfg.policy.prepend_header !== '') {
      reply = renderPrepend(cfg.policy.prepend_header, scoreLine(told));
    }
    const delay = policyHold(told.delayMs, event.stress, cfg.policy);
    this.#told(event, told.kind, delay);
    if (delay <= 0) {
      this.#reply(reply, event, verdict, 0, observed);
      return;
    }
    this.#hold = new HeldReply(this.#deps.shield, this.#conn, delay, (heldMs) => {
      this.#hold = undefined;
      this.#reply(reply, event, verdict, heldMs, observed);
    });
  }

  /**
   * What the MTA is told (after a hold of delayMs) is how the session stands
   * now; silence counts from when the answer goes out. A failure here is
   * logged and counted; the request is still answered.
   */
  #told(event: StageEvent, told: VerdictKind, delayMs: number): void {
    const { outcomes, shield } = this.#deps;
    // Per request: called directly, the failure handed to the shield as guard() would.
    try {
      outcomes.answered(event, told, delayMs > 0, shield.clock.now() + delayMs);
    } catch (err) {
      shield.raise(this.#quiet, err, 'read');
    }
  }

  /** The session before this one on the connection is over: its outcome now. */
  #over(session: string): void {
    const { outcomes, shield, abandoned } = this.#deps;
    shield.guard(this.#quiet, 'read', () => {
      const outcome = outcomes.over(session);
      if (outcome?.kind === 'abandoned') abandoned?.(this.#conn, outcome);
    });
  }

  #reply(text: string | Buffer, event: StageEvent | undefined, verdict: Verdict, heldMs: number, observed = false): void {
    // A second reply to one request would answer Postfix's next question.
    if (!this.#working) throw new InternalError('INTERNAL_INVARIANT', 'a policy reply with no request waiting for it');
    this.#working = false;
    if (!this.#conn.send(text)) return;
    this.#deps.answered(this.#conn, event, verdict, heldMs, observed);
    this.#next();
  }
}
