// npm run bench - every benchmark, one table: each figure beside its
// reference measured in the same run (a minimal Node responder for the
// protocols, 1k keys for the decision cost, the stated targets for memory and
// snapshots, the same daemon without holds for bench:holds, the same probes
// without a snapshot for bench:snapshot).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { benchPolicy } from './policy.js';
import { benchMilter } from './milter.js';
import { benchHolds } from './holds.js';
import { table, ROOT } from './common.js';

const rows: (string | number)[][] = [['benchmark', 'setting', 'value', 'reference', 'ratio', 'target', 'round ratios']];
for (const [name, bench] of [['policy req/s', benchPolicy], ['milter tx/s', benchMilter]] as const) {
  const r = await bench();
  for (const row of r.slice(1)) {
    if (typeof row[1] !== 'number') { rows.push([String(row[0]), '', row[2]!, row[3]!, '', '', '']); continue; }
    rows.push([name, `${row[1]} conns`, row[2]!, row[3]!, row[4]!, '>= 0.9 x ref', row[9]!]);
    rows.push([`${name.split(' ')[0]} p99 ms`, `${row[1]} conns`, row[7]!, row[8]!, Number(row[7]) / Number(row[8]), '', '']);
    rows.push([`${name.split(' ')[0]} CPU us`, `${row[1]} conns`, row[10]!, row[11]!, Number(row[10]) / Number(row[11]), '', '']);
  }
}
const engine = spawnSync(process.execPath, ['--expose-gc', '--import=tsx', path.join(ROOT, 'test', 'bench', 'engine.ts')], { cwd: ROOT, env: { ...process.env, BENCH_JSON: '1' }, encoding: 'utf8' });
if (engine.status !== 0) throw new Error(`engine bench failed: ${engine.stderr}`);
for (const row of JSON.parse(engine.stdout) as (string | number)[][]) rows.push([String(row[0]), `${row[1]} keys`, row[2]!, row[3]!, row[4]!, row[5]!, '']);
const snapshot = spawnSync(process.execPath, ['--import=tsx', path.join(ROOT, 'test', 'bench', 'snapshot.ts')], { cwd: ROOT, env: { ...process.env, BENCH_JSON: '1' }, encoding: 'utf8' });
if (snapshot.status !== 0) throw new Error(`snapshot bench failed: ${snapshot.stderr}`);
for (const row of JSON.parse(snapshot.stdout) as (string | number)[][]) rows.push([String(row[0]), '1M keys', row[1]!, row[2]!, row[3]!, row[4]!, '']);
for (const row of (await benchHolds()).slice(1)) rows.push([String(row[0]), '10,000 holds', row[1]!, row[2]!, row[3]!, row[4]!, '']);
process.stdout.write(table(rows) + '\n');
