// npm run bench:fleet - what sharing reputation through a store costs.
//
// A local redis-server; one sluiced with the fleet store on, one with it
// off. Both get the same transactions from 10,000 client addresses: an RCPT
// request and an END-OF-MESSAGE request of the same instance (a delivery,
// so every transaction is learned, and written behind to the store), over
// 50 connections, five alternating rounds of BENCH_SECONDS (default 3).
// Printed: transactions per second with the store beside without it, the
// ratio (target: >= 0.8), each daemon's CPU time per transaction and the
// store server's (it shares the machine's cores with both), and the
// store calls per decision (the daemon's count: a read is one entry, a write
// one script call for up to 500 keys).
import { alternate, closedLoop, cpuOf, printRows, spread, startSluiced, type LoadResult, type Server } from './common.js';
import { encodeRequest } from '../../dist/policy/codec.js';
import { steadyLoad } from '../helpers/load.js';
import { startRedis } from '../helpers/redis.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 3);
const CONNS = 50;
const cleanups: (() => void)[] = [];
const redis = await startRedis({ teardown: (fn) => { cleanups.push(fn as () => void); } });

function attrs(i: number, state: 'RCPT' | 'END-OF-MESSAGE'): Buffer {
  const c = i % 10_000;
  return encodeRequest(Object.entries({
    request: 'smtpd_access_policy', protocol_state: state, protocol_name: 'ESMTP',
    client_address: `10.${c >> 8}.${c & 255}.1`, client_name: `host-${c}.example.net`, client_port: '25000',
    reverse_client_name: `host-${c}.example.net`, server_address: '127.0.0.1', server_port: '25',
    helo_name: `host-${c}.example.net`, sender: `s${c}@example.net`, recipient: 'user@example.org',
    recipient_count: state === 'RCPT' ? '0' : '1', queue_id: '', instance: `${i.toString(16)}.fleet`, size: '0', stress: '',
  }));
}
/** One transaction, as one write of two requests (the second after the first is answered is what Postfix does; pipelining two is the same work for the server). */
const request = (i: number): Buffer => Buffer.concat([attrs(i, 'RCPT'), attrs(i, 'END-OF-MESSAGE')]);
/** Both replies in. */
function replyLength(buf: Buffer): number {
  const first = buf.indexOf('\n\n');
  if (first < 0) return 0;
  const second = buf.indexOf('\n\n', first + 2);
  return second < 0 ? 0 : second + 2;
}

const base = `policy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: []\nlimits:\n  max_connections: 1000\n${steadyLoad()}`;
const on = await startSluiced(`${base}fleet:\n  url: "${redis.url}"\n`, 'policy');
const off = await startSluiced(base, 'policy');
/** Calls the daemon with the store on has made to it (its own count, sluice_fleet_ops_total). */
const commands = async (): Promise<number> => {
  const text = await (await fetch(String(on.ready['metrics']))).text();
  return [...text.matchAll(/^sluice_fleet_ops_total\{[^}]*\} (\S+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
};

try {
  let decisions = 0;
  let storeCommands = 0;
  const redisCpu: number[] = [];
  const metered = async (d: Server, counting: boolean): Promise<LoadResult> => {
    const cpu = cpuOf(d.proc.pid!);
    const before = counting ? await commands() : 0;
    const redisBefore = cpuOf(redis.pid()!);
    const r = await closedLoop({ port: d.port, conns: CONNS, seconds: SECONDS, request, replyLength });
    if (counting) {
      // Writes go behind: wait for the next flush before counting what this round sent.
      await new Promise((res) => setTimeout(res, 1200));
      storeCommands += (await commands()) - before;
      redisCpu.push((cpuOf(redis.pid()!) - redisBefore) / r.requests);
      decisions += r.requests * 2;
    }
    return { ...r, cpuUs: (cpuOf(d.proc.pid!) - cpu) / r.requests };
  };
  const [s, o, ratios] = await alternate(() => metered(on, true), () => metered(off, false));
  const rows: (string | number)[][] = [
    ['fleet store', 'store on tx/s', 'store off tx/s', 'ratio', 'target', 'round ratios', 'CPU us on', 'CPU us off', 'redis-server CPU us', 'store calls / decision'],
    [`${CONNS} conns, ${SECONDS}s rounds`, s.rps, o.rps, s.rps / o.rps, '>= 0.8', spread(ratios), s.cpuUs!, o.cpuUs!, [...redisCpu].sort((x, y) => x - y)[redisCpu.length >> 1]!, storeCommands / decisions],
  ];
  printRows(rows);
} finally {
  await on.stop();
  await off.stop();
  for (const c of cleanups) c();
}
