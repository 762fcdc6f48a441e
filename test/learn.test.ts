// sluicectl learn against a running sluiced: by client, by the queue id of a
// message delivered through a real milter session and a policy session, and
// a queue id it never saw (exit 65, one line); metrics count each.
import t from 'tap';
import path from 'node:path';
import { startDaemon } from './helpers/daemon.js';
import { run, ROOT } from './helpers/spawn.js';
import { MilterClient, mta } from './helpers/milter-client.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import * as C from '../dist/milter/constants.js';

t.test('sluicectl learn spam|ham (--client IP | --queue-id ID)', async (t) => {
  const h = await startDaemon(t, 'tarpit:\n  enabled: false\n');
  const ctl = async (...args: string[]): Promise<{ code: number | null; out: string; err: string }> => {
    const c = run(t, [path.join(ROOT, 'bin', 'sluicectl'), '--socket', h.daemon.controlSocket, ...args]);
    const { code } = await c.exited;
    return { code, out: c.stdout(), err: c.stderr() };
  };
  const score = (key: string): number => h.daemon.engine.store.score(key);

  // By client: no delivery remembered, its address and network.
  const byClient = await ctl('learn', 'spam', '--client', '192.0.2.77');
  t.equal(byClient.code, 0, byClient.err);
  t.match(byClient.out, /learned spam for 192\.0\.2\.77 \(found by client\): ip:192\.0\.2\.77, net:192\.0\.2\.0\/24/);
  t.equal(Math.round(score('ip:192.0.2.77')), -16);

  // A message delivered through the milter, named by the queue id of its `i` macro.
  const m = await MilterClient.connect(portOf(h.daemon.endpoints.milter[0]));
  await m.open('Postfix 3.7.11', '198.51.100.21', 'mail.sender.example');
  await m.ask(mta.helo('mail.sender.example'));
  await m.ask(mta.macro(C.SMFIC_MAIL, { i: 'MQ4AB1' }), mta.mail('<a@sender.example>'));
  await m.ask(mta.rcpt('<b@rig.test>'));
  await m.ask(mta.data());
  await m.ask(mta.eoh());
  const eom = await m.ask(mta.macro(C.SMFIC_BODYEOB, { i: 'MQ4AB1' }), mta.eob());
  t.equal(eom?.final.cmd, C.SMFIR_CONTINUE, 'delivered');
  m.close();
  const byMilter = await ctl('--json', 'learn', 'spam', '--queue-id', 'MQ4AB1');
  t.equal(byMilter.code, 0, byMilter.err);
  t.match(JSON.parse(byMilter.out), { verdict: 'spam', client: '198.51.100.21', by: 'queue-id', keys: ['ip:198.51.100.21', 'net:198.51.100.0/24', 'helo:mail.sender.example'] });
  t.ok(score('ip:198.51.100.21') < -10, `its score fell: ${score('ip:198.51.100.21')}`);

  // A message delivered through the policy service, named by the queue_id of END-OF-MESSAGE.
  const p = await PolicyClient.connect({ port: portOf(h.daemon.endpoints.policy[0]) });
  const base = { client_address: '203.0.113.31', helo_name: 'out.example.org', instance: 'p.1', queue_id: 'PQ77C' };
  t.equal(await p.ask(rcptRequest(base)), 'action=DUNNO\n\n');
  t.equal(await p.ask(rcptRequest({ ...base, protocol_state: 'END-OF-MESSAGE', recipient: '', recipient_count: '1' })), 'action=DUNNO\n\n');
  p.close();
  const before = score('ip:203.0.113.31');
  const byPolicy = await ctl('learn', 'ham', '--queue-id', 'PQ77C');
  t.equal(byPolicy.code, 0, byPolicy.err);
  t.match(byPolicy.out, /learned ham for 203\.0\.113\.31 \(found by queue-id\)/);
  t.equal(Math.round((score('ip:203.0.113.31') - before) * 10) / 10, 1, 'weights.ham');

  // show lists the verdicts.
  const show = await ctl('--json', 'show', '198.51.100.21');
  t.match(JSON.parse(show.out), { entries: [{ key: 'ip:198.51.100.21', spam: 1, ham: 0 }] });

  // A queue id sluice never saw: exit 65, one line, nothing learned.
  const size = h.daemon.engine.store.size;
  const unknown = await ctl('learn', 'spam', '--queue-id', 'NOPE123');
  t.equal(unknown.code, 65);
  t.equal(unknown.err, 'sluicectl: queue id NOPE123 is not one sluice saw delivered (or was forgotten: feedback.remember)\n');
  t.equal(h.daemon.engine.store.size, size, 'nothing learned');
  // Bad arguments: exit 64.
  t.equal((await ctl('learn', 'maybe', '--client', '192.0.2.1')).code, 64);
  t.equal((await ctl('learn', 'spam')).code, 64);
  t.equal((await ctl('learn', 'spam', '--client', 'example.org')).code, 64);
  t.equal((await ctl('learn', 'spam', '--queue-id', 'a b')).code, 64);

  const metrics = await (await fetch(String(h.daemon.status()['metrics']))).text();
  t.match(metrics, /sluice_scanner_verdicts_total\{source="learn",verdict="spam"\} 2/);
  t.match(metrics, /sluice_scanner_verdicts_total\{source="learn",verdict="ham"\} 1/);
});
