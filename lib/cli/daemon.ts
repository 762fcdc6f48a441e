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
import { loadConfig, formatProblem, keepStartOnly, type LoadResult } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { Endpoint } from '../config/endpoint.js';
import { CATALOGUE, ConfigError, type SluiceError } from '../shield/errors.js';
import { LoopLag } from '../shield/lag.js';
import { LoadShedding } from '../shield/shedding.js';
import { Shield, type ShieldContext } from '../shield/shield.js';
import { CircuitBreaker } from '../shield/breaker.js';
import { createLogger, type LogHandle, type Logger } from '../log/logger.js';
import { ConnectionCounter, Listener, Outbox, type HandlerFactory } from '../net/listener.js';
import { policyHandler } from '../policy/session.js';
import { RecentQuestions } from '../policy/repeats.js';
import { PolicyOutcomes } from '../policy/outcomes.js';
import { milterHandler } from '../milter/session.js';
import { ReputationEngine } from '../engine/engine.js';
import type { Rule } from '../engine/types.js';
import type { ListEntry } from '../engine/lists.js';
import { SnapshotKeeper } from '../reputation/keeper.js';
import { Metrics } from '../metrics/metrics.js';
import { Report } from '../metrics/report.js';
import { controlHandler } from '../control/server.js';
import { commands } from '../control/commands.js';
import { statusReport, statsReport } from '../control/report.js';
import { SYSTEM_CLOCK, type Clock, type Timer } from '../util/clock.js';
import { exceptionHandler } from './exceptions.js';
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

/** Problems from loading, as one ConfigError whose message has every line. */
export function configFailure(result: Extract<LoadResult, { ok: false }>): ConfigError {
  const symbol = result.problems[0]?.symbol ?? 'CONFIG_INVALID';
  return new ConfigError(symbol, result.problems.map(formatProblem).join('\n'));
}

export function withLogLevel(config: Config, level: string | undefined): Config {
  if (level === undefined) return config;
  return Object.freeze({ ...config, log: Object.freeze({ ...config.log, level: level as Config['log']['level'] }) });
}

export class Daemon {
  #config: Config;
  readonly #opts: DaemonOptions;
  readonly #stateDir: string;
  readonly #logs: LogHandle;
  readonly #clock: Clock;
  readonly #shield: Shield;
  readonly engine: ReputationEngine;
  readonly #lag = new LoopLag();
  readonly #shedding: LoadShedding;
  readonly #keeper: SnapshotKeeper<ListEntry>;
  readonly #breaker: CircuitBreaker;
  readonly #counter: ConnectionCounter;
  readonly #repeats: RecentQuestions;
  readonly #outcomes: PolicyOutcomes;
  readonly #outbox = new Outbox();
  readonly errorCounts = new Map<number, number>();
  readonly metrics: Metrics;
  readonly #report: Report;
  readonly #started: number;
  #tick: Timer | undefined;
  #control: Listener | undefined;
  #metricsUrl: string | undefined;
  #policy: Listener | undefined;
  #milter: Listener | undefined;
  #nextId = 0;
  #stopping: Promise<void> | undefined;
  #unhook: (() => void)[] = [];
  /** The log has said why policy sessions end unjudged. */
  #unjudgedSaid = false;

  private constructor(config: Config, stateDir: string, logs: LogHandle, opts: DaemonOptions) {
    this.#config = config;
    this.#stateDir = stateDir;
    this.#logs = logs;
    this.#opts = opts;
    this.#clock = opts.clock ?? SYSTEM_CLOCK;
    this.#started = this.#clock.now();
    this.#shield = new Shield({ clock: this.#clock });
    this.engine = new ReputationEngine(() => this.#config, this.#clock.now, opts.rules);
    this.#keeper = new SnapshotKeeper({
      store: this.engine.store,
      lists: (now) => this.engine.lists.dynamic(now),
      restoreLists: (lists, now) => this.engine.lists.restore(lists, now),
    }, path.resolve(stateDir, config.reputation.snapshot_file), this.#shield, () => this.log);
    this.#shedding = new LoadShedding(this.#shield, () => this.log, this.#lag, this.engine, () => ({
      maxLoopLagMs: this.#config.limits.max_loop_lag, budget: this.#config.tarpit.budget, budgetPerNetwork: this.#config.tarpit.budget_per_network,
    }));
    this.#breaker = new CircuitBreaker(config.shield.breaker_limit, config.shield.breaker_window, this.#clock.now);
    this.#counter = new ConnectionCounter(() => this.#config.limits.max_connections, this.#shield, () => this.log);
    this.#repeats = new RecentQuestions(config.policy.dedupe_entries, () => this.#config.policy.dedupe_window);
    this.#outcomes = new PolicyOutcomes(this.engine, config.rates.max_entries);
    this.metrics = new Metrics({
      lruSize: () => this.engine.store.size,
      lruEvictions: () => this.engine.store.evictions,
      holdsActive: () => this.engine.stats().holdsActive,
      openConnections: () => this.#counter.open,
      loopLagMs: () => this.#lag.lastMs,
    });
    this.#report = new Report(this.metrics);
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
      await d.#openListeners();
      await d.#openControl();
      if (config.metrics.listen) d.#metricsUrl = await d.metrics.listen(config.metrics.listen);
    } catch (err) {
      d.#closeListeners();
      d.#control?.stopAccepting();
      d.metrics.close();
      d.#lag.stop();
      throw err;
    }
    d.#unhook.push(d.#shield.installProcessHooks());
    if (opts.signals) d.#installSignals();
    d.#startTimers();
    logs.logger.info({ listen: d.endpoints, control: d.controlSocket, metrics: d.#metricsUrl ?? null, state_dir: stateDir, config: loaded.file }, `sluiced ready: policy on ${d.endpoints.policy.join(', ') || '(none)'}, milter on ${d.endpoints.milter.join(', ') || '(none)'}`);
    return d;
  }

  get config(): Config {
    return this.#config;
  }

  get log(): Logger {
    return this.#logs.logger;
  }

  get shield(): Shield {
    return this.#shield;
  }

  get stateDir(): string {
    return this.#stateDir;
  }

  /** Bound endpoints per protocol (real ports when 0 was asked for). */
  get endpoints(): { policy: string[]; milter: string[] } {
    return { policy: this.#policy?.bound ?? [], milter: this.#milter?.bound ?? [] };
  }

  get openConnections(): number {
    return this.#counter.open;
  }

  get snapshotFile(): string {
    return this.#keeper.file;
  }

  get controlSocket(): string {
    return path.resolve(this.#stateDir, this.#config.control.socket);
  }

  /** Writes the reputation snapshot now (atomically); one at a time. */
  async snapshot(): Promise<void> {
    await this.#keeper.write();
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
      for (const o of this.#outcomes.due(this.#clock.now(), this.#config.rates.abandon_window)) this.#report.abandoned(this.log, o);
      this.#policyTick();
    });
    this.#keeper.retime(this.#config.reputation.snapshot_interval);
  }

  /**
   * Policy sessions that end unjudged (no end of message seen yet) are said
   * once: with sluice asked at RCPT alone, nothing is learned from endings.
   */
  #policyTick(): void {
    if (this.#unjudgedSaid) return;
    const unjudged = this.#outcomes.unjudged;
    if (unjudged === 0) return;
    this.#unjudgedSaid = true;
    this.log.info({ sessions: unjudged }, 'policy sessions end without an end-of-message request: abandonment is not learned until smtpd_end_of_data_restrictions asks sluice (contrib/postfix/main.cf)');
  }

  #resolve(eps: readonly Endpoint[]): Endpoint[] {
    return eps.map((ep) => (ep.kind === 'unix' && !path.isAbsolute(ep.path) ? { ...ep, path: path.join(this.#stateDir, ep.path) } : ep));
  }

  #listener(protocol: 'policy' | 'milter' | 'control', factory: HandlerFactory, counter = this.#counter): Listener {
    return new Listener({
      protocol,
      shield: this.#shield,
      log: this.#logs.logger,
      counter,
      idleTimeout: () => this.#config.limits.idle_timeout,
      nextId: () => ++this.#nextId,
      maxWriteBuffer: this.#config.limits.max_write_buffer,
      outbox: this.#outbox,
      factory: (conn) => {
        this.metrics.connected(protocol);
        return factory(conn);
      },
    });
  }

  /** The sluicectl socket; its own small connection cap, so an overload never locks the admin out. */
  async #openControl(): Promise<void> {
    const ctl = commands({
      engine: this.engine,
      policy: () => this.#config.policy,
      status: () => this.status(),
      stats: () => statsReport(this.metrics.registry),
      reload: () => this.reload(),
      snapshot: async () => ({ file: this.#keeper.file, entries: await this.#keeper.write() }),
      setLogLevel: (level) => { this.#logs.logger.level = level; this.log.info({ level }, 'log level set by sluicectl'); },
    }, this.#clock.now);
    const cap = new ConnectionCounter(() => this.#config.control.max_connections, this.#shield, () => this.log);
    this.#control = this.#listener('control', controlHandler(this.#shield, ctl), cap);
    const ep: Endpoint = { kind: 'unix', path: this.controlSocket, text: `unix:${this.controlSocket}` };
    await this.#control.open([ep], this.#config.control.socket_mode);
  }

  status(): Record<string, unknown> {
    const s = this.engine.stats();
    return statusReport({
      version: VERSION, startedAt: this.#started, now: this.#clock.now(), mode: this.#config.mode,
      config: this.#opts.configFile ?? '(built-in defaults)', stateDir: this.#stateDir, listen: this.endpoints, control: this.controlSocket,
      metrics: this.#metricsUrl ?? null, connectionsOpen: this.#counter.open, holdsInProgress: s.holdsActive, holdsRefused: s.holdsRefused,
      reputationEntries: this.engine.store.size, sessions: s.sessions, errors: this.errorCounts,
    });
  }

  /** The counters, as sluicectl stats shows them. */
  stats(): Promise<Record<string, unknown>> {
    return statsReport(this.metrics.registry);
  }

  async #openListeners(): Promise<void> {
    const report = this.#report;
    this.#policy = this.#listener('policy', policyHandler({
      shield: this.#shield,
      engine: this.engine,
      config: () => this.#config,
      repeats: this.#repeats,
      outcomes: this.#outcomes,
      answered: (conn, event, verdict, heldMs, observed) => report.answered(conn.log, event, verdict, heldMs, observed),
      abandoned: (conn, o) => report.abandoned(conn.log, o),
    }));
    this.#milter = this.#listener('milter', milterHandler({
      shield: this.#shield,
      engine: this.engine,
      settings: () => this.#config.milter,
      failMode: () => this.#config.fail_mode,
      mode: () => this.#config.mode,
      answered: (conn, event, verdict, heldMs, observed) => report.answered(conn.log, event, verdict, heldMs, observed),
      abandoned: (conn, o) => report.abandoned(conn.log, o),
    }));
    await this.#policy.open(this.#resolve(this.#config.policy.listen), this.#config.policy.socket_mode);
    await this.#milter.open(this.#resolve(this.#config.milter.listen), this.#config.milter.socket_mode);
  }

  #protocols(): Listener[] {
    return [this.#policy, this.#milter].filter((l) => l !== undefined);
  }

  #closeListeners(): void {
    for (const l of this.#protocols()) l.stopAccepting();
  }

  #installSignals(): void {
    const on = (sig: NodeJS.Signals, fn: () => unknown): void => {
      const ctx: ShieldContext = { label: `signal:${sig}` };
      const h = this.#shield.wrap(ctx, 'signal', fn);
      process.on(sig, h);
      this.#unhook.push(() => process.off(sig, h));
    };
    on('SIGHUP', () => this.reload());
    on('SIGUSR1', () => { this.#logs.reopen(); this.log.info('log file reopened'); });
    const drain = (sig: string) => async () => {
      // One stop is enough: a second signal (Ctrl-C under `npm start` reaches
      // both npm, which passes it on, and sluiced) changes nothing.
      if (this.#stopping) return;
      this.log.info({ signal: sig }, 'draining');
      await this.stop();
      this.#opts.onStopped?.();
    };
    on('SIGTERM', drain('SIGTERM'));
    on('SIGINT', drain('SIGINT'));
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
    for (const l of this.#protocols()) l.setIdleTimeout(next.limits.idle_timeout);
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
    this.#closeListeners();
    for (const l of this.#protocols()) l.flushAll();
    // Decisions still in flight (a slow rule) finish on their own time: polled
    // in real time, since an injected clock may stand still.
    for (let waited = 0; this.#protocols().some((l) => l.busy > 0) && waited < this.#config.limits.drain_timeout; waited += 20) {
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const l of this.#protocols()) l.closeAll();
    this.#control?.stopAccepting();
    this.#control?.closeAll();
    this.metrics.close();
    this.#lag.stop();
    this.#shield.clear(this.#tick);
    this.#tick = undefined;
    this.#keeper.stop();
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
    this.#closeListeners();
    for (const l of this.#protocols()) { l.flushAll(); l.closeAll(); }
    try {
      await this.#openListeners();
      this.#breaker.reset();
      this.log.warn({ listen: this.endpoints }, 'services restarted');
    } catch (err) {
      this.#shield.raise({ label: 'restart' }, err, 'timer');
      this.log.fatal('restart failed: stopping');
      await this.stop();
      this.#opts.onStopped?.();
    }
  }

  /** Sends an error to the shield as if a callback had thrown it (tests, control). */
  raise(ctx: ShieldContext, err: SluiceError | unknown): void {
    this.#shield.raise(ctx, err, 'control');
  }
}
