// Shared benchmark plumbing: servers in child processes, a closed-loop load
// generator over loopback, percentiles and the printed table. Every figure is
// printed beside a reference measured in the same run on the same machine.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { readFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { steadyLoad } from '../helpers/load.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Server {
  proc: ChildProcess;
  port: number;
  /** The JSON line the port came from (sluiced's ready line: listen, metrics, ...). */
  ready: Record<string, unknown>;
  rss(): number;
  stop(): Promise<void>;
}

/**
 * Starts a child that prints one JSON line with {"port": N}, or sluiced's
 * ready line, whose `listen.<key>` endpoint is used.
 */
export async function startServer(args: string[], key: 'port' | 'policy' | 'milter' = 'port', env: NodeJS.ProcessEnv = {}): Promise<Server> {
  const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  const [port, ready] = await new Promise<[number, Record<string, unknown>]>((resolve, reject) => {
    let buf = '';
    const read = (d: string): void => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const line of lines) {
        if (!line.startsWith('{')) continue;
        const rec = JSON.parse(line) as { port?: number; listen?: Record<string, string[]> };
        const ep = key === 'port' ? String(rec.port ?? '') : rec.listen?.[key]?.[0] ?? '';
        const m = /(\d+)$/.exec(ep);
        if (!m) continue;
        // Past the ready line the server's log is drained unread: this
        // process also runs the load, and parsing every line would slow
        // the load for the server that logs more.
        proc.stdout!.off('data', read);
        proc.stdout!.resume();
        resolve([Number(m[1]), rec]);
        return;
      }
    };
    proc.stdout!.setEncoding('utf8').on('data', read);
    proc.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
  return {
    proc, port, ready,
    rss: () => rssOf(proc.pid!),
    stop: () => new Promise((r) => { proc.once('exit', () => r()); proc.kill('SIGTERM'); }),
  };
}

/** CPU time the process has used so far (user + system), in microseconds; NaN if it is gone. */
export function cpuOf(pid: number): number {
  try {
    // /proc/PID/stat: utime and stime are fields 14 and 15, in clock ticks
    // (USER_HZ, 100 on Linux); the name before them may hold spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10_000;
  } catch {
    return NaN;
  }
}

export function rssOf(pid: number): number {
  try {
    // /proc/PID/statm: resident pages in the second field.
    const statm = readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ');
    return Number(statm[1]) * 4096;
  } catch {
    return NaN;
  }
}


export interface LoadResult {
  requests: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  /** The server's CPU time per request or transaction, in microseconds (set by versus()). */
  cpuUs?: number;
}

/**
 * Closed loop: `conns` connections, each sends the next request as soon as its
 * reply is complete, for `seconds`. `done(buf)` says how many bytes of `buf`
 * form complete replies (0 when incomplete).
 */
export async function closedLoop(opts: {
  port: number;
  conns: number;
  seconds: number;
  request: (i: number) => Buffer;
  replyLength: (buf: Buffer) => number;
  /** Bytes to send once per connection first (milter negotiation); default none. */
  newConnectionEachRequest?: boolean;
}): Promise<LoadResult> {
  const lat: number[] = [];
  let count = 0;
  const end = Date.now() + opts.seconds * 1000;
  const started = process.hrtime.bigint();
  let next = 0;
  const worker = async (): Promise<void> => {
    let sock: net.Socket | undefined;
    let pending: Buffer = Buffer.alloc(0);
    let waiter: (() => void) | undefined;
    const connect = async (): Promise<net.Socket> => {
      const s = net.connect(opts.port, '127.0.0.1');
      s.setNoDelay(true);
      await new Promise<void>((r, j) => { s.once('connect', () => r()); s.once('error', j); });
      s.on('data', (d: Buffer) => {
        pending = pending.length ? Buffer.concat([pending, d]) : d;
        const n = opts.replyLength(pending);
        if (n > 0) {
          pending = pending.subarray(n);
          const w = waiter;
          waiter = undefined;
          w?.();
        }
      });
      return s;
    };
    while (Date.now() < end) {
      if (!sock || opts.newConnectionEachRequest) {
        sock?.destroy();
        sock = await connect();
      }
      const t0 = process.hrtime.bigint();
      const replied = new Promise<void>((r) => { waiter = r; });
      sock.write(opts.request(next++));
      await replied;
      lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      count++;
    }
    sock?.destroy();
  };
  await Promise.all(Array.from({ length: opts.conns }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  lat.sort((a, b) => a - b);
  const pct = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] ?? NaN;
  return { requests: count, seconds, rps: count / seconds, p50: pct(0.5), p99: pct(0.99) };
}

/** Starts bin/sluiced in the foreground with `yaml` (plus a temp state dir, warn-level JSON logs). */
export function startSluiced(yaml: string, key: 'policy' | 'milter', dir = mkdtempSync(path.join(tmpdir(), 'sluice-bench-'))): Promise<Server> {
  const file = path.join(dir, 'sluice.yaml');
  writeFileSync(file, `state_dir: ${dir}\nlog:\n  level: info\n  format: json\nmetrics:\n  listen: "inet:127.0.0.1:0"\n${yaml}`);
  return startServer([path.join(ROOT, 'bin', 'sluiced'), '--foreground', '--config', file], key);
}

/**
 * Runs a and b alternately (after one warm-up each), five times, and returns
 * the median run of each by throughput, and each round's a/b ratio: a busy
 * neighbour hits both alike, and the spread of the rounds shows how much.
 */
export async function alternate(a: () => Promise<LoadResult>, b: () => Promise<LoadResult>, rounds = 5): Promise<[LoadResult, LoadResult, number[]]> {
  await a();
  await b();
  const ra: LoadResult[] = [];
  const rb: LoadResult[] = [];
  for (let i = 0; i < rounds; i++) {
    ra.push(await a());
    rb.push(await b());
  }
  const ratios = ra.map((x, i) => x.rps / rb[i]!.rps);
  // The median run by rate, with the median of the runs' CPU times.
  const median = (xs: LoadResult[]): LoadResult => ({ ...middle(xs, (x) => x.rps), cpuUs: middle(xs.map((x) => x.cpuUs ?? NaN), (c) => c) });
  return [median(ra), median(rb), ratios];
}

/** The middle item of `xs` ordered by `by`. */
function middle<T>(xs: T[], by: (x: T) => number): T {
  return [...xs].sort((x, y) => by(x) - by(y))[Math.floor(xs.length / 2)]!;
}

/** Runs `load` against `server` and adds the server's CPU time per request it served. */
async function metered(server: Server, load: () => Promise<LoadResult>): Promise<LoadResult> {
  const before = cpuOf(server.proc.pid!);
  const r = await load();
  return { ...r, cpuUs: (cpuOf(server.proc.pid!) - before) / r.requests };
}

/**
 * sluiced (the `key` listener) against a reference server script, at 1, 10
 * and 100 connections; `load` drives one of them at a port for a number of
 * connections. Rows: label, conns, rate, ref rate, ratio, p50s, p99s, round
 * ratios, then each server's CPU time per request (the median over its
 * rounds); then RSS.
 * The two servers share the machine's cores with the load generator, so the
 * rate ratio is near 1 while the generator is the bottleneck and near the
 * ratio of CPU per request while the servers are: the CPU columns show that
 * cost whichever it was.
 */
export async function versus(
  label: string, unit: string, refScript: string, key: 'policy' | 'milter',
  load: (port: number, conns: number) => Promise<LoadResult>,
): Promise<(string | number)[][]> {
  const ref = await startServer(['--import=tsx', path.join(ROOT, 'test', 'bench', refScript)]);
  // The engine decides every request, but under steadyLoad(): this measures
  // protocol and decision cost, not rate limiting (which, at these rates
  // from four /24s, would rightly defer most of it) nor what it learns from
  // sessions that ask once and go.
  const sluice = await startSluiced(`policy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nlimits:\n  max_connections: 1000\n${steadyLoad()}`, key);
  const rows: (string | number)[][] = [[key, 'conns', unit, `ref ${unit}`, 'ratio', 'p50 ms', 'ref p50', 'p99 ms', 'ref p99', 'round ratios', 'CPU us', 'ref CPU us']];
  try {
    for (const conns of [1, 10, 100]) {
      const [s, r, ratios] = await alternate(() => metered(sluice, () => load(sluice.port, conns)), () => metered(ref, () => load(ref.port, conns)));
      rows.push([label, conns, s.rps, r.rps, s.rps / r.rps, s.p50, r.p50, s.p99, r.p99, spread(ratios), s.cpuUs!, r.cpuUs!]);
    }
    rows.push(['sluiced RSS MiB', '', sluice.rss() / 2 ** 20, ref.rss() / 2 ** 20, '', '', '', '', '', '', '', '']);
  } finally {
    await ref.stop();
    await sluice.stop();
  }
  return rows;
}

/** The lowest and highest of the ratios, as "0.85-0.97". */
export function spread(ratios: number[]): string {
  return `${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}`;
}

/** versus()'s rows as a table, the connection counts printed as counts (not 1.00). */
export function versusTable(rows: (string | number)[][]): string {
  return table(rows.map((r) => (typeof r[1] === 'number' ? [r[0]!, String(r[1]), ...r.slice(2)] : r)));
}

export function table(rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (n >= 100) return Math.round(n).toLocaleString('en-US');
  return n.toFixed(2);
}

/** Prints a benchmark's rows: as JSON (the data rows) under BENCH_JSON, for bench/all.ts, else as a table. */
export function printRows(rows: (string | number)[][]): void {
  if (process.env['BENCH_JSON']) process.stdout.write(JSON.stringify(rows.slice(1)) + '\n');
  else process.stdout.write(table(rows) + '\n');
}
