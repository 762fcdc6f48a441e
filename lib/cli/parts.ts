// parts.ts - what sluiced is made of, built from a config and wired together.
//
// The clock, the shield, the metrics, the reputation store and lists (made
// first, then handed to the engine and the fleet store), the first-contact
// lookups (the DNS lists, the fleet store's reader), the engine, the
// content scanner's verdicts (feedback), the snapshot keeper, load
// shedding, the services (listeners) and what sluicectl may ask of them. The daemon (daemon.ts) starts them and says
// when to reload and close; Parts knows how (reload(), close(): one
// teardown for a failed start and a drain).
//
// Config keys: reputation.snapshot_file (the keeper), limits.max_loop_lag,
// tarpit.budget* (shedding); the rest are read by the parts themselves.

import path from 'node:path';
import type { Config } from '../config/schema.js';
import { LoopLag } from '../shield/lag.js';
import { LoadShedding } from '../shield/shedding.js';
import { Shield } from '../shield/shield.js';
import type { Logger } from '../log/logger.js';
import { newStore, ReputationEngine } from '../engine/engine.js';
import { Lists } from '../engine/lists.js';
import { EngineOperator } from '../engine/operator.js';
import type { Rule } from '../engine/types.js';
import type { ListEntry } from '../engine/lists.js';
import { SnapshotKeeper } from '../reputation/keeper.js';
import { Enricher } from '../enrich/enricher.js';
import { DnsLists } from '../dns/dnsbl.js';
import { Fleet } from '../fleet/fleet.js';
import { Feedback } from '../feedback/feedback.js';
import { Metrics } from '../metrics/metrics.js';
import { Report } from '../metrics/report.js';
import { commands, type Controller } from '../control/commands.js';
import type { Dispatch } from '../control/server.js';
import { statusReport, statsReport } from '../control/report.js';
import type { Clock, Timer } from '../util/clock.js';
import { Services } from './services.js';
import { VERSION } from './version.js';

export interface PartsOptions {
  readonly config: () => Config;
  readonly stateDir: string;
  readonly clock: Clock;
  readonly log: () => Logger;
  /** Put in front of the engine's pipeline (tests). */
  readonly rules?: readonly Rule[];
}

/** What status says of the daemon itself. */
export interface Whereabouts {
  readonly configFile: string | undefined;
  readonly control: string;
  readonly metricsUrl: string | undefined;
  readonly errors: ReadonlyMap<number, number>;
}

export class Parts {
  readonly clock: Clock;
  readonly shield: Shield;
  readonly metrics: Metrics;
  readonly dnsLists: DnsLists;
  readonly fleet: Fleet;
  readonly feedback: Feedback;
  readonly lookups: Enricher;
  readonly engine: ReputationEngine;
  readonly keeper: SnapshotKeeper<ListEntry>;
  readonly lag = new LoopLag();
  readonly shedding: LoadShedding;
  readonly report: Report;
  readonly services: Services;
  readonly started: number;
  readonly #o: PartsOptions;
  #tick: Timer | undefined;

  constructor(o: PartsOptions) {
    this.#o = o;
    const { config, clock, log } = o;
    this.clock = clock;
    this.started = clock.now();
    this.shield = new Shield({ clock });
    this.metrics = new Metrics({
      lruSize: () => this.engine.store.size,
      lruEvictions: () => this.engine.store.evictions,
      holdsActive: () => this.engine.stats().holdsActive,
      openConnections: () => this.services.openConnections,
      loopLagMs: () => this.lag.lastMs,
      fleetWrites: () => this.fleet.writes(),
      patience: () => this.engine.patience(),
    });
    // What the engine and the fleet store share, made first.
    const made = { store: newStore(config(), clock.now), lists: new Lists() };
    // The first-contact lookups: the DNS lists, and what the fleet store knows.
    this.dnsLists = new DnsLists(config, clock, log, this.metrics);
    this.fleet = new Fleet(config, made, clock, log, this.metrics);
    this.lookups = new Enricher([this.dnsLists, this.fleet.reader], clock, (err) => this.shield.raise({ label: 'lookup' }, err, 'timer'));
    this.engine = new ReputationEngine(config, clock.now, o.rules, this.lookups, made);
    this.feedback = new Feedback(this.engine, this.fleet, clock, log, this.metrics);
    this.keeper = new SnapshotKeeper({
      store: this.engine.store,
      lists: (now) => this.engine.lists.dynamic(now),
      restoreLists: (lists, now) => this.engine.lists.restore(lists, now),
    }, path.resolve(o.stateDir, config().reputation.snapshot_file), this.shield, log);
    this.shedding = new LoadShedding(this.shield, log, this.lag, this.engine, () => ({
      maxLoopLagMs: config().limits.max_loop_lag, budget: config().tarpit.budget, budgetPerNetwork: config().tarpit.budget_per_network,
    }));
    this.report = new Report(this.metrics);
    this.services = new Services({ config, stateDir: o.stateDir, shield: this.shield, log, metrics: this.metrics, report: this.report, engine: this.engine });
  }

  /**
   * Once a second: load shedding looks at the event loop and the hold
   * budget, and silent sessions become outcomes.
   */
  tick(): void {
    this.shedding.check();
    this.engine.tick();
    this.services.tick(this.clock.now());
  }

  /** Connects to the fleet store and the scanner's verdicts, when configured (ConfigError for an unreadable password file). */
  connect(): void {
    this.fleet.start();
    this.feedback.start(this.#o.config());
  }

  /** Starts the once-a-second work and the snapshot's timer. */
  startTimers(): void {
    this.#tick = this.shield.setInterval({ label: 'timer:tick' }, 1000, () => this.tick());
    this.keeper.retime(this.#o.config().reputation.snapshot_interval);
  }

  /** The running config was swapped: each part takes what it reads at reload. */
  reload(): void {
    const c = this.#o.config();
    this.engine.reloaded();
    this.fleet.reload();
    this.services.setIdleTimeout(c.limits.idle_timeout);
    if (this.#tick) this.keeper.retime(c.reputation.snapshot_interval);
  }

  /**
   * Stops everything, in order: the services (held replies answered, in-flight
   * decisions given up to `drainMs`), sluicectl's socket, the metrics, the
   * timers, the DNS lists, the snapshot (when `snapshot`), and the fleet
   * store's last writes. A drain and a failed start both end here.
   */
  async close(o: { drainMs: number; snapshot: boolean }): Promise<void> {
    await this.services.close(o.drainMs);
    this.services.closeControl();
    this.metrics.close();
    this.lag.stop();
    this.shield.clear(this.#tick);
    this.#tick = undefined;
    this.keeper.stop();
    this.dnsLists.close();
    if (o.snapshot) await this.keeper.write();
    await this.feedback.close();
    await this.fleet.close();
  }

  /** What sluicectl may ask (control/commands.ts); the daemon's own part of it comes in `own`. */
  commands(own: Pick<Controller, 'status' | 'reload' | 'setLogLevel'>): Dispatch {
    return commands({
      ...own,
      engine: new EngineOperator(this.engine, this.clock.now, this.lookups),
      policy: () => this.#o.config().policy,
      stats: () => statsReport(this.metrics.registry),
      snapshot: async () => ({ file: this.keeper.file, entries: await this.keeper.write() }),
      learn: (s) => this.feedback.learn(s),
    }, this.clock.now);
  }

  status(w: Whereabouts): Record<string, unknown> {
    const c = this.#o.config();
    const s = this.engine.stats();
    return statusReport({
      version: VERSION, startedAt: this.started, now: this.clock.now(), mode: c.mode,
      config: w.configFile ?? '(built-in defaults)', stateDir: this.#o.stateDir, listen: this.services.endpoints, control: w.control,
      metrics: w.metricsUrl ?? null, connectionsOpen: this.services.openConnections, holdsInProgress: s.holdsActive, holdsRefused: s.holdsRefused,
      reputationEntries: this.engine.store.size, sessions: s.sessions, errors: w.errors,
      dnsLists: this.dnsLists.active() ? {
        sites: c.dnsbl.sites.length + c.dnsbl.rhsbl_sites.length, refusing: this.dnsLists.refusing,
        cached: this.dnsLists.cached, in_flight: this.lookups.inFlight,
      } : undefined,
      fleet: this.fleet.status(),
    });
  }
}
