// connect.ts - the connection to the fleet store: standalone, Sentinel or Cluster.
//
// node-redis (@redis/client) speaks all three (see README, Dependencies).
// Commands are never queued while the store is away (disableOfflineQueue):
// they fail at once and sluice answers from local data. node-redis
// reconnects with a backoff of 100 ms a retry up to 5 s. The store going
// away and coming back are each said once, by the Fleet (fleet.ts), from the
// events passed to `state`. The password is read from fleet.password_file
// and goes nowhere else.
//
// Config keys: fleet.url, fleet.password_file, fleet.sentinels,
// fleet.master_name, fleet.cluster.

import { readFileSync } from 'node:fs';
import { createClient, createCluster, createSentinel } from '@redis/client';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../shield/errors.js';

/** What sluice asks of the store, whichever kind it is. */
export interface StoreCommands {
  evalSha(sha: string, o: { keys: string[]; arguments: string[] }): Promise<unknown>;
  eval(script: string, o: { keys: string[]; arguments: string[] }): Promise<unknown>;
  hGetAll(key: string): Promise<Record<string, string>>;
  hSet(key: string, field: string, value: string): Promise<unknown>;
  hDel(key: string, field: string): Promise<unknown>;
  del(key: string): Promise<unknown>;
  publish(channel: string, message: string): Promise<unknown>;
  set(key: string, value: string, o: { condition: 'NX'; expiration: { type: 'PX'; value: number } }): Promise<string | null>;
}

export interface Connection {
  readonly commands: StoreCommands;
  /** Subscribes to a channel (on a connection of its own where the kind needs one). */
  subscribe(channel: string, fn: (message: string) => void): Promise<void>;
  close(): Promise<void>;
}

/** Up or down, as the client reports it; `why` for down. */
export type StateFn = (up: boolean, why?: string) => void;

const reconnectStrategy = (retries: number): number => Math.min(100 * (retries + 1), 5000);

function password(file: string): string | undefined {
  if (!file) return undefined;
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new ConfigError('CONFIG_INVALID', `fleet.password_file: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * Closes a client at once, whatever it is doing: node-redis throws "The
 * client is closed" for one that never connected (a store away since start).
 */
function destroy(client: { destroy(): void }): void {
  try {
    client.destroy();
  } catch {
    // Never connected, or closed already: nothing to close.
  }
}

/** Connects (in the background: a store that is away at start is retried); throws only on a bad password file. */
export function connect(c: Config['fleet'], state: StateFn): Connection {
  const pass = password(c.password_file);
  const socket = { reconnectStrategy, connectTimeout: 2000 };
  const watch = (client: { on(event: string, fn: (...a: unknown[]) => void): unknown }): void => {
    client.on('ready', () => state(true));
    client.on('error', (err) => state(false, err instanceof Error ? err.message : String(err)));
    client.on('reconnecting', () => state(false, 'reconnecting'));
  };
  if (c.cluster.length > 0) {
    const cluster = createCluster({
      rootNodes: c.cluster.map((n) => ({ socket: { host: n.host, port: n.port, reconnectStrategy, connectTimeout: 2000 } })),
      defaults: { password: pass, disableOfflineQueue: true, socket },
    });
    watch(cluster as never);
    cluster.on('connect', () => state(true));
    void cluster.connect().catch((err: unknown) => state(false, String(err)));
    return {
      commands: cluster as unknown as StoreCommands,
      subscribe: async (ch, fn) => { await cluster.subscribe(ch, (m: string) => fn(m)); },
      close: async () => { destroy(cluster); },
    };
  }
  if (c.sentinels.length > 0) {
    const sentinel = createSentinel({
      name: c.master_name,
      sentinelRootNodes: c.sentinels.map((n) => ({ host: n.host, port: n.port })),
      nodeClientOptions: { password: pass, disableOfflineQueue: true, socket },
      sentinelClientOptions: { socket },
    });
    watch(sentinel as never);
    void sentinel.connect().then(() => state(true), (err: unknown) => state(false, String(err)));
    return {
      commands: sentinel as unknown as StoreCommands,
      subscribe: async (ch, fn) => { await sentinel.subscribe(ch, (m: string) => fn(m)); },
      close: async () => { destroy(sentinel); },
    };
  }
  const url = c.url.startsWith('unix:') ? undefined : c.url;
  const options = { url, password: pass, disableOfflineQueue: true, socket: c.url.startsWith('unix:') ? { path: c.url.slice(5), reconnectStrategy } : socket };
  const client = createClient(options);
  watch(client as never);
  void client.connect().catch((err: unknown) => state(false, String(err)));
  // A subscribed connection takes no other command: the subscriber is a second one.
  const sub = client.duplicate();
  sub.on('error', () => { /* said once by the main connection */ });
  return {
    commands: client as unknown as StoreCommands,
    subscribe: async (ch, fn) => {
      if (!sub.isOpen) await sub.connect();
      await sub.subscribe(ch, (m: string) => fn(m));
    },
    close: async () => {
      destroy(client);
      destroy(sub);
    },
  };
}
