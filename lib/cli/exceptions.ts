// exceptions.ts - what the daemon does with each class of error.
//
// The one handler registered with the shield. It dispatches on the code's
// hundreds (errors.ts), never on message text, counts every code, and trips
// the circuit breaker on a storm of internal errors.

import { errorClass, ErrorClass } from '../shield/errors.js';
import type { ExceptionHandler } from '../shield/shield.js';
import type { CircuitBreaker } from '../shield/breaker.js';
import type { Logger } from '../log/logger.js';

export interface ExceptionDeps {
  readonly log: () => Logger;
  readonly breaker: CircuitBreaker;
  readonly onTrip: () => void;
  /** Count of every code seen, for status. */
  readonly counts: Map<number, number>;
  /** Called for every error, for metrics. */
  readonly counted?: (code: number, symbol: string) => void;
}

export function exceptionHandler(deps: ExceptionDeps): ExceptionHandler {
  return (ctx, err, kind) => {
    deps.counts.set(err.code, (deps.counts.get(err.code) ?? 0) + 1);
    deps.counted?.(err.code, err.symbol);
    const log = deps.log();
    const fields = { ctx: ctx.label, code: err.code, err: err.symbol, kind };
    switch (errorClass(err.code)) {
      case ErrorClass.Peer:
        // Bad input: one warning (the message is already made printable), close that connection.
        log.warn(fields, err.message);
        ctx.close?.(err);
        return;
      case ErrorClass.Transport:
        log.debug(fields, err.message);
        ctx.close?.(err);
        return;
      case ErrorClass.Decision:
        // The session has already answered with the fail mode.
        log.warn(fields, `decision failed, fail mode answered: ${err.message}`);
        return;
      case ErrorClass.Overload:
        // Sources log their own transitions; count only.
        return;
      case ErrorClass.Config:
        log.error(fields, err.message);
        return;
      default: {
        const cause = err.cause instanceof Error ? err.cause : err;
        log.error({ ...fields, stack: cause.stack }, `internal error: ${err.message}`);
        if (ctx.failMode) ctx.failMode(err);
        else ctx.close?.(err);
        if (deps.breaker.record()) deps.onTrip();
      }
    }
  };
}
