// npm run bench:feedback - does a flood of scanner verdicts delay answers?
//
// A local redis-server and one sluiced with the fleet store and
// feedback.channel on it. One policy connection asks question after
// question (each answered before the next, as an smtpd process does) for
// six seconds: after a second of warming up, a quiet second is the
// reference; then this process publishes 100,000 verdicts on the channel
// as fast as Redis takes them, and the answers are measured for three
// seconds from the flood's start (the daemon learns them meanwhile, and
// its fleet store writes and publishes what they changed). Printed: the
// answers' latency (p50, p99, max) in each window, measured in the same
// run, and how many verdicts sluiced learned or refused by the end.
// Target: no answer delayed by more than 10 ms.
import net from 'node:net';
import { createClient } from '@redis/client';
import { printRows, startSluiced } from './common.js';
import { encodeRequest } from '../../dist/policy/codec.js';
import { steadyLoad } from '../helpers/load.js';
import { startRedis } from '../helpers/redis.js';

const FLOOD = 100_000;
const cleanups: (() => void)[] = [];
const redis = await startRedis({ teardown: (fn) => { cleanups.push(fn as () => void); } });
const d = await startSluiced(`policy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: []\nfleet:\n  url: "${redis.url}"\nfeedback:\n  channel: verdicts\n${steadyLoad()}`, 'policy');

// 200 clients asked again and again: after the warm-up each is known, so an
// answer waits for no store read (fleet.read_wait), only for the event loop.
const request = (i: number): Buffer => encodeRequest(Object.entries({
  request: 'smtpd_access_policy', protocol_state: 'RCPT', protocol_name: 'ESMTP', client_address: `10.9.0.${i % 200}`,
  client_name: 'mx.example.net', reverse_client_name: 'mx.example.net', helo_name: 'mx.example.net', sender: 's@example.net',
  recipient: 'u@example.org', instance: `${i.toString(16)}.fb`, client_port: '25000', size: '0', queue_id: '', stress: '',
}));

const sock = net.connect(d.port, '127.0.0.1');
await new Promise((r) => sock.once('connect', r));
let waiting: (() => void) | undefined;
let buf = '';
sock.setEncoding('utf8');
sock.on('data', (s: string) => { buf += s; if (buf.includes('\n\n')) { buf = ''; waiting?.(); } });
const ask = (i: number): Promise<void> => new Promise((r) => { waiting = r; sock.write(request(i)); });

const pub = createClient({ url: redis.url });
await pub.connect();
const samples: { at: number; ms: number }[] = [];
// sluiced's own worst event-loop delay of each second (sluice_event_loop_lag_seconds), read as the run goes.
const lags: { at: number; ms: number }[] = [];
const lagOf = async (): Promise<number> => Number(/^sluice_event_loop_lag_seconds (\S+)$/m.exec(await (await fetch(String(d.ready['metrics']))).text())?.[1] ?? 0) * 1000;
const lagTimer = setInterval(() => { const at = performance.now(); void lagOf().then((ms) => lags.push({ at, ms })); }, 1000);
const start = performance.now();
let flooding: Promise<unknown> | undefined;
let floodStart = 0;
let floodEnd = 0;
for (let i = 0; performance.now() - start < 6000; i++) {
  if (flooding === undefined && performance.now() - start >= 2000) {
    floodStart = performance.now();
    const sent: Promise<unknown>[] = [];
    // In batches, so that this process also keeps answering its own socket.
    flooding = (async () => {
      for (let n = 0; n < FLOOD; n += 2000) {
        for (let k = n; k < n + 2000; k++) sent.push(pub.publish('verdicts', JSON.stringify({ ip: `10.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}`, action: k % 10 === 0 ? 'no action' : 'reject', qid: 'unknown', score: 20 })));
        await new Promise((r) => setImmediate(r));
      }
      await Promise.all(sent);
      floodEnd = performance.now();
    })();
  }
  const t0 = performance.now();
  await ask(i);
  samples.push({ at: t0, ms: performance.now() - t0 });
}
await flooding;
clearInterval(lagTimer);
await new Promise((r) => setTimeout(r, 1500));
const metrics = await (await fetch(String(d.ready['metrics']))).text();
const counted = (name: string): number => [...metrics.matchAll(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
const stats = (xs: number[]): [number, number, number] => {
  const s = [...xs].sort((a, b) => a - b);
  return [s[s.length >> 1] ?? 0, s[Math.floor(s.length * 0.99)] ?? 0, s[s.length - 1] ?? 0];
};
const inFlood = samples.filter((s) => s.at >= floodStart && s.at < floodStart + 3000).map((s) => s.ms);
const quiet = samples.filter((s) => s.at >= start + 1000 && s.at < floodStart).map((s) => s.ms);
const [q50, q99, qmax] = stats(quiet);
const [f50, f99, fmax] = stats(inFlood);
printRows([
  ['feedback flood', 'answers', 'p50 ms', 'p99 ms', 'max ms', 'over 10 ms', 'max added ms', 'target'],
  ['a quiet second (reference)', quiet.length, q50, q99, qmax, quiet.filter((x) => x > 10).length, '', ''],
  [`3 s from the flood (${FLOOD} published in ${Math.round(floodEnd - floodStart)} ms)`, inFlood.length, f50, f99, fmax, inFlood.filter((x) => x > 10).length, fmax - qmax, '<= 10'],
]);
const worst = (from: number, to: number): number => Math.max(0, ...lags.filter((l) => l.at > from && l.at <= to + 1000).map((l) => l.ms));
console.log(`sluiced's own worst event-loop delay: ${worst(start + 1000, floodStart).toFixed(1)} ms in the quiet second, ${worst(floodStart, floodStart + 3000).toFixed(1)} ms from the flood`);
console.log(`verdicts learned ${counted('sluice_scanner_verdicts_total')}, refused ${counted('sluice_scanner_refused_total')}`);
sock.destroy();
await pub.quit();
await d.stop();
for (const c of cleanups) c();
