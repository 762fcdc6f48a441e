// npm run bench:snapshot - does writing a big snapshot hold up answers?
//
// A real sluiced restores a 1,000,000-key snapshot (made here), then a
// policy client asks one question every 10 ms: first for two seconds with
// nothing else going on (the reference), then while `sluicectl snapshot`
// has the daemon write its snapshot. Printed: the snapshot's time in the
// daemon, and the worst and p99 probe latency during it beside the same
// figures without it. Target: worst <= 50 ms.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { ReputationStore } from '../../dist/reputation/store.js';
import { writeSnapshot } from '../../dist/reputation/snapshot.js';
import { request } from '../../dist/cli/sluicectl.js';
import { encodeRequest } from '../../dist/policy/codec.js';
import { startSluiced, table } from './common.js';
import { rcptRequest } from '../helpers/policy-client.js';

const KEYS = 1_000_000;
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-snap-'));
const now = Date.now();

// The snapshot to restore: a million client and network keys, changed over the last hour.
const store = new ReputationStore({ maxEntries: KEYS, ttlMs: 7 * 86_400_000, halfLifeMs: 86_400_000, now: () => now });
const values = new Float64Array(8);
for (let i = 0; store.size < KEYS; i++) {
  values[0] = -((i % 17) / 2); values[1] = now - (i % 3_600_000); values[2] = now - 86_400_000; values[3] = i % 5; values[4] = i % 3;
  store.put(i % 2 ? `ip:${10 + ((i >> 16) & 0x7f)}.${(i >> 8) & 255}.${i & 255}.${i % 250}` : `net:${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}.0/24`, values);
}
await writeSnapshot(path.join(dir, 'reputation.snapshot'), store, [], now);

const started = Date.now();
const sluiced = await startSluiced('policy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: []\nreputation:\n  max_entries: 1100000\n  snapshot_interval: 1h\n', 'policy', dir);
const startMs = Date.now() - started;

/** One question every 10 ms until `until` settles (and `tail` ms more); the latencies in ms. */
async function probe(until: Promise<unknown>, tail = 200): Promise<number[]> {
  const s = net.connect(sluiced.port, '127.0.0.1');
  await new Promise<void>((r, j) => { s.once('connect', () => r()); s.once('error', j); });
  let settled = false;
  void until.finally(() => { setTimeout(() => { settled = true; }, tail); });
  const lat: number[] = [];
  const ask = encodeRequest(Object.entries(rcptRequest({ client_address: '192.0.2.77' })));
  while (!settled) {
    const t0 = process.hrtime.bigint();
    await new Promise<void>((r) => { s.once('data', () => r()); s.write(ask); });
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    await new Promise((r) => setTimeout(r, 10));
  }
  s.destroy();
  return lat;
}
const worst = (xs: number[]): number => Math.max(...xs);
const p99 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)] ?? NaN;

const quiet = await probe(new Promise((r) => setTimeout(r, 2000)), 0);
const t0 = Date.now();
const snap = request(path.join(dir, 'control.sock'), 'snapshot', {}, 60_000);
const during = await probe(snap);
const answer = await snap;
const snapMs = Date.now() - t0;
await sluiced.stop();
rmSync(dir, { recursive: true, force: true });
if (!answer.ok) throw new Error(`snapshot failed: ${answer.error.message}`);

const rows: (string | number)[][] = [['snapshot, 1M keys', 'value', 'reference', 'ratio', 'target']];
rows.push(['sluiced start with restore ms', startMs, 3000, startMs / 3000, 'restore <= 3000 ms']);
rows.push(['snapshot written, ms', snapMs, '', '', '']);
rows.push(['worst probe ms (ref: no snapshot)', worst(during), worst(quiet), worst(during) / worst(quiet), '<= 50 ms']);
rows.push(['p99 probe ms (ref: no snapshot)', p99(during), p99(quiet), p99(during) / p99(quiet), '']);
rows.push(['probes (ref: no snapshot)', during.length, quiet.length, '', '1 per 10 ms']);
process.stdout.write(process.env['BENCH_JSON'] ? JSON.stringify(rows.slice(1)) + '\n' : table(rows) + '\n');
