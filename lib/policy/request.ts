// request.ts - a decoded policy request as a typed object and as a StageEvent.
//
// Reads only the attributes sluice uses (SMTPD_POLICY_README, Postfix 2.1 to
// 3.12 names); unknown ones are ignored, missing ones read as empty.
// protocol_state maps to a stage; VRFY and ETRN have none (the session
// answers DUNNO without asking the engine). `request` other than
// smtpd_access_policy is a peer error: Postfix never sends another type.

import { canonicalAddress } from '../net/address.js';
import { PeerError } from '../shield/errors.js';
import type { Stage, StageEvent } from '../engine/types.js';
import { AttributePicker, type PolicyAttributes } from './codec.js';

export interface PolicyRequest {
  readonly state: string;
  readonly stage: Stage | undefined;
  readonly client: string;
  readonly clientPort: number | undefined;
  readonly clientName: string;
  readonly reverseName: string;
  readonly serverPort: string;
  readonly helo: string;
  readonly sender: string;
  readonly recipient: string;
  readonly recipientCount: number;
  readonly queueId: string;
  readonly instance: string;
  readonly size: number;
  readonly stress: boolean;
  readonly saslUser: string;
  readonly tlsProtocol: string;
  readonly tlsCipher: string;
}

/**
 * The stage of a protocol_state. A switch, not a lookup table: indexing an
 * object with the request's own string makes V8 look it up in its string
 * table on every request.
 */
function stageOf(state: string): Stage | undefined {
  switch (state) {
    case 'CONNECT': return 'connect';
    case 'EHLO':
    case 'HELO': return 'helo';
    case 'MAIL': return 'mail';
    case 'RCPT': return 'rcpt';
    case 'DATA':
    case 'BDAT': return 'data';
    case 'END-OF-MESSAGE': return 'eom';
    default: return undefined;
  }
}

/**
 * A copy of a value that does not keep the request text it was cut from:
 * the decoder slices values out of the whole chunk, and a slice kept for
 * minutes (a session's HELO, the tracker's last event, a reputation key)
 * would keep the chunk alive with it. Slices shorter than 13 characters
 * are copies already; joining two parts of a longer one makes V8 build a new
 * flat string. (Concatenating and slicing also copies, but leaves a view
 * into the copy, and V8 compares and hashes views on a slow path: the
 * profile match in the engine compares three such values per session.)
 */
function own(v: string): string {
  return v.length < 13 ? v : [v[0], v.slice(1)].join('');
}

function int(v: string | undefined): number {
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : 0;
}

/**
 * The attributes the request mapping reads, in the order the picker returns
 * them: give it to the decoder (PolicyDecoder) and they are cut out as the
 * lines arrive.
 */
export const REQUEST_ATTRS = new AttributePicker([
  'request', 'protocol_state', 'client_address', 'client_port', 'client_name', 'reverse_client_name', 'server_port',
  'helo_name', 'sender', 'recipient', 'recipient_count', 'queue_id', 'instance', 'size', 'stress', 'sasl_username',
  'encryption_protocol', 'encryption_cipher',
]);

export function toRequest(attrs: PolicyAttributes): PolicyRequest {
  const [type, protocolState, address, port = '', clientName, reverseName, serverPort, helo, sender, recipient,
    recipientCount, queueId, instance, size, stress, saslUser, tlsProtocol, tlsCipher] = attrs.pick(REQUEST_ATTRS);
  if (type !== 'smtpd_access_policy') {
    throw new PeerError('PEER_BAD_REQUEST_TYPE', `request=${String(type).slice(0, 40)} is not smtpd_access_policy`);
  }
  const state = (protocolState ?? '').toUpperCase();
  return {
    state,
    stage: stageOf(state),
    // An IPv4 address comes back as given: a slice like any other value.
    client: own(canonicalAddress(address ?? '')),
    clientPort: /^\d{1,5}$/.test(port) ? Number(port) : undefined,
    clientName: own(clientName || 'unknown'),
    reverseName: own(reverseName || 'unknown'),
    serverPort: serverPort ?? '',
    helo: own(helo ?? ''),
    sender: own(sender ?? ''),
    recipient: own(recipient ?? ''),
    recipientCount: int(recipientCount),
    queueId: own(queueId ?? ''),
    instance: own(instance ?? ''),
    size: int(size),
    stress: stress?.toLowerCase() === 'yes',
    saslUser: own(saslUser ?? ''),
    tlsProtocol: own(tlsProtocol ?? ''),
    tlsCipher: own(tlsCipher ?? ''),
  };
}

/**
 * The key under which a repeat of this question is recognised: Postfix
 * re-sends a request after a timeout, and asks the same RCPT once per
 * restriction list (smtpd_delay_reject=yes).
 */
export function repeatKey(r: PolicyRequest): readonly string[] {
  const who = r.instance || `${r.client}:${r.clientPort ?? ''}:${r.serverPort}`;
  // Its parts: only hashed (repeats.ts), never kept or joined.
  return [who, r.state, r.recipient];
}

export function toStageEvent(r: PolicyRequest, stage: Stage, repeat: boolean): StageEvent {
  return {
    stage,
    // The policy protocol has no session id: client address and port with
    // the server port single out one SMTP session closely enough.
    session: `${r.client}:${r.clientPort ?? '?'}:${r.serverPort}`,
    via: 'policy',
    mta: 'postfix',
    client: r.client,
    port: r.clientPort,
    clientName: r.reverseName,
    helo: r.helo,
    sender: r.sender,
    recipient: r.recipient,
    recipientCount: r.recipientCount,
    size: r.size,
    queueId: r.queueId,
    saslUser: r.saslUser,
    tls: r.tlsProtocol ? { protocol: r.tlsProtocol, cipher: r.tlsCipher } : undefined,
    stress: r.stress,
    repeat,
  };
}
