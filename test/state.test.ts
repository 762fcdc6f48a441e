// The daemon's state on disk: snapshot at shutdown and restore at start, a
// corrupt snapshot set aside, kill -9 losing at most one snapshot interval.
import t from 'tap';
import { writeFileSync, readdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { settle, startDaemon, until } from './helpers/daemon.js';
import { ManualClock } from '../dist/util/clock.js';
import { sluiced, shortDir } from './helpers/spawn.js';
import { MilterClient, mta } from './helpers/milter-client.js';
import { portOf } from './helpers/policy-client.js';

t.test('learning survives a restart; a corrupt snapshot is set aside with a warning', async (t) => {
  const a = await startDaemon(t);
  const rep = a.daemon.engine;
  rep.record({ kind: 'abandoned', held: true, event: { stage: 'rcpt', session: 's', via: 'milter', mta: 'postfix', client: '203.0.113.7', port: 1, clientName: 'unknown', helo: 'x', sender: '', recipient: '', recipientCount: 0, size: 0, queueId: '', saslUser: '', tls: undefined, stress: false, repeat: false } });
  rep.lists.add('deny', '198.51.100.0/24', Date.now(), 3_600_000, 'test');
  const before = rep.store.score('ip:203.0.113.7');
  t.ok(before < 0);
  await a.daemon.stop();
  t.ok(await until(() => a.logs().some((l) => l['msg'] === 'snapshot written' && l['entries'] === 3)), 'snapshot written at shutdown');
  const cfg = `state_dir: ${a.dir}\nlog:\n  file: ${a.dir}/second.log\n  format: json\npolicy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\n`;
  writeFileSync(path.join(a.dir, 'second.yaml'), cfg);
  const { Daemon } = await import('../dist/cli/daemon.js');
  const b = await Daemon.start({ configFile: path.join(a.dir, 'second.yaml'), isTTY: false });
  t.teardown(() => b.stop());
  t.equal(Math.round(b.engine.store.score('ip:203.0.113.7')), Math.round(before), 'score restored');
  t.same(b.engine.lists.dynamic(Date.now()).map((e) => [e.kind, e.value, e.reason]), [['deny', '198.51.100.0/24', 'test']], 'dynamic list restored');
  await b.stop();

  writeFileSync(path.join(a.dir, 'reputation.snapshot'), 'this is not a snapshot\n');
  writeFileSync(path.join(a.dir, 'third.yaml'), cfg.replace('second.log', 'third.log'));
  const c = await Daemon.start({ configFile: path.join(a.dir, 'third.yaml'), isTTY: false });
  t.teardown(() => c.stop());
  t.equal(c.engine.store.size, 0, 'starts empty');
  t.ok(readdirSync(a.dir).some((f) => f.startsWith('reputation.snapshot.corrupt-')), 'the bad file is kept aside');
  c.log.flush();
  const { readFileSync } = await import('node:fs');
  t.match(readFileSync(path.join(a.dir, 'third.log'), 'utf8'), /"level":40.*snapshot set aside, starting empty: not a sluice snapshot/);
});

t.test('kill -9 then restart: reputation from the last periodic snapshot', async (t) => {
  const dir = shortDir(t);
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, `state_dir: ${dir}\nlog:\n  format: json\npolicy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: ""\nreputation:\n  snapshot_interval: 1s\n`);
  const d = sluiced(t, ['-c', cfg, '-f']);
  const ready = await d.waitFor((l) => String(l['msg']).startsWith('sluiced ready'));
  const port = portOf((ready['listen'] as { milter: string[] }).milter[0]);
  // A zombie: held at RCPT (no rDNS, bare-IP HELO), drops before the answer.
  const z = await MilterClient.connect(port);
  await z.ask(mta.optneg());
  await z.ask(mta.macro(0x43, { v: 'Postfix 3.7.11' }), mta.connect('[203.0.113.99]', '203.0.113.99'));
  await z.ask(mta.helo('203.0.113.99'));
  await z.ask(mta.mail('<x@y>'));
  z.send(mta.rcpt('<a@b>'));
  await new Promise((r) => setTimeout(r, 200));
  z.close();
  await d.waitFor((l) => l['msg'] === 'abandoned at rcpt' && l['held'] === true);
  await d.waitFor((l) => l['msg'] === 'snapshot written' && (l['entries'] as number) >= 2, 5000);
  d.proc.kill('SIGKILL');
  await d.exited;
  t.ok(existsSync(path.join(dir, 'reputation.snapshot')));
  const e = sluiced(t, ['-c', cfg, '-f']);
  const restored = await e.waitFor((l) => l['msg'] === 'reputation restored');
  t.ok((restored['entries'] as number) >= 2, `${restored['entries']} entries restored after kill -9`);
  await e.waitFor((l) => String(l['msg']).startsWith('sluiced ready'));
  e.proc.kill('SIGTERM');
  t.equal((await e.exited).code, 0);
});

t.test('a reload re-times the snapshot: the new interval runs from the reload', async (t) => {
  const clock = new ManualClock();
  const h = await startDaemon(t, 'reputation:\n  snapshot_interval: 10s\n', undefined, clock);
  const written = (): number => h.logs().filter((l) => l['msg'] === 'snapshot written').length;
  clock.advance(10_000);
  t.ok(await until(() => written() === 1), 'written after 10 s');
  writeFileSync(h.configFile, readFileSync(h.configFile, 'utf8').replace('snapshot_interval: 10s', 'snapshot_interval: 60s'));
  t.ok(await h.daemon.reload());
  t.notOk(h.logs().some((l) => Array.isArray(l['keys']) && (l['keys'] as string[]).includes('reputation.snapshot_interval')), 'not kept as a start-only key');
  clock.advance(50_000);
  await settle(100);
  t.equal(written(), 1, 'none 50 s after the reload (10 s no longer applies)');
  clock.advance(10_000);
  t.ok(await until(() => written() === 2), 'the next 60 s after the reload');
});
