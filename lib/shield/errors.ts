// errors.ts - the error catalogue: every error sluice raises, by number.
//
// Each error has a numeric code and a stable symbolic name, like errno and
// `code` in Node's system errors. The hundreds say how the shield handles it:
//   1xx bad input from the peer   -> log once, close that connection
//   2xx transport                 -> close quietly
//   3xx decision failure          -> answer the configured fail mode, keep going
//   4xx overload                  -> shed, log on the transition only
//   5xx configuration             -> fatal at start (exit 78), refused on reload
//   9xx broken invariant          -> log with stack, answer the fail mode, count
// Dispatch is a comparison on the number, never on message text.
// The DIAGNOSTICS section of man/sluiced.8 lists exactly these codes; a test
// keeps the two in step.

export const CATALOGUE = {
  // 1xx: the peer sent something we cannot accept.
  PEER_LINE_TOO_LONG: { code: 101, text: 'a policy line is longer than policy.max_line_length' },
  PEER_REQUEST_TOO_LARGE: { code: 102, text: 'a policy request is larger than policy.max_request_size' },
  PEER_TOO_MANY_ATTRIBUTES: { code: 103, text: 'a policy request has more than policy.max_attributes attributes' },
  PEER_MALFORMED_LINE: { code: 104, text: 'a policy line has no "=" or an empty name' },
  PEER_BAD_ENCODING: { code: 105, text: 'NUL byte in a policy request' },
  PEER_TRUNCATED: { code: 106, text: 'the peer closed the connection in the middle of a request or frame' },
  PEER_BAD_REQUEST_TYPE: { code: 107, text: 'a policy request whose "request" is not smtpd_access_policy' },
  PEER_EMPTY_REQUEST: { code: 108, text: 'a policy request with no attributes' },
  PEER_PIPELINED: { code: 109, text: 'a policy client sent more requests than it may have outstanding' },
  MILTER_BAD_LENGTH: { code: 110, text: 'a milter frame length is 0 or above milter.max_frame_size' },
  MILTER_UNKNOWN_COMMAND: { code: 111, text: 'a milter command letter sluice does not know' },
  MILTER_BAD_PAYLOAD: { code: 112, text: 'a milter payload that does not fit its command (missing NUL, short, leftover bytes)' },
  MILTER_OUT_OF_ORDER: { code: 113, text: 'a milter command that is not allowed in the current state' },
  MILTER_BAD_NEGOTIATION: { code: 114, text: 'the MTA offered a milter version or flags sluice cannot work with' },
  // 2xx: the transport failed; nothing to say to the peer.
  TRANSPORT_RESET: { code: 201, text: 'the peer reset the connection' },
  TRANSPORT_BROKEN_PIPE: { code: 202, text: 'write to a connection the peer had closed' },
  TRANSPORT_IDLE_TIMEOUT: { code: 203, text: 'a connection was idle longer than limits.idle_timeout' },
  TRANSPORT_ERROR: { code: 204, text: 'another socket error' },
  // 3xx: deciding failed; the fail mode answers instead.
  DECISION_RULE_FAILED: { code: 301, text: 'a decision rule threw or rejected' },
  DECISION_STORE_FAILED: { code: 302, text: 'the reputation store failed' },
  DECISION_BAD_VERDICT: { code: 303, text: 'a rule returned something that is not a verdict' },
  // 4xx: too much at once; shed load.
  OVERLOAD_CONNECTIONS: { code: 401, text: 'connection refused: limits.max_connections reached' },
  OVERLOAD_HOLD_BUDGET: { code: 402, text: 'hold not granted: the hold budget is spent' },
  OVERLOAD_LOOP_LAG: { code: 403, text: 'event-loop lag above limits.max_loop_lag' },
  OVERLOAD_BREAKER: { code: 404, text: 'too many internal errors: the circuit breaker restarts the service' },
  // 5xx: configuration; fatal at start, refused on reload.
  CONFIG_UNREADABLE: { code: 501, text: 'the configuration file is missing or unreadable' },
  CONFIG_SYNTAX: { code: 502, text: 'the configuration file is not valid YAML' },
  CONFIG_INVALID: { code: 503, text: 'a configuration key is unknown or its value is wrong' },
  CONFIG_LISTEN: { code: 504, text: 'a listen endpoint cannot be opened (in use, bad path, no permission)' },
  CONFIG_STATE_DIR: { code: 505, text: 'the state directory cannot be created or written' },
  // 9xx: a bug of ours.
  INTERNAL: { code: 901, text: 'an unexpected exception (a bug): logged with its stack' },
  INTERNAL_INVARIANT: { code: 902, text: 'a broken internal invariant' },
} as const;

export type ErrorName = keyof typeof CATALOGUE;

/** The six classes of error, by hundreds. */
export const ErrorClass = {
  Peer: 1,
  Transport: 2,
  Decision: 3,
  Overload: 4,
  Config: 5,
  Internal: 9,
} as const;
export type ErrorClass = (typeof ErrorClass)[keyof typeof ErrorClass];

export function errorClass(code: number): ErrorClass {
  return Math.floor(code / 100) as ErrorClass;
}

export class SluiceError extends Error {
  readonly code: number;
  readonly symbol: ErrorName;

  constructor(symbol: ErrorName, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.symbol = symbol;
    this.code = CATALOGUE[symbol].code;
  }

  override get name(): string {
    return `SluiceError[${this.code} ${this.symbol}]`;
  }
}

// One subclass per hundred, so `instanceof` reads well at throw sites; the
// handler still dispatches on `code`.
export class PeerError extends SluiceError {}
export class TransportError extends SluiceError {}
export class DecisionError extends SluiceError {}
export class OverloadError extends SluiceError {}
export class ConfigError extends SluiceError {}
export class InternalError extends SluiceError {}

/** Turns any thrown value into a SluiceError; foreign values become INTERNAL. */
export function toSluiceError(err: unknown): SluiceError {
  if (err instanceof SluiceError) return err;
  const sys = err as NodeJS.ErrnoException | undefined;
  switch (sys?.code) {
    case 'ECONNRESET':
      return new TransportError('TRANSPORT_RESET', sys.message, { cause: err });
    case 'EPIPE':
    case 'ERR_STREAM_DESTROYED':
    case 'ERR_STREAM_WRITE_AFTER_END':
      return new TransportError('TRANSPORT_BROKEN_PIPE', sys.message, { cause: err });
    case 'ETIMEDOUT':
    case 'ECONNABORTED':
    case 'EHOSTUNREACH':
      return new TransportError('TRANSPORT_ERROR', sys.message, { cause: err });
    default:
  }
  const message = err instanceof Error ? err.message : `non-error thrown: ${String(err)}`;
  return new InternalError('INTERNAL', message, { cause: err });
}

/** A socket's own error event: always transport, whatever its errno. */
export function asTransportError(err: unknown): SluiceError {
  const e = toSluiceError(err);
  if (e.code < 900) return e;
  return new TransportError('TRANSPORT_ERROR', e.message, { cause: err });
}
