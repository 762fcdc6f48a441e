// run.ts - a scenario run against sluice's real engine on a simulated clock.
//
// The model (sluice-scenario(5) is the contract): each client sends new
// messages at exponential intervals (`every`) until `duration`; each try of
// a message connects to one of the MX hosts, drawn at random. A host with
// every smtpd process busy does not answer: the connection waits for a free
// one, and the client gives up after its `patience` (a failed try). A
// session then goes stage by stage (connect, helo, mail, rcpt per
// recipient, data, end of headers, end of message), asking the host's
// engine at each exactly as the milter does and reporting its outcome as
// the milter does (engine/drive.ts: conclude). Each command costs a round
// trip (`rtt`), the message its transfer time (`size` / `bandwidth`). A
// held reply keeps the session and its process for the hold; a client whose
// reply comes later than its patience hangs up at its patience (abandoned
// under a hold) while the process stays until the reply. A 4xx ends the
// try; a 5xx ends the message (rejected). A share of sessions
// (`abandon_after_rcpt`) drop after RCPT; the rest QUIT (`quit`: a drop
// frees the process one round trip sooner). Every failed try is tried again
// after the next wait of `retry`; a message out of retries is lost. Nothing
// is decided from a population's kind: it only says where a message is
// counted. With a `scanner`, each accepted message gets a verdict a
// `delay` later, through the daemon's own path (lib/feedback). Real I/O (DNS lists, the fleet store) is awaited with the
// simulated clock standing still, and the fleet's writes are flushed every
// fleet.flush_interval of simulated time before the run goes on: the same
// seed gives the same report. Not quite with a scanner and a fleet store
// together: each verdict's claim and what it changes then go through the
// real redis-server as they come, and such a run varies a little from one
// run to the next (measured: zombies accepted 3.7 to 6.3 %).

import type { Config } from '../config/schema.js';
import { deepFreeze } from '../config/yaml.js';
import { conclude } from '../engine/drive.js';
import type { Rule, StageEvent, Verdict } from '../engine/types.js';
import { ManualClock, SYSTEM_CLOCK, type Timer } from '../util/clock.js';
import { Host, type Calls } from './host.js';
import { Agenda } from './queue.js';
import { populationReport, sum, Tally, type Report } from './report.js';
import type { Population, Scenario } from './scenario.js';
import { pause, startRbldnsd, startRedisServer, type Running, type Zone } from './servers.js';
import { exponential, populate, random, type Client } from './world.js';

export interface SimulateOptions {
  /** The config under test. */
  readonly config: Config;
  /** An existing fleet store (redis:// URL) instead of a private redis-server. */
  readonly store?: string;
  /** Called now and then with the share of simulated time done (0 to 1). */
  readonly progress?: (done: number) => void;
  /** Put in front of each host's engine (bench:simulate's reference answers every question itself). */
  readonly rules?: readonly Rule[];
}

const START = 1_800_000_000_000;

interface Message {
  readonly client: Client;
  readonly pop: Population;
  readonly tally: Tally;
  readonly first: number;
  /** Tries that failed so far. */
  failed: number;
  deferred: boolean;
  /** Time lost to the client's own broken sessions and the retries after them (not added by sluice). */
  own: number;
}

/** One session: the message it carries, on which host, since when, at which step. */
interface Session {
  readonly msg: Message;
  readonly host: Host;
  readonly id: string;
  readonly start: number;
  /** Its queue id, as the MTA gives one from MAIL on. */
  readonly qid: string;
  step: number;
}

export async function simulate(s: Scenario, o: SimulateOptions): Promise<Report> {
  const rng = random(s.seed);
  const clients = populate(s, rng);
  const servers: Running[] = [];
  const calls: Calls = { store: 0, dns: 0, failed: 0 };
  const hosts: Host[] = [];
  try {
    const config = await configFor(s, o, clients, servers);
    const clock = new ManualClock(START);
    for (let i = 0; i < s.hosts.count; i++) hosts.push(new Host(i + 1, config, clock, s.hosts.smtpd_processes, calls, o.rules));
    for (const h of hosts) h.start();
    await storeUp(hosts);
    const tallies = s.populations.map(() => new Tally());
    await new Run(s, config, clock, rng, hosts, clients, tallies, o.progress).go();
    return {
      scenario: s.name, seed: s.seed, duration_s: s.duration / 1000,
      populations: s.populations.map((p, i) => populationReport(p.name, p.kind, tallies[i]!)),
      totals: (['legitimate', 'zombie'] as const).filter((k) => s.populations.some((p) => p.kind === k))
        .map((k) => populationReport(`all ${k}`, k, sum(tallies.filter((_, i) => s.populations[i]!.kind === k)))),
      hosts: hosts.map((h) => ({ host: h.index, sessions: h.sessions, peak_holds: h.peakHolds, peak_busy_processes: h.peakBusy, busy_process_seconds: Math.round(h.busyMs / 1000) })),
      store_calls: calls.store, dns_queries: calls.dns, lookups_failed: calls.failed,
    };
  } finally {
    for (const h of hosts) await h.close();
    for (const r of servers) r.stop();
  }
}

/** The config under test, pointed at the run's own DNS server and store (and at nothing else). */
async function configFor(s: Scenario, o: SimulateOptions, clients: Client[][], servers: Running[]): Promise<Config> {
  const c = o.config;
  let dns: string | undefined;
  if (s.dns_list !== undefined) {
    const listed = clients.flat().filter((x) => x.listed).map((x) => x.address);
    const v6 = listed.filter((a) => a.includes(':'));
    const zones: Zone[] = [{ name: s.dns_list, type: 'ip4set', data: [':127.0.0.2:listed by the simulation', ...listed.filter((a) => !a.includes(':'))] }];
    if (v6.length > 0) zones.push({ name: s.dns_list, type: 'ip6trie' as const, data: [':127.0.0.2:listed by the simulation', ...v6] });
    const r = await startRbldnsd(zones);
    servers.push(r);
    dns = r.server;
  }
  let store: string | undefined;
  if (s.hosts.fleet) {
    if (o.store !== undefined) store = o.store;
    else {
      const r = await startRedisServer();
      servers.push(r);
      store = r.url;
    }
  }
  return deepFreeze({
    ...c,
    // A run asks no DNS server but its own: with no DNS list in the scenario, the lists are off.
    dns: { ...c.dns, resolvers: dns === undefined ? [] : [dns] },
    dnsbl: dns === undefined ? { ...c.dnsbl, sites: [], rhsbl_sites: [] } : c.dnsbl,
    fleet: { ...c.fleet, url: store ?? '', sentinels: [], cluster: [], prefix: o.store !== undefined ? `${c.fleet.prefix}sim:${s.seed}:${process.pid}:` : c.fleet.prefix },
  });
}

async function storeUp(hosts: Host[]): Promise<void> {
  const deadline = SYSTEM_CLOCK.now() + 5000;
  while (hosts.some((h) => (h.fleet.status()?.['state'] ?? 'up') !== 'up')) {
    if (SYSTEM_CLOCK.now() > deadline) throw new Error('the fleet store did not come up within 5 s');
    await pause(20);
  }
}

class Run {
  readonly #agenda = new Agenda();
  /** A decision under way (lookups over real sockets): the agenda waits for it. */
  #waiting: Promise<void> | undefined;
  #seq = 0;

  constructor(
    private readonly s: Scenario, private readonly config: Config, private readonly clock: ManualClock,
    private readonly rng: () => number, private readonly hosts: Host[], private readonly clients: Client[][],
    private readonly tallies: Tally[], private readonly progress?: (done: number) => void,
  ) {}

  async go(): Promise<void> {
    const end = START + this.s.duration;
    this.clients.forEach((list, pop) => {
      const p = this.s.populations[pop]!;
      for (const c of list) this.#arrivals(c, p, this.tallies[pop]!, end);
    });
    this.#second(START + 1000);
    let n = 0;
    for (let item = this.#agenda.next(); item !== undefined; item = this.#agenda.next()) {
      if (item.at > this.clock.now()) this.clock.advance(item.at - this.clock.now());
      item.run();
      if (this.#waiting !== undefined) await this.#settle();
      if ((++n & 0xffff) === 0) this.progress?.(Math.min(1, (this.clock.now() - START) / this.s.duration));
    }
    for (const h of this.hosts) await h.fleet.flushed();
  }

  /** Once a simulated second while anything else is on the agenda: the daemon's tick, and the fleet's writes flushed. */
  #second(at: number): void {
    this.#agenda.at(at, () => {
      for (const h of this.hosts) h.engine.tick();
      const due = (at - START) % this.config.fleet.flush_interval < 1000 && this.hosts.some((h) => h.fleet.writing());
      if (due) this.#waiting = Promise.all(this.hosts.map((h) => h.fleet.flushed())).then(() => heardAll(this.hosts));
      if (this.#agenda.size > 0) this.#second(at + 1000);
    });
  }

  /** Waits for real I/O; one that does not come within 2 s of real time is let go by moving the clock past the lookups' budgets. */
  async #settle(): Promise<void> {
    const w = this.#waiting!;
    let timer: Timer | undefined;
    const late = await Promise.race([w.then(() => false), new Promise<boolean>((r) => { timer = SYSTEM_CLOCK.setTimeout(() => r(true), 2000); })]);
    SYSTEM_CLOCK.clear(timer);
    if (late) {
      this.clock.advance(Math.max(this.config.dns.timeout, this.config.fleet.read_wait));
      await w;
    }
    if (this.#waiting === w) this.#waiting = undefined;
    else if (this.#waiting !== undefined) await this.#settle();
  }

  /** New messages from one client until the end. */
  #arrivals(c: Client, p: Population, tally: Tally, end: number): void {
    const at = this.clock.now() + exponential(this.rng, p.every);
    if (at >= end) return;
    this.#agenda.at(at, () => {
      tally.messages++;
      this.#try({ client: c, pop: p, tally, first: at, failed: 0, deferred: false, own: 0 });
      this.#arrivals(c, p, tally, end);
    });
  }

  /** One try of a message: a connection to a host, now or when a process is free. */
  #try(msg: Message): void {
    const host = this.hosts[Math.floor(this.rng() * this.hosts.length)]!;
    const w = { gone: false, start: () => this.#begin(msg, host) };
    if (host.connect(w)) {
      this.#begin(msg, host);
      return;
    }
    msg.tally.waited++;
    this.#agenda.at(this.clock.now() + msg.pop.patience, () => {
      if (w.gone) return;
      w.gone = true;
      this.#failed(msg);
    });
  }

  #begin(msg: Message, host: Host): void {
    msg.tally.sessions++;
    const n = ++this.#seq;
    const s: Session = { msg, host, id: `sim${host.index}:${n}`, start: this.clock.now(), qid: `${host.index}Q${n.toString(16).toUpperCase()}`, step: 0 };
    this.#ask(s);
  }

  /** The session's current step, asked of the engine now. */
  #ask(s: Session): void {
    const e = this.#event(s);
    const v = s.host.engine.decide(e);
    if (v instanceof Promise) this.#waiting = v.then((verdict) => this.#answered(s, e, verdict));
    else this.#answered(s, e, v);
  }

  #answered(s: Session, e: StageEvent, v: Verdict): void {
    const { msg, host } = s;
    const p = msg.pop;
    const t = this.clock.now();
    const replyAt = t + v.delayMs;
    if (v.delayMs > 0) {
      msg.tally.holds++;
      host.held();
    }
    if (v.rule === 'tarpit-budget-spent') msg.tally.holdsRefused++;
    const last = this.#steps(p) - 1;
    if (v.delayMs > p.patience) {
      // The client hangs up at its patience; smtpd waits for our reply all the same.
      msg.tally.holdsAbandoned++;
      this.#agenda.at(t + p.patience, () => {
        conclude(host.engine, e, { delivered: false, abandoned: true, held: true, lasted: p.patience });
        this.#failed(msg);
      });
      this.#agenda.at(replyAt, () => host.release(replyAt - s.start));
      return;
    }
    if (v.kind === 'defer' || v.kind === 'reject') {
      this.#agenda.at(replyAt, () => {
        conclude(host.engine, e, { delivered: false, abandoned: false });
        this.#close(s, p.rtt);
        if (v.kind === 'reject') msg.tally.rejected++;
        else {
          if (!msg.deferred) msg.tally.deferredOnce++;
          msg.deferred = true;
          this.#failed(msg);
        }
      });
      return;
    }
    if (s.step === last) {
      this.#agenda.at(replyAt, () => {
        conclude(host.engine, e, { delivered: true, abandoned: false });
        this.#close(s, p.rtt);
        this.#accepted(msg, replyAt);
        this.#scan(s, e);
      });
      return;
    }
    if (e.stage === 'rcpt' && s.step === last - 3 && p.abandon_after_rcpt > 0 && this.rng() < p.abandon_after_rcpt) {
      this.#agenda.at(replyAt, () => {
        conclude(host.engine, e, { delivered: false, abandoned: true, held: v.delayMs > 0, waitedOut: v.delayMs > 0 });
        host.release(replyAt - s.start);
        this.#failed(msg, s.start);
      });
      return;
    }
    const gap = e.stage === 'data' ? transfer(p) : e.stage === 'eoh' ? 0 : p.rtt;
    s.step++;
    this.#agenda.at(replyAt + gap, () => this.#ask(s));
  }

  /** The session ends: the client QUITs (one more round trip) or drops; its process is free. */
  #close(s: Session, rtt: number): void {
    const quits = s.msg.pop.quit >= 1 || this.rng() < s.msg.pop.quit;
    const at = this.clock.now() + (quits ? rtt : 0);
    if (at === this.clock.now()) s.host.release(at - s.start);
    else this.#agenda.at(at, () => s.host.release(at - s.start));
  }

  #accepted(msg: Message, at: number): void {
    const t = msg.tally;
    t.accepted++;
    if (msg.failed === 0) t.acceptedFirst++;
    t.delays.push(Math.max(0, at - msg.first - msg.own - unshaped(msg.pop)));
  }

  /**
   * The scanner's verdict on an accepted message, `delay` later, as rspamd's
   * metadata_exporter publishes it: to the host that took it, or with the
   * fleet store to every host (each subscribes to the channel). A spam
   * message is called spam with probability `catches`, a real one with
   * `false_positives`.
   */
  #scan(s: Session, e: StageEvent): void {
    const sc = this.s.scanner;
    if (sc === undefined || !sc.feedback) return;
    const spam = this.rng() < s.msg.pop.spam;
    const called = this.rng() < (spam ? sc.catches : sc.false_positives);
    const message = JSON.stringify({ ip: e.client, qid: e.queueId, action: called ? 'reject' : 'no action', score: called ? 15 : 0 });
    const to = this.s.hosts.fleet ? this.hosts : [s.host];
    this.#agenda.at(this.clock.now() + sc.delay, () => {
      for (const h of to) {
        h.feedback.take(message);
        h.feedback.drain();
      }
      this.#waiting = Promise.all(to.map((h) => h.feedback.settled())).then(() => undefined);
    });
  }

  /** A try failed: the next after the next wait of `retry`, or the message is lost. `own`: the client broke it off itself, in a session begun then. */
  #failed(msg: Message, own?: number): void {
    const wait = msg.pop.retry[msg.failed++];
    if (wait === undefined) {
      msg.tally.lost++;
      return;
    }
    if (own !== undefined) msg.own += this.clock.now() - own + wait;
    this.#agenda.at(this.clock.now() + wait, () => this.#try(msg));
  }

  /** connect, helo, mail, one rcpt per recipient, data, eoh, eom. */
  #steps(p: Population): number {
    return 6 + p.recipients;
  }

  #event(s: Session): StageEvent {
    const { client: c, pop: p } = s.msg;
    const i = s.step;
    const n = p.recipients;
    const stage = i === 0 ? 'connect' : i === 1 ? 'helo' : i === 2 ? 'mail' : i < 3 + n ? 'rcpt' : i === 3 + n ? 'data' : i === 4 + n ? 'eoh' : 'eom';
    return {
      stage, session: s.id, via: 'milter', mta: 'postfix', client: c.address, port: 40000 + (this.#seq % 20000), clientName: c.name,
      helo: i === 0 ? '' : c.helo, sender: i < 2 ? '' : `sender@${p.sender_domain}`, recipient: stage === 'rcpt' ? `user${i - 2}@example.net` : '',
      recipientCount: stage === 'rcpt' ? i - 3 : i > 2 ? n : 0, size: stage === 'eom' ? p.size : 0,
      queueId: i >= 2 ? s.qid : '', saslUser: '', tls: undefined, stress: false, repeat: false,
    };
  }
}

/** Waits (real time, 2 s at most) until every host has taken in every other host's published entries: the run goes on from the same state each time. */
async function heardAll(hosts: readonly Host[]): Promise<void> {
  if (hosts.length < 2 || hosts[0]!.fleet.status() === undefined) return;
  const deadline = SYSTEM_CLOCK.now() + 2000;
  const all = (): boolean => hosts.every((h) => hosts.every((o) => o === h || (h.fleet.shared().heard.get(o.fleet.id) ?? 0) >= o.fleet.shared().published));
  while (!all() && SYSTEM_CLOCK.now() < deadline) await new Promise((r) => setImmediate(r));
}

/** How long a message takes to send, ms. */
function transfer(p: Population): number {
  return (p.size / p.bandwidth) * 1000;
}

/** How long a session takes from connect to the end-of-message reply with no shaping: a round trip per command and the transfer. */
function unshaped(p: Population): number {
  return p.rtt * (3 + p.recipients) + transfer(p);
}
