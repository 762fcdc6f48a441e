// npm run bench:dns - what DNS lists cost the policy service.
//
// rbldnsd serves three zones on loopback; one sluiced asks them all at each
// new client's first request, another has DNS lists off. Both get the same
// RCPT requests from 10,000 client addresses never seen before (cold: every
// first request waits for three lookups) and then from the same addresses
// again (warm: the answers are cached), each request a new session, over
// 50 connections. Printed: throughput with lists on beside lists off for
// each pass and their ratio (target: warm >= 0.9 x off), DNS lookups per
// second in the cold pass, the worst event-loop lag sluiced reported, and
// each daemon's CPU time per request in the warm rounds (steadier than the
// rates on a shared machine).
// One client in ten is on a list, but dnsbl.threshold is out of reach and
// dnsbl.points is 0: every answer is weighed, and every client still gets
// the answer it gets with lists off, so what differs is what the lookups
// cost (a deferral's log line or a tarpit hold would be measured otherwise).
import net from 'node:net';
import { encodeRequest } from '../../dist/policy/codec.js';
import { cpuOf, printRows, spread, startSluiced, type Server } from './common.js';
import { steadyLoad } from '../helpers/load.js';
import { startRbldnsd } from '../helpers/dns.js';

const CLIENTS = Number(process.env["BENCH_CLIENTS"] ?? 10_000);
const CONNS = Number(process.env["BENCH_CONNS"] ?? 50);
const cleanups: (() => void)[] = [];

function address(i: number, first = 10): string {
  return `${first}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

// One address in ten is listed somewhere: a in zone a, b in zone b, the rest clean.
const listed = (zone: number) => Array.from({ length: CLIENTS / 30 }, (_, k) => address(k * 30 + zone * 10));
const { server } = await startRbldnsd({ teardown: (fn) => { cleanups.push(fn as () => void); } }, [
  { name: 'a.bench', type: 'ip4set', data: [':127.0.0.2:', ...listed(0)] },
  { name: 'b.bench', type: 'ip4set', data: [':127.0.0.3:', ...listed(1)] },
  { name: 'c.bench', type: 'ip4set', data: [':127.0.0.4:', ...listed(2)] },
]);

const base = `policy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: []\nlimits:\n  max_connections: 1000\n${steadyLoad()}`;
const lists = `dns:\n  resolvers: ["${server}"]\n  timeout: 2s\ndnsbl:\n  sites: ["a.bench*3", "b.bench*2", "c.bench"]\n  threshold: 100\n  points: 0\n`;

let seq = 0;
function request(i: number, first: number): Buffer {
  seq++;
  return encodeRequest(Object.entries({
    request: 'smtpd_access_policy', protocol_state: 'RCPT', protocol_name: 'ESMTP',
    client_address: address(i, first), client_name: `host-${i}.example.net`, client_port: '25000',
    reverse_client_name: `host-${i}.example.net`, server_address: '127.0.0.1', server_port: '25',
    helo_name: `host-${i}.example.net`, sender: `s${i}@example.net`, recipient: 'user@example.org',
    recipient_count: '0', queue_id: '', instance: `${seq.toString(16)}.bench`, size: '0', stress: '',
  }));
}

/** Every address once over CONNS connections (10.x; 11.x to warm up); requests per second. */
async function pass(port: number, first = 10): Promise<number> {
  let next = 0;
  const started = process.hrtime.bigint();
  const worker = async (): Promise<void> => {
    const s = net.connect(port, '127.0.0.1');
    s.setNoDelay(true);
    await new Promise<void>((r, j) => { s.once('connect', () => r()); s.once('error', j); });
    let buf = '';
    let wake: (() => void) | undefined;
    s.setEncoding('utf8').on('data', (d: string) => { buf += d; if (buf.includes('\n\n')) { buf = ''; wake?.(); } });
    while (next < CLIENTS) {
      const i = next++;
      await new Promise<void>((r) => { wake = r; s.write(request(i, first)); });
    }
    s.destroy();
  };
  await Promise.all(Array.from({ length: CONNS }, worker));
  return CLIENTS / (Number(process.hrtime.bigint() - started) / 1e9);
}

/** The daemon's metrics as text. */
async function scrape(d: Server): Promise<string> {
  return (await fetch(String(d.ready['metrics']))).text();
}

const sum = (text: string, name: string): number => [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);

/** Runs `work` while sampling the daemon's event-loop lag gauge every 200 ms; the worst, in ms. */
async function withLag<T>(d: Server, work: Promise<T>): Promise<[T, number]> {
  let worst = 0;
  let done = false;
  const sampler = (async () => {
    while (!done) {
      worst = Math.max(worst, sum(await scrape(d), 'sluice_event_loop_lag_seconds') * 1000);
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const r = await work;
  done = true;
  await sampler;
  return [r, worst];
}

const on = await startSluiced(base + lists, 'policy');
const off = await startSluiced(base, 'policy');
try {
  // Both daemons warmed up first on other addresses (11.x), so the JIT is not what is measured.
  await pass(on.port, 11);
  await pass(off.port, 11);
  await pass(on.port, 11);
  await pass(off.port, 11);
  const queriesBefore = sum(await scrape(on), 'sluice_dns_queries_total');
  const coldStart = Date.now();
  const [coldOn, lagCold] = await withLag(on, pass(on.port));
  const coldSeconds = (Date.now() - coldStart) / 1000;
  const lookups = sum(await scrape(on), 'sluice_dns_queries_total') - queriesBefore;
  const coldOff = await pass(off.port);
  // Warm: five alternating rounds, the median of each side (a busy neighbour hits both alike).
  const ons: number[] = [];
  const offs: number[] = [];
  const cpuOn: number[] = [];
  const cpuOff: number[] = [];
  /** A pass, with the daemon's CPU time per request (user + system, from /proc) in microseconds. */
  const metered = async (d: Server, run: Promise<number>, cpu: number[]): Promise<number> => {
    const before = cpuOf(d.proc.pid!);
    const r = await run;
    cpu.push((cpuOf(d.proc.pid!) - before) / CLIENTS);
    return r;
  };
  let lagWarm = 0;
  for (let round = 0; round < 5; round++) {
    const [r, lag] = await withLag(on, metered(on, pass(on.port), cpuOn));
    ons.push(r);
    lagWarm = Math.max(lagWarm, lag);
    offs.push(await metered(off, pass(off.port), cpuOff));
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const ratios = ons.map((x, i) => x / offs[i]!);
  const warmOn = median(ons);
  const warmOff = median(offs);
  const rows: (string | number)[][] = [
    ['dns lists', 'lists on req/s', 'lists off req/s', 'ratio', 'target', 'lookups/s', 'worst loop lag ms', 'round ratios', 'CPU us on', 'CPU us off'],
    [`cold (${CLIENTS} new clients)`, coldOn, coldOff, coldOn / coldOff, '', lookups / coldSeconds, lagCold, '', '', ''],
    ['warm (cached, median of 5)', warmOn, warmOff, warmOn / warmOff, '>= 0.9', '', lagWarm, spread(ratios), median(cpuOn), median(cpuOff)],
  ];
  printRows(rows);
} finally {
  await on.stop();
  await off.stop();
  for (const c of cleanups) c();
}
