// npm run bench:engine - decision cost at 1k, 100k and 1M keys (it should be
// flat: the reference is the cost at 1k, measured in the same run), resident
// memory with 1M keys (target at most 400 MB, beside the process's RSS
// before), and snapshot write and restore of 1M keys (target at most 3 s each).
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fromText } from '../../dist/config/load.js';
import { ReputationEngine } from '../../dist/engine/engine.js';
import { writeSnapshot, readSnapshot } from '../../dist/reputation/snapshot.js';
import type { StageEvent } from '../../dist/engine/types.js';
import { table } from './common.js';

const loaded = fromText('reputation:\n  max_entries: 1100000\n', 'bench');
if (!loaded.ok) throw new Error('bench config');
const config = loaded.config;

const addr = (i: number): string => `${10 + ((i >> 16) & 0x7f)}.${(i >> 8) & 255}.${i & 255}.${1 + (i % 200)}`;

function event(i: number, stage: StageEvent['stage'] = 'rcpt'): StageEvent {
  const client = addr(i);
  return {
    stage, session: `${client}:${i}:25`, via: 'milter', mta: 'postfix', client, port: 1, clientName: `h${i}.example.net`,
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

function decisionCost(engine: ReputationEngine, clients: number): number {
  const n = 200_000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const e = event((i * 7919) % clients);
    engine.decide(e);
    engine.record({ kind: 'ended', event: e });
  }
  return Number(process.hrtime.bigint() - t0) / 1e3 / n;
}

const rows: (string | number)[][] = [['engine', 'keys', 'value', 'reference', 'ratio', 'target']];
let now = 1_800_000_000_000;
const clock = (): number => now;
const mib = (): number => { global.gc?.(); return process.memoryUsage().rss / 2 ** 20; };

// Memory and snapshots first, on a freshly filled engine.
const baseRss = mib();
let big: ReputationEngine | undefined = new ReputationEngine(() => config, clock);
fill(big, 1_000_000);
rows.push(['RSS MiB at 1M filled', big.store.size, mib(), baseRss, '', '<= 400 MB']);
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-bench-'));
const file = path.join(dir, 'rep.snapshot');
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
await readSnapshot(file, (key, values) => { if (restoredEngine.store.put(key, values)) restored++; });
const readMs = Date.now() - t0;
rows.push(['snapshot restore ms', restored, readMs, 3000, readMs / 3000, '<= 3000 ms']);
rows.push(['RSS MiB at 1M restored', restoredEngine.store.size, mib(), baseRss, '', '<= 400 MB']);
rows.push(['snapshot MiB', written, bytes / 2 ** 20, '', '', '']);
rmSync(dir, { recursive: true, force: true });

// Decision cost: the same decisions at each size; the reference is 1k keys.
const costs = new Map<number, [number, number]>();
for (const keys of [1_000_000, 100_000, 1_000]) {
  const engine = keys === 1_000_000 ? restoredEngine : new ReputationEngine(() => config, clock);
  if (keys !== 1_000_000) fill(engine, keys);
  costs.set(keys, [engine.store.size, decisionCost(engine, Math.ceil(keys / 2.1))]);
  now += 1000;
}
const ref = costs.get(1_000)![1];
for (const keys of [1_000, 100_000, 1_000_000]) {
  const [size, us] = costs.get(keys)!;
  rows.push(['decision µs', size, us, ref, us / ref, 'flat']);
}
process.stdout.write(process.env['BENCH_JSON'] ? JSON.stringify(rows.slice(1)) + '\n' : table(rows) + '\n');
