// End to end, a real Postfix 3.7: a content scanner's milter listed before
// sluice's adds its verdict header at end of message (as spamass-milter and
// rspamd's milter do); sluice's milter sees it (feedback.header) and learns
// the verdict for the client. This is the measurement sluice.conf(5) cites.
import t from 'tap';
import { startDaemon } from './helpers/daemon.js';
import { e2eGate, startPostfix, swaks } from './helpers/postfix.js';
import { startTinyMilter } from './helpers/tiny-milter.js';

t.test('a scanner milter\'s header, read by sluice\'s milter listed after it', e2eGate(t), async (t) => {
  const scanner = await startTinyMilter(t, [['X-Spam-Flag', 'YES']]);
  const h = await startDaemon(t, 'milter:\n  listen: ["inet:127.0.0.1:0"]\nfeedback:\n  header: X-Spam-Flag\ntarpit:\n  enabled: false\n');
  const pf = await startPostfix(t, `smtpd_milters = ${scanner.endpoint}, ${h.daemon.endpoints.milter[0]}\nmilter_protocol = 6\nmilter_default_action = tempfail\n`);
  const r = await swaks(['--server', `127.0.0.1:${pf.port}`, '--from', 'a@client.example', '--helo', 'client.example', '--to', 'alice@rig.test', '--header', 'Subject: probe']);
  t.equal(r.code, 0, 'queued');
  t.equal(scanner.messages.length, 1, 'the scanner saw the message');
  const store = h.daemon.engine.store;
  t.equal(store.count('ip:127.0.0.1', 'spam'), 1, 'sluice learned the scanner\'s spam verdict for the client');
  t.equal(store.count('helo:client.example', 'spam'), 1, 'and for its HELO');
  t.equal(store.count('ip:127.0.0.1', 'ok'), 1, 'the delivery itself counted too');
  t.notMatch(pf.maillog(), /warning:/, 'Postfix logged no warning');

  // Without feedback.header, sluice asks for no headers (SMFIP_NOHDRS) and learns no verdict.
  const plain = await startDaemon(t, 'milter:\n  listen: ["inet:127.0.0.1:0"]\ntarpit:\n  enabled: false\n');
  const pf2 = await startPostfix(t, `smtpd_milters = ${scanner.endpoint}, ${plain.daemon.endpoints.milter[0]}\nmilter_protocol = 6\n`);
  t.equal((await swaks(['--server', `127.0.0.1:${pf2.port}`, '--from', 'a@client.example', '--helo', 'client.example', '--to', 'alice@rig.test'])).code, 0);
  t.equal(plain.daemon.engine.store.count('ip:127.0.0.1', 'spam'), 0, 'no header read, no verdict');
  t.equal(plain.daemon.engine.store.count('ip:127.0.0.1', 'ok'), 1);
});
