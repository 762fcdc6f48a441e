// npm run simulate - how much of a botnet's mail gets through, and what real
// mail pays, on one host, on three hosts sharing the fleet store, and on
// three hosts with the store and a DNS list.
//
// A simulated clock runs two hours. Real MTAs (300, one per /24, good names)
// send a message every 10 minutes or so to a random MX host; they wait out
// any hold and retry a deferral 10 minutes later, and always QUIT. Zombies
// (3,000 over 300 /24s) look clean (valid HELO, forward-confirmed names) and
// try a message every 5 minutes or so on a random MX host: they give up on
// any reply held longer than 10 s, and half the time leave right after RCPT
// without QUIT (a recipient refused by the MTA ends spamware's session).
// Each host is sluice's real engine on the simulated clock, with the real
// fleet store (redis-server) and DNS lists (rbldnsd naming 30 % of the
// zombies) where the scenario has them. A session is decided stage by stage
// at its start time; its outcome is learned at once. Printed: zombie
// transactions accepted (%), real mail's added delay (p50, p99) and the
// most holds one host had at once.
import { pino } from 'pino';
import { fromText } from '../../dist/config/load.js';
import type { Config } from '../../dist/config/schema.js';
import { newStore, ReputationEngine } from '../../dist/engine/engine.js';
import { Lists } from '../../dist/engine/lists.js';
import type { Stage, StageEvent, Verdict } from '../../dist/engine/types.js';
import { Enricher } from '../../dist/enrich/enricher.js';
import { DnsLists } from '../../dist/dns/dnsbl.js';
import { Fleet } from '../../dist/fleet/fleet.js';
import type { Logger } from '../../dist/log/logger.js';
import { ManualClock } from '../../dist/util/clock.js';
import { startRedis } from '../helpers/redis.js';
import { startRbldnsd } from '../helpers/dns.js';
import { table } from './common.js';

const HOURS = Number(process.env['SIM_HOURS'] ?? 2);
const MTAS = 300;
const ZOMBIES = 3000;
const START = 1_800_000_000_000;
const cleanups: (() => void)[] = [];
const teardown = { teardown: (fn: () => void) => { cleanups.push(fn); } };

/** A seeded generator: every run draws the same population. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** Zombie i: ten to a /24, over 300 of them. */
const zombieIp = (i: number): string => `10.${(i % 300) >> 8}.${(i % 300) & 255}.${10 + Math.floor(i / 300)}`;
/** Real MTA i: one to a /24. */
const mtaIp = (i: number): string => `172.${16 + (i >> 8)}.${i & 255}.25`;

interface Host {
  readonly engine: ReputationEngine;
  readonly fleet: Fleet;
  peak: number;
}

const silent = pino({ level: 'silent' }) as unknown as Logger;

async function hosts(n: number, clock: ManualClock, yaml: string): Promise<Host[]> {
  const loaded = fromText(yaml, 'simulate.yaml');
  if (!loaded.ok) throw new Error(loaded.problems.map((p) => p.message).join('; '));
  const config: Config = loaded.config;
  const out: Host[] = [];
  for (let i = 0; i < n; i++) {
    const made = { store: newStore(config, clock.now), lists: new Lists() };
    const dns = new DnsLists(() => config, clock, () => silent, { queried: () => {}, cacheHit: () => {} });
    const fleet = new Fleet(() => config, made, clock, () => silent, { fleetOps: () => {} });
    const lookups = new Enricher([dns, fleet.reader], clock, (err) => { throw err; });
    const engine = new ReputationEngine(() => config, clock.now, [], lookups, made);
    fleet.start();
    out.push({ engine, fleet, peak: 0 });
  }
  const deadline = Date.now() + 5000;
  while (out.some((h) => h.fleet.status() !== undefined && (h.fleet.status() as { state: string }).state !== 'up')) {
    if (Date.now() > deadline) throw new Error('the fleet store did not come up');
    await new Promise((r) => setTimeout(r, 20));
  }
  return out;
}

interface Event { at: number; who: number; kind: 'mta' | 'zombie'; tries: number; first: number }

async function scenario(label: string, hostCount: number, yaml: string): Promise<(string | number)[]> {
  const clock = new ManualClock(START);
  const hs = await hosts(hostCount, clock, yaml);
  const rand = rng(42);
  const queue: Event[] = [];
  const push = (e: Event): void => {
    let i = queue.length;
    queue.push(e);
    while (i > 0 && queue[(i - 1) >> 1]!.at > e.at) { queue[i] = queue[(i - 1) >> 1]!; i = (i - 1) >> 1; }
    queue[i] = e;
  };
  const pop = (): Event | undefined => {
    const top = queue[0];
    const last = queue.pop();
    if (queue.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = l < queue.length && queue[l]!.at < last.at ? l : -1;
      if (r < queue.length && queue[r]!.at < (m < 0 ? last.at : queue[m]!.at)) m = r;
      if (m < 0) break;
      queue[i] = queue[m]!;
      i = m;
    }
    queue[i] = last;
    return top;
  };
  const end = START + HOURS * 3_600_000;
  for (let i = 0; i < MTAS; i++) push({ at: START + rand() * 600_000, who: i, kind: 'mta', tries: 0, first: 0 });
  for (let i = 0; i < ZOMBIES; i++) push({ at: START + rand() * 300_000, who: i, kind: 'zombie', tries: 0, first: 0 });
  let zombieTries = 0;
  let zombieAccepted = 0;
  const delays: number[] = [];
  let seq = 0;
  let flushedAt = START;
  for (let ev = pop(); ev !== undefined && ev.at < end; ev = pop()) {
    if (ev.at > clock.now()) clock.advance(ev.at - clock.now());
    if (clock.now() - flushedAt >= 1000) {
      flushedAt = clock.now();
      await Promise.all(hs.map((h) => h.fleet.flush()));
    }
    const h = hs[Math.floor(rand() * hs.length)]!;
    const zombie = ev.kind === 'zombie';
    const client = zombie ? zombieIp(ev.who) : mtaIp(ev.who);
    const name = zombie ? `host-${client.replace(/\./g, '-')}.dsl.example.net` : `mx${ev.who}.example.com`;
    const base: StageEvent = {
      stage: 'connect', session: `s${++seq}`, via: 'milter', mta: 'postfix', client, port: undefined, clientName: name,
      helo: '', sender: '', recipient: '', recipientCount: 0, size: 0, queueId: '', saslUser: '', tls: undefined, stress: false, repeat: false,
    };
    let held = 0;
    let outcome: 'delivered' | 'refused' | 'dropped' | 'left' = 'delivered';
    let last: StageEvent = base;
    const leavesAfterRcpt = zombie && rand() < 0.5;
    for (const stage of ['connect', 'helo', 'mail', 'rcpt', 'data', 'eom'] as Stage[]) {
      const e: StageEvent = { ...base, stage, helo: stage === 'connect' ? '' : name, sender: ['connect', 'helo'].includes(stage) ? '' : `news@${zombie ? 'example.org' : 'example.com'}`, recipient: stage === 'rcpt' ? 'user@example.net' : '' };
      last = e;
      const v: Verdict = await h.engine.decide(e);
      h.peak = Math.max(h.peak, h.engine.stats().holdsActive);
      if (v.kind === 'defer' || v.kind === 'reject') { outcome = 'refused'; break; }
      if (v.delayMs > 0) {
        if (zombie && v.delayMs > 10_000) { outcome = 'dropped'; held = v.delayMs; break; }
        held += v.delayMs;
      }
      if (stage === 'rcpt' && leavesAfterRcpt) { outcome = 'left'; break; }
    }
    if (outcome === 'delivered') h.engine.record({ kind: 'delivered', event: last });
    if (outcome === 'dropped') h.engine.record({ kind: 'abandoned', event: last, held: true });
    else if (outcome === 'left') h.engine.record({ kind: 'abandoned', event: last, held: false });
    else h.engine.record({ kind: 'ended', event: last });
    if (zombie) {
      zombieTries++;
      if (outcome === 'delivered') zombieAccepted++;
      push({ at: ev.at + 120_000 + rand() * 360_000, who: ev.who, kind: 'zombie', tries: 0, first: 0 });
    } else {
      const first = ev.tries === 0 ? ev.at : ev.first;
      if (outcome === 'refused') push({ at: ev.at + 600_000, who: ev.who, kind: 'mta', tries: ev.tries + 1, first });
      else {
        delays.push((ev.at - first) + held);
        push({ at: ev.at + 300_000 + rand() * 600_000, who: ev.who, kind: 'mta', tries: 0, first: 0 });
      }
    }
  }
  await Promise.all(hs.map((h) => h.fleet.close()));
  delays.sort((a, b) => a - b);
  const pct = (p: number): number => (delays[Math.min(delays.length - 1, Math.floor(delays.length * p))] ?? 0) / 1000;
  return [label, zombieTries, 100 * zombieAccepted / zombieTries, delays.length, pct(0.5), pct(0.99), Math.max(...hs.map((h) => h.peak))];
}

const redis = await startRedis(teardown);
const listed = Array.from({ length: ZOMBIES }, (_, i) => i).filter((i) => i % 10 < 3).map(zombieIp);
const { server } = await startRbldnsd(teardown, [{ name: 'sim.bl', type: 'ip4set', data: [':127.0.0.2:', ...listed] }]);
const fleet = `fleet:\n  url: "${redis.url}"\n  flush_interval: 60s\n  read_wait: 20ms\n`;
try {
  const rows: (string | number)[][] = [['scenario', 'zombie tries', 'zombie tx accepted %', 'real messages', 'real delay p50 s', 'real delay p99 s', 'peak holds (one host)']];
  rows.push(await scenario('one host', 1, ''));
  redis.cli('flushall');
  rows.push(await scenario('three hosts, fleet store', 3, fleet));
  redis.cli('flushall');
  rows.push(await scenario('three hosts, store + DNS list (30 % of zombies)', 3, `${fleet}dns:\n  resolvers: ["${server}"]\ndnsbl:\n  sites: ["sim.bl*3"]\n  threshold: 3\n  action: defer\n`));
  process.stdout.write(table(rows) + '\n');
} finally {
  for (const c of cleanups) c();
}
