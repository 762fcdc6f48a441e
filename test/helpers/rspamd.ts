// A private rspamd (Debian's package) for the feedback tests: the packaged
// config copied to a temp dir, overrides in its local.d (one normal worker
// on a free loopback port, no proxy, no fuzzy, Redis on the test's server),
// a multimap rule that makes verdicts deterministic offline (a sender in
// spam.map scores +20, one in ham.map -20), and metadata_exporter
// publishing every scan as JSON on a Redis channel. No network, no root
// needed (-u/-g the current user).
import { spawn, execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import { freePort } from '../../dist/sim/servers.js';
import { answers } from './postfix.js';

const run = promisify(execFile);
export const RSPAMD = '/usr/bin/rspamd';
export const RSPAMC = '/usr/bin/rspamc';

/** Why the rspamd tests cannot run here, or undefined. */
export function rspamdMissing(): string | undefined {
  if (!existsSync(RSPAMD) || !existsSync(RSPAMC) || !existsSync('/etc/rspamd/rspamd.conf')) return 'Debian package rspamd is not installed (.ci/run installs it)';
  return undefined;
}

export interface Rspamd {
  /** Scans a message with rspamc as if from `ip` and `from`; resolves with rspamc's output. */
  scan(ip: string, from: string, queueId?: string): Promise<string>;
}

export async function startRspamd(t: Pick<Test, 'teardown'>, redisPort: number, channel: string): Promise<Rspamd> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-rspamd-'));
  const conf = path.join(dir, 'etc');
  cpSync('/etc/rspamd', conf, { recursive: true, dereference: true });
  for (const d of ['db', 'run', 'log']) mkdirSync(path.join(dir, d));
  const port = await freePort();
  const controller = await freePort();
  const local = (f: string, text: string): void => writeFileSync(path.join(conf, 'local.d', f), text);
  local('worker-normal.inc', `bind_socket = "127.0.0.1:${port}";\ncount = 1;\n`);
  local('worker-controller.inc', `bind_socket = "127.0.0.1:${controller}";\ncount = 1;\n`);
  local('worker-proxy.inc', 'enabled = false;\n');
  local('worker-fuzzy.inc', 'enabled = false;\n');
  local('redis.conf', `servers = "127.0.0.1:${redisPort}";\n`);
  local('logging.inc', `type = "file";\nfilename = "${dir}/log/rspamd.log";\nlevel = "error";\n`);
  writeFileSync(path.join(dir, 'spam.map'), 'spammer@example.org\n');
  writeFileSync(path.join(dir, 'ham.map'), 'friend@example.net\n');
  local('multimap.conf', `SLUICE_SPAMMY { type = "from"; map = "${dir}/spam.map"; score = 20.0; }\nSLUICE_FRIEND { type = "from"; map = "${dir}/ham.map"; score = -20.0; }\n`);
  local('metadata_exporter.conf', `rules { SLUICE { backend = "redis_pubsub"; channel = "${channel}"; formatter = "json"; selector = "default"; } }\n`);
  const me = userInfo();
  const p = spawn(RSPAMD, ['-f', '-u', me.username, '-g', (await run('id', ['-gn'])).stdout.trim(), '-c', path.join(conf, 'rspamd.conf'),
    `--var=LOCAL_CONFDIR=${conf}`, `--var=CONFDIR=${conf}`, `--var=DBDIR=${dir}/db`, `--var=RUNDIR=${dir}/run`, `--var=LOGDIR=${dir}/log`, '--insecure'], { stdio: 'ignore', detached: true });
  // Its workers are its children: the whole process group goes.
  t.teardown(async () => {
    const gone = new Promise((r) => (p.exitCode !== null ? r(undefined) : p.once('exit', r)));
    try { process.kill(-p.pid!, 'SIGKILL'); } catch { /* already gone */ }
    await gone;
    await new Promise((r) => setTimeout(r, 200));
    rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  });
  // It listens after it has compiled its TLD list (about 10 s).
  const end = Date.now() + 60_000;
  for (;;) {
    if (await answers(port)) break;
    if (p.exitCode !== null || Date.now() > end) {
      const log = path.join(dir, 'log', 'rspamd.log');
      throw new Error(`rspamd did not listen on ${port}: ${existsSync(log) ? readFileSync(log, 'utf8').slice(-2000) : 'no log'}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const message = path.join(dir, 'message.eml');
  writeFileSync(message, 'From: someone@example.org\r\nTo: alice@rig.test\r\nSubject: hello\r\nMessage-Id: <m1@example.org>\r\n\r\nHello.\r\n');
  return {
    scan: async (ip, from, queueId) => (await run(RSPAMC, ['-h', `127.0.0.1:${port}`, '--ip', ip, '--from', from, ...(queueId ? ['--header', `Queue-Id=${queueId}`] : []), message])).stdout,
  };
}
