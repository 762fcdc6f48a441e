// negotiate.ts - what sluice asks of the MTA in OPTNEG.
//
// Rules (libmilter's option negotiation, engine.c): reply version min(6, offered)
// and refuse below 2; ask only for actions and protocol bits the MTA offered;
// never ask for a no-reply (NR_*) flag, since sluice may hold or decide at
// every stage it sees; skip what it does not use (headers unless
// feedback.header is set, body, unknown commands) with NO* flags where
// offered; request the macros it needs with symlists where SETSYMLIST is offered, keeping Postfix's defaults in the
// list because a milter's list replaces main.cf's, and sending an EOH list
// beside the EOM list (Sendmail uses a per-milter EOM list only then).

import { PeerError } from '../shield/errors.js';
import * as C from './constants.js';
import type { Negotiated } from './replies.js';

export interface Wants {
  /** Add a header at end of message (SMFIF_ADDHDRS). */
  readonly addHeader: boolean;
  /** Quarantine instead of rejecting at end of message (SMFIF_QUARANTINE). */
  readonly quarantine: boolean;
  /** Count body bytes (keeps body chunks coming). */
  readonly body: boolean;
  /** Read the headers (a content scanner's verdict: feedback.header). */
  readonly headers?: boolean;
}

const SYMLISTS: ReadonlyMap<number, string> = new Map([
  [C.SMFIM_CONNECT, 'j {daemon_name} {daemon_addr} v _ {client_addr} {client_name} {client_ptr}'],
  [C.SMFIM_HELO, '{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}'],
  [C.SMFIM_ENVFROM, 'i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}'],
  [C.SMFIM_ENVRCPT, 'i {rcpt_addr} {rcpt_host} {rcpt_mailer}'],
  [C.SMFIM_DATA, 'i'],
  [C.SMFIM_EOM, 'i'],
  [C.SMFIM_EOH, 'i'],
]);
/** One empty list, not a new one per connection: replies.ts keeps built replies by list. */
const NO_SYMLISTS: ReadonlyMap<number, string> = new Map();

export function negotiate(offer: { version: number; actions: number; protocol: number }, wants: Wants): Negotiated {
  if (offer.version < C.SMFI_PROT_VERSION_MIN) {
    throw new PeerError('MILTER_BAD_NEGOTIATION', `MTA offers milter protocol version ${offer.version}; sluice needs 2 to 6`);
  }
  const version = Math.min(C.SMFI_PROT_VERSION, offer.version);
  // MTA actions = 0 means version-1 defaults (libmilter).
  const offeredActions = offer.actions === 0 ? 0x0f : offer.actions;
  let actions = 0;
  if (wants.addHeader && offeredActions & C.SMFIF_ADDHDRS) actions |= C.SMFIF_ADDHDRS;
  if (wants.quarantine && offeredActions & C.SMFIF_QUARANTINE) actions |= C.SMFIF_QUARANTINE;
  const symlists = version >= 6 && offeredActions & C.SMFIF_SETSYMLIST ? SYMLISTS : NO_SYMLISTS;
  if (symlists.size > 0) actions |= C.SMFIF_SETSYMLIST;

  const offeredProtocol = offer.protocol === 0 ? 0x3f : offer.protocol;
  let skip = wants.headers ? C.SMFIP_NOUNKNOWN : C.SMFIP_NOHDRS | C.SMFIP_NOUNKNOWN;
  if (!wants.body) skip |= C.SMFIP_NOBODY;
  const protocol = skip & offeredProtocol;
  return { version, actions, protocol, symlists };
}
