// Life-cycle tests: bin/sluiced as a child process - start, reload, drain, exit statuses, bad input.
import t from 'tap';
import net from 'node:net';
import { writeFileSync, renameSync, readFileSync, existsSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { sluiced, run, shortDir, type Child } from './helpers/spawn.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import { until } from './helpers/daemon.js';
import { ReputationStore } from '../dist/reputation/store.js';
import { writeSnapshot } from '../dist/reputation/snapshot.js';

const readyLine = (l: Record<string, unknown>): boolean => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('sluiced ready');

t.test('start, serve, SIGHUP good and broken, SIGUSR1, SIGTERM drain exits 0', async (t) => {
  const dir = shortDir(t);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, `state_dir: ${dir}\nlog:\n  format: json\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["inet:127.0.0.1:0"]\n`);
  const d = sluiced(t, ['--config', cfg, '--foreground']);
  const ready = await d.waitFor(readyLine);
  const port = portOf((ready['listen'] as { policy: string[] }).policy[0]);
  const c = await PolicyClient.connect({ port });
  t.teardown(() => c.close());
  t.equal(await c.ask(rcptRequest()), 'action=DUNNO\n\n');

  writeFileSync(cfg, `state_dir: ${dir}\nlog:\n  format: json\n  level: debug\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["inet:127.0.0.1:0"]\nreputation:\n  half_life: 2h\n`);
  d.proc.kill('SIGHUP');
  await d.waitFor((l) => l['msg'] === 'configuration reloaded');
  t.same(d.lines().find((l) => l['level'] === 40)?.['keys'], ['reputation.half_life'], 'one warning names the start-only key the file changed');

  writeFileSync(cfg, `state_dir: ${dir}\nlog:\n  format: jsn\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  timeout: soon\n  listen: ["inet:127.0.0.1:0"]\nextra: 1\n`);
  d.proc.kill('SIGHUP');
  await d.waitFor((l) => l['msg'] === 'reload refused: keeping the running configuration');
  const refused = d.lines().filter((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('reload refused: ' + cfg));
  t.equal(refused.length, 3, 'every problem logged');
  t.match(refused.map((l) => l['msg']).join('\n'), /:3: log\.format[\s\S]*:9: policy\.timeout[\s\S]*:11: extra: unknown key/);
  t.equal(await c.ask(rcptRequest()), 'action=DUNNO\n\n', 'still serving on the running config');
  const c2 = await PolicyClient.connect({ port });
  t.teardown(() => c2.close());
  await d.waitFor((l) => l['msg'] === 'connection opened' && l['level'] === 20);
  t.pass('the good reload took effect: debug lines appear');

  d.proc.kill('SIGTERM');
  const { code } = await d.exited;
  t.equal(code, 0, 'SIGTERM drains and exits 0');
  const msgs = d.lines().map((l) => l['msg']);
  t.equal(msgs.at(-1), 'sluiced stopped', 'the last line');
  t.ok(msgs.includes('snapshot written') && msgs.indexOf('snapshot written') < msgs.indexOf('sluiced stopped'), 'after the snapshot line');
});

t.test('a SIGTERM while it is still starting (restoring its snapshot) is kept and drains once it is up', async (t) => {
  const dir = shortDir(t);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, `state_dir: ${dir}\nlog:\n  format: json\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["inet:127.0.0.1:0"]\n`);
  // A snapshot big enough that reading it back takes a moment: the signal is sent while it is open.
  const snapshot = path.join(dir, 'reputation.snapshot');
  const now = Date.now();
  const store = new ReputationStore({ maxEntries: 200_000, ttlMs: 3_600_000, halfLifeMs: 3_600_000, now: () => now });
  for (let i = 0; i < 200_000; i++) store.add(`ip:10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, -1);
  t.equal(await writeSnapshot(snapshot, store, [], now), 200_000);
  const d = sluiced(t, ['--config', cfg, '--foreground']);
  const restoring = (): boolean => {
    try {
      return readdirSync(`/proc/${d.proc.pid}/fd`).some((fd) => {
        try { return readlinkSync(`/proc/${d.proc.pid}/fd/${fd}`) === snapshot; } catch { return false; }
      });
    } catch {
      return false;
    }
  };
  t.ok(await until(restoring, 10_000), 'the snapshot is being read');
  t.equal(d.stdout(), '', 'the signal goes before the daemon has logged anything');
  d.proc.kill('SIGTERM');
  const { code, signal } = await d.exited;
  t.same({ code, signal }, { code: 0, signal: null }, 'drained and exited 0, not killed');
  const msgs = d.lines().map((l) => l['msg'] as string);
  t.ok(msgs.findIndex((m) => m.startsWith('sluiced ready')) >= 0, 'it came up');
  t.ok(d.lines().some((l) => l['msg'] === 'draining' && l['signal'] === 'SIGTERM'), 'then drained on the kept SIGTERM');
  t.equal(d.lines().find((l) => l['msg'] === 'snapshot written')?.['entries'], 200_000, 'nothing lost: every entry written back');
  t.equal(msgs.at(-1), 'sluiced stopped');
});

t.test('SIGUSR1 reopens the log file after rotation', async (t) => {
  const dir = shortDir(t);
  const log = path.join(dir, 'sluiced.log');
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, `state_dir: ${dir}\nlog:\n  file: ${log}\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["inet:127.0.0.1:0"]\n`);
  const d = sluiced(t, ['-c', cfg, '-f']);
  t.ok(await until(() => existsSync(log) && readFileSync(log, 'utf8').includes('sluiced ready'), 10_000));
  renameSync(log, log + '.1');
  d.proc.kill('SIGUSR1');
  t.ok(await until(() => existsSync(log) && readFileSync(log, 'utf8').includes('log file reopened'), 10_000), 'new file written after SIGUSR1');
  d.proc.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});

t.test('--check-config: every problem, file:line: key, exit 78; 0 when fine', async (t) => {
  const dir = shortDir(t);
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, 'milter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["tcp:1.2.3.4:25"]\n  max_line_length: huge\nlimits:\n  max_conections: 10\n');
  const d = sluiced(t, ['--config', bad, '--check-config']);
  const { code } = await d.exited;
  t.equal(code, 78);
  t.same(d.stderr().trim().split('\n'), [
    `sluiced: ${bad}:6: policy.listen.0: "tcp:1.2.3.4:25": expected inet:HOST:PORT, inet6:[ADDR]:PORT or unix:PATH`,
    `sluiced: ${bad}:7: policy.max_line_length: "huge" is not a size (e.g. 4096, 64KiB, 1MiB)`,
    `sluiced: ${bad}:9: limits.max_conections: unknown key`,
  ]);
  t.notMatch(d.stderr(), /at .*\.js:\d+/, 'no stack trace');
  const good = path.join(dir, 'good.yaml');
  writeFileSync(good, 'fail_mode: defer\n');
  const g = sluiced(t, ['--config', good, '--check-config']);
  t.equal((await g.exited).code, 0);
  t.match(g.stdout(), /configuration OK/);
  const p = sluiced(t, ['--config', good, '--print-config']);
  t.equal((await p.exited).code, 0);
  t.match(p.stdout(), /fail_mode: defer\n[\s\S]*timeout: 60s/);
});

t.test('bad start-up input: one clear line and a documented status, never a stack', async (t) => {
  const dir = shortDir(t);
  writeFileSync(path.join(dir, 'file'), 'x');
  const blocker = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => blocker.once('listening', r));
  t.teardown(() => blocker.close());
  const busy = (blocker.address() as net.AddressInfo).port;
  const cases: [string, string, RegExp][] = [
    ['missing file', '', /^sluiced: \/nonexistent\.yaml: cannot read: no such file$/],
    ['YAML syntax', 'policy: [\n', /^sluiced: .*syntax\.yaml:\d+: /],
    ['port in use', `state_dir: ${dir}\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["inet:127.0.0.1:${busy}"]\n`, new RegExp(`^sluiced: policy inet:127\\.0\\.0\\.1:${busy}: cannot listen: address already in use$`)],
    ['socket directory missing', `state_dir: ${dir}\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["unix:${dir}/nodir/p.sock"]\n`, /^sluiced: unix:.*\/nodir\/p\.sock: directory .*\/nodir does not exist$/],
    ['socket parent is a file', `state_dir: ${dir}\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["unix:${dir}/file/p.sock"]\n`, /^sluiced: unix:.*\/file\/p\.sock: .*\/file is not a directory$/],
    ['state dir not a directory', `state_dir: ${dir}/file/state\n`, /^sluiced: .*c\.yaml:1: state_dir: cannot write to .*\/file\/state: a part of the path is not a directory$/],
  ];
  for (const [name, yaml, want] of cases) {
    const file = name === 'missing file' ? '/nonexistent.yaml' : path.join(dir, name === 'YAML syntax' ? 'syntax.yaml' : 'c.yaml');
    if (yaml) writeFileSync(file, yaml);
    const d = sluiced(t, ['--config', file, '--foreground']);
    const { code } = await d.exited;
    t.equal(code, 78, `${name}: exit 78`);
    const lines = d.stderr().trim().split('\n');
    t.equal(lines.length, 1, `${name}: one line`);
    t.match(lines[0], want, name);
  }
});

t.test('without --foreground it detaches, reports where it listens, and keeps running', async (t) => {
  const dir = shortDir(t);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, `state_dir: ${dir}\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["inet:127.0.0.1:0"]\n`);
  const d = sluiced(t, ['--config', cfg]);
  const { code } = await d.exited;
  t.equal(code, 0);
  const m = /started, pid (\d+); policy on inet:127\.0\.0\.1:(\d+), milter on inet:127\.0\.0\.1:\d+; log: (.*)$/m.exec(d.stdout());
  t.ok(m, d.stdout());
  if (!m) return;
  const pid = Number(m[1]);
  t.teardown(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
  const c = await PolicyClient.connect({ port: Number(m[2]) });
  t.equal(await c.ask(rcptRequest()), 'action=DUNNO\n\n');
  c.close();
  process.kill(pid, 'SIGTERM');
  t.ok(await until(() => { try { process.kill(pid, 0); return false; } catch { return true; } }, 10_000), 'the detached daemon stopped on SIGTERM');
  t.match(readFileSync(m[3]!, 'utf8'), /sluiced stopped/);
  // A detached start that fails reports it and exits with the child's status.
  const bad = sluiced(t, ['--config', path.join(dir, 'nope.yaml')]);
  t.equal((await bad.exited).code, 78);
});

t.test('npm start: a stop signal to npm, or Ctrl-C to the group, drains sluiced once', async (t) => {
  const dir = shortDir(t);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, `state_dir: ${dir}\nlog:\n  format: json\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["inet:127.0.0.1:0"]\n`);
  // As the README has it, with a config of its own; in its own process group, as a shell starts it.
  const start = async (): Promise<{ npm: Child; port: number; msgs: () => unknown[] }> => {
    const npm = run(t, ['start', '--', '--config', cfg], { command: 'npm', group: true });
    const ready = await npm.waitFor(readyLine, 20_000);
    t.pass('up under npm start');
    return { npm, port: portOf((ready['listen'] as { policy: string[] }).policy[0]), msgs: () => npm.lines().map((l) => l['msg']) };
  };
  const refused = (port: number): Promise<boolean> => new Promise((r) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); r(false); });
    s.once('error', () => r(true));
  });

  // A process manager stops npm, not its child: npm passes the signal on.
  let n = await start();
  n.npm.proc.kill('SIGTERM');
  t.equal((await n.npm.exited).code, 0, 'npm exits 0');
  t.equal(n.msgs().at(-1), 'sluiced stopped', 'sluiced drained and stopped');
  t.ok(await refused(n.port), 'nothing left listening');

  // Ctrl-C reaches npm and sluiced alike, and npm passes its copy on too.
  n = await start();
  process.kill(-n.npm.proc.pid!, 'SIGINT');
  await n.npm.exited;
  t.equal(n.msgs().filter((m) => m === 'draining').length, 1, 'one drain for the two signals');
  t.equal(n.msgs().at(-1), 'sluiced stopped');
  t.ok(await refused(n.port), 'nothing left listening');
});

t.test('the shield in a real process: throws in handlers, timers and promises do not stop it', async (t) => {
  const dir = shortDir(t);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, `state_dir: ${dir}\nlog:\n  format: json\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["inet:127.0.0.1:0"]\n`);
  const d = run(t, ['--import=tsx', 'test/fixtures/faulty-daemon.ts', cfg]);
  const ready = await d.waitFor((l) => l['fixture'] === 'ready');
  const port = portOf((ready['listen'] as { policy: string[] }).policy[0]);
  const c = await PolicyClient.connect({ port });
  const other = await PolicyClient.connect({ port });
  t.teardown(() => { c.close(); other.close(); });
  t.equal(await c.ask(rcptRequest({ recipient: 'uncaught@x' })), 'action=DUNNO\n\n');
  await d.waitFor((l) => l['code'] === 901 && l['kind'] === 'process' && l['msg'] === 'internal error: thrown outside any guard');
  t.equal(await c.ask(rcptRequest({ recipient: 'unhandled@x' })), 'action=DUNNO\n\n');
  await d.waitFor((l) => l['code'] === 901 && l['msg'] === 'internal error: nobody catches this');
  t.equal(await c.ask(rcptRequest({ recipient: 'throw@x' })), 'action=DUNNO\n\n', 'a throwing rule: fail mode');
  t.equal(await other.ask(rcptRequest()), 'action=DUNNO\n\n', 'other connections keep being served');
  t.ok(d.lines().find((l) => l['code'] === 901)?.['stack'], 'internal errors are logged with their stack');
  d.proc.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});

t.test('a storm of internal errors trips the breaker: state written, listeners restarted in place, serving again', async (t) => {
  const dir = shortDir(t);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, `state_dir: ${dir}\nlog:\n  format: json\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\npolicy:\n  listen: ["inet:127.0.0.1:0"]\nshield:\n  breaker_limit: 3\n`);
  const d = run(t, ['--import=tsx', 'test/fixtures/faulty-daemon.ts', cfg]);
  const ready = await d.waitFor((l) => l['fixture'] === 'ready');
  const c = await PolicyClient.connect({ port: portOf((ready['listen'] as { policy: string[] }).policy[0]) });
  t.teardown(() => c.close());
  for (let i = 0; i < 3; i++) await c.ask(rcptRequest({ recipient: 'uncaught@x', instance: `storm.${i}` }));
  const tripped = await d.waitFor((l) => l['code'] === 404);
  t.match(tripped, { err: 'OVERLOAD_BREAKER', limit: 3, msg: 'circuit breaker tripped: restarting services' });
  const restarted = await d.waitFor((l) => l['msg'] === 'services restarted');
  const msgs = d.lines().map((l) => l['msg']);
  t.ok(msgs.indexOf('snapshot written') >= 0 && msgs.indexOf('snapshot written') < msgs.indexOf('circuit breaker tripped: restarting services'), 'the snapshot is written first');
  await c.closedPromise;
  t.ok(c.closed, 'connections of the old listeners are closed');
  const after = await PolicyClient.connect({ port: portOf((restarted['listen'] as { policy: string[] }).policy[0]) });
  t.teardown(() => after.close());
  t.equal(await after.ask(rcptRequest()), 'action=DUNNO\n\n', 'the restarted listener serves');
  t.equal(d.proc.exitCode, null, 'the process never stopped');
  d.proc.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});
