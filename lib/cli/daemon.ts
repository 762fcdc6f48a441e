// daemon.ts - sluiced's life cycle: start, reload, drain, restart.
//
// Builds everything from a validated config and passes it in: the shield and
// its handler, the logger, the engine, the protocol listeners. Signals enter
// through the shield like any other event: SIGHUP reloads (a broken file keeps
// the running config and logs every problem), SIGTERM/SIGINT drain (stop
// accepting, answer held replies now, wait for in-flight work up to
// limits.drain_timeout, close), SIGUSR1 reopens the log file. The circuit
// breaker restarts the listeners in place, never silently.

import path from 'node:path';
import { loadConfig, formatProblem, keepStartOnly, type LoadResult } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { Endpoint } from '../config/endpoint.js';
import { CATALOGUE, ConfigError, type SluiceError } from '../shield/errors.js';
import { LoopLag } from '../shield/lag.js';
import { Overload } from '../shield/overload.js';
import { Shield, type ShieldContext } from '../shield/shield.js';
import { CircuitBreaker } from '../shield/breaker.js';
import { createLogger, type LogHandle, type Logger } from '../log/logger.js';
import { ConnectionCounter, Listener, type Connection, type HandlerFactory } from '../net/listener.js';
import { policyHandler } from '../policy/session.js';
import { RecentQuestions } from '../policy/repeats.js';
import { milterHandler } from '../milter/session.js';
import { ReputationEngine } from '../engine/engine.js';
import type { Engine, StageEvent, Verdict } from '../engine/types.js';
import { readSnapshot, setAside, writeSnapshot, SnapshotError } from '../reputation/snapshot.js';
import type { ListEntry } from '../engine/lists.js';
import { exceptionHandler } from './exceptions.js';
import { Metrics } from '../metrics/metrics.js';
import { controlHandler } from '../control/server.js';
import { commands } from '../control/commands.js';
import type { Outcome } from '../engine/types.js';
import { ensureStateDir, stateDirFor } from './state-dir.js';
import { VERSION } from './version.js';


export interface DaemonOptions {
  readonly configFile?: string;
  readonly logLevel?: string;
  /** Replaces the engine (tests wire in their own rules here). */
  readonly engine?: Engine;
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
  readonly #shield = new Shield();
  readonly #engine: Engine;
  /** The reputation engine, unless a test wired in its own. */
  readonly reputation: ReputationEngine | undefined;
  #timers: NodeJS.Timeout[] = [];
  readonly #lag = new LoopLag();
  /** Holds shed while the event loop lags, and refused while the budget is spent. */
  readonly #lagging = new Overload(this.#shield, () => this.log, 'OVERLOAD_LOOP_LAG', 'the event loop keeps up again: holding replies again');
  readonly #budgetSpent = new Overload(this.#shield, () => this.log, 'OVERLOAD_HOLD_BUDGET', 'hold budget available again');
  #snapshotting: Promise<void> | undefined;
  readonly #breaker: CircuitBreaker;
  readonly #counter: ConnectionCounter;
  readonly #repeats: RecentQuestions;
  readonly errorCounts = new Map<number, number>();
  readonly metrics: Metrics;
  readonly #started = Date.now();
  #control: Listener | undefined;
  #metricsUrl: string | undefined;
  #listeners: Listener[] = [];
  #nextId = 0;
  #stopping: Promise<void> | undefined;
  #unhook: (() => void)[] = [];

  private constructor(config: Config, stateDir: string, logs: LogHandle, opts: DaemonOptions) {
    this.#config = config;
    this.#stateDir = stateDir;
    this.#logs = logs;
    this.#opts = opts;
    this.reputation = opts.engine ? undefined : new ReputationEngine(() => this.#config, Date.now);
    this.#engine = opts.engine ?? this.reputation!;
    this.#breaker = new CircuitBreaker(config.shield.breaker_limit, config.shield.breaker_window, Date.now);
    this.#counter = new ConnectionCounter(() => this.#config.limits.max_connections, this.#shield, () => this.log);
    this.#repeats = new RecentQuestions(config.policy.dedupe_entries, () => this.#config.policy.dedupe_window);
    this.metrics = new Metrics({
      lruSize: () => this.reputation?.store.size ?? 0,
      lruEvictions: () => this.reputation?.store.evictions ?? 0,
      holdsActive: () => this.reputation?.stats().holdsActive ?? 0,
      openConnections: () => this.#counter.open,
      loopLagMs: () => this.#lag.lastMs,
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
    await d.#restore();
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
    return { policy: this.#listeners[0]?.bound ?? [], milter: this.#listeners[1]?.bound ?? [] };
  }

  get openConnections(): number {
    return this.#counter.open;
  }

  get snapshotFile(): string {
    return path.resolve(this.#stateDir, this.#config.reputation.snapshot_file);
  }

  /** Loads the last snapshot; a corrupt or foreign one is set aside and sluice starts empty. */
  async #restore(): Promise<void> {
    const rep = this.reputation;
    if (!rep) return;
    const file = this.snapshotFile;
    try {
      let n = 0;
      const snap = await readSnapshot<ListEntry>(file, (key, values, at) => { if (rep.store.put(key, values, at)) n++; });
      if (!snap) return;
      rep.lists.restore(snap.lists, Date.now());
      this.log.info({ file, entries: n, written: new Date(snap.written).toISOString() }, 'reputation restored');
    } catch (err) {
      if (!(err instanceof SnapshotError)) throw err;
      const aside = await setAside(file, Date.now()).catch(() => undefined);
      this.log.warn({ code: 302, err: 'DECISION_STORE_FAILED', file, moved_to: aside }, `snapshot set aside, starting empty: ${err.message}`);
    }
  }

  /** Writes the reputation snapshot (atomically); one at a time. */
  snapshot(): Promise<void> {
    const rep = this.reputation;
    if (!rep) return Promise.resolve();
    this.#snapshotting ??= (async () => {
      const t0 = Date.now();
      const file = this.snapshotFile;
      try {
        const n = await writeSnapshot(file, rep.store, rep.lists.dynamic(Date.now()), Date.now());
        this.log.info({ file, entries: n, ms: Date.now() - t0 }, 'snapshot written');
      } catch (err) {
        this.log.error({ code: 302, err: 'DECISION_STORE_FAILED', file }, `snapshot not written: ${(err as Error).message}`);
      } finally {
        this.#snapshotting = undefined;
      }
    })();
    return this.#snapshotting;
  }

  /**
   * Once a second: the event loop's lag is read (for the metrics gauge, and
   * to shed holds past limits.max_loop_lag), silent policy sessions become
   * outcomes, and a spent hold budget is noticed. Snapshots on their own timer.
   * Policy sessions that end unjudged (no end of message seen yet) are said
   * once: with sluice asked at RCPT alone, nothing is learned from endings.
   */
  #startTimers(): void {
    const rep = this.reputation;
    let refused = rep?.holdsRefused ?? 0;
    let unjudgedSaid = false;
    const tick = this.#shield.setInterval({ label: 'timer:tick' }, 1000, () => {
      const lagMs = this.#lag.read();
      if (!rep) return;
      for (const o of rep.tick()) this.#abandoned(o, this.log);
      const unjudged = unjudgedSaid ? 0 : rep.stats().unjudged;
      if (unjudged > 0) {
        unjudgedSaid = true;
        this.log.info({ sessions: unjudged }, 'policy sessions end without an end-of-message request: abandonment is not learned until smtpd_end_of_data_restrictions asks sluice (contrib/postfix/main.cf)');
      }
      const limit = this.#config.limits.max_loop_lag;
      rep.shedHolds = limit > 0 && lagMs > limit;
      this.#lagging.set(rep.shedHolds, () => `the event loop ran ${Math.round(lagMs)} ms late (limits.max_loop_lag ${limit} ms): holding no replies`, { lag_ms: Math.round(lagMs) });
      const t = this.#config.tarpit;
      this.#budgetSpent.set(rep.holdsRefused > refused, () => `hold budget spent (tarpit.budget ${t.budget}, tarpit.budget_per_network ${t.budget_per_network}): answering at once`, { refused: rep.holdsRefused });
      refused = rep.holdsRefused;
    });
    this.#timers.push(tick);
    if (rep) this.#timers.push(this.#shield.setInterval({ label: 'timer:snapshot' }, this.#config.reputation.snapshot_interval, () => this.snapshot()));
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
      maxWriteBuffer: 256 * 1024,
      factory: (conn) => {
        this.metrics.connected(protocol);
        return factory(conn);
      },
    });
  }

  get controlSocket(): string {
    return path.resolve(this.#stateDir, this.#config.control.socket);
  }

  /** The sluicectl socket; its own small connection cap, so an overload never locks the admin out. */
  async #openControl(): Promise<void> {
    const ctl = commands({
      engine: this.reputation,
      policy: () => this.#config.policy,
      status: () => this.status(),
      stats: () => this.stats(),
      reload: () => this.reload(),
      snapshot: async () => { await this.snapshot(); return { file: this.snapshotFile, entries: this.reputation?.store.size ?? 0 }; },
      setLogLevel: (level) => { this.#logs.logger.level = level; this.log.info({ level }, 'log level set by sluicectl'); },
    }, Date.now);
    this.#control = this.#listener('control', controlHandler(this.#shield, ctl), new ConnectionCounter(() => 16, this.#shield, () => this.log));
    const ep: Endpoint = { kind: 'unix', path: this.controlSocket, text: `unix:${this.controlSocket}` };
    await this.#control.open([ep], this.#config.control.socket_mode);
  }

  status(): Record<string, unknown> {
    const rep = this.reputation;
    const mem = process.memoryUsage();
    const mib = (n: number): number => Math.round(n / 2 ** 20);
    return {
      version: VERSION, pid: process.pid, uptime_s: Math.round((Date.now() - this.#started) / 1000), started: new Date(this.#started).toISOString(),
      mode: this.#config.mode, config: this.#opts.configFile ?? '(built-in defaults)', state_dir: this.#stateDir, listen: this.endpoints, control: this.controlSocket, metrics: this.#metricsUrl ?? null,
      connections_open: this.#counter.open, holds_in_progress: rep?.stats().holdsActive ?? 0, holds_refused: rep?.stats().holdsRefused ?? 0,
      reputation_entries: rep?.store.size ?? 0, sessions: rep?.stats().sessions ?? 0,
      rss_mib: mib(mem.rss), heap_used_mib: mib(mem.heapUsed), heap_total_mib: mib(mem.heapTotal), buffers_mib: mib(mem.arrayBuffers),
      errors: Object.fromEntries(this.errorCounts),
    };
  }

  /** The counters, as sluicectl stats shows them; sums of seconds to the millisecond (no float noise). */
  async stats(): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    for (const m of await this.metrics.registry.getMetricsAsJSON()) {
      out[m.name.replace(/^sluice_/, '')] = (m.values as { labels: Record<string, string | number>; value: number; metricName?: string }[])
        .filter((v) => !v.metricName || v.metricName.endsWith('_sum') || v.metricName.endsWith('_count') || !v.metricName.includes('_bucket'))
        .map((v) => ({ ...v.labels, ...(v.metricName && v.metricName !== m.name ? { series: v.metricName.replace(/^sluice_/, '') } : {}), value: Math.round(v.value * 1000) / 1000 }));
    }
    return out;
  }

  async #openListeners(): Promise<void> {
    const policy = this.#listener('policy', policyHandler({
      shield: this.#shield,
      engine: this.#engine,
      config: () => this.#config,
      repeats: this.#repeats,
      answered: (conn, event, verdict, heldMs, observed) => this.#logVerdict(conn, event, verdict, heldMs, observed),
      abandoned: (conn, o) => this.#abandoned(o, conn.log),
    }));
    const milter = this.#listener('milter', milterHandler({
      shield: this.#shield,
      engine: this.#engine,
      settings: () => this.#config.milter,
      failMode: () => this.#config.fail_mode,
      mode: () => this.#config.mode,
      answered: (conn, event, verdict, heldMs, observed) => this.#logVerdict(conn, event, verdict, heldMs, observed),
      abandoned: (conn, o) => this.#abandoned(o, conn.log),
    }));
    this.#listeners = [policy, milter];
    await policy.open(this.#resolve(this.#config.policy.listen), this.#config.policy.socket_mode);
    await milter.open(this.#resolve(this.#config.milter.listen), this.#config.milter.socket_mode);
  }

  /**
   * One line per verdict that is not a plain pass, and per held reply,
   * joinable with Postfix's log. In observe mode, per verdict that would
   * have been one, marked would_have, with the hold it would have had.
   */
  #logVerdict(conn: Connection, event: StageEvent | undefined, verdict: Verdict, heldMs: number, observed: boolean): void {
    if (!event) return;
    this.metrics.verdict(event.stage, verdict.kind, event.via);
    if (heldMs > 0) {
      this.metrics.holds.inc();
      this.metrics.heldSeconds.observe(heldMs / 1000);
    }
    const plain = verdict.kind === 'pass' && heldMs === 0 && (!observed || verdict.delayMs === 0);
    if (plain) return;
    if (observed) this.metrics.wouldHaveBeen(event.stage, verdict.kind === 'pass' ? 'hold' : verdict.kind, event.via);
    conn.log.info({
      queue_id: event.queueId || undefined, client: event.client, stage: event.stage, verdict: verdict.kind,
      rule: verdict.rule, score: verdict.score, held_ms: heldMs, code: verdict.reply?.code,
      ...(observed ? { would_have: true, would_hold_ms: verdict.delayMs } : {}),
    }, observed ? `${event.stage} would have been ${verdict.kind === 'pass' ? 'held' : verdict.kind} (mode observe: answered at once)` : `${event.stage} ${verdict.kind}`);
  }

  /**
   * A count per abandoned session (milter: at close; policy: when the next
   * session on its connection begins, or after the silence window), and a log
   * line: at info after a held reply (the zombie signal), else at debug.
   */
  #abandoned(o: Outcome, log: Logger): void {
    if (o.kind !== 'abandoned') return;
    this.metrics.abandonedAt(o.event.stage, o.held, o.event.via);
    const level = o.held ? 'info' : 'debug';
    if (!log.isLevelEnabled(level)) return;
    log[level]({ client: o.event.client, stage: o.event.stage, held: o.held, via: o.event.via, queue_id: o.event.queueId || undefined }, `abandoned at ${o.event.stage}`);
  }

  #closeListeners(): void {
    for (const l of this.#listeners) l.stopAccepting();
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
    this.reputation?.reloaded();
    this.#logs.logger.level = next.log.level;
    for (const l of this.#listeners) l.setIdleTimeout(next.limits.idle_timeout);
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
    for (const l of this.#listeners) l.flushAll();
    const deadline = Date.now() + this.#config.limits.drain_timeout;
    while (this.#listeners.some((l) => l.busy > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const l of this.#listeners) l.closeAll();
    this.#control?.stopAccepting();
    this.#control?.closeAll();
    this.metrics.close();
    this.#lag.stop();
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    await this.snapshot();
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
    await this.snapshot();
    this.log.error({ code: 404, err: 'OVERLOAD_BREAKER', limit: this.#config.shield.breaker_limit }, 'circuit breaker tripped: restarting services');
    this.#closeListeners();
    for (const l of this.#listeners) { l.flushAll(); l.closeAll(); }
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
