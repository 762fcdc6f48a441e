// What a new user hit (issue 33): a start against a store that is not there
// stops cleanly; --check-config refuses what a start would; a detached start
// that fails and a refused reload print the problems themselves.
import t from 'tap';
import net from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run, shortDir, sluiced, SLUICED } from './helpers/spawn.js';
import { freePort } from './helpers/postfix.js';

const base = (dir: string, extra = ''): string => `state_dir: ${dir}\nlog:\n  format: json\npolicy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\n${extra}`;

t.test('a start with fleet.url at a closed port stops cleanly on SIGTERM', async (t) => {
  const dir = shortDir(t);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, base(dir, `fleet:\n  url: redis://127.0.0.1:${await freePort()}\n`));
  const d = sluiced(t, ['-c', cfg, '-f']);
  await d.waitFor((l) => String(l['msg']).startsWith('sluiced ready'));
  d.proc.kill('SIGTERM');
  const { code } = await d.exited;
  t.equal(code, 0, 'exit 0');
  t.ok(d.lines().some((l) => l['msg'] === 'sluiced stopped'), 'a "stopped" line');
  t.same(d.lines().filter((l) => (l['level'] as number) >= 50).map((l) => l['msg']), [], 'no error line (no "The client is closed")');
});

t.test('--check-config refuses a password file it cannot read and a state_dir it cannot write, at their lines', async (t) => {
  const dir = shortDir(t);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(path.join(dir, 'plain-file'), 'x');
  writeFileSync(cfg, `state_dir: ${path.join(dir, 'plain-file', 'state')}\nfleet:\n  url: redis://127.0.0.1:6379\n  password_file: ${path.join(dir, 'no-such-file')}\n`);
  const c = run(t, [SLUICED, '-c', cfg, '--check-config']);
  const { code } = await c.exited;
  t.equal(code, 78);
  t.match(c.stderr(), `sluice.yaml:1: state_dir: cannot write to ${path.join(dir, 'plain-file', 'state')}: a part of the path is not a directory`);
  t.match(c.stderr(), `sluice.yaml:4: fleet.password_file: cannot read ${path.join(dir, 'no-such-file')}: no such file`);
  // A state_dir that does not exist yet under a writable parent is fine (the start creates it).
  mkdirSync(path.join(dir, 'ok'));
  writeFileSync(cfg, `state_dir: ${path.join(dir, 'ok', 'new', 'state')}\n`);
  const ok = run(t, [SLUICED, '-c', cfg, '--check-config']);
  t.equal((await ok.exited).code, 0, ok.stderr());
});

t.test('a detached start that fails prints why', async (t) => {
  const dir = shortDir(t);
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.teardown(() => busy.close());
  const port = (busy.address() as net.AddressInfo).port;
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, base(dir).replace('policy:\n  listen: ["inet:127.0.0.1:0"]', `policy:\n  listen: ["inet:127.0.0.1:${port}"]`));
  const c = run(t, [SLUICED, '-c', cfg]);
  const { code } = await c.exited;
  t.equal(code, 78);
  t.match(c.stderr(), /sluiced: failed to start \(exit 78\):/);
  t.match(c.stderr(), new RegExp(`sluiced: .*127\\.0\\.0\\.1:${port}.*(in use|EADDRINUSE)`), 'the problem itself');
  t.notMatch(c.stderr(), /see .*sluiced\.log/, 'not only a pointer to the log');
});

t.test('sluiced: a bad option is one line and exit 64, as sluicectl; its help reads as prose', async (t) => {
  const bad = run(t, [SLUICED, '--bogus']);
  t.equal((await bad.exited).code, 64);
  t.equal(bad.stderr(), 'sluiced: unknown option \'--bogus\' (see sluiced --help)\n');
  t.equal(bad.stdout(), '', 'no help printed');
  const help = run(t, [SLUICED, '--help'], { env: { ...process.env, COLUMNS: '200' } });
  t.equal((await help.exited).code, 0);
  t.match(help.stdout(), /a milter \(Postfix, Sendmail\) that hold, defer or reject/, 'no line break in the middle of a sentence');
});
