// End to end: a real Postfix 3.7 asks sluice through contrib/postfix/main.cf,
// verbatim, and swaks (a real SMTP client) sees the verdicts.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startDaemon } from './helpers/daemon.js';
import { ScriptedRule } from './helpers/scripted-rule.js';
import { e2eGate, startPostfix, swaks } from './helpers/postfix.js';
import { ROOT } from './helpers/spawn.js';

const SNIPPET = readFileSync(path.join(ROOT, 'contrib', 'postfix', 'main.cf'), 'utf8');

for (const delayReject of ['no', 'yes'] as const) {
  t.test(`policy service with smtpd_delay_reject = ${delayReject}`, e2eGate(t), async (t) => {
    const engine = new ScriptedRule();
    const h = await startDaemon(t, 'policy:\n  listen: ["inet:127.0.0.1:0"]\n', engine);
    const policy = h.daemon.endpoints.policy[0]!;
    // The snippet verbatim; this test's endpoint and delay_reject set with postconf -e.
    const pf = await startPostfix(t, SNIPPET, { sluice_policy: policy, smtpd_delay_reject: delayReject });
    const send = (to: string, extra: string[] = []) =>
      swaks(['--server', `127.0.0.1:${pf.port}`, '--from', 'sender@client.example', '--helo', 'client.example', '--to', to, ...extra]);

    // pass: queued, and every stage was asked.
    const pass = await send('alice@rig.test');
    t.equal(pass.code, 0, 'pass: swaks succeeded');
    t.match(pass.out, /<- {2}250 2\.0\.0 Ok: queued as/);
    const stages = new Set(engine.events.map((e) => e.stage));
    const want = delayReject === 'no' ? ['connect', 'helo', 'mail', 'rcpt', 'data', 'eom'] : ['rcpt', 'data', 'eom'];
    t.same([...stages].sort(), want.sort(), `stages asked: ${want.join(' ')}`);
    const rcpt = engine.events.find((e) => e.stage === 'rcpt')!;
    t.equal(rcpt.client, '127.0.0.1');
    t.equal(rcpt.helo, 'client.example');
    t.equal(rcpt.sender, 'sender@client.example');
    t.equal(rcpt.recipient, 'alice@rig.test');
    t.equal(rcpt.mta, 'postfix');
    if (delayReject === 'yes') {
      const asked = engine.events.filter((e) => e.stage === 'rcpt' && e.recipient === 'alice@rig.test');
      t.equal(asked.length, 4, 'the same RCPT asked once per restriction list');
      t.equal(asked.filter((e) => !e.repeat).length, 1, 'and counted once');
    }

    // With delay_reject=yes the client list runs first at RCPT, so Postfix
    // names the client; with no, the recipient list answers.
    const rcptClass = delayReject === 'yes' ? '<unknown\\[127\\.0\\.0\\.1\\]>: Client host' : '<(defer|reject)@rig\\.test>: Recipient address';

    // defer at RCPT: DEFER_IF_PERMIT becomes a 450 with our text.
    const defer = await send('defer@rig.test');
    t.equal(defer.code, 24, 'defer: swaks reports the RCPT failure');
    t.match(defer.out, new RegExp(`<\\*\\* 450 4\\.7\\.1 ${rcptClass} rejected: sluice test defer`));

    // reject at RCPT.
    const reject = await send('reject@rig.test');
    t.equal(reject.code, 24);
    t.match(reject.out, new RegExp(`<\\*\\* 554 5\\.7\\.1 ${rcptClass} rejected: sluice test reject`));

    // reject at end of message.
    const eom = await send('reject.eom@rig.test');
    t.not(eom.code, 0);
    t.match(eom.out, /<\*\* 554 5\.7\.1 .*End-of-data rejected: sluice test reject/);

    // defer at DATA.
    const data = await send('defer.data@rig.test');
    t.not(data.code, 0);
    t.match(data.out, /<\*\* 450 4\.7\.1 .*Data command rejected: sluice test defer/);

    // A held reply: the client waits, then gets 250 and the mail is queued.
    const held = await send('hold-3000@rig.test');
    t.equal(held.code, 0, 'held: delivered');
    t.match(held.out, /<- {2}250 2\.1\.5 Ok/);
    t.ok(held.ms >= 3000, `held reply took ${held.ms} ms`);
    t.ok(held.ms < 6000, 'held once, not once per restriction list');

    const log = pf.maillog();
    t.notMatch(log, /problem talking to server/, 'no "problem talking to server"');
    t.notMatch(log, /warning:/, 'no warnings at all');
    if (/warning:/.test(log)) t.comment(log);
    t.match(log, /reject: RCPT from .*554 5\.7\.1 .*sluice test reject; from=<sender@client\.example> to=<reject@rig\.test>/, 'Postfix logged the reject');
    // sluice's own log line for the reject joins Postfix's by client and stage.
    t.ok(h.logs().some((l) => l['verdict'] === 'reject' && l['client'] === '127.0.0.1' && l['stage'] === 'rcpt'));
  });
}
