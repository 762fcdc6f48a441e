// npm run fuzz - the long fuzz run: at least 1,000,000 mutated frames per
// protocol (policy requests, milter frames) into a live sluiced, over many
// connections, with a well-behaved connection checked throughout and the
// daemon's RSS sampled as it goes (it should stay flat after warm-up: the
// first sample is taken once a tenth of the frames are in). FUZZ_FRAMES sets
// the count, FUZZ_ONLY=policy or milter runs one protocol.
import net from 'node:net';
import { startSluiced, table, type Server } from './common.js';
import { policyVectors, milterVectors } from '../helpers/vectors.js';
import { Rng, mutate } from '../helpers/fuzz.js';
import { PolicyClient, rcptRequest } from '../helpers/policy-client.js';
import { mta } from '../helpers/milter-client.js';

const TARGET = Number(process.env['FUZZ_FRAMES'] ?? 1_000_000);
const ONLY = process.env['FUZZ_ONLY'] ?? '';
const policyPool = policyVectors().map((v) => Buffer.from(v.raw, 'utf8'));
const milterPool = milterVectors().filter((v) => v.dir === 'in' && !v.cut).map((v) => Buffer.from(v.hex, 'hex'));

async function blast(port: number, pool: Buffer[], prefix: Buffer, perConn: number, seed: number): Promise<number> {
  const rng = new Rng(seed);
  // Mostly whole captures (so most frames are parsed), one mutation per connection.
  const chunks: Buffer[] = [prefix];
  for (let i = 0; i < perConn; i++) chunks.push(pool[rng.int(pool.length)]!);
  const at = 1 + rng.int(chunks.length - 1);
  chunks[at] = mutate(chunks[at]!, rng, pool);
  await new Promise<void>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(Buffer.concat(chunks)));
    s.on('data', () => {});
    s.on('error', () => resolve());
    s.on('close', () => resolve());
  });
  return perConn;
}

async function run(name: string, server: Server, port: number, pool: Buffer[], prefix: Buffer, check: () => Promise<boolean>): Promise<(string | number)[][]> {
  const rows: (string | number)[][] = [];
  let rss0 = NaN;
  let sent = 0;
  let seed = 1;
  let nextSample = TARGET / 10;
  const t0 = Date.now();
  while (sent < TARGET) {
    const batch = await Promise.all(Array.from({ length: 16 }, () => blast(port, pool, prefix, 200, seed++)));
    sent += batch.reduce((a, b) => a + b, 0);
    if (sent >= nextSample) {
      if (!(await check())) throw new Error(`${name}: the well-behaved connection was not served after ${sent} frames`);
      // The reference is the RSS after warm-up (a tenth of the run).
      if (Number.isNaN(rss0)) rss0 = server.rss();
      else rows.push([`${name} RSS MiB`, sent, server.rss() / 2 ** 20, rss0 / 2 ** 20, server.rss() / rss0, 'flat after warm-up']);
      nextSample += TARGET / 10;
    }
  }
  rows.push([`${name} frames/s`, sent, (sent / (Date.now() - t0)) * 1000, '', '', '']);
  return rows;
}

const s = await startSluiced('policy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: ["inet:127.0.0.1:0"]\n', 'policy');
try {
  const policyPort = s.port;
  const good = await PolicyClient.connect({ port: policyPort });
  let n = 0;
  const policyRows = ONLY === 'milter' ? [] : await run('policy', s, policyPort, policyPool, Buffer.alloc(0), async () => (await good.ask(rcptRequest({ instance: `good.${n++}` }))) === 'action=DUNNO\n\n');
  good.close();
  const m = await startSluiced('policy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: ["inet:127.0.0.1:0"]\n', 'milter');
  try {
    const check = async (): Promise<boolean> => new Promise((resolve) => {
      const c = net.connect(m.port, '127.0.0.1', () => c.write(mta.optneg()));
      c.once('data', (d: Buffer) => { resolve(d[4] === 0x4f); c.destroy(); });
      c.on('error', () => resolve(false));
    });
    const milterRows = ONLY === 'policy' ? [] : await run('milter', m, m.port, milterPool, mta.optneg(), check);
    process.stdout.write(table([['fuzz', 'frames', 'value', 'after warm-up', 'ratio', 'target'], ...policyRows, ...milterRows]) + '\n');
  } finally {
    await m.stop();
  }
} finally {
  await s.stop();
}
