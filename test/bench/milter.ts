// npm run bench:milter - milter transactions/s at 1, 10 and 100 connections:
// sluiced (engine wired in) beside a minimal Node milter responder, both in
// their own process, each figure the median of five alternating runs (the
// spread of the per-round ratios is printed too, and each server's CPU time
// per transaction).
// One transaction, on a new connection each time, as Postfix 3.7 sends it:
// 52 frames - OPTNEG, CONNECT, HELO, MAIL, 2 RCPT, DATA, 12 headers, EOH,
// a 16 KiB body chunk and end of message, macros before each command,
// replies - then QUIT.
import net from 'node:net';
import path from 'node:path';
import { versus, versusTable, type LoadResult } from './common.js';
import { FrameDecoder } from '../../dist/milter/codec.js';
import * as C from '../../dist/milter/constants.js';
import { mta } from '../helpers/milter-client.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 3);
const BODY = Buffer.alloc(16 * 1024, 0x61);

/** Each step: the bytes to send, and whether one reply comes back. */
function transaction(i: number): [Buffer, boolean][] {
  const c = i % 1000;
  const steps: [Buffer, boolean][] = [
    [mta.optneg(), true],
    [Buffer.concat([mta.macro(C.SMFIC_CONNECT, { j: 'mx.example.org', '{daemon_name}': 'mx.example.org', v: 'Postfix 3.7.11' }), mta.connect(`host-${c}.example.net`, `198.51.${c >> 8}.${c & 255}`)]), true],
    [Buffer.concat([mta.macro(C.SMFIC_HELO), mta.helo(`host-${c}.example.net`)]), true],
    [Buffer.concat([mta.macro(C.SMFIC_MAIL, { '{mail_addr}': `s${c}@example.net` }), mta.mail(`<s${c}@example.net>`, 'SIZE=17000')]), true],
    [Buffer.concat([mta.macro(C.SMFIC_RCPT, { i: `Q${i}`, '{rcpt_addr}': 'a@example.org' }), mta.rcpt('<a@example.org>')]), true],
    [Buffer.concat([mta.macro(C.SMFIC_RCPT, { i: `Q${i}`, '{rcpt_addr}': 'b@example.org' }), mta.rcpt('<b@example.org>')]), true],
    [Buffer.concat([mta.macro(C.SMFIC_DATA, { i: `Q${i}` }), mta.data()]), true],
  ];
  for (let h = 0; h < 12; h++) steps.push([mta.header(`X-Header-${h}`, `value ${h} of message ${i}`), true]);
  steps.push([Buffer.concat([mta.macro(C.SMFIC_EOH, { i: `Q${i}` }), mta.eoh()]), true]);
  steps.push([mta.body(BODY), true]);
  steps.push([Buffer.concat([mta.macro(C.SMFIC_BODYEOB, { i: `Q${i}` }), mta.eob()]), true]);
  steps.push([mta.quit(), false]);
  return steps;
}

async function run(port: number, conns: number, seconds: number): Promise<LoadResult> {
  const lat: number[] = [];
  const end = Date.now() + seconds * 1000;
  const started = process.hrtime.bigint();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (Date.now() < end) {
      const steps = transaction(next++);
      const t0 = process.hrtime.bigint();
      const s = net.connect(port, '127.0.0.1');
      s.setNoDelay(true);
      const dec = new FrameDecoder(1 << 20);
      let waiting: ((closed?: boolean) => void) | undefined;
      let finals = 0;
      s.on('close', () => waiting?.(true));
      s.on('data', (d: Buffer) => {
        for (const f of dec.push(d)) if (f.cmd !== C.SMFIR_PROGRESS && f.cmd !== C.SMFIR_ADDHEADER) finals++;
        if (finals > 0 && waiting) { finals--; const w = waiting; waiting = undefined; w(); }
      });
      await new Promise<void>((r, j) => { s.once('connect', () => r()); s.once('error', j); });
      for (const [bytes, reply] of steps) {
        if (!reply) { s.write(bytes); continue; }
        const closed = await new Promise<boolean | undefined>((r) => {
          if (finals > 0) { finals--; r(false); return; }
          waiting = r;
          s.write(bytes);
        });
        if (closed) throw new Error('the server closed the connection mid-transaction');
      }
      s.destroy();
      lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  };
  await Promise.all(Array.from({ length: conns }, worker));
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  lat.sort((a, b) => a - b);
  const pct = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] ?? NaN;
  return { requests: lat.length, seconds: secs, rps: lat.length / secs, p50: pct(0.5), p99: pct(0.99) };
}

export function benchMilter(seconds = SECONDS): Promise<(string | number)[][]> {
  return versus('milter 52-frame tx', 'tx/s', 'ref-milter.ts', 'milter', (port, conns) => run(port, conns, seconds));
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  process.stdout.write(versusTable(await benchMilter()) + '\n');
}
