// A content scanner's verdicts: what each does to the engine (on a manual
// clock), and the channel's bad input, counted and changing nothing.
import t from 'tap';
import pino from 'pino';
import { Writable } from 'node:stream';
import { engineFor, ev } from './helpers/engine.js';
import { Feedback, MAX_QUEUED } from '../dist/feedback/feedback.js';
import { MAX_MESSAGE, parseVerdict } from '../dist/feedback/verdicts.js';

const DELIVERED = (queueId: string, client = '203.0.113.9', session = `s-${queueId}`) => ({ kind: 'delivered' as const, event: ev({ stage: 'eom', client, session, queueId, helo: 'mail.sender.example' }) });

t.test('a spam verdict by queue id: client, network and HELO, never the sender domain', async (t) => {
  const { engine, config } = engineFor();
  engine.decide(ev({ stage: 'connect', client: '203.0.113.9', session: 's-Q1' }));
  engine.record(DELIVERED('Q1'));
  const before = engine.store.score('dom:example.net');
  const r = engine.learn({ verdict: 'spam', source: 'test', queueId: 'Q1' });
  t.match(r, { learned: true, client: '203.0.113.9', by: 'queue-id', heldMs: 0 });
  t.same(r.learned && r.keys, ['ip:203.0.113.9', 'net:203.0.113.0/24', 'helo:mail.sender.example']);
  t.equal(Math.round(engine.store.score('ip:203.0.113.9')), config.weights.delivered + config.weights.spam);
  t.equal(engine.store.count('ip:203.0.113.9', 'spam'), 1);
  t.equal(engine.store.count('helo:mail.sender.example', 'spam'), 1);
  t.equal(engine.store.score('dom:example.net'), before, 'the sender domain is untouched');
  const next = engine.decide(ev({ client: '203.0.113.9', helo: 'mail.sender.example' }));
  t.equal(next.kind, 'defer', 'one spam verdict: deferred at its next RCPT');
  t.equal(next.rule, 'reputation-defer');
  const why = await engine.explain(ev({ client: '203.0.113.9', helo: 'mail.sender.example' }));
  t.match(why.reason?.trace.join('\n'), /the content scanner on its messages: 1 spam, 0 ham/, 'explain lists the verdicts');
});

t.test('spam that waited out a hold: the hold failed (a hang-up under a hold, and the patience figures)', async (t) => {
  const { engine, clock } = engineFor('tarpit:\n  min_hold: 20s\n');
  for (let i = 0; i < 6; i++) {
    // Each a new client of a network of its own where another client went away: held at RCPT (a suspect network), then delivered.
    const client = `198.51.${100 + i}.10`;
    const session = `held-${i}`;
    engine.record({ kind: 'abandoned', event: ev({ client: `198.51.${100 + i}.100`, session: `gone-${i}`, helo: `h${i}.example` }), held: false });
    const v = engine.decide(ev({ client, session, helo: `h${i}.example` }));
    t.ok(v.delayMs >= 20_000, `client ${i} held (${v.rule}, ${v.delayMs} ms)`);
    clock.advance(v.delayMs);
    engine.record(DELIVERED(`HQ${i}`, client, session));
    const r = engine.learn({ verdict: 'spam', source: 'test', queueId: `HQ${i}` });
    t.match(r, { learned: true, heldMs: v.delayMs });
    t.equal(engine.store.count(`ip:${client}`, 'abh'), 1, 'counted as a hang-up under a hold');
  }
  const p = engine.patience().find((x) => x.stage === 'rcpt');
  t.ok(p && p.seen >= 5 && p.p90_s >= 15, `rcpt patience learned from the failed holds: ${JSON.stringify(p)}`);
});

t.test('spam after a hold from a client the scanner mostly calls ham: not taken for a hang-up', async (t) => {
  const { engine, clock } = engineFor('tarpit:\n  min_hold: 20s\n');
  engine.record({ kind: 'abandoned', event: ev({ client: '198.51.120.100', session: 'gone' }), held: false });
  for (let i = 0; i < 3; i++) engine.learn({ verdict: 'ham', source: 'test', client: '198.51.120.10' });
  const v = engine.decide(ev({ client: '198.51.120.10', session: 'held' }));
  t.ok(v.delayMs > 0, `held (${v.rule})`);
  clock.advance(v.delayMs);
  engine.record(DELIVERED('FPQ1', '198.51.120.10', 'held'));
  t.match(engine.learn({ verdict: 'spam', source: 'test', queueId: 'FPQ1' }), { learned: true, heldMs: v.delayMs });
  t.equal(engine.store.count('ip:198.51.120.10', 'abh'), 0, 'three hams, one spam: likelier the scanner\'s mistake');
});

t.test('ham: weights.ham, no trust on its own; spam after hams weighs less', async (t) => {
  const { engine, config } = engineFor();
  t.match(engine.learn({ verdict: 'ham', source: 'test', client: '192.0.2.50' }), { learned: true, by: 'client' });
  t.equal(engine.store.score('ip:192.0.2.50'), config.weights.ham);
  const v = await engine.explain(ev({ client: '192.0.2.50' }));
  t.equal(v.reason?.inputs['trusted'], false, 'a ham verdict alone does not make a client trusted');
  for (let i = 0; i < 3; i++) engine.learn({ verdict: 'ham', source: 'test', client: '192.0.2.50' });
  const before = engine.store.score('ip:192.0.2.50');
  engine.learn({ verdict: 'spam', source: 'test', client: '192.0.2.50' });
  t.equal(Math.round((engine.store.score('ip:192.0.2.50') - before) * 10) / 10, config.weights.spam / 5, 'after 4 hams one spam weighs weights.spam / 5');
});

t.test('a verdict that names nothing sluice saw', async (t) => {
  const { engine } = engineFor();
  t.match(engine.learn({ verdict: 'spam', source: 'test', queueId: 'NOSUCH' }), { learned: false, why: /queue id NOSUCH is not one sluice saw delivered/ });
  t.equal(engine.store.size, 0, 'nothing learned');
});

t.test('the channel: rspamd JSON; bad input refused, counted, one warning a minute, nothing changed', async (t) => {
  t.match(parseVerdict(JSON.stringify({ ip: '192.0.2.7', action: 'reject', qid: 'unknown', score: 26 })), { scan: { verdict: 'spam', client: '192.0.2.7' } });
  t.match(parseVerdict(JSON.stringify({ ip: '2001:db8::7', action: 'no action', qid: '4ABCDEF' })), { scan: { verdict: 'ham', client: '2001:db8::7', queueId: '4ABCDEF' } });
  t.match(parseVerdict(JSON.stringify({ ip: '192.0.2.7', verdict: 'spam' })), { scan: { verdict: 'spam' } });
  t.match(parseVerdict(JSON.stringify({ ip: '192.0.2.7', action: 'soft reject' })), { unsure: 'soft reject' });
  const bad: [string, string][] = [
    ['{"ip": "192.0.2.7", "action": ', 'json'],
    ['[1, 2]', 'json'],
    [JSON.stringify({ ip: '192.0.2.300', action: 'reject' }), 'address'],
    [JSON.stringify({ ip: 7, action: 'reject' }), 'address'],
    [JSON.stringify({ action: 'reject' }), 'address'],
    [JSON.stringify({ ip: '192.0.2.7', action: 'explode' }), 'action'],
    [JSON.stringify({ ip: '192.0.2.7', verdict: 'maybe' }), 'action'],
    [JSON.stringify({ ip: '192.0.2.7', action: 'reject', qid: '../../etc' }), 'queue-id'],
    [JSON.stringify({ ip: '192.0.2.7', action: 'reject', pad: 'x'.repeat(MAX_MESSAGE) }), 'oversized'],
  ];
  for (const [text, reason] of bad) t.match(parseVerdict(text), { refused: reason }, `${text.slice(0, 50)}: ${reason}`);

  const { engine, clock } = engineFor();
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, new Writable({ write(c: Buffer, _e, cb) { lines.push(JSON.parse(c.toString()) as Record<string, unknown>); cb(); } }));
  const counted: string[] = [];
  const fleet = { active: false, claim: async (ids: readonly string[]) => ids.map(() => true) };
  const fb = new Feedback(engine, fleet, clock, () => log, { scanned: (s, v) => counted.push(`${s} ${v}`), scanRefused: (s, r) => counted.push(`${s} refused ${r}`) });
  for (const [text] of bad) fb.take(text);
  fb.drain();
  t.equal(engine.store.size, 0, 'bad input changed nothing');
  t.same(counted, bad.map(([, r]) => `channel refused ${r}`), 'each counted with its reason');
  await new Promise((r) => setImmediate(r));
  t.equal(lines.length, 1, 'one warning for the lot');
  t.match(lines[0], { level: 40, refused: { json: 1 } });
  clock.advance(61_000);
  fb.take('not json');
  fb.take(JSON.stringify({ ip: '192.0.2.7', action: 'reject' }));
  fb.drain();
  await new Promise((r) => setImmediate(r));
  t.equal(lines.length, 2, 'a minute later, one more');
  t.match(lines[1], { refused: { json: 2, address: 3, action: 2, 'queue-id': 1, oversized: 1 } });
  t.equal(counted.at(-1), 'channel spam', 'a good message among bad ones is learned');
  t.ok(engine.store.score('ip:192.0.2.7') < 0);

  // A flood past what may wait: refused as overflow, the queue bounded.
  counted.length = 0;
  for (let i = 0; i < MAX_QUEUED + 10; i++) fb.take('{}');
  t.equal(fb.waiting, MAX_QUEUED, 'at most MAX_QUEUED wait');
  t.equal(counted.filter((c) => c === 'channel refused overflow').length, 10);
  fb.drain();
  t.equal(fb.waiting, 0);
  await fb.close();
});
