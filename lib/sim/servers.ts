// servers.ts - the real servers a simulation runs against: rbldnsd for a
// DNS list zone and redis-server for the fleet store, each private, on a
// free 127.0.0.1 port, in a temporary directory, without persistence, and
// stopped with stop(). Missing programs are a MissingTool (the caller says
// which package to install and exits 69). The tests start theirs with the
// same functions.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Resolver } from 'node:dns/promises';
import { SYSTEM_CLOCK } from '../util/clock.js';

export const RBLDNSD = '/usr/sbin/rbldnsd';
export const REDIS_SERVER = '/usr/bin/redis-server';

/** Waits `ms` of real time (a server coming up runs on the system's clock, not the simulation's). */
export function pause(ms: number): Promise<void> {
  return new Promise((r) => { SYSTEM_CLOCK.setTimeout(r, ms); });
}

/** A program a run needs is not installed. */
export class MissingTool extends Error {
  constructor(readonly tool: string, readonly pkg: string) {
    super(`${tool} is not installed: apt-get install ${pkg}`);
  }
}

/** True when the program runs (`--version` or `-h`). */
export function installed(tool: string, arg = '--version'): boolean {
  return spawnSync(tool, [arg]).error === undefined;
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface Zone {
  /** e.g. "bl.test" */
  readonly name: string;
  /** rbldnsd dataset type: ip4set, ip6trie, dnset. */
  readonly type: 'ip4set' | 'ip6trie' | 'dnset';
  /** The data file's lines (rbldnsd syntax). */
  readonly data: readonly string[];
}

export interface Running {
  /** "127.0.0.1:PORT" */
  readonly server: string;
  readonly port: number;
  stop(): void;
}

/** rbldnsd serving `zones`; resolves once it answers. */
export async function startRbldnsd(zones: readonly Zone[], ttl = 300): Promise<Running> {
  if (!installed(RBLDNSD, '-h')) throw new MissingTool('rbldnsd', 'rbldnsd');
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-rbl-'));
  // Started as root, rbldnsd reads its files as its own user (rbldns).
  chmodSync(dir, 0o755);
  const specs = zones.map((z, i) => {
    writeFileSync(path.join(dir, `z${i}`), z.data.join('\n') + '\n', { mode: 0o644 });
    return `${z.name}:${z.type}:z${i}`;
  });
  for (let attempt = 0; ; attempt++) {
    const port = await freeUdpPort();
    const child = spawn(RBLDNSD, ['-n', '-b', `127.0.0.1/${port}`, '-w', dir, '-t', String(ttl), ...specs], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const server = `127.0.0.1:${port}`;
    const r = new Resolver({ timeout: 200, tries: 1 });
    r.setServers([server]);
    let up = false;
    for (let i = 0; i < 50 && child.exitCode === null && !up; i++) {
      try {
        await r.resolve4(`ready.probe.${zones[0]!.name}`);
        up = true;
      } catch (e) {
        up = (e as NodeJS.ErrnoException).code === 'ENOTFOUND';
        if (!up) await pause(50);
      }
    }
    if (up) {
      return {
        server, port, stop: () => {
          child.kill('SIGTERM');
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    child.kill('SIGKILL');
    if (attempt >= 2) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`rbldnsd did not start: ${err.trim()}`);
    }
  }
}

/** Resolves once something answers PING with PONG (or asks for a password) on the port. */
export async function pong(port: number, ms = 5000): Promise<boolean> {
  const end = SYSTEM_CLOCK.now() + ms;
  while (SYSTEM_CLOCK.now() < end) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('error', () => resolve(false));
      s.once('connect', () => s.write('PING\r\n'));
      s.once('data', (d: Buffer) => { s.destroy(); resolve(/^(\+PONG|-NOAUTH)/.test(d.toString())); });
    });
    if (ok) return true;
    await pause(50);
  }
  return false;
}

export interface RedisServer extends Running {
  readonly url: string;
  /** The server's process now (a new one after restart()). */
  process(): ChildProcess | undefined;
  /** Starts it again on the same port (empty: no persistence). */
  restart(): Promise<void>;
}

/** redis-server on a free port (or `port`); `args` are extra server arguments. */
export async function startRedisServer(args: readonly string[] = [], port?: number): Promise<RedisServer> {
  if (!installed(REDIS_SERVER)) throw new MissingTool('redis-server', 'redis-server');
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-redis-'));
  const p = port ?? await freePort();
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    child = spawn(REDIS_SERVER, ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', ...args], { stdio: 'ignore' });
    if (!(await pong(p))) throw new Error(`redis-server did not start on ${p}`);
  };
  try {
    await start();
  } catch (err) {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port: p, server: `127.0.0.1:${p}`, url: `redis://127.0.0.1:${p}`,
    process: () => child,
    restart: start,
    stop: () => {
      child?.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
