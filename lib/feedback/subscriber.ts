// subscriber.ts - the verdict channel's subscriber, run in a worker thread.
//
// A flood of verdicts (100,000 in a second) is mostly the Redis client's
// work: it decodes every message of a burst in one go, as the socket reads
// them, which would hold up the policy and milter answers behind it. Here
// that happens off the daemon's event loop: the worker subscribes (the
// connection as connect.ts makes it: standalone, Sentinel or Cluster) and
// posts the raw messages on in batches of at most BATCH, every few
// milliseconds; the daemon checks and learns them in turns (feedback.ts).
// It says when the server is up or away; the daemon logs it.

import { parentPort, workerData } from 'node:worker_threads';
import type { Config } from '../config/schema.js';
import { connect } from '../fleet/connect.js';

/** Messages posted at most at once. */
const BATCH = 1000;
const EVERY_MS = 5;

export interface SubscriberData {
  readonly store: Config['fleet'];
  readonly channel: string;
}

/** What the worker posts. */
export type SubscriberMessage =
  | { readonly kind: 'verdicts'; readonly messages: string[] }
  | { readonly kind: 'state'; readonly up: boolean; readonly why?: string }
  | { readonly kind: 'failed'; readonly why: string };

const port = parentPort!;
const data = workerData as SubscriberData;
let batch: string[] = [];
let timer: NodeJS.Timeout | undefined;
const post = (m: SubscriberMessage): void => port.postMessage(m);
const flush = (): void => {
  timer = undefined;
  if (batch.length === 0) return;
  post({ kind: 'verdicts', messages: batch });
  batch = [];
};

try {
  const conn = connect(data.store, (up, why) => post(why === undefined ? { kind: 'state', up } : { kind: 'state', up, why }));
  conn.subscribe(data.channel, (m) => {
    batch.push(m);
    if (batch.length >= BATCH) flush();
    else timer ??= setTimeout(flush, EVERY_MS);
  }).catch((err: unknown) => post({ kind: 'failed', why: String(err) }));
  port.on('message', (m: string) => {
    if (m === 'close') void conn.close().finally(() => process.exit(0));
  });
} catch (err) {
  post({ kind: 'failed', why: err instanceof Error ? err.message : String(err) });
}
