// mode: observe - every decision made, logged and counted as it would have
// been, and the MTA told to go on at once (policy and milter); a reload
// switches to enforce.
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { startDaemon, until } from './helpers/daemon.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import { MilterClient, mta, text } from './helpers/milter-client.js';
import { ManualClock } from '../dist/util/clock.js';

t.test('observe mode: would-have verdicts logged and counted, the MTA goes on at once', async (t) => {
  // The daemon's clock never moves: whatever is answered was answered at once.
  const h = await startDaemon(t, 'mode: observe\nlists:\n  deny: ["198.51.100.66"]\ntarpit:\n  hold_per_point: 2s\n  min_hold: 2s\n', undefined, new ManualClock());
  t.equal(h.daemon.status()['mode'], 'observe', 'status shows the mode');
  const p = await PolicyClient.connect({ port: portOf(h.daemon.endpoints.policy[0]) });
  t.teardown(() => p.close());

  // A denied client: DUNNO at once, the log line carries the reject.
  t.equal(await p.ask(rcptRequest({ client_address: '198.51.100.66', instance: 'o.1' })), 'action=DUNNO\n\n', 'deny-listed: action=DUNNO, at once');
  t.ok(await until(() => h.logs().some((l) => l['client'] === '198.51.100.66')));
  const denied = h.logs().find((l) => l['client'] === '198.51.100.66')!;
  t.match(denied, { verdict: 'reject', rule: 'deny 198.51.100.66', would_have: true, held_ms: 0, code: 554, stage: 'rcpt' });
  t.match(denied['msg'], /^rcpt would have been reject/);

  // A client the tarpit would hold (bare IP HELO, no reverse name): not held.
  t.equal(await p.ask(rcptRequest({ client_address: '203.0.113.9', helo_name: '203.0.113.9', client_name: 'unknown', reverse_client_name: 'unknown', instance: 'o.2' })), 'action=DUNNO\n\n', 'a would-be hold is answered at once');
  t.ok(await until(() => h.logs().some((l) => l['client'] === '203.0.113.9')));
  const held = h.logs().find((l) => l['client'] === '203.0.113.9')!;
  t.match(held, { verdict: 'pass', rule: 'tarpit', would_have: true, held_ms: 0 });
  t.ok((held['would_hold_ms'] as number) > 0, `the hold it would have had: ${String(held['would_hold_ms'])} ms`);

  // Milter: CONTINUE where enforce would reject at CONNECT and RCPT.
  const m = await MilterClient.connect(portOf(h.daemon.endpoints.milter[0]));
  t.teardown(() => m.close());
  t.equal(text((await m.open('Postfix 3.7.11', '198.51.100.66'))?.final), 'c', 'milter CONNECT: CONTINUE');
  await m.ask(mta.helo('mx.example.net'));
  await m.ask(mta.mail('<a@example.net>'));
  t.equal(text((await m.ask(mta.rcpt('<b@example.org>')))?.final), 'c', 'milter RCPT: CONTINUE');

  // Counted per stage and verdict.
  const stats = await h.daemon.stats() as Record<string, { stage: string; verdict: string; via: string; value: number }[]>;
  const would = stats['would_have_total'] ?? [];
  t.match(would, [], 'would_have_total in stats');
  t.ok(would.some((r) => r.stage === 'rcpt' && r.verdict === 'reject' && r.via === 'policy' && r.value === 1), 'policy rcpt reject: 1');
  t.ok(would.some((r) => r.stage === 'rcpt' && r.verdict === 'hold' && r.via === 'policy' && r.value === 1), 'policy rcpt hold: 1');
  t.ok(would.some((r) => r.stage === 'connect' && r.verdict === 'reject' && r.via === 'milter'), 'milter connect reject');
  t.ok((stats['verdicts_total'] ?? []).some((r) => r.stage === 'rcpt' && r.verdict === 'reject' && r.via === 'policy'), 'the decision itself is counted as in enforce mode');

  // A reload switches to enforce.
  writeFileSync(h.configFile, readFileSync(h.configFile, 'utf8').replace('mode: observe', 'mode: enforce'));
  t.ok(await h.daemon.reload());
  t.equal(h.daemon.status()['mode'], 'enforce');
  t.match(await p.ask(rcptRequest({ client_address: '198.51.100.66', instance: 'o.3' })), /^action=554 5\.7\.1 /, 'enforced after the reload');
});
