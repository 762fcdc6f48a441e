// signals.ts - the signals sluiced acts on, entering through the shield.
//
// SIGHUP reloads, SIGUSR1 reopens the log file, SIGTERM and SIGINT drain. A
// handler that throws reaches the exception handler like any callback.
// Returns a function that removes the handlers again.

import type { Shield } from '../shield/shield.js';

export interface SignalActions {
  reload(): unknown;
  reopenLog(): void;
  /** `signal`: which one asked (SIGTERM or SIGINT). */
  drain(signal: string): unknown;
}

export function installSignals(shield: Shield, actions: SignalActions): () => void {
  const installed: [NodeJS.Signals, (...args: unknown[]) => void][] = [];
  const on = (sig: NodeJS.Signals, fn: () => unknown): void => {
    const h = shield.wrap({ label: `signal:${sig}` }, 'signal', fn);
    process.on(sig, h);
    installed.push([sig, h]);
  };
  on('SIGHUP', () => actions.reload());
  on('SIGUSR1', () => actions.reopenLog());
  on('SIGTERM', () => actions.drain('SIGTERM'));
  on('SIGINT', () => actions.drain('SIGINT'));
  return () => {
    for (const [sig, h] of installed) process.off(sig, h);
  };
}
