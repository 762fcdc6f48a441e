// A private Postfix instance for end-to-end tests: its own config, queue and
// data directories under a temp dir, smtpd on a free loopback port, log to a
// file (maillog_file), every transport discard. Needs root (master(8)) and the
// Debian package postfix; the system instance is never touched.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, existsSync, chmodSync, chownSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import { freePort } from '../../dist/sim/servers.js';

const run = promisify(execFile);
export const POSTFIX = '/usr/sbin/postfix';

/** Why the Postfix end-to-end tests cannot run here, or undefined when they can. */
export function postfixMissing(): string | undefined {
  if (!existsSync(POSTFIX)) return 'Debian package postfix is not installed (.ci/run installs it)';
  if (!existsSync('/usr/bin/swaks')) return 'Debian package swaks is not installed (.ci/run installs it)';
  if (userInfo().uid !== 0) return 'a private Postfix instance needs root';
  return undefined;
}

/** Skips the file's tests with the reason outside CI; under CI a missing Postfix fails. */
export function e2eGate(t: Test): { skip: string | false } {
  const why = postfixMissing();
  if (why && process.env['CI']) t.fail(`end-to-end tests cannot run under CI: ${why}`);
  return { skip: why && !process.env['CI'] ? why : false };
}

export { freePort };

export interface Postfix {
  readonly dir: string;
  readonly port: number;
  maillog(): string;
  stop(): Promise<void>;
}

const MASTER_CF = `
{{LISTEN}} inet  n       -       n       -       20      smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

/** Starts Postfix with a base config, then `mainExtra`, then `overrides` set with postconf -e. */
export async function startPostfix(t: Test, mainExtra: string, overrides: Record<string, string> = {}): Promise<Postfix> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-postfix-'));
  chmodSync(dir, 0o755);
  for (const d of ['etc', 'queue', 'data']) mkdirSync(path.join(dir, d));
  const pf = await run('id', ['-u', 'postfix']);
  chownSync(path.join(dir, 'data'), Number(pf.stdout.trim()), 0);
  const port = await freePort();
  const base = `
compatibility_level = 3.6
config_directory = ${dir}/etc
queue_directory = ${dir}/queue
data_directory = ${dir}/data
maillog_file = ${dir}/maillog
maillog_file_prefixes = ${dir}
myhostname = mx.rig.test
mydomain = rig.test
myorigin = rig.test
mydestination = rig.test
# 127.0.0.1 is not a trusted network here, so the policy service is asked.
mynetworks = 192.0.2.0/24
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
local_transport = discard:local
default_transport = discard:default
relay_transport = discard:relay
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtpd_banner = $myhostname ESMTP sluice-e2e
biff = no
smtpd_error_sleep_time = 0s
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 100
delay_warning_time = 0h
notify_classes =
`;
  writeFileSync(path.join(dir, 'etc', 'main.cf'), base + '\n' + mainExtra + '\n');
  writeFileSync(path.join(dir, 'etc', 'master.cf'), MASTER_CF.replace('{{LISTEN}}', `127.0.0.1:${port}`));
  const conf = path.join(dir, 'etc');
  // postconf -e edits a parameter in place, so an override leaves no
  // "overriding earlier entry" warning and the snippet stays as it is.
  for (const [k, v] of Object.entries(overrides)) await run('/usr/sbin/postconf', ['-c', conf, '-e', `${k}=${v}`]);
  await run(POSTFIX, ['-c', conf, 'start']);
  // Wait until smtpd's port answers (master binds it at start).
  const end = Date.now() + 15_000;
  for (;;) {
    if (await answers(port)) break;
    if (Date.now() > end) throw new Error(`postfix did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await run(POSTFIX, ['-c', conf, 'stop']).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  t.teardown(stop);
  return {
    dir, port, stop,
    maillog: () => (existsSync(path.join(dir, 'maillog')) ? readFileSync(path.join(dir, 'maillog'), 'utf8') : ''),
  };
}

/** Something accepts connections on 127.0.0.1:port. */
export function answers(port: number): Promise<boolean> {
  return new Promise<boolean>((r) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); r(true); });
    s.once('error', () => r(false));
  });
}

export interface SwaksResult {
  code: number | null;
  out: string;
  ms: number;
}

/** Runs swaks asynchronously (the daemon under test shares this event loop). */
export function swaks(args: string[]): Promise<SwaksResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const p = spawn('swaks', ['--timeout', '120', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    p.on('close', (code) => resolve({ code, out, ms: Date.now() - started }));
  });
}
