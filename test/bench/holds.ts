// npm run bench:holds - 10,000 held replies at once (5,000 policy, 5,000
// milter) while normal policy requests run on 10 connections. Targets: the
// daemon's RSS at most 250 MB, p99 of the normal requests at most 5 ms. The
// reference is the same normal load on the same daemon just before the holds.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { rssOf, startSluiced, table } from './common.js';
import { holdingConfig, holdMilter, holdPolicy, metric, normalPolicy, openFilesLimit, percentile } from '../helpers/load.js';

const HOLDS = 10_000;
const MEASURE_MS = Number(process.env['BENCH_SECONDS'] ?? 5) * 1000;

export async function benchHolds(): Promise<(string | number)[][]> {
  if (openFilesLimit() < HOLDS + 500) throw new Error(`bench:holds opens ${HOLDS} connections: raise ulimit -n to at least ${HOLDS + 500}`);
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-holds-'));
  const server = await startSluiced(`policy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: ["inet:127.0.0.1:0"]\n`
    + `limits:\n  max_connections: ${HOLDS + 1000}\n${holdingConfig(55, HOLDS * 2)}`, 'policy', dir);
  const { proc } = server;
  const ready = server.ready as { listen: Record<string, string[]>; metrics: string };
  const port = (k: string): number => Number(/(\d+)$/.exec(ready.listen[k]![0]!)![1]);
  try {
    const before = await normalPolicy(port('policy'), 10, MEASURE_MS);
    const rssBefore = rssOf(proc.pid!);
    const t0 = Date.now();
    const held = [...await holdPolicy(port('policy'), HOLDS / 2), ...await holdMilter(port('milter'), HOLDS / 2)];
    while (await metric(ready.metrics, 'sluice_holds_in_progress') < HOLDS && Date.now() - t0 < 40_000) await new Promise((r) => setTimeout(r, 200));
    const holding = await metric(ready.metrics, 'sluice_holds_in_progress');
    const setup = Date.now() - t0;
    let rssPeak = rssOf(proc.pid!);
    const sampler = setInterval(() => { rssPeak = Math.max(rssPeak, rssOf(proc.pid!)); }, 100);
    const during = await normalPolicy(port('policy'), 10, MEASURE_MS);
    clearInterval(sampler);
    const stillHolding = await metric(ready.metrics, 'sluice_holds_in_progress');
    if (stillHolding < HOLDS) throw new Error(`only ${stillHolding} holds were left at the end of the measurement`);
    proc.kill('SIGTERM');
    const answered = (await Promise.all(held.map((h) => h.answer))).filter(Boolean).length;
    for (const h of held) h.client.close();
    const mb = (b: number): number => b / 1e6;
    return [
      ['holds', 'value', 'reference', 'ratio', 'target'],
      ['replies held at once', holding, HOLDS, holding / HOLDS, `${HOLDS} (in ${(setup / 1000).toFixed(1)} s)`],
      ['normal p50 ms', percentile(during, 0.5), percentile(before, 0.5), percentile(during, 0.5) / percentile(before, 0.5), ''],
      ['normal p99 ms', percentile(during, 0.99), percentile(before, 0.99), percentile(during, 0.99) / percentile(before, 0.99), '<= 5 ms'],
      ['normal req/s', during.length / (MEASURE_MS / 1000), before.length / (MEASURE_MS / 1000), during.length / before.length, ''],
      ['sluiced RSS MB (peak)', mb(rssPeak), mb(rssBefore), '', '<= 250 MB'],
      ['held replies answered at SIGTERM', answered, HOLDS, answered / HOLDS, 'all'],
    ];
  } finally {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  process.stdout.write(table(await benchHolds()) + '\n');
}
