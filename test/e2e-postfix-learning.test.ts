// End to end: the reputation engine learns from a real Postfix 3.7. A client
// held at RCPT that drops ends with a worse score than one that waits and
// delivers, and the dropper's next connection is deferred at RCPT (holds
// probe, a deferral answers) where the waiter is not held at all.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startDaemon, until } from './helpers/daemon.js';
import { e2eGate, startPostfix, swaks } from './helpers/postfix.js';
import { ROOT } from './helpers/spawn.js';

const SNIPPET = readFileSync(path.join(ROOT, 'contrib', 'postfix', 'main.cf'), 'utf8');

t.test('a dropper held at RCPT is learned, a waiter is trusted', e2eGate(t), async (t) => {
  // The real engine; short windows so the test need not wait long.
  const h = await startDaemon(t, 'rates:\n  abandon_window: 2s\ntarpit:\n  hold_per_point: 3s\n  min_hold: 3s\n  max_hold: 12s\n');
  const rep = h.daemon.engine;
  const pf = await startPostfix(t, SNIPPET, { sluice_policy: h.daemon.endpoints.policy[0]!, smtpd_delay_reject: 'yes' });
  const from = (addr: string, helo: string, extra: string[]) =>
    swaks(['--server', `127.0.0.1:${pf.port}`, '--local-interface', addr, '--helo', helo, '--from', `s@${helo}`, '--to', 'user@rig.test', ...extra]);

  // Both are new and have no reverse DNS (smtpd_peername_lookup = no): score -1, held 3 s.
  // They sit in different /24s of the loopback range, so one's network score is not the other's.
  const waiter = await from('127.0.1.2', 'mx-wait.example.net', ['--timeout', '60']);
  t.equal(waiter.code, 0, 'the waiter delivers');
  t.ok(waiter.ms >= 3000, `and was held (${waiter.ms} ms)`);
  const dropper = await from('127.0.2.3', 'mx-drop.example.net', ['--timeout', '1']);
  t.not(dropper.code, 0, 'the dropper gave up during the hold');
  t.match(dropper.out, /RCPT TO/);
  t.ok(await until(() => rep.store.count('ip:127.0.2.3', 'abh') === 1, 15_000), 'abandoned at RCPT under hold, learned once');
  const sw = rep.store.score('ip:127.0.1.2');
  const sd = rep.store.score('ip:127.0.2.3');
  t.ok(sw > 0 && sd < 0 && sd < sw, `dropper ${sd.toFixed(1)} < waiter ${sw.toFixed(1)}`);
  t.ok(h.logs().some((l) => l['verdict'] === 'pass' && l['rule'] === 'tarpit' && l['client'] === '127.0.2.3'), 'the hold was logged');

  // The dropper comes back: deferred at RCPT at once, not held again; the waiter is not held at all.
  const again = await from('127.0.2.3', 'mx-drop.example.net', ['--timeout', '60', '--quit-after', 'RCPT']);
  t.match(again.out, /<\*\* 4\d\d 4\.7\.1 .*Your reputation is poor/, 'the dropper\'s next RCPT: a 4xx from Postfix, as sluice told it');
  t.ok(again.ms < 2500, `at once, not held (${again.ms} ms)`);
  const trusted = await from('127.0.1.2', 'mx-wait.example.net', ['--timeout', '60']);
  t.equal(trusted.code, 0);
  t.ok(trusted.ms < 2500, `the waiter, now trusted, is not held (${trusted.ms} ms)`);
  t.notMatch(pf.maillog(), /warning:/, 'Postfix logged no warning');
});
