// services.ts - the sockets sluiced serves: the policy service, the milter,
// and the control socket for sluicectl.
//
// Wires each protocol's handler to a listener on its configured endpoints
// (relative unix: paths in the state directory), with the shared connection
// cap, the daemon's outbox and clock, and what is said of each answer. The
// control socket has a cap of its own (control.max_connections), so a flood
// of mail clients never locks the admin out. What the policy service keeps
// across its connections (the repeat check, how sessions ended) lives here
// too. The daemon opens, drains and closes them as one.
//
// Config keys: policy.listen, policy.socket_mode, policy.dedupe_*,
// milter.listen, milter.socket_mode, limits.max_connections,
// limits.idle_timeout, limits.max_write_buffer, rates.abandon_window,
// rates.max_entries, control.socket, control.socket_mode,
// control.max_connections.

import path from 'node:path';
import type { Config } from '../config/schema.js';
import type { Endpoint } from '../config/endpoint.js';
import type { Shield } from '../shield/shield.js';
import type { Logger } from '../log/logger.js';
import { ConnectionCounter, Listener, type Connection, type HandlerFactory } from '../net/listener.js';
import { Outbox } from '../net/outbox.js';
import { policyHandler } from '../policy/session.js';
import { RecentQuestions } from '../policy/repeats.js';
import { PolicyOutcomes } from '../policy/outcomes.js';
import { milterHandler } from '../milter/session.js';
import type { Engine, Outcome, StageEvent, Verdict } from '../engine/types.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Report } from '../metrics/report.js';
import { controlHandler, type Dispatch } from '../control/server.js';

export interface ServiceDeps {
  readonly config: () => Config;
  readonly stateDir: string;
  readonly shield: Shield;
  readonly log: () => Logger;
  readonly metrics: Metrics;
  readonly report: Report;
  readonly engine: Engine;
}

export class Services {
  readonly #deps: ServiceDeps;
  /** The connection cap across the policy and milter listeners. */
  readonly #counter: ConnectionCounter;
  readonly #outbox: Outbox;
  /** Shared by all policy connections: Postfix resends on a new connection. */
  readonly #repeats: RecentQuestions;
  readonly #outcomes: PolicyOutcomes;
  #nextId = 0;
  /** The log has said why policy sessions end unjudged. */
  #unjudgedSaid = false;
  #policy: Listener | undefined;
  #milter: Listener | undefined;
  #control: Listener | undefined;

  constructor(deps: ServiceDeps) {
    this.#deps = deps;
    const c = deps.config();
    this.#counter = new ConnectionCounter(() => deps.config().limits.max_connections, deps.shield, deps.log);
    this.#outbox = new Outbox(deps.shield);
    this.#repeats = new RecentQuestions(c.policy.dedupe_entries, () => deps.config().policy.dedupe_window);
    this.#outcomes = new PolicyOutcomes(deps.engine, c.rates.max_entries);
  }

  get openConnections(): number {
    return this.#counter.open;
  }

  /**
   * Once a second: policy sessions silent past rates.abandon_window are
   * concluded (and the abandoned ones reported). Policy sessions that end
   * unjudged (no end of message seen yet) are said once: with sluice asked
   * at RCPT alone, nothing is learned from endings.
   */
  tick(now: number): void {
    const { config, report, log } = this.#deps;
    for (const o of this.#outcomes.due(now, config().rates.abandon_window)) report.abandoned(log(), o);
    if (this.#unjudgedSaid || this.#outcomes.unjudged === 0) return;
    this.#unjudgedSaid = true;
    log().info({ sessions: this.#outcomes.unjudged }, 'policy sessions end without an end-of-message request: abandonment is not learned until smtpd_end_of_data_restrictions asks sluice (contrib/postfix/main.cf)');
  }

  /** Bound endpoints per protocol (real ports when 0 was asked for). */
  get endpoints(): { policy: string[]; milter: string[] } {
    return { policy: this.#policy?.bound ?? [], milter: this.#milter?.bound ?? [] };
  }

  /** Opens the policy and milter endpoints; throws a CONFIG_LISTEN error naming one that cannot be. */
  async open(): Promise<void> {
    const { config, shield, engine, report } = this.#deps;
    // What is said of each answer and each abandoned session, the same for both protocols.
    const said = {
      answered: (conn: Connection, event: StageEvent | undefined, verdict: Verdict, heldMs: number, observed: boolean) => report.answered(conn.log, event, verdict, heldMs, observed),
      abandoned: (conn: Connection, o: Outcome) => report.abandoned(conn.log, o),
    };
    this.#policy = this.#listener('policy', policyHandler({ shield, engine, config, repeats: this.#repeats, outcomes: this.#outcomes, ...said }));
    this.#milter = this.#listener('milter', milterHandler({
      shield, engine, ...said,
      settings: () => config().milter,
      scanHeader: () => config().feedback,
      failMode: () => config().fail_mode,
      mode: () => config().mode,
    }));
    const c = config();
    await this.#policy.open(this.#resolve(c.policy.listen), c.policy.socket_mode);
    await this.#milter.open(this.#resolve(c.milter.listen), c.milter.socket_mode);
  }

  /** Opens the sluicectl socket at `socket`, answering with `dispatch`. */
  async openControl(socket: string, dispatch: Dispatch): Promise<void> {
    const { config, shield, log } = this.#deps;
    const cap = new ConnectionCounter(() => config().control.max_connections, shield, log);
    this.#control = this.#listener('control', controlHandler(shield, dispatch), cap);
    await this.#control.open([{ kind: 'unix', path: socket, text: `unix:${socket}` }], config().control.socket_mode);
  }

  /** The policy and milter listeners, as they are now. */
  get #protocols(): Listener[] {
    return [this.#policy, this.#milter].filter((l) => l !== undefined);
  }

  /** Stops accepting policy and milter connections; open ones carry on. */
  stopAccepting(): void {
    for (const l of this.#protocols) l.stopAccepting();
  }

  /** Answers every held reply now. */
  flushAll(): void {
    for (const l of this.#protocols) l.flushAll();
  }

  /** Policy and milter connections still deciding or holding. */
  get busy(): number {
    return this.#protocols.reduce((n, l) => n + l.busy, 0);
  }

  /** Closes every policy and milter connection. */
  closeAll(): void {
    for (const l of this.#protocols) l.closeAll();
  }

  /**
   * Stops the policy and milter service: no new connections, held replies
   * answered now, decisions still in flight (a slow rule) given up to
   * `waitMs` (polled in real time: an injected clock may stand still), then
   * every connection closed. A drain, a failed start and the breaker's
   * restart all stop this way.
   */
  async close(waitMs: number): Promise<void> {
    this.stopAccepting();
    this.flushAll();
    for (let waited = 0; this.busy > 0 && waited < waitMs; waited += 20) {
      await new Promise((r) => setTimeout(r, 20));
    }
    this.closeAll();
  }

  closeControl(): void {
    this.#control?.stopAccepting();
    this.#control?.closeAll();
  }

  setIdleTimeout(ms: number): void {
    for (const l of this.#protocols) l.setIdleTimeout(ms);
  }

  #resolve(eps: readonly Endpoint[]): Endpoint[] {
    return eps.map((ep) => (ep.kind === 'unix' && !path.isAbsolute(ep.path) ? { ...ep, path: path.join(this.#deps.stateDir, ep.path) } : ep));
  }

  #listener(protocol: 'policy' | 'milter' | 'control', factory: HandlerFactory, counter = this.#counter): Listener {
    const { config, shield, log, metrics } = this.#deps;
    return new Listener({
      protocol, shield, counter, outbox: this.#outbox,
      log: log(),
      idleTimeout: () => config().limits.idle_timeout,
      nextId: () => ++this.#nextId,
      maxWriteBuffer: config().limits.max_write_buffer,
      factory: (conn) => {
        metrics.connected(protocol);
        return factory(conn);
      },
    });
  }
}
