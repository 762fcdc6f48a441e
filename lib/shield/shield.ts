// shield.ts - the exception handler that keeps the event loop alive.
//
// Everything that enters the loop from outside (a socket read, a write
// callback, a timer, a control command, a signal) runs through guard(), which
// hands any thrown value or rejected promise to the one registered handler as
// handler(ctx, err, kind, ...args): the context the callback was registered
// with, the typed error (a foreign value wrapped as INTERNAL), the kind of
// event, and the callback's arguments. The handler is installed with
// register() before the loop starts, like event_register_except_handler in the
// 2006 design. uncaughtException and unhandledRejection reach the same
// handler through installProcessHooks().
//
// Trusts: nothing it runs. If the handler itself throws, the last resort
// writes one line to stderr and carries on.
// Knows no protocol.

import { SluiceError, toSluiceError } from './errors.js';
import { SYSTEM_CLOCK, type Clock, type Timer } from '../util/clock.js';

export type EventKind = 'accept' | 'read' | 'write' | 'timer' | 'control' | 'signal' | 'process';

/** What the callback was working for; the handler uses it to close or answer. */
export interface ShieldContext {
  /** A short label for logs: "policy#12", "timer:snapshot". */
  readonly label: string;
  /** Closes the connection the error belongs to (absent for timers). */
  close?(err: SluiceError): void;
  /** Answers the pending request with the fail mode (absent where nothing is pending). */
  failMode?(err: SluiceError): void;
}

export type ExceptionHandler = (ctx: ShieldContext, err: SluiceError, kind: EventKind, ...args: unknown[]) => void;

export const PROCESS_CONTEXT: ShieldContext = { label: 'process' };

export interface ShieldOptions {
  /** Where guarded timers take their time from (default: the system clock). */
  readonly clock?: Clock;
  /** Where a line goes when the handler itself fails (default: stderr). */
  readonly lastResort?: (line: string) => void;
}

export class Shield {
  #handler: ExceptionHandler | undefined;
  readonly #lastResort: (line: string) => void;
  readonly clock: Clock;

  constructor(opts: ShieldOptions = {}) {
    this.clock = opts.clock ?? SYSTEM_CLOCK;
    this.#lastResort = opts.lastResort ?? ((line) => process.stderr.write(line + '\n'));
  }

  /** Installs the exception handler; a second call replaces the first. */
  register(handler: ExceptionHandler): void {
    this.#handler = handler;
  }

  /** Routes an error to the handler, never throwing itself. */
  raise(ctx: ShieldContext, thrown: unknown, kind: EventKind, args: readonly unknown[] = []): void {
    const err = toSluiceError(thrown);
    const handler = this.#handler;
    if (!handler) {
      this.#lastResort(`sluice: no exception handler registered; ${err.name}: ${err.message}`);
      return;
    }
    try {
      handler(ctx, err, kind, ...args);
    } catch (inner) {
      // The handler is ours and should not throw; if it does, say so once and go on.
      const e = inner instanceof Error ? inner.stack ?? inner.message : String(inner);
      this.#lastResort(`sluice: exception handler failed on ${err.name}: ${e}`);
    }
  }

  /** Runs fn(...args) now; a throw or a rejected promise goes to the handler. */
  guard<A extends unknown[]>(ctx: ShieldContext, kind: EventKind, fn: (...args: A) => unknown, ...args: A): void {
    try {
      const result = fn(...args);
      if (result instanceof Promise) {
        result.catch((err: unknown) => this.raise(ctx, err, kind, args));
      }
    } catch (err) {
      this.raise(ctx, err, kind, args);
    }
  }

  /** A guarded version of fn, for event-emitter listeners and timers. */
  wrap<A extends unknown[]>(ctx: ShieldContext, kind: EventKind, fn: (...args: A) => unknown): (...args: A) => void {
    return (...args: A) => this.guard(ctx, kind, fn, ...args);
  }

  /** A timeout on the clock whose callback is guarded. */
  setTimeout(ctx: ShieldContext, ms: number, fn: () => unknown): Timer {
    return this.clock.setTimeout(() => this.guard(ctx, 'timer', fn), ms);
  }

  /** An interval on the clock whose callback is guarded. */
  setInterval(ctx: ShieldContext, ms: number, fn: () => unknown): Timer {
    return this.clock.setInterval(() => this.guard(ctx, 'timer', fn), ms);
  }

  /** Cancels a timer set above. */
  clear(timer: Timer | undefined): void {
    this.clock.clear(timer);
  }

  /**
   * Sends uncaughtException and unhandledRejection to the handler, so the
   * process keeps serving. Returns a function that removes the hooks.
   */
  installProcessHooks(proc: Pick<NodeJS.EventEmitter, 'on' | 'off'> = process): () => void {
    const onException = (err: unknown): void => this.raise(PROCESS_CONTEXT, err, 'process');
    const onRejection = (reason: unknown): void => this.raise(PROCESS_CONTEXT, reason, 'process');
    proc.on('uncaughtException', onException);
    proc.on('unhandledRejection', onRejection);
    return () => {
      proc.off('uncaughtException', onException);
      proc.off('unhandledRejection', onRejection);
    };
  }
}
