// daemon.ts - sluiced's life cycle: start, reload, drain, restart.
//
// Builds everything from a validated config and passes it in: the clock, the
// shield and its handler, the logger, the engine, the protocol listeners,
// the control socket, the snapshot keeper, load shedding. Signals enter
// through the shield like any other event: SIGHUP reloads (a broken file keeps
// the running config and logs every problem), SIGTERM/SIGINT drain (stop
// accepting, answer held replies now, wait for in-flight work up to
// limits.drain_timeout, close), SIGUSR1 reopens the log file. The circuit
// breaker restarts the listeners in place, never silently. Once a second:
// load shedding looks at the event loop, and the engine and the policy
// service turn silence into outcomes.

import path from 'node:path';
import { configFailure, loadConfig, formatProblem, keepStartOnly, withLogLevel } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { CATALOGUE } from '../shield/errors.js';
import { LoopLag } from '../shield/lag.js';
import { LoadShedding } from '../shield/shedding.js';
import { Shield } from '../shield/shield.js';
import { CircuitBreaker } from '../shield/breaker.js';
import { createLogger, type LogHandle, type Logger } from '../log/logger.js';
import { ReputationEngine } from '../engine/engine.js';
import { EngineOperator } from '../engine/operator.js';
import type { Rule } from '../engine/types.js';
import type { ListEntry } from '../engine/lists.js';
import { SnapshotKeeper } from '../reputation/keeper.js';
import { Enricher } from '../enrich/enricher.js';
import { DnsLists } from '../dns/dnsbl.js';
import { Metrics } from '../metrics/metrics.js';
import { Report } from '../metrics/report.js';
import type { Dispatch } from '../control/server.js';
import { commands } from '../control/commands.js';
import { statusReport, statsReport } from '../control/report.js';
import { SYSTEM_CLOCK, type Clock, type Timer } from '../util/clock.js';
import { exceptionHandler } from './exceptions.js';
import { Services } from './services.js';
import { installSignals } from './signals.js';
import { ensureStateDir, stateDirFor } from './state-dir.js';
import { VERSION } from './version.js';

export interface DaemonOptions {
  readonly configFile?: string;
  readonly logLevel?: string;
  /** Put in front of the engine's pipeline (tests wire in their own decisions here). */
  readonly rules?: readonly Rule[];
  /** Where time comes from (tests: a ManualClock). */
  readonly clock?: Clock;
  readonly isTTY?: boolean;
  /** Install SIGHUP/SIGTERM/SIGINT/SIGUSR1 handlers (the CLI does; in-process tests do not). */
  readonly signals?: boolean;
  /** Called when a signal-driven drain has finished (the CLI exits 0). */
  readonly onStopped?: () => void;
}

export class Daemon {
  #config: Config;
  readonly #opts: DaemonOptions;
  readonly #stateDir: string;
  readonly #logs: LogHandle;
  readonly #clock: Clock;
  readonly #shield: Shield;
  readonly engine: ReputationEngine;
  readonly #dnsLists: DnsLists;
  readonly #lookups: Enricher;
  readonly #lag = new LoopLag();
  readonly #shedding: LoadShedding;
  readonly #keeper: SnapshotKeeper<ListEntry>;
  readonly #breaker: CircuitBreaker;
  readonly errorCounts = new Map<number, number>();
  readonly metrics: Metrics;
  readonly #report: Report;
  readonly #started: number;
  readonly #services: Services;
  #tick: Timer | undefined;
  #metricsUrl: string | undefined;
  #stopping: Promise<void> | undefined;
  #unhook: (() => void)[] = [];

  private constructor(config: Config, stateDir: string, logs: LogHandle, opts: DaemonOptions) {
    this.#config = config;
    this.#stateDir = stateDir;
    this.#logs = logs;
    this.#opts = opts;
    this.#clock = opts.clock ?? SYSTEM_CLOCK;
    this.#started = this.#clock.now();
    this.#shield = new Shield({ clock: this.#clock });
    this.metrics = new Metrics({
      lruSize: () => this.engine.store.size,
      lruEvictions: () => this.engine.store.evictions,
      holdsActive: () => this.engine.stats().holdsActive,
      openConnections: () => this.#services.openConnections,
      loopLagMs: () => this.#lag.lastMs,
    });
    // The first-contact lookups: the DNS lists are the provider sluice ships.
    this.#dnsLists = new DnsLists(() => this.#config, this.#clock, () => this.log, this.metrics);
    this.#lookups = new Enricher([this.#dnsLists], this.#clock, (err) => this.#shield.raise({ label: 'lookup' }, err, 'timer'));
    this.engine = new ReputationEngine(() => this.#config, this.#clock.now, opts.rules, this.#lookups);
    this.#keeper = new SnapshotKeeper({
      store: this.engine.store,
      lists: (now) => this.engine.lists.dynamic(now),
      restoreLists: (lists, now) => this.engine.lists.restore(lists, now),
    }, path.resolve(stateDir, config.reputation.snapshot_file), this.#shield, () => this.log);
    this.#shedding = new LoadShedding(this.#shield, () => this.log, this.#lag, this.engine, () => ({
      maxLoopLagMs: this.#config.limits.max_loop_lag, budget: this.#config.tarpit.budget, budgetPerNetwork: this.#config.tarpit.budget_per_network,
    }));
    this.#breaker = new CircuitBreaker(config.shield.breaker_limit, config.shield.breaker_window, this.#clock.now);
    this.#report = new Report(this.metrics);
    this.#services = new Services({
      config: () => this.#config, stateDir, shield: this.#shield, log: () => this.log, metrics: this.metrics, report: this.#report, engine: this.engine,
    });
    this.#shield.register(exceptionHandler({
      log: () => this.#logs.logger,
      breaker: this.#breaker,
      counts: this.errorCounts,
      counted: (code, name) => this.metrics.exceptions.inc({ code: String(code), name }),
      onTrip: () => { void this.#restart(); },
    }));
  }

  /** Loads the config, opens every listener; throws ConfigError (exit 78) on any problem. */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    const loaded = await loadConfig(opts.configFile);
    if (!loaded.ok) throw configFailure(loaded);
    const config = withLogLevel(loaded.config, opts.logLevel);
    const stateDir = stateDirFor(config.state_dir);
    await ensureStateDir(stateDir);
    const logs = await createLogger(config.log, opts.isTTY);
    const d = new Daemon(config, stateDir, logs, opts);
    await d.#keeper.restore();
    try {
      await d.#services.open();
      await d.#services.openControl(d.controlSocket, d.#commands());
      if (config.metrics.listen) d.#metricsUrl = await d.metrics.listen(config.metrics.listen);
    } catch (err) {
      d.#services.stopAccepting();
      d.#services.closeControl();
      d.metrics.close();
      d.#lag.stop();
      throw err;
    }
    d.#unhook.push(d.#shield.installProcessHooks());
    if (opts.signals) {
      d.#unhook.push(installSignals(d.#shield, {
        reload: () => d.reload(),
        reopenLog: () => { d.#logs.reopen(); d.log.info('log file reopened'); },
        drain: async (signal) => {
          // One stop is enough: a second signal (Ctrl-C under `npm start` reaches
          // both npm, which passes it on, and sluiced) changes nothing.
          if (d.#stopping) return;
          d.log.info({ signal }, 'draining');
          await d.stop();
          opts.onStopped?.();
        },
      }));
    }
    d.#startTimers();
    logs.logger.info({ listen: d.endpoints, control: d.controlSocket, metrics: d.#metricsUrl ?? null, state_dir: stateDir, config: loaded.file }, `sluiced ready: policy on ${d.endpoints.policy.join(', ') || '(none)'}, milter on ${d.endpoints.milter.join(', ') || '(none)'}`);
    return d;
  }

  get log(): Logger {
    return this.#logs.logger;
  }

  /** Bound endpoints per protocol (real ports when 0 was asked for). */
  get endpoints(): { policy: string[]; milter: string[] } {
    return this.#services.endpoints;
  }

  get openConnections(): number {
    return this.#services.openConnections;
  }

  get controlSocket(): string {
    return path.resolve(this.#stateDir, this.#config.control.socket);
  }

  /**
   * Once a second: load shedding looks at the event loop and the hold
   * budget, and silent sessions become outcomes. The snapshot has its own
   * timer, re-timed by a reload.
   */
  #startTimers(): void {
    this.#tick = this.#shield.setInterval({ label: 'timer:tick' }, 1000, () => {
      this.#shedding.check();
      this.engine.tick();
      this.#services.tick(this.#clock.now());
    });
    this.#keeper.retime(this.#config.reputation.snapshot_interval);
  }

  /** What sluicectl may ask (control/commands.ts). */
  #commands(): Dispatch {
    return commands({
      engine: new EngineOperator(this.engine, this.#clock.now, this.#lookups),
      policy: () => this.#config.policy,
      status: () => this.status(),
      stats: () => this.stats(),
      reload: () => this.reload(),
      snapshot: async () => ({ file: this.#keeper.file, entries: await this.#keeper.write() }),
      setLogLevel: (level) => { this.#logs.logger.level = level; this.log.info({ level }, 'log level set by sluicectl'); },
    }, this.#clock.now);
  }

  status(): Record<string, unknown> {
    const s = this.engine.stats();
    return statusReport({
      version: VERSION, startedAt: this.#started, now: this.#clock.now(), mode: this.#config.mode,
      config: this.#opts.configFile ?? '(built-in defaults)', stateDir: this.#stateDir, listen: this.endpoints, control: this.controlSocket,
      metrics: this.#metricsUrl ?? null, connectionsOpen: this.#services.openConnections, holdsInProgress: s.holdsActive, holdsRefused: s.holdsRefused,
      reputationEntries: this.engine.store.size, sessions: s.sessions, errors: this.errorCounts,
      dnsLists: this.#dnsLists.active() ? {
        sites: this.#config.dnsbl.sites.length + this.#config.dnsbl.rhsbl_sites.length, refusing: this.#dnsLists.refusing,
        cached: this.#dnsLists.resolver.size, in_flight: this.#lookups.inFlight,
      } : undefined,
    });
  }

  /** The counters, as sluicectl stats shows them. */
  stats(): Promise<Record<string, unknown>> {
    return statsReport(this.metrics.registry);
  }

  /** Rereads the config file; on any problem keeps the running config. True when swapped. */
  async reload(): Promise<boolean> {
    const loaded = await loadConfig(this.#opts.configFile);
    if (!loaded.ok) {
      for (const p of loaded.problems) this.log.error({ code: CATALOGUE[p.symbol].code, err: p.symbol }, `reload refused: ${formatProblem(p)}`);
      this.log.warn('reload refused: keeping the running configuration');
      return false;
    }
    const { config: next, kept } = keepStartOnly(this.#config, withLogLevel(loaded.config, this.#opts.logLevel));
    if (kept.length > 0) this.log.warn({ keys: kept }, `read at start only, so kept as running until the next start: ${kept.join(', ')}`);
    this.#config = next;
    this.engine.reloaded();
    this.#logs.logger.level = next.log.level;
    this.#services.setIdleTimeout(next.limits.idle_timeout);
    if (this.#tick) this.#keeper.retime(next.reputation.snapshot_interval);
    this.log.info({ config: loaded.file }, 'configuration reloaded');
    return true;
  }

  /** Drain: stop accepting, answer held replies now, wait for in-flight work, close. */
  stop(): Promise<void> {
    this.#stopping ??= this.#drain();
    return this.#stopping;
  }

  async #drain(): Promise<void> {
    const s = this.#services;
    s.stopAccepting();
    s.flushAll();
    // Decisions still in flight (a slow rule) finish on their own time: polled
    // in real time, since an injected clock may stand still.
    for (let waited = 0; s.busy > 0 && waited < this.#config.limits.drain_timeout; waited += 20) {
      await new Promise((r) => setTimeout(r, 20));
    }
    s.closeAll();
    s.closeControl();
    this.metrics.close();
    this.#lag.stop();
    this.#shield.clear(this.#tick);
    this.#tick = undefined;
    this.#keeper.stop();
    this.#dnsLists.close();
    await this.#keeper.write();
    for (const u of this.#unhook) u();
    this.#unhook = [];
    this.log.info({ errors: Object.fromEntries(this.errorCounts) }, 'sluiced stopped');
  }

  /** After stop(), right before the process exits: every log line written, in order. */
  closeLog(): Promise<void> {
    return this.#logs.close();
  }

  /** The circuit breaker tripped: flush state, answer what is held, close and reopen the listeners. */
  async #restart(): Promise<void> {
    await this.#keeper.write();
    this.log.error({ code: CATALOGUE.OVERLOAD_BREAKER.code, err: 'OVERLOAD_BREAKER', limit: this.#config.shield.breaker_limit }, 'circuit breaker tripped: restarting services');
    this.#services.stopAccepting();
    this.#services.flushAll();
    this.#services.closeAll();
    try {
      await this.#services.open();
      this.#breaker.reset();
      this.log.warn({ listen: this.endpoints }, 'services restarted');
    } catch (err) {
      this.#shield.raise({ label: 'restart' }, err, 'timer');
      this.log.fatal('restart failed: stopping');
      await this.stop();
      this.#opts.onStopped?.();
    }
  }
}
