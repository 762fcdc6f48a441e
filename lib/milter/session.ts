// session.ts - one milter connection: frames in, exactly one reply per command.
//
// Frames are decoded (codec.ts), typed (payload.ts), checked against the
// phase (state.ts) and handled one at a time: the MTA is lock-step, and
// while a reply is held nothing else is processed. Commands that take a
// decision (CONNECT, HELO, MAIL, RCPT, DATA, EOH, end of message) become a
// StageEvent for the engine; the Verdict is rendered (render.ts) after its
// hold. While holding, PROGRESS goes out every milter.progress_interval where
// the MTA honours it; elsewhere the hold is cut below the MTA's timeout
// (mta.ts). MACRO, ABORT, QUIT and QUIT_NC get no reply. Postfix's local
// submission always continues.
//
// Learning: a session that ends (close or QUIT) inside a message, or without
// ever opening one, was abandoned at its last stage, held or not - unless
// our answer there was a reject or a defer; a message that passes end of
// message was delivered. Both go to engine.record().
//
// In observe mode (mode: observe) every stage is decided and reported as
// usual, and answered CONTINUE at once.
//
// Config keys: milter.* (through MilterSettings), fail_mode, mode.

import type { Connection, ConnectionHandler } from '../net/listener.js';
import type { Shield } from '../shield/shield.js';
import type { DecisionError, SluiceError } from '../shield/errors.js';
import { safeDecide } from '../engine/decide.js';
import { failVerdict, PASS, type Engine, type Outcome, type Stage, type StageEvent, type Verdict } from '../engine/types.js';
import { FrameDecoder, type Frame } from './codec.js';
import { decodeCommand, type Command } from './payload.js';
import { MilterState, stripBrackets } from './state.js';
import { holdPlan, mtaFromVersion, type HoldSettings, type MtaKind } from './mta.js';
import { negotiate } from './negotiate.js';
import { renderVerdict } from './render.js';
import * as R from './replies.js';
import * as C from './constants.js';
import { HeldReply } from '../net/hold.js';
import { Inbox } from '../net/inbox.js';


export interface MilterSettings extends HoldSettings {
  readonly max_frame_size: number;
  readonly mta: 'auto' | MtaKind;
  readonly header: string;
  readonly quarantine: boolean;
}

export interface MilterDeps {
  readonly shield: Shield;
  readonly engine: Engine;
  readonly settings: () => MilterSettings;
  readonly failMode: () => 'pass' | 'defer';
  /** observe: decide and report, but always CONTINUE at once. */
  readonly mode: () => 'enforce' | 'observe';
  /** `observed`: the verdict was not enforced (mode observe). */
  readonly answered: (conn: Connection, event: StageEvent, verdict: Verdict, heldMs: number, observed: boolean) => void;
  readonly abandoned?: (conn: Connection, outcome: Outcome) => void;
  /** A content scanner's header to read at end of message (feedback.header; '' none) and the pattern that says spam. */
  readonly scanHeader?: () => { readonly header: string; readonly header_spam: string };
}

export function milterHandler(deps: MilterDeps): (conn: Connection) => ConnectionHandler {
  return (conn) => new MilterSession(conn, deps);
}

interface Pending {
  readonly event: StageEvent;
  hold?: HeldReply;
}

class MilterSession implements ConnectionHandler {
  readonly #conn: Connection;
  readonly #deps: MilterDeps;
  readonly #decoder: FrameDecoder;
  readonly #state: MilterState;
  /** Frames a peer may send ahead of our reply before it is cut off. */
  readonly #inbox = new Inbox<Frame>(1024, 'milter frames');
  #pending: Pending | undefined;
  #addHeader = false;
  #quarantine = false;
  /** The scanner's header (lower case) and its spam pattern, when feedback.header is set. */
  #scan: { name: string; spam: RegExp } | undefined;
  /** The engine has been asked about this SMTP session and told no outcome yet. */
  #open = false;

  constructor(conn: Connection, deps: MilterDeps) {
    this.#conn = conn;
    this.#deps = deps;
    const s = deps.settings();
    this.#decoder = new FrameDecoder(s.max_frame_size);
    this.#state = new MilterState(`m${conn.id}`, s.mta === 'auto' ? 'unknown' : s.mta);
  }

  get busy(): boolean {
    return this.#pending !== undefined;
  }

  readonly #decode = (chunk: Buffer, into: Frame[]): void => this.#decoder.pushInto(chunk, into);

  onData(chunk: Buffer): void {
    this.#inbox.take(this.#decode, chunk);
    this.#drain();
  }

  onClose(): void {
    // Gone while its reply was held: how long it lasted is what the engine learns patience from.
    const lasted = this.#pending?.hold?.elapsed();
    this.#pending?.hold?.cancel();
    this.#pending = undefined;
    this.#finish(lasted);
    this.#inbox.close(() => this.#decoder.end());
  }

  flush(): void {
    this.#pending?.hold?.flush();
  }

  failMode(_err: SluiceError): void {
    const p = this.#pending;
    if (!p) {
      this.#conn.close();
      return;
    }
    p.hold?.cancel();
    this.#respond(p.event, failVerdict(this.#deps.failMode()), 0);
  }

  #drain(): void {
    try {
      while (!this.#pending && !this.#conn.closed) {
        const frame = this.#inbox.items.shift();
        if (!frame) return;
        this.#command(decodeCommand(frame));
      }
    } catch (err) {
      throw this.#inbox.broke(err);
    }
  }

  #command(cmd: Command): void {
    const st = this.#state;
    st.check(cmd);
    switch (cmd.kind) {
      case 'optneg': {
        const s = this.#deps.settings();
        const scan = this.#deps.scanHeader?.();
        this.#scan = scan && scan.header !== '' ? { name: scan.header.toLowerCase(), spam: new RegExp(scan.header_spam, 'i') } : undefined;
        const n = negotiate(cmd, { addHeader: s.header !== '', quarantine: s.quarantine, body: true, headers: this.#scan !== undefined });
        this.#addHeader = (n.actions & C.SMFIF_ADDHDRS) !== 0;
        this.#quarantine = (n.actions & C.SMFIF_QUARANTINE) !== 0;
        st.phase = 'negotiated';
        this.#conn.send(R.optnegReply(n));
        return;
      }
      case 'macro':
        st.setMacros(cmd.stage, cmd.macros);
        if (cmd.stage === C.SMFIC_CONNECT && this.#deps.settings().mta === 'auto') {
          const kind = mtaFromVersion(cmd.macros.get('v'));
          if (kind !== 'unknown') st.mta = kind;
        }
        return;
      case 'connect':
        st.connect(cmd);
        return this.#decide('connect');
      case 'helo':
        if (st.inMessage) st.endMessage();
        st.clearFrom(2);
        st.helo = cmd.helo;
        return this.#decide('helo');
      case 'mail':
        st.startMessage(cmd.args);
        return this.#decide('mail');
      case 'rcpt':
        st.clearFrom(4);
        return this.#decide('rcpt', stripBrackets(cmd.args[0] ?? ''));
      case 'data':
        st.phase = 'data';
        return this.#decide('data');
      case 'header':
        st.phase = 'data';
        // The last such header wins: a scanner's milter listed before sluice appends its own.
        if (this.#scan && cmd.name.toLowerCase() === this.#scan.name) st.scanned = this.#scan.spam.test(cmd.value) ? 'spam' : 'ham';
        this.#conn.send(R.CONTINUE);
        return;
      case 'eoh':
        st.phase = 'data';
        return this.#decide('eoh');
      case 'body':
        st.phase = 'data';
        st.bodyBytes += cmd.chunk.length;
        this.#conn.send(R.CONTINUE);
        return;
      case 'eob':
        return this.#decide('eom');
      case 'abort':
        st.endMessage();
        return;
      case 'quit':
        this.#finish();
        this.#conn.close();
        return;
      case 'quit_nc':
        this.#finish();
        st.reset();
        return;
      case 'unknown':
        this.#conn.send(R.CONTINUE);
        return;
    }
  }

  #decide(stage: Stage, recipient?: string): void {
    const st = this.#state;
    const event = st.event(stage, recipient);
    st.lastStage = stage;
    st.lastHeld = false;
    st.lastRefused = false;
    if (st.local) {
      // Postfix's non-SMTP mail: a milter must not reject what sendmail(1) submits.
      this.#respond(event, { kind: 'pass', delayMs: 0, rule: 'local-submission', score: 0 }, 0);
      return;
    }
    const pending: Pending = { event };
    this.#pending = pending;
    this.#open = true;
    const verdict = safeDecide(this.#deps.engine, event, this.#deps.failMode(), this.#decisionFailed);
    if (verdict instanceof Promise) {
      void verdict.then((v) => this.#deps.shield.guard(this.#conn, 'read', () => this.#hold(pending, v)));
      return;
    }
    this.#hold(pending, verdict);
  }

  /** A failing engine, reported with the stage asked about (safeDecide answers with the fail mode). */
  readonly #decisionFailed = (err: DecisionError): void => {
    this.#deps.shield.raise(this.#conn, err, 'read', [this.#state.lastStage]);
  };

  #hold(p: Pending, verdict: Verdict): void {
    if (this.#pending !== p || this.#conn.closed) return;
    if (verdict.delayMs <= 0 || this.#deps.mode() === 'observe') {
      this.#respond(p.event, verdict, 0);
      return;
    }
    const s = this.#deps.settings();
    const plan = holdPlan(this.#state.mta, p.event.stage, s);
    const delay = Math.min(verdict.delayMs, plan.cap);
    if (delay <= 0) {
      this.#respond(p.event, verdict, 0);
      return;
    }
    this.#state.lastHeld = true;
    const progress = plan.progress ? { every: s.progress_interval, send: () => { this.#conn.send(R.PROGRESS); } } : undefined;
    p.hold = new HeldReply(this.#deps.shield, this.#conn, delay, (heldMs) => this.#respond(p.event, verdict, heldMs), progress);
  }

  #respond(event: StageEvent, verdict: Verdict, heldMs: number): void {
    this.#pending = undefined;
    const st = this.#state;
    // In observe mode the MTA is told to go on; what follows (learning
    // included) goes by what it was told.
    const observe = this.#deps.mode() === 'observe';
    const told = observe ? PASS : verdict;
    const header = this.#addHeader && !observe ? this.#deps.settings().header : '';
    if (!this.#conn.send(renderVerdict(told, event.stage, header, this.#quarantine, this.#deps.failMode()))) return;
    this.#deps.answered(this.#conn, event, verdict, heldMs, observe);
    const passed = told.kind === 'pass' || told.kind === 'accept';
    st.lastRefused = !passed;
    if (event.stage === 'rcpt' && passed) st.acceptRecipient(event.recipient);
    if (event.stage === 'eom') {
      if (passed) {
        st.messages++;
        this.#record(st.scanned ? { kind: 'delivered', event, scanned: st.scanned } : { kind: 'delivered', event });
      }
      st.endMessage();
    } else if (!passed && (event.stage === 'connect' || event.stage === 'helo')) {
      // The MTA now ends the session itself (Postfix closes the milter socket):
      // the outcome is our answer, not the client giving up. The engine is
      // told now: the close that follows says nothing more.
      this.#record({ kind: 'ended', event });
    } else if (!passed && (event.stage === 'mail' || event.stage === 'data' || event.stage === 'eoh')) {
      st.endMessage();
    }
    this.#drain();
  }

  /**
   * The session is over: an open message, or one never opened, was
   * abandoned - unless our last answer refused (the client left because we
   * told it to); otherwise it ended.
   */
  #finish(lasted?: number): void {
    if (!this.#open) return;
    const st = this.#state;
    if ((st.inMessage || st.messages === 0) && !st.lastRefused) {
      // A held last reply: hung up during the hold (lasted), or waited it out and left later.
      const seen = !st.lastHeld ? {} : lasted === undefined ? { waitedOut: true } : { lasted };
      const outcome: Outcome = { kind: 'abandoned', event: st.event(st.lastStage), held: st.lastHeld, ...seen };
      this.#record(outcome);
      this.#deps.abandoned?.(this.#conn, outcome);
    } else {
      this.#record({ kind: 'ended', event: st.event(st.lastStage) });
    }
  }

  /** Tells the engine; an outcome other than a delivery ends the session there. */
  #record(o: Outcome): void {
    if (o.kind !== 'delivered') this.#open = false;
    this.#deps.shield.guard(this.#conn, 'read', () => this.#deps.engine.record(o));
  }
}
