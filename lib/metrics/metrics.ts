// metrics.ts - counters and histograms, and the Prometheus text endpoint.
//
// prom-client on a registry of our own (no globals). On the hot path only
// increments happen (verdicts, abandonments and accepted connections into
// plain numbers, handed to prom-client when scraped); sizes (LRU entries,
// evictions, holds in progress, open connections) and event-loop lag are
// read when Prometheus scrapes. The HTTP endpoint is loopback only by
// default and absent when metrics.listen is empty.
//
// The fleet store: operations by kind and result.
// Content scanner verdicts: learned by source and verdict, refused by reason.
// DNS lists: queries by zone and result (listed, clean, timeout, servfail,
// refused, error), cache hits by zone, and how long queries took.
//
// Config keys: metrics.listen.

import http from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ConfigError } from '../shield/errors.js';
import type { Endpoint } from '../config/endpoint.js';
import type { DnsReport } from '../dns/dnsbl.js';
import type { FleetReport } from '../fleet/fleet.js';
import type { FeedbackReport } from '../feedback/feedback.js';

export type Protocol = 'policy' | 'milter' | 'control';

export interface Sources {
  lruSize(): number;
  lruEvictions(): number;
  holdsActive(): number;
  openConnections(): number;
  /** The worst event-loop delay in the last second, in milliseconds. */
  loopLagMs(): number;
  /** Fleet store writes waiting, and dropped for a full buffer since start. */
  fleetWrites(): { pending: number; dropped: number };
  /** Learned: how long clients that hung up under holds lasted, per stage (90th percentile) and how many were weighed. */
  patience(): readonly { readonly stage: string; readonly seen: number; readonly p90_s: number }[];
}

export class Metrics implements DnsReport, FleetReport, FeedbackReport {
  readonly registry = new Registry();
  readonly verdicts: Counter<'stage' | 'verdict' | 'via'>;
  readonly wouldHave: Counter<'stage' | 'verdict' | 'via'>;
  readonly holds: Counter;
  readonly heldSeconds: Histogram;
  readonly abandoned: Counter<'stage' | 'held' | 'via'>;
  readonly exceptions: Counter<'code' | 'name'>;
  readonly connections: Counter<'protocol'>;
  readonly #connected: Record<Protocol, number> = { policy: 0, milter: 0, control: 0 };
  readonly #verdictCounts = new Tally(['stage', 'verdict', 'via'] as const);
  readonly #wouldHaveCounts = new Tally(['stage', 'verdict', 'via'] as const);
  readonly #abandonedCounts = new Tally(['stage', 'held', 'via'] as const);
  readonly dnsQueries: Counter<'zone' | 'result'>;
  readonly dnsSeconds: Histogram;
  readonly #dnsCacheHits = new Map<string, number>();
  readonly fleetCalls: Counter<'op' | 'result'>;
  readonly #scans: Counter<'source' | 'verdict'>;
  readonly #scansRefused: Counter<'source' | 'reason'>;
  #server: http.Server | undefined;

  constructor(sources: Sources) {
    const r = this.registry;
    const verdicts = this.#verdictCounts;
    this.verdicts = new Counter({ name: 'sluice_verdicts_total', help: 'Verdicts by SMTP stage, verdict and protocol', labelNames: ['stage', 'verdict', 'via'], registers: [r], collect() { verdicts.copyTo(this); } });
    const wouldHave = this.#wouldHaveCounts;
    this.wouldHave = new Counter({ name: 'sluice_would_have_total', help: 'Observe mode: verdicts decided but not enforced (the MTA was told to go on), by stage, verdict (hold for a pass that would have been held) and protocol', labelNames: ['stage', 'verdict', 'via'], registers: [r], collect() { wouldHave.copyTo(this); } });
    this.holds = new Counter({ name: 'sluice_holds_total', help: 'Replies held (tarpit)', registers: [r] });
    this.heldSeconds = new Histogram({ name: 'sluice_held_seconds', help: 'How long held replies were held', buckets: [1, 2, 4, 8, 16, 30, 60, 120, 300], registers: [r] });
    const abandoned = this.#abandonedCounts;
    this.abandoned = new Counter({ name: 'sluice_abandoned_total', help: 'Sessions abandoned by the client, by last stage and whether its reply was held', labelNames: ['stage', 'held', 'via'], registers: [r], collect() { abandoned.copyTo(this); } });
    this.exceptions = new Counter({ name: 'sluice_exceptions_total', help: 'Errors handled by the shield, by code', labelNames: ['code', 'name'], registers: [r] });
    const connected = this.#connected;
    this.connections = new Counter({
      name: 'sluice_connections_total', help: 'Connections accepted, by protocol', labelNames: ['protocol'], registers: [r],
      collect() {
        this.reset();
        for (const [protocol, n] of Object.entries(connected)) if (n > 0) this.inc({ protocol }, n);
      },
    });
    this.dnsQueries = new Counter({ name: 'sluice_dns_queries_total', help: 'DNS list queries by zone and result (listed, clean, timeout, servfail, refused, error); failures count as not listed', labelNames: ['zone', 'result'], registers: [r] });
    this.dnsSeconds = new Histogram({ name: 'sluice_dns_query_seconds', help: 'How long DNS list queries took', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5], registers: [r] });
    this.fleetCalls = new Counter({ name: 'sluice_fleet_ops_total', help: 'Calls to the fleet store by kind (read: one entry; write: one script call of up to 500 keys; list: one change) and result (ok, error)', labelNames: ['op', 'result'], registers: [r] });
    this.#scans = new Counter({ name: 'sluice_scanner_verdicts_total', help: 'Content scanner verdicts learned, by source (channel, learn, header) and verdict (spam, ham; unsure: an action that says nothing of the content)', labelNames: ['source', 'verdict'], registers: [r] });
    this.#scansRefused = new Counter({ name: 'sluice_scanner_refused_total', help: 'Content scanner verdicts refused (nothing learned), by source and reason (oversized, json, address, action, queue-id, overflow, unknown)', labelNames: ['source', 'reason'], registers: [r] });
    const hits = this.#dnsCacheHits;
    new Counter({
      name: 'sluice_dns_cache_hits_total', help: 'DNS list lookups answered from the cache, by zone', labelNames: ['zone'], registers: [r],
      collect() {
        this.reset();
        for (const [zone, n] of hits) this.inc({ zone }, n);
      },
    });
    const gauge = (name: string, help: string, read: () => number): void => {
      new Gauge({ name, help, registers: [r], collect() { this.set(read()); } });
    };
    gauge('sluice_holds_in_progress', 'Replies being held now', sources.holdsActive);
    gauge('sluice_connections_open', 'Connections open now', sources.openConnections);
    gauge('sluice_reputation_entries', 'Keys in the reputation LRU', sources.lruSize);
    gauge('sluice_reputation_evictions', 'Keys evicted from the reputation LRU since start', sources.lruEvictions);
    gauge('sluice_fleet_pending_writes', 'Keys with changes waiting to be written to the fleet store', () => sources.fleetWrites().pending);
    gauge('sluice_fleet_dropped_writes', 'Changes dropped since start because the fleet store was away and the buffer full', () => sources.fleetWrites().dropped);
    gauge('sluice_event_loop_lag_seconds', 'Worst event-loop delay in the last second', () => sources.loopLagMs() / 1000);
    new Gauge({
      name: 'sluice_giveup_seconds', help: 'Learned: 90th percentile of how long clients that hung up under a hold lasted, by stage (holds are made longer)', labelNames: ['stage'], registers: [r],
      collect() {
        this.reset();
        for (const p of sources.patience()) this.set({ stage: p.stage }, p.p90_s);
      },
    });
    new Gauge({
      name: 'sluice_giveup_weighed', help: 'Hang-ups under holds weighed for sluice_giveup_seconds (decayed), by stage', labelNames: ['stage'], registers: [r],
      collect() {
        this.reset();
        for (const p of sources.patience()) this.set({ stage: p.stage }, p.seen);
      },
    });
  }

  scanned(source: string, verdict: string): void {
    this.#scans.inc({ source, verdict });
  }

  scanRefused(source: string, reason: string): void {
    this.#scansRefused.inc({ source, reason });
  }

  /** Counts one answer. */
  verdict(stage: string, verdict: string, via: string): void {
    this.#verdictCounts.add(stage, verdict, via);
  }

  /** Counts one verdict not enforced (observe mode); `verdict` is "hold" for a pass that would have been held. */
  wouldHaveBeen(stage: string, verdict: string, via: string): void {
    this.#wouldHaveCounts.add(stage, verdict, via);
  }

  queried(zone: string, result: string, seconds: number): void {
    this.dnsQueries.inc({ zone, result });
    this.dnsSeconds.observe(seconds);
  }

  fleetOps(op: string, ok: boolean, n = 1): void {
    if (n > 0) this.fleetCalls.inc({ op, result: ok ? 'ok' : 'error' }, n);
  }

  cacheHit(zone: string): void {
    this.#dnsCacheHits.set(zone, (this.#dnsCacheHits.get(zone) ?? 0) + 1);
  }

  /** Counts one accepted connection (a milter connection is one per SMTP session). */
  connected(protocol: Protocol): void {
    this.#connected[protocol]++;
  }

  /** Counts one abandoned session. */
  abandonedAt(stage: string, held: boolean, via: string): void {
    this.#abandonedCounts.add(stage, held ? 'true' : 'false', via);
  }

  /** Serves GET /metrics on the endpoint; resolves with where it listens. */
  async listen(ep: Endpoint): Promise<string> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('try /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(`${err.message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(new ConfigError('CONFIG_LISTEN', `metrics ${ep.text}: cannot listen: ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`)));
      if (ep.kind === 'unix') server.listen(ep.path, () => resolve());
      else server.listen(ep.port, ep.host, () => resolve());
    });
    this.#server = server;
    const a = server.address();
    return typeof a === 'object' && a ? `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics` : ep.text;
  }

  close(): void {
    this.#server?.close();
    this.#server?.closeAllConnections();
  }
}

/**
 * Counts by three label values, kept as plain numbers and handed to
 * prom-client at scrape time: a prom-client child still hashes its labels
 * on every inc(), and this runs once per answer. The values are a handful
 * of constant strings, so each level is a tiny map with their hashes cached.
 */
class Tally<L extends string> {
  readonly #tree = new Map<string, Map<string, Map<string, { n: number }>>>();
  constructor(readonly names: readonly [L, L, L]) {}

  add(a: string, b: string, c: string): void {
    let byA = this.#tree.get(a);
    if (!byA) this.#tree.set(a, byA = new Map());
    let byB = byA.get(b);
    if (!byB) byA.set(b, byB = new Map());
    const cell = byB.get(c);
    if (cell) cell.n++;
    else byB.set(c, { n: 1 });
  }

  /** Sets the counter to these counts (its collect() hook). */
  copyTo(counter: Counter<L>): void {
    counter.reset();
    const [x, y, z] = this.names;
    for (const [a, byA] of this.#tree) {
      for (const [b, byB] of byA) {
        for (const [c, cell] of byB) counter.inc({ [x]: a, [y]: b, [z]: c } as Partial<Record<L, string>>, cell.n);
      }
    }
  }
}
