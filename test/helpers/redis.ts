// Private Redis servers for the fleet tests: redis-server (and redis-sentinel)
// from the Debian packages, on free 127.0.0.1 ports, in temp dirs, no
// persistence; stopped at teardown. A Redis Cluster of three masters made
// with redis-cli --cluster create.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { freePort } from './postfix.js';
import { pong, REDIS_SERVER, startRedisServer } from '../../dist/sim/servers.js';

export { REDIS_SERVER };

/** Skips the file's tests, with the reason, when redis-server is missing; under CI a missing one fails. */
export function redisGate(t: Test, tools = [REDIS_SERVER]): { skip: string | false } {
  const missing = tools.filter((tool) => spawnSync(tool, ['--version']).error !== undefined);
  const why = missing.length ? `${missing.join(', ')} missing: Debian packages redis-server and redis-sentinel (.ci/run installs them)` : undefined;
  if (why && process.env['CI']) t.fail(`fleet store tests cannot run under CI: ${why}`);
  return { skip: why && !process.env['CI'] ? why : false };
}

export interface Redis {
  readonly port: number;
  /** The server's process id now (it changes with restart()). */
  pid(): number | undefined;
  readonly url: string;
  /** SIGKILL: the store vanishes as in a crash. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: no persistence). */
  restart(): Promise<void>;
  cli(...args: string[]): string;
}

/** redis-server on a free port; `args` are extra server arguments. */
export async function startRedis(t: Pick<Test, 'teardown'>, args: string[] = [], port?: number): Promise<Redis> {
  const r = await startRedisServer(args, port);
  t.teardown(() => r.stop());
  return {
    port: r.port, url: r.url,
    pid: () => r.process()?.pid,
    kill: async () => {
      const c = r.process();
      if (!c || c.exitCode !== null) return;
      await new Promise<void>((res) => { c.once('exit', () => res()); c.kill('SIGKILL'); });
    },
    restart: () => r.restart(),
    cli: (...a: string[]) => spawnSync('redis-cli', ['-p', String(r.port), ...a], { encoding: 'utf8' }).stdout,
  };
}

/** Three cluster masters, joined; resolves when the cluster is ok. Returns their "host:port"s. */
export async function startCluster(t: Pick<Test, 'teardown'>): Promise<string[]> {
  const nodes = [];
  for (let i = 0; i < 3; i++) nodes.push(await startRedis(t, ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${i}.conf`, '--cluster-node-timeout', '2000']));
  const seeds = nodes.map((n) => `127.0.0.1:${n.port}`);
  const made = spawnSync('redis-cli', ['--cluster', 'create', ...seeds, '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`redis-cli --cluster create failed: ${made.stdout}${made.stderr}`);
  for (let i = 0; i < 100; i++) {
    if (nodes.every((n) => n.cli('cluster', 'info').includes('cluster_state:ok'))) return seeds;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the cluster did not come up');
}

/** One master and one sentinel watching it as `name`; returns the sentinel's "host:port". */
export async function startSentinel(t: Pick<Test, 'teardown'>, name = 'mymaster'): Promise<string> {
  const master = await startRedis(t);
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-sentinel-'));
  const port = await freePort();
  const conf = path.join(dir, 'sentinel.conf');
  writeFileSync(conf, `port ${port}\nbind 127.0.0.1\ndir ${dir}\nsentinel monitor ${name} 127.0.0.1 ${master.port} 1\nsentinel down-after-milliseconds ${name} 2000\n`);
  const child = spawn('redis-sentinel', [conf], { stdio: 'ignore' });
  t.teardown(() => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  if (!(await pong(port))) throw new Error('redis-sentinel did not start');
  return `127.0.0.1:${port}`;
}
