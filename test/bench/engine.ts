// npm run bench:engine - the engine's cost and footprint at scale.
//
// Decision cost at 1k, 100k and 1M keys (it should be flat: the reference is
// the cost at 1k, measured in the same run): whole sessions (CONNECT, HELO,
// MAIL, two RCPT, DATA, end of message) from clients drawn across the whole
// key set, so that nearly every session starts cold; the time to build the
// events is measured apart and taken off. Beside it, for scale, one bare
// Map.get at the same size: what the memory hierarchy alone costs there.
// Resident memory with 1M keys (target at most 400 MB) in plain Node, as the
// daemon runs (this file runs under tsx, whose loader thread costs ~50 MB):
// filled by learning, and a real sluiced restoring a 1M-key snapshot.
// Snapshot write and restore of 1M keys: at most 3 s each.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { fromText } from '../../dist/config/load.js';
import { ReputationEngine } from '../../dist/engine/engine.js';
import { writeSnapshot, readSnapshot } from '../../dist/reputation/snapshot.js';
import type { Stage, StageEvent } from '../../dist/engine/types.js';
import { ROOT, startSluiced, table } from './common.js';

const loaded = fromText('reputation:\n  max_entries: 1100000\n', 'bench');
if (!loaded.ok) throw new Error('bench config');
const config = loaded.config;

const addr = (i: number): string => `${10 + ((i >> 16) & 0x7f)}.${(i >> 8) & 255}.${i & 255}.${1 + (i % 200)}`;

function event(i: number, stage: Stage = 'rcpt', session = `${addr(i)}:${i}:25`): StageEvent {
  const client = addr(i);
  return {
    stage, session, via: 'milter', mta: 'postfix', client, port: 1, clientName: `h${i}.example.net`,
    helo: `h${i}.example.net`, sender: `s@d${i % 5000}.example`, recipient: 'r@example.org', recipientCount: 0,
    size: 0, queueId: '', saslUser: '', tls: undefined, stress: false, repeat: false,
  };
}

function fill(engine: ReputationEngine, keys: number): void {
  // Each client makes an ip and a net key (a /24 holds 256 clients) plus its HELO: ~2.1 keys per client.
  const clients = Math.ceil(keys / 2.1);
  for (let i = 0; i < clients && engine.store.size < keys; i++) {
    engine.record({ kind: i % 3 ? 'delivered' : 'abandoned', held: i % 2 === 0, event: event(i) } as never);
  }
}

const STAGES: Stage[] = ['connect', 'helo', 'mail', 'rcpt', 'rcpt', 'data', 'eom'];

/** µs per decision in whole sessions, less the cost of building the events. */
function decisionCost(engine: ReputationEngine, clients: number): number {
  const sessions = 40_000;
  const run = (decide: boolean): number => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < sessions; i++) {
      const c = (i * 7919) % clients;
      const session = `${addr(c)}:${i}:25`;
      let e = event(c, 'connect', session);
      for (const stage of STAGES) {
        e = event(c, stage, session);
        if (decide) engine.decide(e);
      }
      if (decide) engine.record({ kind: 'ended', event: e });
    }
    return Number(process.hrtime.bigint() - t0) / 1e3 / (sessions * STAGES.length);
  };
  run(true); // warm-up
  return run(true) - run(false);
}

/** ns for one Map.get of a fresh string key in a Map of n keys. */
function mapGet(n: number): number {
  const m = new Map<string, number>();
  for (let i = 0; i < n; i++) m.set(`ip:${addr(i)}`, i);
  const reads = 1_000_000;
  let hit = 0;
  const t0 = process.hrtime.bigint();
  for (let j = 0; j < reads; j++) hit += m.get(`ip:${addr((j * 7919) % n)}`) === undefined ? 0 : 1;
  const ns = Number(process.hrtime.bigint() - t0) / reads;
  if (hit !== reads) throw new Error('map reference missed');
  return ns;
}

const rows: (string | number)[][] = [['engine', 'keys', 'value', 'reference', 'ratio', 'target']];
let now = Date.now();
const clock = (): number => now;

// Memory in plain Node: a child fills 1M keys by learning and reports its RSS (MB) before and after.
const url = (f: string): string => pathToFileURL(path.join(ROOT, 'dist', f)).href;
const child = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', `
  import { fromText } from '${url('config/load.js')}';
  import { ReputationEngine } from '${url('engine/engine.js')}';
  const mb = () => { global.gc(); return process.memoryUsage().rss / 1e6; };
  const before = mb();
  const config = fromText('reputation:\\n  max_entries: 1000000\\n', 'bench').config;
  const e = new ReputationEngine(() => config, Date.now);
  const addr = ${addr.toString()};
  for (let i = 0; e.store.size < 1000000; i++) {
    const client = addr(i);
    const event = { stage: 'rcpt', session: client + ':' + i, via: 'milter', mta: 'postfix', client, port: 1, clientName: 'h' + i + '.example.net',
      helo: 'h' + i + '.example.net', sender: 's@d' + (i % 5000) + '.example', recipient: 'r@example.org', recipientCount: 0,
      size: 0, queueId: '', saslUser: '', tls: undefined, stress: false, repeat: false };
    e.record({ kind: i % 3 ? 'delivered' : 'abandoned', held: i % 2 === 0, event });
  }
  console.log(JSON.stringify({ before, after: mb(), keys: e.store.size }));
`], { encoding: 'utf8' });
if (child.status !== 0) throw new Error(`memory child failed: ${child.stderr}`);
const filled = JSON.parse(child.stdout) as { before: number; after: number; keys: number };
rows.push(['RSS MB, 1M keys learned', filled.keys, filled.after, filled.before, '', '<= 400 MB']);

// Snapshots, on a freshly filled engine.
let big: ReputationEngine | undefined = new ReputationEngine(() => config, clock);
fill(big, 1_000_000);
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-bench-'));
const file = path.join(dir, 'reputation.snapshot');
let t0 = Date.now();
const written = await writeSnapshot(file, big.store, big.lists.dynamic(now), now);
const writeMs = Date.now() - t0;
rows.push(['snapshot write ms', written, writeMs, 3000, writeMs / 3000, '<= 3000 ms']);
const bytes = statSync(file).size;
big = undefined;
global.gc?.();
t0 = Date.now();
const restoredEngine = new ReputationEngine(() => config, clock);
let restored = 0;
await readSnapshot(file, (key, values, at) => { if (restoredEngine.store.put(key, values, at)) restored++; });
const readMs = Date.now() - t0;
rows.push(['snapshot restore ms', restored, readMs, 3000, readMs / 3000, '<= 3000 ms']);
rows.push(['snapshot MiB', written, bytes / 2 ** 20, '', '', '']);

// A real sluiced restoring that snapshot: its RSS once it is ready, beside one started empty.
const emptyDir = path.join(dir, 'empty');
mkdirSync(emptyDir);
const yaml = 'policy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: []\nreputation:\n  max_entries: 1100000\n';
const empty = await startSluiced(yaml, 'policy', emptyDir);
const emptyRss = empty.rss() / 1e6;
await empty.stop();
const full = await startSluiced(yaml, 'policy', dir);
rows.push(['RSS MB, sluiced restored', restored, full.rss() / 1e6, emptyRss, '', '<= 400 MB']);
await full.stop();
rmSync(dir, { recursive: true, force: true });

// Decision cost: the same sessions at each size; the reference is 1k keys.
const costs = new Map<number, [number, number, number]>();
for (const keys of [1_000_000, 100_000, 1_000]) {
  const engine = keys === 1_000_000 ? restoredEngine : new ReputationEngine(() => config, clock);
  if (keys !== 1_000_000) fill(engine, keys);
  costs.set(keys, [engine.store.size, decisionCost(engine, Math.ceil(keys / 2.1)), mapGet(engine.store.size)]);
  now += 1000;
}
const [, ref, mapRef] = costs.get(1_000)!;
for (const keys of [1_000, 100_000, 1_000_000]) {
  const [size, us, ns] = costs.get(keys)!;
  rows.push(['decision µs', size, us, ref, us / ref, 'flat']);
  rows.push(['  (one Map.get ns, for scale)', size, ns, mapRef, ns / mapRef, '']);
}
process.stdout.write(process.env['BENCH_JSON'] ? JSON.stringify(rows.slice(1)) + '\n' : table(rows) + '\n');
