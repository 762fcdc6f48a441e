// npm run bench:replay - sluicectl replay's speed: log lines per second
// through the session builder and the engine, beside a plain count of the
// same file's lines (the floor of reading it), with the resident memory
// after. The log: 1,000,000 lines as Postfix 3.7 writes them (the captured
// logs in test/fixtures/maillog): sessions from 20,000 clients, nine in ten
// delivering one message (smtpd, cleanup, qmgr and delivery lines), one in
// ten a zombie lost after RCPT; written to a temp file in pieces.
import { appendFileSync, createReadStream, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { replayFiles } from '../../dist/replay/run.js';
import { fromText } from '../../dist/config/load.js';
import { printRows } from './common.js';

const LINES = Number(process.env['BENCH_LINES'] ?? 1_000_000);
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-replay-bench-'));
const file = path.join(dir, 'mail.log');
writeFileSync(file, '');
let out: string[] = [];
let written = 0;
for (let i = 0; written + out.length < LINES; i++) {
  const c = i % 20_000;
  const ip = `10.${c >> 8}.${c & 255}.${(i % 7) + 1}`;
  const pid = 1000 + (i % 64);
  const t = `${String(Math.floor(i / 3600) % 24).padStart(2, '0')}:${String(Math.floor(i / 60) % 60).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}`;
  if (c % 10 === 0) {
    out.push(`Nov 27 ${t} mx postfix/smtpd[${pid}]: connect from unknown[${ip}]`,
      `Nov 27 ${t} mx postfix/smtpd[${pid}]: lost connection after RCPT from unknown[${ip}]`,
      `Nov 27 ${t} mx postfix/smtpd[${pid}]: disconnect from unknown[${ip}] ehlo=1 mail=1 rcpt=0/1 commands=2/3`);
  } else {
    const q = `4A1B2C3D${(i % 4096).toString(16).padStart(3, '0').toUpperCase()}`;
    out.push(`Nov 27 ${t} mx postfix/smtpd[${pid}]: connect from mail${c}.example.net[${ip}]`,
      `Nov 27 ${t} mx postfix/smtpd[${pid}]: ${q}: client=mail${c}.example.net[${ip}]`,
      `Nov 27 ${t} mx postfix/cleanup[900]: ${q}: message-id=<${i}@example.net>`,
      `Nov 27 ${t} mx postfix/qmgr[800]: ${q}: from=<s${c}@example.net>, size=2048, nrcpt=1 (queue active)`,
      `Nov 27 ${t} mx postfix/smtpd[${pid}]: disconnect from mail${c}.example.net[${ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5`,
      `Nov 27 ${t} mx postfix/local[700]: ${q}: to=<user@example.org>, relay=local, delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, status=sent (delivered to mailbox)`,
      `Nov 27 ${t} mx postfix/qmgr[800]: ${q}: removed`);
  }
  if (out.length >= 10_000 || written + out.length >= LINES) {
    const take = out.slice(0, LINES - written);
    appendFileSync(file, take.join('\n') + '\n');
    written += take.length;
    out = [];
  }
}

const count = async (): Promise<number> => {
  let n = 0;
  for await (const _ of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) n++;
  return n;
};
const loaded = fromText('', 'defaults');
if (!loaded.ok) throw new Error('defaults do not load');
let t0 = process.hrtime.bigint();
const plain = await count();
const plainS = Number(process.hrtime.bigint() - t0) / 1e9;
t0 = process.hrtime.bigint();
const report = await replayFiles(loaded.config, [file]);
const replayS = Number(process.hrtime.bigint() - t0) / 1e9;
const rss = process.memoryUsage().rss / 2 ** 20;
rmSync(dir, { recursive: true, force: true });
const rows: (string | number)[][] = [
  ['replay', 'lines/s', 'plain line count lines/s', 'ratio', 'target', 'sessions', 'RSS MiB'],
  [`${plain} lines`, report.lines / replayS, plain / plainS, (report.lines / replayS) / (plain / plainS), '>= 200,000 lines/s', report.sessions, rss],
];
printRows(rows);
