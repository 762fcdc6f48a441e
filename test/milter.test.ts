// Tests for lib/milter/session.ts on a live listener, driven as Postfix and Sendmail drive it.
import t from 'tap';
import * as C from '../dist/milter/constants.js';
import { MilterClient, mta, text } from './helpers/milter-client.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import { heldFor, startDaemon, track, until } from './helpers/daemon.js';
import { ManualClock } from '../dist/util/clock.js';
import { ScriptedRule } from './helpers/scripted-rule.js';

const MILTER = 'milter:\n  listen: ["inet:127.0.0.1:0"]\n  progress_interval: 100ms\n  hold_margin: 200ms\n  sendmail_read_timeout: 600ms\n  sendmail_eom_timeout: 2s\n';

t.test('a full Postfix-style transaction: negotiation, every stage, replies', async (t) => {
  const engine = new ScriptedRule();
  const h = await startDaemon(t, MILTER, engine);
  const c = await MilterClient.connect(portOf(h.daemon.endpoints.milter[0]));
  t.teardown(() => c.close());
  const opt = await c.ask(mta.optneg());
  t.equal(opt?.final.cmd, C.SMFIC_OPTNEG);
  const p = opt!.final.payload;
  t.equal(p.readUInt32BE(0), 6, 'version 6');
  t.equal(p.readUInt32BE(8) & 0x0ff080, 0, 'no no-reply flags');
  t.match(p.subarray(12).toString('latin1'), /\bv\b/, 'symlists ask for v');

  t.equal(text((await c.ask(mta.macro(C.SMFIC_CONNECT, { v: 'Postfix 3.7.11', j: 'mx' }), mta.connect('mx.example.net', '192.0.2.10', 50000)))?.final), 'c');
  t.equal(text((await c.ask(mta.macro(C.SMFIC_HELO, { '{tls_version}': 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' }), mta.helo('mx.example.net')))?.final), 'c');
  t.equal(text((await c.ask(mta.macro(C.SMFIC_MAIL, { i: 'QID1', '{auth_authen}': 'alice' }), mta.mail('<alice@example.net>', 'SIZE=1234')))?.final), 'c');
  t.equal(text((await c.ask(mta.rcpt('<reject@example.org>')))?.final), 'y 554 5.7.1 sluice test reject', 'reject one recipient with our text');
  t.equal(text((await c.ask(mta.rcpt('<defer@example.org>')))?.final), 'y 450 4.7.1 sluice test defer');
  t.equal(text((await c.ask(mta.rcpt('<bob@example.org>', 'NOTIFY=NEVER')))?.final), 'c');
  t.equal(text((await c.ask(mta.data()))?.final), 'c');
  t.equal(text((await c.ask(mta.header('Subject', 'hi')))?.final), 'c', 'headers sent anyway get CONTINUE');
  t.equal(text((await c.ask(mta.eoh()))?.final), 'c');
  t.equal(text((await c.ask(mta.body(Buffer.alloc(100, 0x61))))?.final), 'c');
  t.equal(text((await c.ask(mta.eob()))?.final), 'c');
  c.send(mta.abort(), mta.abort()); // Postfix sends two after each transaction
  // A second message on the same connection.
  t.equal(text((await c.ask(mta.mail('<alice@example.net>')))?.final), 'c');
  t.equal(text((await c.ask(mta.rcpt('<reject.eom@example.org>')))?.final), 'c');
  t.equal(text((await c.ask(mta.eob()))?.final), 'y 554 5.7.1 sluice test reject', 'reject at end of message');
  c.send(mta.quit());
  await c.idle;

  const rcpt = engine.events.find((e) => e.stage === 'rcpt' && e.recipient === 'bob@example.org')!;
  t.match(rcpt, { via: 'milter', mta: 'postfix', client: '192.0.2.10', port: 50000, clientName: 'mx.example.net', helo: 'mx.example.net', sender: 'alice@example.net', queueId: 'QID1', size: 1234 });
  t.match(rcpt, { saslUser: 'alice', tls: { protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' } }, 'macros of earlier stages, named with braces or without');
  t.equal(engine.events.find((e) => e.stage === 'connect')?.saslUser, '', 'none before the stage that sent it');
  const eom = engine.events.find((e) => e.stage === 'eom')!;
  t.equal(eom.recipientCount, 1, 'rejected and deferred recipients are not counted');
  t.equal(eom.size, 100, 'size at end of message is the body seen');
  t.same(engine.outcomes.map((o) => o.kind), ['delivered', 'ended'], 'first message delivered, the rejected one not abandoned, then a normal end');
  t.equal(engine.events.find((e) => e.stage === 'eom')?.queueId, 'QID1', 'the MAIL-stage queue id lasts the whole message');
});

t.test('holds: PROGRESS keeps Postfix waiting; Sendmail gets none before end of message', async (t) => {
  const engine = new ScriptedRule();
  const clock = new ManualClock();
  const h = await startDaemon(t, MILTER, engine, clock);
  const port = portOf(h.daemon.endpoints.milter[0]);
  /** Asks, and lets the daemon's clock run `ms`: the reply comes then and not before. */
  const heldAsk = async (c: MilterClient, ms: number, ...frames: Buffer[]) => {
    const asked = engine.events.length;
    const reply = c.ask(...frames);
    if (frames.length > 0) await until(() => engine.events.length > asked);
    return heldFor(t, clock, reply, ms);
  };

  const pf = await MilterClient.connect(port);
  t.teardown(() => pf.close());
  await pf.open('Postfix 3.7.11');
  await pf.ask(mta.mail('<a@b>'));
  const held = await heldAsk(pf, 550, mta.rcpt('<hold-550@example.org>'));
  t.equal(text(held?.final), 'c');
  t.equal(held!.before.filter((f) => f.cmd === C.SMFIR_PROGRESS).length, 5, 'a PROGRESS frame every 100 ms of the hold');

  // A held reply never blocks another connection: it is served with the clock standing still.
  const other = await MilterClient.connect(port);
  t.teardown(() => other.close());
  const slow = track(pf.ask(mta.rcpt('<hold-400@example.org>')));
  t.equal(text((await other.open())?.final), 'c', 'other connection served during the hold');
  clock.advance(400);
  t.ok(await until(() => slow.done));

  const sm = await MilterClient.connect(port);
  t.teardown(() => sm.close());
  await sm.open('8.17.1');
  await sm.ask(mta.mail('<a@b>'));
  const capped = await heldAsk(sm, 400, mta.rcpt('<hold-5000@example.org>'));
  t.equal(text(capped?.final), 'c', 'cut to T=R: minus margin (400 ms)');
  t.equal(capped!.before.length, 0, 'no PROGRESS to Sendmail at RCPT');
  await sm.ask(mta.mail('<a@b>'));
  const eom = await sm.ask(mta.rcpt('<hold-900.eom@example.org>'), mta.eob());
  t.equal(text(eom?.final), 'c', 'rcpt reply first');
  const eomHeld = await heldAsk(sm, 900);
  // At 100 ms to 800 ms: at 900 ms the answer itself goes out instead.
  t.equal(eomHeld?.before.filter((f) => f.cmd === C.SMFIR_PROGRESS).length, 8, 'PROGRESS to Sendmail at end of message');
  t.ok(await until(() => h.logs().some((l) => l['rule'] === 'test-hold' && l['held_ms'] === 900)), 'held reply logged with held_ms');
});

t.test('abandonment is learned: after a held reply, without one, and not for a finished or refused session', async (t) => {
  const engine = new ScriptedRule();
  const h = await startDaemon(t, MILTER, engine);
  const port = portOf(h.daemon.endpoints.milter[0]);

  // The zombie: held at RCPT, drops the connection before the answer.
  const z = await MilterClient.connect(port);
  await z.open('Postfix 3.7.11', '203.0.113.9');
  await z.ask(mta.mail('<spam@x>'));
  z.send(mta.rcpt('<hold-5000@example.org>'));
  await until(() => engine.events.some((e) => e.client === '203.0.113.9' && e.stage === 'rcpt'));
  z.close();
  t.ok(await until(() => engine.outcomes.length === 1));
  t.match(engine.outcomes[0], { kind: 'abandoned', held: true, event: { stage: 'rcpt', client: '203.0.113.9' } });
  t.ok(await until(() => h.logs().some((l) => l['msg'] === 'abandoned at rcpt' && l['held'] === true)));

  // Quits after HELO without sending mail: abandoned at helo, not held.
  const q = await MilterClient.connect(port);
  await q.open('Postfix 3.7.11', '203.0.113.10');
  await q.ask(mta.helo('x'));
  q.send(mta.quit());
  await q.idle;
  t.ok(await until(() => engine.outcomes.length === 2));
  t.match(engine.outcomes[1], { kind: 'abandoned', held: false, event: { stage: 'helo', client: '203.0.113.10' } });

  // Rejected at RCPT, then QUIT: it left because we said so; ended, not abandoned.
  const rq = await MilterClient.connect(port);
  await rq.open('Postfix 3.7.11', '203.0.113.12');
  await rq.ask(mta.mail('<x@y>'));
  t.equal(text((await rq.ask(mta.rcpt('<reject@example.org>')))?.final), 'y 554 5.7.1 sluice test reject');
  rq.send(mta.quit());
  await rq.idle;
  t.ok(await until(() => engine.outcomes.length === 3));
  t.match(engine.outcomes[2], { kind: 'ended', event: { stage: 'rcpt', client: '203.0.113.12' } });

  // Rejected at CONNECT: the MTA ends it; not an abandonment.
  const r = await MilterClient.connect(port);
  await r.ask(mta.optneg());
  engine.events.length = 0;
  const rej = await r.ask(mta.connect('x', '203.0.113.11'));
  t.equal(text(rej?.final), 'c');
  r.close();
  await r.idle;
  await new Promise((res) => setTimeout(res, 50));
  t.equal(engine.outcomes.length, 4, 'a session that ends right after CONNECT is abandoned at connect');

  // Postfix local submission (sendmail(1)): always CONTINUE, engine not asked, nothing learned.
  const local = await MilterClient.connect(port);
  await local.ask(mta.optneg());
  engine.events.length = 0;
  t.equal(text((await local.ask(mta.connect('localhost', '127.0.0.1', 0)))?.final), 'c');
  t.equal(text((await local.ask(mta.mail('reject@x')))?.final), 'c');
  t.equal(text((await local.ask(mta.rcpt('reject@example.org')))?.final), 'c', 'never rejected');
  local.close();
  await local.idle;
  t.equal(engine.events.length, 0);
  await new Promise((res) => setTimeout(res, 50));
  t.equal(engine.outcomes.length, 4);
});

t.test('score header, quarantine and fail mode', async (t) => {
  const engine = new ScriptedRule();
  const h = await startDaemon(t, MILTER.replace('  listen:', '  header: X-Sluice\n  quarantine: true\n  listen:'), engine);
  const c = await MilterClient.connect(portOf(h.daemon.endpoints.milter[0]));
  t.teardown(() => c.close());
  const opt = await c.ask(mta.optneg());
  t.equal(opt!.final.payload.readUInt32BE(4) & (C.SMFIF_ADDHDRS | C.SMFIF_QUARANTINE), C.SMFIF_ADDHDRS | C.SMFIF_QUARANTINE);
  await c.ask(mta.connect('mx', '192.0.2.1'));
  await c.ask(mta.mail('<a@b>'));
  await c.ask(mta.rcpt('<bob@x>'));
  const pass = await c.ask(mta.eob());
  t.equal(text(pass?.before[0]), 'h X-Sluice|score=0.0 rule=test-pass', 'header added before the final reply');
  t.equal(text(pass?.final), 'c');
  await c.ask(mta.mail('<a@b>'));
  await c.ask(mta.rcpt('<reject.eom@x>'));
  const q = await c.ask(mta.eob());
  t.equal(text(q?.before[0]), 'q sluice test-reject score -9.0', 'quarantined instead of rejected');
  t.equal(text(q?.final), 'c');
  await c.ask(mta.mail('<a@b>'));
  t.equal(text((await c.ask(mta.rcpt('<throw@x>')))?.final), 'c', 'a throwing rule answers the fail mode (pass)');
  t.equal(text((await c.ask(mta.rcpt('<garbage@x>')))?.final), 'c');
  t.ok(await until(() => h.logs().some((l) => l['code'] === 301) && h.logs().some((l) => l['code'] === 303)), 'both failures logged with their codes');
});

t.test('bad frames close only that connection, with one warning each', async (t) => {
  // The scripted engine: this is about framing, not reputation (the real one would hold the probe HELOs).
  const h = await startDaemon(t, MILTER, new ScriptedRule());
  const port = portOf(h.daemon.endpoints.milter[0]);
  const good = await MilterClient.connect(port);
  t.teardown(() => good.close());
  await good.open();
  const policyPort = portOf(h.daemon.endpoints.policy[0]);
  const cases: [string, Buffer[], number][] = [
    ['length 0', [Buffer.from('0000000063', 'hex')], 110],
    ['length 2^31', [Buffer.from('80000000', 'hex')], 110],
    ['HTTP request', [Buffer.from('GET / HTTP/1.0\r\n\r\n')], 110],
    ['TLS ClientHello', [Buffer.from('16030100a5010000a10303' + 'ab'.repeat(32), 'hex')], 110],
    ['string without its NUL', [mta.optneg(), Buffer.from('0000000448616263', 'hex')], 112],
    ['unknown command', [mta.optneg(), Buffer.from('000000015a', 'hex')], 111],
    ['RCPT before OPTNEG', [mta.rcpt('<a@b>')], 113],
    ['RCPT before MAIL', [mta.optneg(), mta.connect('h', '192.0.2.1'), mta.rcpt('<a@b>')], 113],
    ['OPTNEG twice', [mta.optneg(), mta.optneg()], 113],
    ['version 1', [mta.optneg(1)], 114],
  ];
  for (const [name, frames, code] of cases) {
    const before = h.logs().filter((l) => l['code'] === code).length;
    const c = await MilterClient.connect(port);
    c.send(...frames);
    await c.idle;
    t.ok(await until(() => h.logs().filter((l) => l['code'] === code).length === before + 1), `${name}: one warning, code ${code}`);
    t.equal(text((await good.ask(mta.helo('still here')))?.final), 'c', `${name}: other milter connection served`);
  }
  const w = h.logs().find((l) => l['code'] === 110 && String(l['msg']).includes('GET'))!;
  t.match(w['msg'], /first bytes "GET \/ HTTP\/1\.0\\x0d\\x0a/, 'the bytes in printable form');
  // Milter bytes on the policy port and policy bytes on the milter port.
  const pc = await PolicyClient.connect({ port: policyPort });
  t.equal(await pc.send(mta.optneg()), '', 'milter frame on the policy port: closed');
  const mc = await MilterClient.connect(port);
  mc.send(Buffer.from('request=smtpd_access_policy\n\n'));
  await mc.idle;
  t.ok(mc.closed, 'policy request on the milter port: closed');
  const pc2 = await PolicyClient.connect({ port: policyPort });
  t.equal(await pc2.ask(rcptRequest()), 'action=DUNNO\n\n');
  pc2.close();
  t.ok(await until(() => h.daemon.openConnections === 1), 'only the good connection is left');
});

t.test('SIGTERM drain answers held milter and policy replies at once', async (t) => {
  const engine = new ScriptedRule();
  const clock = new ManualClock(); // it never moves: only the drain can answer
  const h = await startDaemon(t, MILTER, engine, clock);
  const c = await MilterClient.connect(portOf(h.daemon.endpoints.milter[0]));
  await c.open();
  await c.ask(mta.mail('<a@b>'));
  const held = c.ask(mta.rcpt('<hold-30000@x>'));
  const p = await PolicyClient.connect({ port: portOf(h.daemon.endpoints.policy[0]) });
  const pheld = p.ask(rcptRequest({ recipient: 'hold-30000@x' }));
  await until(() => engine.events.filter((e) => e.stage === 'rcpt').length === 2);
  await h.daemon.stop();
  t.equal(text((await held)?.final), 'c', 'milter: answered by the drain, not after 30 s');
  t.equal(await pheld, 'action=DUNNO\n\n', 'policy too');
  await c.idle;
  await p.closedPromise;
});

t.test('an unknown verdict renders as the fail mode, as in the policy protocol', async (t) => {
  const { renderVerdict } = await import('../dist/milter/render.js');
  const unknown = { kind: 'nonsense', delayMs: 0, rule: 'r', score: 0 } as unknown as import('../dist/engine/types.js').Verdict;
  const frame = (b: Buffer): string => `${String.fromCharCode(b[4]!)} ${b.subarray(5).toString('latin1').replace(/\0$/, '')}`.trim();
  t.equal(frame(renderVerdict(unknown, 'rcpt', '', false, 'pass')), 'c', 'fail_mode pass: CONTINUE');
  t.equal(frame(renderVerdict(unknown, 'rcpt', '', false, 'defer')), 'y 451 4.3.0 Temporary policy failure, try again later', 'fail_mode defer: the same deferral as policy');
});

t.test('every session the engine was asked about is concluded, whatever order the peer sends in', async (t) => {
  const h = await startDaemon(t, MILTER + 'lists:\n  deny: ["203.0.113.77"]\n');
  const port = portOf(h.daemon.endpoints.milter[0]);
  // Refused at CONNECT: told to the engine at once, as ended.
  const r = await MilterClient.connect(port);
  t.match(text((await r.open('Postfix 3.7.11', '203.0.113.77'))?.final), /^y 554 /, 'denied at CONNECT');
  t.equal(h.daemon.engine.stats().sessions, 0, 'concluded with our answer');
  // A peer that goes on anyway (the fuzzer found one): its next session is concluded at close too.
  await r.ask(mta.mail('<x@y>'));
  t.equal(h.daemon.engine.stats().sessions, 1, 'MAIL after the refusal opens one');
  r.close();
  await r.idle;
  t.ok(await until(() => h.daemon.engine.stats().sessions === 0), 'and the close concludes it: no session is left to the sweep');
});
