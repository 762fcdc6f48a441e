// lists.ts - allow and deny lists: CIDR, HELO name, sender domain.
//
// Static entries come from the config (lists.allow, lists.deny) and are
// replaced on reload; dynamic ones come from sluicectl with an optional
// expiry and a reason, and are kept in the snapshot. A deny beats an allow;
// an expired entry is dropped when next looked at. CIDR math is ipaddr.js's.
// Entries are written "192.0.2.0/24", "192.0.2.7", "mail.example.net" (a
// HELO name) or "@example.net" (a sender domain). A watcher is told of
// every dynamic change (the fleet store shares them with the other hosts).

import ipaddr from 'ipaddr.js';
import { parseListValue, type Matcher } from '../config/list-value.js';

export type ListKind = 'allow' | 'deny';

export interface ListEntry {
  readonly kind: ListKind;
  readonly value: string;
  readonly source: 'config' | 'dynamic';
  /** ms since the epoch; absent: no expiry. */
  readonly expires?: number;
  readonly reason?: string;
  readonly added: number;
}

interface Live {
  readonly entry: ListEntry;
  readonly match: Matcher;
}

/** A change to the dynamic entries, as a watcher is told of it. */
export type ListChange = { readonly op: 'add'; readonly entry: ListEntry } | { readonly op: 'remove'; readonly value: string };

export class Lists {
  #static: Live[] = [];
  /** Told of every dynamic add and remove (the fleet store shares them); not of restores or config entries. */
  #watcher: ((change: ListChange) => void) | undefined;
  #dynamic = new Map<string, Live>();
  /** Bumped on every change, so a session can keep its match until the lists change. */
  version = 0;

  /** Replaces the config entries; returns problems with values that do not parse. */
  setStatic(allow: readonly string[], deny: readonly string[], now: number): string[] {
    const problems: string[] = [];
    const next: Live[] = [];
    for (const [kind, values] of [['allow', allow], ['deny', deny]] as const) {
      for (const value of values) {
        const match = parseListValue(value);
        if (typeof match === 'string') problems.push(match);
        else next.push({ entry: { kind, value, source: 'config', added: now }, match });
      }
    }
    this.#static = next;
    this.version++;
    return problems;
  }

  /** Adds or replaces a dynamic entry; a string is the problem with the value. */
  add(kind: ListKind, value: string, now: number, ttlMs?: number, reason?: string): ListEntry | string {
    const match = parseListValue(value);
    if (typeof match === 'string') return match;
    const entry: ListEntry = { kind, value, source: 'dynamic', added: now, ...(ttlMs ? { expires: now + ttlMs } : {}), ...(reason ? { reason } : {}) };
    this.#dynamic.set(`${kind} ${value}`, { entry, match });
    this.version++;
    this.#watcher?.({ op: 'add', entry });
    return entry;
  }

  /** Removes dynamic entries for this value (both kinds); true when one was there. */
  remove(value: string): boolean {
    const removed = [this.#dynamic.delete(`allow ${value}`), this.#dynamic.delete(`deny ${value}`)].some(Boolean);
    if (removed) {
      this.version++;
      this.#watcher?.({ op: 'remove', value });
    }
    return removed;
  }

  /** Tells `fn` of every dynamic add and remove from now on (undefined: no one). */
  watch(fn: ((change: ListChange) => void) | undefined): void {
    this.#watcher = fn;
  }

  /** The deciding entry for a client, HELO and sender: deny first. */
  match(client: string, helo: string, sender: string, now: number): ListEntry | undefined {
    if (this.#static.length === 0 && this.#dynamic.size === 0) return undefined;
    let addr: ipaddr.IPv4 | ipaddr.IPv6 | undefined;
    try { addr = ipaddr.process(client); } catch { addr = undefined; }
    const h = helo.toLowerCase().replace(/\.$/, '');
    const at = sender.lastIndexOf('@');
    const d = at >= 0 ? sender.slice(at + 1).toLowerCase() : '';
    let allow: ListEntry | undefined;
    for (const l of this.#all(now)) {
      const m = l.match;
      const hit = m.type === 'cidr' ? addr !== undefined && addr.kind() === m.range[0].kind() && addr.match(m.range)
        : m.type === 'helo' ? h !== '' && h === m.name
          : d !== '' && (d === m.name || d.endsWith(`.${m.name}`));
      if (!hit) continue;
      if (l.entry.kind === 'deny') return l.entry;
      allow ??= l.entry;
    }
    return allow;
  }

  *#all(now: number): Generator<Live> {
    yield* this.#static;
    for (const [k, l] of this.#dynamic) {
      if (l.entry.expires !== undefined && l.entry.expires <= now) this.#dynamic.delete(k);
      else yield l;
    }
  }

  entries(now: number): ListEntry[] {
    return [...this.#all(now)].map((l) => l.entry);
  }

  dynamic(now: number): ListEntry[] {
    return this.entries(now).filter((e) => e.source === 'dynamic');
  }

  /** Restores dynamic entries from a snapshot, skipping expired or unreadable ones. */
  restore(entries: readonly ListEntry[], now: number): void {
    for (const e of entries) {
      if (e.expires !== undefined && e.expires <= now) continue;
      const match = parseListValue(e.value);
      if (typeof match !== 'string' && (e.kind === 'allow' || e.kind === 'deny')) this.#dynamic.set(`${e.kind} ${e.value}`, { entry: { ...e, source: 'dynamic' }, match });
    }
    this.version++;
  }
}
