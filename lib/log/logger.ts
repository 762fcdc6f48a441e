// logger.ts - the pino logger, its destination, and how untrusted text is shown.
//
// JSON lines by default; pino-pretty when log.format is "pretty", or "auto"
// on a terminal. To standard output or to log.file (reopened on SIGUSR1 for
// logrotate). Child loggers carry trusted fields only (connection id,
// protocol, our own client address form); text from a peer goes through
// printable() (util/printable.ts) first: truncated, escaped, never spread
// into bindings.
//
// Config keys: log.level, log.format, log.file.

import pino, { type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';
import { once } from 'node:events';

export type { Logger };

export interface LogSettings {
  readonly level: string;
  readonly format: 'auto' | 'json' | 'pretty';
  readonly file: string;
}

export interface LogHandle {
  readonly logger: Logger;
  /** Reopens log.file after rotation (SIGUSR1); a no-op for stdout. */
  reopen(): void;
  /**
   * Writes out every line logged so far, in order, and closes the
   * destination (before exit: nothing may log after it). An asynchronous
   * write may be under way; a synchronous flush then would put the lines
   * still buffered ahead of it.
   */
  close(): Promise<void>;
}

/** Builds the logger; waits until a file destination is open so no line is lost. */
export async function createLogger(settings: LogSettings, isTTY = Boolean(process.stdout.isTTY)): Promise<LogHandle> {
  const usePretty = settings.format === 'pretty' || (settings.format === 'auto' && isTTY && settings.file === '');
  const opts = { level: settings.level, base: { name: 'sluiced' }, timestamp: pino.stdTimeFunctions.isoTime };
  if (usePretty) {
    const stream = pretty({ colorize: isTTY, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' });
    return { logger: pino(opts, stream as DestinationStream), reopen: () => {}, close: () => Promise.resolve() };
  }
  const dest = pino.destination({ dest: settings.file === '' ? 1 : settings.file, sync: false, mkdir: true });
  if (settings.file !== '') await once(dest, 'ready');
  return {
    logger: pino(opts, dest),
    reopen: () => { if (settings.file !== '') dest.reopen(); },
    close: async () => {
      const closed = once(dest, 'close').then(() => undefined, () => undefined);
      dest.end();
      await closed;
    },
  };
}
