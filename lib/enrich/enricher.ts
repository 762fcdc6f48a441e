// enricher.ts - the lookup seam: what is found out about a client at first
// contact, while its first decision waits a bounded time.
//
// A Provider (the DNS lists, lib/dns/dnsbl.ts; the fleet store's reader,
// lib/fleet/reader.ts) says which lookups an event calls for, each by a key,
// answers from its own cache when it can, and otherwise fetches. The
// Enricher starts them at a session's first event (milter CONNECT; the first
// policy request seen for it, at any stage) and again when the engine says
// a later stage brought something new (a HELO name, a sender domain): all
// at once, one fetch per key however many sessions want it. A decision waits
// for the session's lookups until they have arrived or the provider's
// budget, counted from when they started, is spent; it never blocks another
// session. What arrives later is used by the next stage, so lookups keep
// running while a client is held. An answer that arrives for a session that
// decides for real is offered to its provider to keep (Provider.keep: the
// fleet reader copies entries into the local store); one that only a dry
// run (explain) wanted is not. A session's lookups live in the slot the
// engine keeps on its own session context (LookupSlot): the Enricher keeps
// only the fetches under way, by key, and a session's end, or its sweep by
// the engine, is one call (end). A fetch no session waits for any more is
// dropped from the table; it completes on its own (a DNS query, a store
// read: neither can be cancelled alone) and only fills its provider's cache.
// The engine reads the findings through engine/types.ts (Lookups) and knows
// no provider.

import type { Enrichment, LookupSlot, Lookups, StageEvent } from '../engine/types.js';
import type { Clock, Timer } from '../util/clock.js';

export interface Provider<A = unknown> {
  readonly name: string;
  /** False when nothing is configured: the provider then costs nothing. */
  active(): boolean;
  /** How long a decision may wait for this provider's lookups (ms). */
  budget(): number;
  /** The lookups this event calls for, each by a key (keys are the provider's own: two providers may use the same). */
  wants(e: StageEvent, add: (key: string) => void): void;
  /** The answer when it is known without asking (a cache), else undefined. */
  known(key: string): A | undefined;
  /** Asks. A failure must come back as an answer (fail open is the provider's call). */
  fetch(key: string): Promise<A>;
  /** An answer arrived that a session deciding for real wanted: keep what it brings (never called for a dry run's). */
  keep?(key: string, answer: A): void;
  /** What the answers that have arrived make of the client (a key not yet arrived is absent); with `explain`, a trace line per answer. */
  judge(e: StageEvent, answers: ReadonlyMap<string, A>, explain: boolean): Enrichment | undefined;
  /** What is cached about a client address, for `sluicectl show`. */
  describe?(client: string): unknown;
}

interface Flight {
  readonly key: string;
  /** The provider's index. */
  readonly at: number;
  readonly wants: Set<Want>;
}

/** One session's lookups, kept in its LookupSlot. */
interface Want {
  /** A dry run (explain): what arrives for it alone is not kept. */
  readonly dry: boolean;
  /** When its decisions stop waiting. */
  deadline: number;
  /** Per provider (by index): the keys asked and not answered at once, and the answers arrived. */
  readonly asked: Set<string>[];
  readonly answers: Map<string, unknown>[];
  /** Fetches it waits for; made when it first waits for one. */
  flights: Set<Flight> | undefined;
  judged: readonly Enrichment[] | undefined;
  wait: Promise<boolean> | undefined;
  release: ((alive: boolean) => void) | undefined;
  timer: Timer | undefined;
}

const NONE: readonly Enrichment[] = Object.freeze([]);
const NO_ANSWERS: ReadonlyMap<string, unknown> = new Map<string, unknown>();

export class Enricher implements Lookups {
  readonly #providers: readonly Provider[];
  readonly #clock: Clock;
  /** What #add works on: the session and provider being asked for, and when (fields, not an object per ask). */
  #askW: Want | undefined;
  #askAt = 0;
  #askNow = 0;
  readonly #add = (key: string): void => this.#want(key);
  /** Per provider (by index): its fetches under way, by key. */
  readonly #inflight: Map<string, Flight>[];
  /** Called with a fetch that threw (a provider's bug): the seam never throws into a decision. */
  readonly #failed: (err: unknown) => void;

  constructor(providers: readonly Provider[], clock: Clock, failed: (err: unknown) => void) {
    this.#providers = providers;
    this.#inflight = providers.map(() => new Map());
    this.#clock = clock;
    this.#failed = failed;
  }

  /** Fetches under way (deduplicated). */
  get inFlight(): number {
    return this.#inflight.reduce((n, m) => n + m.size, 0);
  }

  begin(e: StageEvent, slot: LookupSlot, changed: boolean, dry = false): Promise<boolean> | undefined {
    if (!this.#active()) return undefined;
    const now = this.#clock.now();
    let w = slot.lookup as Want | undefined;
    if (w === undefined) {
      w = { dry, deadline: 0, asked: [], answers: [], flights: undefined, judged: undefined, wait: undefined, release: undefined, timer: undefined };
      this.#ask(w, e, now);
      // A session no provider wanted anything for keeps nothing: its next stage asks again (cheaply).
      if (w.answers.length === 0 && w.asked.length === 0) return undefined;
      slot.lookup = w;
    } else if (changed) {
      w.judged = undefined;
      this.#ask(w, e, now);
    }
    if (w.flights === undefined || w.flights.size === 0 || now >= w.deadline) return undefined;
    if (w.wait !== undefined) return w.wait;
    const want = w;
    w.wait = new Promise<boolean>((resolve) => { want.release = resolve; });
    w.timer = this.#clock.setTimeout(() => this.#settle(want, true), w.deadline - now);
    return w.wait;
  }

  findings(e: StageEvent, slot: LookupSlot, explain = false): readonly Enrichment[] {
    const w = slot.lookup as Want | undefined;
    if (w === undefined) return NONE;
    if (w.judged !== undefined && !explain) return w.judged;
    const out: Enrichment[] = [];
    for (let at = 0; at < this.#providers.length; at++) {
      const p = this.#providers[at]!;
      if (!p.active()) continue;
      const j = p.judge(e, w.answers[at] ?? NO_ANSWERS, explain);
      if (j !== undefined) out.push(j);
    }
    const found = out.length === 0 ? NONE : out;
    if (!explain) w.judged = found;
    return found;
  }

  end(slot: LookupSlot): void {
    const w = slot.lookup as Want | undefined;
    if (w === undefined) return;
    slot.lookup = undefined;
    if (w.flights !== undefined) {
      for (const f of w.flights) {
        f.wants.delete(w);
        if (f.wants.size === 0) this.#inflight[f.at]!.delete(f.key);
      }
      w.flights = undefined;
    }
    this.#settle(w, false);
  }

  /** What each active provider has cached about a client address. */
  describe(client: string): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const p of this.#providers) if (p.active() && p.describe) out[p.name] = p.describe(client);
    return out;
  }

  /** Lets the session's waiting decision go on. */
  #settle(w: Want, alive: boolean): void {
    const release = w.release;
    this.#clock.clear(w.timer);
    w.timer = undefined;
    w.release = undefined;
    w.wait = undefined;
    release?.(alive);
  }

  #active(): boolean {
    for (const p of this.#providers) if (p.active()) return true;
    return false;
  }

  /** Starts (or joins) what the event calls for that the session has not asked yet. */
  #ask(w: Want, e: StageEvent, now: number): void {
    for (let at = 0; at < this.#providers.length; at++) {
      const p = this.#providers[at]!;
      if (!p.active()) continue;
      this.#askW = w;
      this.#askAt = at;
      this.#askNow = now;
      try {
        p.wants(e, this.#add);
      } finally {
        this.#askW = undefined;
      }
    }
  }

  /** One key a provider wants for the session being asked for: known, joined, or fetched. */
  #want(key: string): void {
    const w = this.#askW!;
    const at = this.#askAt;
    const now = this.#askNow;
    const p = this.#providers[at]!;
    if (w.answers[at]?.has(key) || w.asked[at]?.has(key)) return;
    const a = p.known(key);
    if (a !== undefined) {
      (w.answers[at] ??= new Map()).set(key, a);
      return;
    }
    (w.asked[at] ??= new Set()).add(key);
    const f = this.#inflight[at]!.get(key) ?? this.#fetch(at, key);
    f.wants.add(w);
    (w.flights ??= new Set()).add(f);
    w.deadline = Math.max(w.deadline, now + p.budget());
  }

  #fetch(at: number, key: string): Flight {
    const p = this.#providers[at]!;
    const inflight = this.#inflight[at]!;
    const f: Flight = { key, at, wants: new Set() };
    inflight.set(key, f);
    const arrived = (answer: unknown, ok: boolean): void => {
      if (inflight.get(key) === f) inflight.delete(key);
      // Kept before any waiting decision goes on, so that it finds what was kept.
      let live = false;
      for (const w of f.wants) live ||= !w.dry;
      if (ok && p.keep !== undefined && live) {
        try {
          p.keep(key, answer);
        } catch (err) {
          this.#failed(err);
        }
      }
      for (const w of f.wants) {
        if (ok) (w.answers[at] ??= new Map()).set(key, answer);
        w.judged = undefined;
        w.flights?.delete(f);
        if (!w.flights?.size) this.#settle(w, true);
      }
      f.wants.clear();
    };
    let asked: Promise<unknown>;
    try {
      asked = p.fetch(key);
    } catch (err) {
      asked = Promise.reject(err);
    }
    asked.then((a) => arrived(a, true), (err: unknown) => {
      this.#failed(err);
      arrived(undefined, false);
    });
    return f;
  }
}
