// operator.ts - what an operator may ask of the engine, and nothing more.
//
// sluicectl's commands (control/commands.ts) see the engine only through
// this interface: a dry-run decision, one key's standing, a pass over every
// client and network, forgetting a key, and the allow and deny lists. They
// never reach into the store or the lists themselves. EngineOperator answers
// from the engine's store and lists, on the engine's clock; what it changes
// there reaches other hosts through their watchers (lib/fleet), not from here.

import type { Entry } from '../reputation/score.js';
import type { Now } from '../util/clock.js';
import type { ReputationEngine } from './engine.js';
import type { ListEntry, ListKind } from './lists.js';
import type { StageEvent, Verdict } from './types.js';

export interface Standing {
  /** The decayed score now. */
  readonly score: number;
  readonly entry: Entry;
}

export interface Operator {
  /** The pipeline as a dry run, after the first-contact lookups: records nothing, grants no hold. */
  explain(event: StageEvent): Promise<Verdict>;
  /** What the first-contact lookups have cached about this client address (per provider). */
  lookedUp(client: string): Record<string, unknown>;
  /** One key's standing now (ip:, net:, helo:, dom:), or undefined when nothing is known. */
  standing(key: string): Standing | undefined;
  /** Every live key with its decayed score and counters (delivered, abandoned, abandoned under hold). */
  scan(fn: (key: string, score: number, ok: number, ab: number, abh: number) => void): void;
  /** Drops what is known of a key; false when nothing was. */
  forget(key: string): boolean;
  /** The list entry that matches this client address, if any. */
  listed(client: string): ListEntry | undefined;
  /** Adds a dynamic entry; a string says what is wrong with the value. */
  list(kind: ListKind, value: string, ttlMs?: number, reason?: string): ListEntry | string;
  /** Removes a dynamic entry; false when there was none. */
  unlist(value: string): boolean;
  /** Every list entry, static and dynamic. */
  lists(): ListEntry[];
}

export class EngineOperator implements Operator {
  constructor(
    private readonly engine: ReputationEngine, private readonly now: Now,
    private readonly lookups?: { describe(client: string): Record<string, unknown> },
  ) {}

  explain(event: StageEvent): Promise<Verdict> {
    return this.engine.explain(event);
  }

  lookedUp(client: string): Record<string, unknown> {
    return this.lookups?.describe(client) ?? {};
  }

  standing(key: string): Standing | undefined {
    const store = this.engine.store;
    const entry = store.entry(key);
    return entry && { score: store.score(key, this.now()), entry };
  }

  scan(fn: (key: string, score: number, ok: number, ab: number, abh: number) => void): void {
    this.engine.store.scan(this.now(), fn);
  }

  forget(key: string): boolean {
    return this.engine.store.forget(key);
  }

  listed(client: string): ListEntry | undefined {
    return this.engine.lists.match(client, '', '', this.now());
  }

  list(kind: ListKind, value: string, ttlMs?: number, reason?: string): ListEntry | string {
    return this.engine.lists.add(kind, value, this.now(), ttlMs, reason);
  }

  unlist(value: string): boolean {
    return this.engine.lists.remove(value);
  }

  lists(): ListEntry[] {
    return this.engine.lists.entries(this.now());
  }
}
