// state.ts - what one milter connection knows: phase, macros, client, message.
//
// The phase follows libmilter's transition table (mfdef.h next_states), made
// lenient where real MTAs need it: ABORT is accepted anywhere after OPTNEG and
// may repeat (Postfix sends two after each transaction); MAIL and HELO close
// an open message as ABORT would (Sendmail sends no ABORT after a reply that
// ended the message); QUIT_NC goes back to before CONNECT. Anything else out
// of order is MILTER_OUT_OF_ORDER and closes the connection.
// Macros live in per-stage slots cleared as libmilter clears them; a lookup
// searches the latest stage first. A MACRO frame comes just before its
// command, so a command clears the slots after its own: CONNECT clears from
// HELO on, HELO from MAIL, MAIL from RCPT, RCPT from DATA; ABORT clears none.
// A slot keeps only the macros an event reads (READ), picked out of the frame
// once, as it arrives: each stage's event reads four.

import { PeerError } from '../shield/errors.js';
import { canonicalAddress } from '../net/address.js';
import type { Stage, StageEvent } from '../engine/types.js';
import * as C from './constants.js';
import type { Command, Macros } from './payload.js';
import type { MtaKind } from './mta.js';

export type Phase = 'init' | 'negotiated' | 'connected' | 'mail' | 'data';

/** Macro slots in libmilter's order; D-frames for L (header) and B (body) fold into EOH and EOM. */
const SLOT_OF: Readonly<Record<number, number>> = {
  [C.SMFIC_CONNECT]: 0, [C.SMFIC_HELO]: 1, [C.SMFIC_MAIL]: 2, [C.SMFIC_RCPT]: 3,
  [C.SMFIC_DATA]: 4, [C.SMFIC_EOH]: 5, [C.SMFIC_HEADER]: 5, [C.SMFIC_BODYEOB]: 6, [C.SMFIC_BODY]: 6, [C.SMFIC_UNKNOWN]: 7,
};

/** The macros a stage event reads, in the order a slot keeps their values. */
const READ = ['i', 'auth_authen', 'tls_version', 'cipher'] as const;
const QUEUE_ID = 0;
const AUTH_AUTHEN = 1;
const TLS_VERSION = 2;
const CIPHER = 3;

/** Which commands each phase allows (besides MACRO and ABORT, allowed from negotiated on). */
const ALLOWED: Readonly<Record<Phase, readonly Command['kind'][]>> = {
  init: ['optneg'],
  negotiated: ['connect'],
  connected: ['helo', 'mail', 'unknown', 'quit', 'quit_nc'],
  mail: ['rcpt', 'data', 'header', 'eoh', 'body', 'eob', 'helo', 'mail', 'unknown', 'quit', 'quit_nc'],
  data: ['header', 'eoh', 'body', 'eob', 'helo', 'mail', 'quit', 'quit_nc'],
};

export class MilterState {
  phase: Phase = 'init';
  mta: MtaKind;
  /** Per stage slot, the values of READ that its MACRO frame carried. */
  readonly #slots: (readonly (string | undefined)[] | undefined)[] = [];
  // Connection facts.
  client = 'unknown';
  port: number | undefined;
  hostname = 'unknown';
  helo = '';
  /** Postfix's local submission (sendmail(1), qmqpd): always continue. */
  local = false;
  // Message facts.
  sender = '';
  recipients = 0;
  /** The first accepted recipient: events after RCPT name it when it is the only one, as Postfix's policy requests do. */
  firstRecipient = '';
  size = 0;
  bodyBytes = 0;
  /** What a content scanner's header on this message said (feedback.header). */
  scanned: 'spam' | 'ham' | undefined;
  /** Stage of the last decided command, and whether its reply was held. */
  lastStage: Stage = 'connect';
  lastHeld = false;
  /** Our answer to the last stage was a reject or a defer. */
  lastRefused = false;
  messages = 0;

  constructor(readonly session: string, mta: MtaKind) {
    this.mta = mta;
  }

  /** Refuses a command the phase does not allow. */
  check(cmd: Command): void {
    if (cmd.kind === 'macro' || cmd.kind === 'abort') {
      if (this.phase === 'init') throw outOfOrder(cmd, this.phase);
      return;
    }
    if (!ALLOWED[this.phase].includes(cmd.kind)) throw outOfOrder(cmd, this.phase);
  }

  setMacros(stage: number, macros: Macros): void {
    const slot = SLOT_OF[stage];
    if (slot !== undefined) this.#slots[slot] = READ.map((name) => macros.get(name));
  }

  /** The value of READ[k] from the latest stage that sent it. */
  #macro(k: number): string | undefined {
    for (let i = this.#slots.length - 1; i >= 0; i--) {
      const v = this.#slots[i]?.[k];
      if (v !== undefined) return v;
    }
    return undefined;
  }

  /** Clears slots from `slot` on (CONNECT clears >= HELO, and so on). */
  clearFrom(slot: number): void {
    this.#slots.length = Math.min(this.#slots.length, slot);
  }

  connect(cmd: Extract<Command, { kind: 'connect' }>): void {
    this.phase = 'connected';
    this.clearFrom(1);
    const addr = cmd.family === '4' || cmd.family === '6' ? cmd.address.replace(/^ipv6:/i, '').replace(/^\[|\]$/g, '') : '';
    this.client = addr ? canonicalAddress(addr) : 'unknown';
    this.port = cmd.family === '4' || cmd.family === '6' ? cmd.port : undefined;
    // Postfix writes "[addr]" when the client has no name.
    this.hostname = cmd.hostname === '' || cmd.hostname.startsWith('[') ? 'unknown' : cmd.hostname;
    this.local = cmd.port === 0 && (this.client === '127.0.0.1' || this.client === '::1') && cmd.hostname === 'localhost';
  }

  /** Ends the current message (ABORT, a new MAIL or HELO, end of message). */
  endMessage(): void {
    if (this.phase === 'mail' || this.phase === 'data') this.phase = 'connected';
    this.scanned = undefined;
    this.sender = '';
    this.recipients = 0;
    this.firstRecipient = '';
    this.size = 0;
    this.bodyBytes = 0;
  }

  startMessage(args: readonly string[]): void {
    this.endMessage();
    // The MAIL macros arrived just before MAIL itself; MAIL clears from RCPT on.
    this.clearFrom(3);
    this.phase = 'mail';
    this.sender = stripBrackets(args[0] ?? '');
    const size = args.find((a) => /^size=/i.test(a));
    this.size = size ? Number(size.slice(5)) || 0 : 0;
  }

  /** Back to before CONNECT, as after QUIT_NC. */
  reset(): void {
    this.endMessage();
    this.phase = 'negotiated';
    this.#slots.length = 0;
    this.helo = '';
    this.client = 'unknown';
  }

  get inMessage(): boolean {
    return this.phase === 'mail' || this.phase === 'data';
  }

  /** Counts a recipient the verdict let through. */
  acceptRecipient(rcpt: string): void {
    if (this.recipients === 0) this.firstRecipient = rcpt;
    this.recipients++;
  }

  event(stage: Stage, rcpt?: string): StageEvent {
    const tlsVersion = this.#macro(TLS_VERSION);
    const recipient = rcpt ?? (this.recipients === 1 ? this.firstRecipient : '');
    return {
      stage,
      session: this.session,
      via: 'milter',
      mta: this.mta,
      client: this.client,
      port: this.port,
      clientName: this.hostname,
      helo: this.helo,
      sender: this.sender,
      recipient,
      recipientCount: this.recipients,
      size: stage === 'eom' && this.bodyBytes > 0 ? this.bodyBytes : this.size,
      queueId: this.#macro(QUEUE_ID) ?? '',
      saslUser: this.#macro(AUTH_AUTHEN) ?? '',
      tls: tlsVersion ? { protocol: tlsVersion, cipher: this.#macro(CIPHER) ?? '' } : undefined,
      stress: false,
      repeat: false,
    };
  }
}

export function stripBrackets(addr: string): string {
  return addr.startsWith('<') && addr.endsWith('>') ? addr.slice(1, -1) : addr;
}

function outOfOrder(cmd: Command, phase: Phase): PeerError {
  return new PeerError('MILTER_OUT_OF_ORDER', `milter command ${cmd.kind} not allowed in phase ${phase}`);
}
