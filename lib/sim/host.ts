// host.ts - one simulated MX host: sluice's real engine with its real
// first-contact lookups (the DNS lists over a real socket, the fleet store's
// reader and writer on a real redis-server), beside an MTA with a limit of
// smtpd processes, and a content scanner whose verdicts come in as rspamd
// publishes them (lib/feedback).
//
// A session holds one process from the moment it gets one until it ends;
// a held reply keeps it (smtpd waits for the policy or milter answer even
// when the client has gone). A connection that finds every process busy
// waits, in arrival order, for one to come free; the caller gives up on it
// after the client's patience. Time is the simulation's ManualClock.

import pino from 'pino';
import type { Config } from '../config/schema.js';
import { DnsLists } from '../dns/dnsbl.js';
import { newStore, ReputationEngine } from '../engine/engine.js';
import { Lists } from '../engine/lists.js';
import type { Rule } from '../engine/types.js';
import { Enricher } from '../enrich/enricher.js';
import { Fleet } from '../fleet/fleet.js';
import { Feedback } from '../feedback/feedback.js';
import type { ManualClock } from '../util/clock.js';
import { Fifo } from '../util/fifo.js';

/** A connection waiting for an smtpd process; `gone` once its client gave up. */
export interface Waiting {
  gone: boolean;
  readonly start: () => void;
}

/** What the hosts count together: calls to the store, DNS queries, lookups that failed. */
export interface Calls {
  store: number;
  dns: number;
  failed: number;
}

export class Host {
  readonly engine: ReputationEngine;
  readonly fleet: Fleet;
  /** The scanner's verdicts, as the daemon takes them from its channel. */
  readonly feedback: Feedback;
  readonly #dns: DnsLists;
  readonly #processes: number;
  busy = 0;
  peakBusy = 0;
  peakHolds = 0;
  /** Process time used, ms. */
  busyMs = 0;
  sessions = 0;
  readonly #queue = new Fifo<Waiting>();

  constructor(readonly index: number, config: Config, clock: ManualClock, processes: number, calls: Calls, rules: readonly Rule[] = []) {
    this.#processes = processes;
    const log = pino({ level: 'silent' });
    const made = { store: newStore(config, clock.now), lists: new Lists() };
    this.#dns = new DnsLists(() => config, clock, () => log, { queried: () => { calls.dns++; }, cacheHit: () => {} });
    this.fleet = new Fleet(() => config, made, clock, () => log, { fleetOps: (_op, _ok, n = 1) => { calls.store += n; } });
    const lookups = new Enricher([this.#dns, this.fleet.reader], clock, () => { calls.failed++; });
    this.engine = new ReputationEngine(() => config, clock.now, rules, lookups, made);
    this.feedback = new Feedback(this.engine, this.fleet, clock, () => log, { scanned: () => {}, scanRefused: () => { calls.failed++; } });
  }

  start(): void {
    this.fleet.start();
  }

  /** The connection gets a process now, or waits for one (false). */
  connect(w: Waiting): boolean {
    if (this.busy < this.#processes) {
      this.#take();
      return true;
    }
    this.#queue.push(w);
    return false;
  }

  /** A session ends after holding its process `ms`: the next waiting connection takes it. */
  release(ms: number): void {
    this.busy--;
    this.busyMs += ms;
    for (let w = this.#queue.shift(); w !== undefined; w = this.#queue.shift()) {
      if (w.gone) continue;
      this.#take();
      w.start();
      break;
    }
  }

  /** After a hold was granted: the most this host's engine held at once. */
  held(): void {
    this.peakHolds = Math.max(this.peakHolds, this.engine.stats().holdsActive);
  }

  async close(): Promise<void> {
    this.#dns.close();
    await this.fleet.close();
  }

  #take(): void {
    this.busy++;
    this.sessions++;
    this.peakBusy = Math.max(this.peakBusy, this.busy);
  }
}
