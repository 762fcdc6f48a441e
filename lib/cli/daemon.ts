// daemon.ts - sluiced's life cycle: start, reload, drain, restart.
//
// Loads and validates the config, makes the logger and the parts (parts.ts:
// the clock, shield, engine, lookups, listeners, keeper, load shedding),
// and registers the shield's exception handler. Signals enter
// through the shield like any other event: SIGHUP reloads (a broken file keeps
// the running config and logs every problem), SIGTERM/SIGINT drain (stop
// accepting, answer held replies now, wait for in-flight work up to
// limits.drain_timeout, close), SIGUSR1 reopens the log file. The circuit
// breaker restarts the listeners in place, never silently. Once a second the
// parts do their periodic work.

import path from 'node:path';
import { configFailure, loadConfig, formatProblem, keepStartOnly, withLogLevel } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { CATALOGUE } from '../shield/errors.js';
import { CircuitBreaker } from '../shield/breaker.js';
import { createLogger, type LogHandle, type Logger } from '../log/logger.js';
import type { ReputationEngine } from '../engine/engine.js';
import type { Rule } from '../engine/types.js';
import type { Metrics } from '../metrics/metrics.js';
import { SYSTEM_CLOCK, type Clock } from '../util/clock.js';
import { statsReport } from '../control/report.js';
import { exceptionHandler } from './exceptions.js';
import { Parts } from './parts.js';
import { installSignals } from './signals.js';
import { ensureStateDir, stateDirFor } from './state-dir.js';

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
  readonly #parts: Parts;
  readonly #breaker: CircuitBreaker;
  readonly errorCounts = new Map<number, number>();
  #metricsUrl: string | undefined;
  #stopping: Promise<void> | undefined;
  #unhook: (() => void)[] = [];

  private constructor(config: Config, stateDir: string, logs: LogHandle, opts: DaemonOptions) {
    this.#config = config;
    this.#stateDir = stateDir;
    this.#logs = logs;
    this.#opts = opts;
    const clock = opts.clock ?? SYSTEM_CLOCK;
    this.#parts = new Parts({ config: () => this.#config, stateDir, clock, log: () => this.log, rules: opts.rules });
    this.#breaker = new CircuitBreaker(config.shield.breaker_limit, config.shield.breaker_window, clock.now);
    this.#parts.shield.register(exceptionHandler({
      log: () => this.#logs.logger,
      breaker: this.#breaker,
      counts: this.errorCounts,
      counted: (code, name) => this.metrics.exceptions.inc({ code: String(code), name }),
      onTrip: () => { void this.#restart(); },
    }));
  }

  get engine(): ReputationEngine {
    return this.#parts.engine;
  }

  get metrics(): Metrics {
    return this.#parts.metrics;
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
    await d.#parts.keeper.restore();
    try {
      d.#parts.connect();
      await d.#parts.services.open();
      await d.#parts.services.openControl(d.controlSocket, d.#parts.commands({
        status: () => d.status(),
        reload: async () => ((await d.reload()) ? [] : d.reloadProblems),
        setLogLevel: (level) => { d.#logs.logger.level = level; d.log.info({ level }, 'log level set by sluicectl'); },
      }));
      if (config.metrics.listen) d.#metricsUrl = await d.metrics.listen(config.metrics.listen);
    } catch (err) {
      // A store connection or a listener left open would keep the process from exiting.
      await d.#parts.close({ drainMs: 0, snapshot: false }).catch(() => {});
      throw err;
    }
    d.#unhook.push(d.#parts.shield.installProcessHooks());
    if (opts.signals) {
      d.#unhook.push(installSignals(d.#parts.shield, {
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
    d.#parts.startTimers();
    logs.logger.info({ listen: d.endpoints, control: d.controlSocket, metrics: d.#metricsUrl ?? null, state_dir: stateDir, config: loaded.file }, `sluiced ready: policy on ${d.endpoints.policy.join(', ') || '(none)'}, milter on ${d.endpoints.milter.join(', ') || '(none)'}`);
    return d;
  }

  get log(): Logger {
    return this.#logs.logger;
  }

  /** Bound endpoints per protocol (real ports when 0 was asked for). */
  get endpoints(): { policy: string[]; milter: string[] } {
    return this.#parts.services.endpoints;
  }

  get openConnections(): number {
    return this.#parts.services.openConnections;
  }

  get controlSocket(): string {
    return path.resolve(this.#stateDir, this.#config.control.socket);
  }

  /** What the last reload refused, one line each ([] when it was taken). */
  reloadProblems: readonly string[] = [];

  /** The counters, as sluicectl stats shows them. */
  stats(): Promise<Record<string, unknown>> {
    return statsReport(this.metrics.registry);
  }

  status(): Record<string, unknown> {
    return this.#parts.status({ configFile: this.#opts.configFile, control: this.controlSocket, metricsUrl: this.#metricsUrl, errors: this.errorCounts });
  }

  /** Rereads the config file; on any problem keeps the running config. True when swapped; else reloadProblems says why. */
  async reload(): Promise<boolean> {
    const loaded = await loadConfig(this.#opts.configFile);
    this.reloadProblems = loaded.ok ? [] : loaded.problems.map(formatProblem);
    if (!loaded.ok) {
      for (const p of loaded.problems) this.log.error({ code: CATALOGUE[p.symbol].code, err: p.symbol }, `reload refused: ${formatProblem(p)}`);
      this.log.warn('reload refused: keeping the running configuration');
      return false;
    }
    const { config: next, kept } = keepStartOnly(this.#config, withLogLevel(loaded.config, this.#opts.logLevel));
    if (kept.length > 0) this.log.warn({ keys: kept }, `read at start only, so kept as running until the next start: ${kept.join(', ')}`);
    this.#config = next;
    this.#logs.logger.level = next.log.level;
    this.#parts.reload();
    this.log.info({ config: loaded.file }, 'configuration reloaded');
    return true;
  }

  /** Drain: stop accepting, answer held replies now, wait for in-flight work, close. */
  stop(): Promise<void> {
    this.#stopping ??= this.#drain();
    return this.#stopping;
  }

  async #drain(): Promise<void> {
    await this.#parts.close({ drainMs: this.#config.limits.drain_timeout, snapshot: true });
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
    await this.#parts.keeper.write();
    this.log.error({ code: CATALOGUE.OVERLOAD_BREAKER.code, err: 'OVERLOAD_BREAKER', limit: this.#config.shield.breaker_limit }, 'circuit breaker tripped: restarting services');
    await this.#parts.services.close(0);
    try {
      await this.#parts.services.open();
      this.#breaker.reset();
      this.log.warn({ listen: this.endpoints }, 'services restarted');
    } catch (err) {
      this.#parts.shield.raise({ label: 'restart' }, err, 'timer');
      this.log.fatal('restart failed: stopping');
      await this.stop();
      this.#opts.onStopped?.();
    }
  }
}
