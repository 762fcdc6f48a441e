// A real rspamd publishes its verdicts (metadata_exporter, JSON) on a channel
// of a real redis-server that two sluiced share as their fleet store: what
// rspamd rejects scores its client down on both within a second, what it
// passes scores up by weights.ham, and each verdict counts once in the store.
import t from 'tap';
import { startDaemon, until } from './helpers/daemon.js';
import { redisGate, startRedis } from './helpers/redis.js';
import { rspamdMissing, startRspamd } from './helpers/rspamd.js';

const why = rspamdMissing();
if (why && process.env['CI']) t.fail(`cannot run under CI: ${why}`);

t.test('rspamd verdicts through the fleet store\'s channel', why && !process.env['CI'] ? { skip: why } : redisGate(t), async (t) => {
  const redis = await startRedis(t);
  const rspamd = await startRspamd(t, redis.port, 'rspamd_verdicts');
  const yaml = `fleet:\n  url: ${redis.url}\n  flush_interval: 100ms\nfeedback:\n  channel: rspamd_verdicts\n`;
  const a = await startDaemon(t, yaml);
  const b = await startDaemon(t, yaml);
  const up = (h: typeof a): boolean => h.logs().some((l) => l['msg'] === 'fleet store connected') && h.logs().some((l) => l['msg'] === 'feedback: subscribed to the scanner\'s verdicts');
  t.ok(await until(() => up(a) && up(b), 5000), 'both connected, and subscribed to the channel');
  await new Promise((r) => setTimeout(r, 300));

  const out = await rspamd.scan('192.0.2.7', 'spammer@example.org', '4ABCDEF');
  t.match(out, /Action: reject/, 'rspamd rejects it');
  const started = Date.now();
  const down = (h: typeof a): boolean => h.daemon.engine.store.count('ip:192.0.2.7', 'spam') === 1 && h.daemon.engine.store.score('ip:192.0.2.7') < -15;
  t.ok(await until(() => down(a) && down(b), 1000), `both score 192.0.2.7 down within a second (${Date.now() - started} ms): a ${a.daemon.engine.store.score('ip:192.0.2.7')}, b ${b.daemon.engine.store.score('ip:192.0.2.7')}`);
  await new Promise((r) => setTimeout(r, 300));
  const stored = redis.cli('HGET', 'sluice:r:ip:192.0.2.7', 'spam');
  t.equal(stored.trim(), '1', 'one verdict counted once in the store, though both hosts heard it');

  t.match(await rspamd.scan('198.51.100.8', 'friend@example.net'), /Action: no action/, 'rspamd passes it');
  t.ok(await until(() => [a, b].every((h) => Math.round(h.daemon.engine.store.score('ip:198.51.100.8') * 10) / 10 === 1), 1000), 'scored up by weights.ham on both');

  // A message the channel carries that is not a verdict changes nothing (and says so once).
  redis.cli('PUBLISH', 'rspamd_verdicts', '{"ip":"999.1.1.1","action":"reject"}');
  t.ok(await until(() => a.logs().some((l) => String(l['msg']).startsWith('feedback: verdicts refused')), 2000), 'refused, with a warning');
  const metrics = await (await fetch(String(a.daemon.status()['metrics']))).text();
  t.match(metrics, /sluice_scanner_refused_total\{source="channel",reason="address"\} 1/);
});
