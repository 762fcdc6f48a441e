// Many connections at once, for the scale tests and `npm run bench:holds`:
// held replies on both protocols, idle connections, and a short closed loop
// of normal policy requests. Clients spread over many /24s so per-network
// budgets are not what is measured.
import net from 'node:net';
import { readFileSync } from 'node:fs';
import * as C from '../../dist/milter/constants.js';
import { MilterClient, mta, type Reply } from './milter-client.js';
import { PolicyClient, rcptRequest } from './policy-client.js';

/**
 * Config for load that measures work: every rate limit out of reach (load
 * from a few networks would rightly be deferred), and no penalty for a
 * session that asks once and goes (each load request is such a session, and
 * learning from it would soon hold every load client). The engine still
 * decides each request and records each outcome.
 */
export function steadyLoad(): string {
  const keys = ['connections_per_client', 'connections_per_network', 'messages_per_client', 'recipients_per_client',
    'recipients_per_network', 'concurrency_per_client', 'concurrency_per_network'];
  // Benchmarks reuse a client's port across transactions, so sessions can look abandoned: that costs nothing and probes no one.
  return `rates:\n${keys.map((k) => `  ${k}: 1000000000\n`).join('')}weights:\n  abandoned: 0\nthresholds:\n  trust_abandon_rate: 1000000000\n`;
}

/** A config fragment under which a client without reverse DNS is held `holdSeconds` and nothing is rate limited. */
export function holdingConfig(holdSeconds: number, budget: number): string {
  return `tarpit:\n  hold_per_point: ${holdSeconds}s\n  max_hold: ${holdSeconds}s\n  budget: ${budget}\n  budget_per_network: ${budget}\n${steadyLoad()}`;
}

/** The i-th client address, 250 to a /24. */
export function clientAddress(i: number, first = 10): string {
  return `${first}.${(i / 62_500) & 255}.${Math.floor(i / 250) % 250}.${1 + (i % 250)}`;
}

/** Runs fn over 0..n-1, `width` at a time (a listen backlog takes a few hundred at once). */
export async function inBatches<T>(n: number, width: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(n);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, n) }, async () => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  }));
  return out;
}

export interface Held<C> {
  readonly client: C;
  /** The held reply, once it comes; '' or undefined if the connection closed without one. */
  readonly answer: Promise<string | Reply | undefined>;
}

/** n policy connections, each with one RCPT request from a client without reverse DNS (so it is held). */
export function holdPolicy(port: number, n: number, first = 10): Promise<Held<PolicyClient>[]> {
  return inBatches(n, 200, async (i) => {
    const client = await PolicyClient.connect({ port });
    const address = clientAddress(i, first);
    const answer = client.ask(rcptRequest({ client_address: address, client_name: 'unknown', reverse_client_name: 'unknown', client_port: String(1024 + i), instance: `h${i}` }));
    return { client, answer };
  });
}

/** n milter connections, negotiated and connected as Postfix does, each held at HELO (no reverse DNS). */
export function holdMilter(port: number, n: number, first = 11): Promise<Held<MilterClient>[]> {
  return inBatches(n, 200, async (i) => {
    const client = await MilterClient.connect(port);
    const opened = await client.open('Postfix 3.7.11', clientAddress(i, first), `[${clientAddress(i, first)}]`);
    if (opened?.final.cmd !== C.SMFIR_CONTINUE) throw new Error(`milter connection ${i} was not accepted`);
    const answer = client.ask(mta.macro(C.SMFIC_HELO), mta.helo(`host-${i}.example.net`));
    return { client, answer };
  });
}

/** n connections that send nothing; resolves with them once all are open. */
export function idle(port: number, n: number): Promise<net.Socket[]> {
  return inBatches(n, 200, (i) => new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const fail = (err: Error): void => reject(new Error(`idle connection ${i}: ${err.message}`));
    s.once('error', fail);
    s.once('connect', () => { s.off('error', fail); s.on('error', () => {}); resolve(s); });
  }));
}

/** A closed loop of normal policy requests (clients with reverse DNS: passed at once) on `conns` connections; latencies in ms. */
export async function normalPolicy(port: number, conns: number, ms: number, onReply?: (reply: string) => void): Promise<number[]> {
  const lat: number[] = [];
  const end = Date.now() + ms;
  await Promise.all(Array.from({ length: conns }, async (_, w) => {
    const c = await PolicyClient.connect({ port });
    for (let i = 0; Date.now() < end; i++) {
      const t0 = process.hrtime.bigint();
      const reply = await c.ask(rcptRequest({ client_address: clientAddress(w * 100 + (i % 100), 12), client_port: String(2000 + w), instance: `n${w}.${i}`, recipient: `u${i}@example.org` }));
      if (!reply.startsWith('action=')) throw new Error(`normal request ${w}/${i} got no reply`);
      onReply?.(reply);
      lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    c.close();
  }));
  return lat.sort((a, b) => a - b);
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

/** The soft limit on open files of this process (/proc/self/limits). */
export function openFilesLimit(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return !m || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

/** GETs a Prometheus metric's value from the metrics endpoint: the first series whose labels contain `labels`. */
export async function metric(url: string, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(url)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*${labels}[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}
