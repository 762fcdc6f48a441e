// End to end: a real Postfix 3.7 with smtpd_milters from contrib/postfix/milter.cf
// (verbatim) talks to sluice's milter; swaks sees the verdicts.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startDaemon } from './helpers/daemon.js';
import { ScriptedRule } from './helpers/scripted-rule.js';
import { e2eGate, startPostfix, swaks } from './helpers/postfix.js';
import { ROOT } from './helpers/spawn.js';

const SNIPPET = readFileSync(path.join(ROOT, 'contrib', 'postfix', 'milter.cf'), 'utf8');

t.test('milter verdicts at RCPT and end of message, and a 45 s hold kept alive by PROGRESS', e2eGate(t), async (t) => {
  const engine = new ScriptedRule();
  const h = await startDaemon(t, 'milter:\n  listen: ["inet:127.0.0.1:0"]\n', engine);
  const milter = h.daemon.endpoints.milter[0]!;
  // The snippet as shipped; this test's endpoint set with postconf -e.
  const pf = await startPostfix(t, SNIPPET, { sluice_milter: milter });
  const send = (to: string) => swaks(['--server', `127.0.0.1:${pf.port}`, '--from', 'sender@client.example', '--helo', 'client.example', '--to', to]);

  const pass = await send('alice@rig.test');
  t.equal(pass.code, 0, 'pass: queued');
  t.match(pass.out, /<- {2}250 2\.0\.0 Ok: queued as/);
  const stages = [...new Set(engine.events.map((e) => e.stage))];
  t.same(stages, ['connect', 'helo', 'mail', 'rcpt', 'data', 'eoh', 'eom'], 'every stage asked, in order');
  t.match(engine.events.find((e) => e.stage === 'eom'), { mta: 'postfix', client: '127.0.0.1', helo: 'client.example', sender: 'sender@client.example', recipient: 'alice@rig.test', recipientCount: 1 });
  t.match(engine.events.find((e) => e.stage === 'eom')?.queueId, /^[0-9A-F]{6,}$/, 'queue id from the i macro');
  t.ok(await new Promise<boolean>((r) => setTimeout(() => r(engine.outcomes.some((o) => o.kind === 'delivered')), 100)), 'delivery learned');

  const cases: [string, RegExp][] = [
    ['defer@rig.test', /<\*\* 450 4\.7\.1 sluice test defer/],
    ['reject@rig.test', /<\*\* 554 5\.7\.1 sluice test reject/],
    ['custom@rig.test', /<\*\* 550 5\.7\.25 sluice custom 100% reply/],
    ['defer.eom@rig.test', /<\*\* 450 4\.7\.1 sluice test defer/],
    ['reject.eom@rig.test', /<\*\* 554 5\.7\.1 sluice test reject/],
    ['custom.eom@rig.test', /<\*\* 550 5\.7\.25 sluice custom 100% reply/],
  ];
  for (const [to, want] of cases) {
    const r = await send(to);
    t.not(r.code, 0, `${to}: refused`);
    t.match(r.out, want, `${to}: the client sees our reply`);
    const stage = to.includes('.eom') ? /-> \.\r?\n[\s\S]*<\*\*/ : /-> RCPT TO:[^\n]*\n<\*\*/;
    t.match(r.out, stage, `${to}: at ${to.includes('.eom') ? 'end of message' : 'RCPT'}`);
  }

  const held = await send('hold-45000@rig.test');
  t.equal(held.code, 0, 'the held message is delivered');
  t.match(held.out, /<- {2}250 2\.1\.5 Ok/);
  t.ok(held.ms >= 45_000, `RCPT answered after ${held.ms} ms, past milter_command_timeout=30s`);

  const log = pf.maillog();
  t.notMatch(log, /warning:/, 'Postfix logged no warning (no milter timeout, no protocol error)');
  if (/warning:/.test(log)) t.comment(log);
  t.match(log, /milter-reject: RCPT from .*554 5\.7\.1 sluice test reject/);
  // cleanup(8) logs the end-of-message reject with its enhanced code only.
  t.match(log, /milter-reject: END-OF-MESSAGE from .*: 5\.7\.25 sluice custom 100% reply/);
});
