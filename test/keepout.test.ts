// Keeping a clean-looking botnet out, each mechanism on a manual clock:
// holds probe and a deferral answers, holds outlast the learned patience,
// a spent budget defers, a delivery after hang-ups repairs only so much,
// a forged sender domain earns nothing, and a client that abandons more
// than it should is probed whatever its score.
import t from 'tap';
import { engineFor, ev } from './helpers/engine.js';
import type { StageEvent } from '../dist/engine/types.js';

const ZOMBIE = { client: '203.0.113.66', clientName: 'unknown', helo: '203.0.113.66' };

/** A session from `who` that reaches RCPT, and how it ends. */
function session(engine: ReturnType<typeof engineFor>['engine'], who: Partial<StageEvent>, end: 'delivered' | 'abandoned' | 'hung-up' | 'waited-out' | 'ended', lasted = 5000) {
  const e = ev({ ...who, stage: 'rcpt' });
  const v = engine.decide(e);
  if (end === 'delivered') {
    engine.decide({ ...e, stage: 'eom' });
    engine.record({ kind: 'delivered', event: { ...e, stage: 'eom' } });
    engine.record({ kind: 'ended', event: { ...e, stage: 'eom' } });
  } else if (end === 'hung-up') engine.record({ kind: 'abandoned', event: e, held: true, lasted });
  else if (end === 'waited-out') engine.record({ kind: 'abandoned', event: e, held: true, waitedOut: true });
  else if (end === 'abandoned') engine.record({ kind: 'abandoned', event: e, held: false });
  else engine.record({ kind: 'ended', event: e });
  return v;
}

t.test('holds probe, a deferral answers: one that hung up under a hold is deferred at RCPT, not held again, until its score recovers', async (t) => {
  const { engine, clock } = engineFor();
  const first = session(engine, ZOMBIE, 'hung-up');
  t.ok(first.delayMs >= 15_000, `first: held ${first.delayMs} ms (at least tarpit.min_hold)`);
  const next = session(engine, ZOMBIE, 'ended');
  t.match(next, { kind: 'defer', rule: 'hung-up-under-hold', delayMs: 0 }, 'next session: a 4xx at RCPT, no hold');
  const helo = engine.decide(ev({ ...ZOMBIE, stage: 'helo' }));
  t.equal(helo.delayMs, 0, 'and no hold at an earlier stage either');
  clock.advance(7 * 86_400_000 - 60_000);
  const later = session(engine, { ...ZOMBIE, clientName: 'mail.example.net', helo: 'mail.example.net' }, 'ended');
  t.not(later.rule, 'hung-up-under-hold', `a week later its score has decayed: ${later.rule} (score ${later.score})`);
});

t.test('a network with enough hang-ups defers its known clients; a new one there is probed first', async (t) => {
  const { engine, clock } = engineFor();
  const gone = (i: number) => ({ client: `198.51.100.${i}`, clientName: 'unknown', helo: `h${i}.example.net` });
  for (let i = 1; i <= 3; i++) session(engine, gone(i), 'hung-up');
  const known = { client: '198.51.100.50', clientName: 'mx50.example.net', helo: 'mx50.example.net' };
  session(engine, known, 'abandoned');
  t.match(session(engine, known, 'ended'), { kind: 'defer', rule: 'network-hung-up' }, 'a known client of the network, with no good record: deferred');
  clock.advance(60_000); // the holds so far have ended: the network's budget is free again
  const fresh = session(engine, { client: '198.51.100.77', clientName: 'mx.example.net', helo: 'mx.example.net' }, 'ended');
  t.ok(fresh.kind === 'pass' && fresh.delayMs >= 15_000, `a new client there: probed with a hold (${fresh.kind}, ${fresh.delayMs} ms)`);
  const off = engineFor('tarpit:\n  network_hangups: 0\n').engine;
  for (let i = 1; i <= 3; i++) session(off, gone(i), 'hung-up');
  session(off, known, 'abandoned');
  t.not(session(off, known, 'ended').rule, 'network-hung-up', 'tarpit.network_hangups 0: no network rule');
});

t.test('the learned give-up time sets the next hold: 1.5 x the 90th percentile, once five are weighed', async (t) => {
  const { engine } = engineFor('tarpit:\n  min_hold: 1s\n  max_hold: 60s\n');
  // Each in a /24 of its own, so that no network's score moves the hold.
  const bare = (i: number) => ({ client: `10.0.${i}.1`, clientName: 'unknown', helo: `mx${i}.example.net` });
  t.equal(session(engine, bare(200), 'ended').delayMs, 4000, 'nothing learned: the hold by points (score -1: 4 s)');
  for (let i = 1; i <= 4; i++) session(engine, bare(i), 'hung-up', 19_000);
  t.equal(session(engine, bare(201), 'ended').delayMs, 4000, 'four hang-ups: not yet');
  session(engine, bare(5), 'hung-up', 19_000);
  t.equal(session(engine, bare(202), 'ended').delayMs, 30_000, 'five at 19 s (bucket 20 s): held 30 s');
  t.match(engine.patience(), [{ stage: 'rcpt', seen: 5, p90_s: 20 }], 'what stats shows');
  const off = engineFor('tarpit:\n  min_hold: 1s\n  learn_patience: false\n').engine;
  for (let i = 1; i <= 5; i++) session(off, bare(i), 'hung-up', 19_000);
  t.equal(session(off, bare(202), 'ended').delayMs, 4000, 'tarpit.learn_patience false: holds by points');
  t.same(off.patience(), [], 'and nothing learned');
});

t.test('a client seen to wait a hold out and leave later only abandoned; one that hung up during it is the zombie signal', async (t) => {
  const { engine } = engineFor();
  session(engine, ZOMBIE, 'waited-out');
  t.equal(engine.store.count(`ip:${ZOMBIE.client}`, 'abh'), 0, 'waited out: not counted as a hang-up under a hold');
  t.equal(engine.store.count(`ip:${ZOMBIE.client}`, 'ab'), 1, 'but as an abandoned session');
  session(engine, ZOMBIE, 'hung-up');
  t.equal(engine.store.count(`ip:${ZOMBIE.client}`, 'abh'), 1, 'hung up during the hold: counted');
});

t.test('no free pass when holds run out: a would-be hold is deferred at RCPT (tarpit.when_spent), or passes with pass', async (t) => {
  const { engine } = engineFor('tarpit:\n  process_limit: 10\n  hold_share: 0.2\n');
  const held = [1, 2].map((i) => engine.decide(ev({ ...ZOMBIE, client: `203.0.113.${i}`, stage: 'rcpt' })));
  t.ok(held.every((v) => v.delayMs > 0), 'budget auto = 10 x 0.2 = 2 holds');
  t.match(engine.decide(ev({ ...ZOMBIE, client: '203.0.113.3', stage: 'rcpt' })), { kind: 'defer', rule: 'tarpit-budget-spent' }, 'the third: deferred');
  t.match(engine.decide(ev({ ...ZOMBIE, client: '203.0.113.4', stage: 'helo' })), { kind: 'pass', rule: 'tarpit-budget-spent', delayMs: 0 }, 'before RCPT it goes on (RCPT decides)');
  const old = engineFor('tarpit:\n  budget: 1\n  when_spent: pass\n').engine;
  old.decide(ev({ ...ZOMBIE, client: '203.0.113.1', stage: 'rcpt' }));
  t.match(old.decide(ev({ ...ZOMBIE, client: '203.0.113.2', stage: 'rcpt' })), { kind: 'pass', rule: 'tarpit-budget-spent', delayMs: 0 }, 'when_spent pass: the old behaviour');
});

t.test('a delivery after a hang-up repairs only weights.delivered / (1 + hang-ups), and never makes the client trusted', async (t) => {
  const { engine } = engineFor();
  session(engine, ZOMBIE, 'hung-up');
  const before = engine.store.score(`ip:${ZOMBIE.client}`);
  session(engine, ZOMBIE, 'delivered');
  t.equal(Math.round((engine.store.score(`ip:${ZOMBIE.client}`) - before) * 100) / 100, 1.5, 'one hang-up: half the credit');
  for (let i = 0; i < 10; i++) session(engine, ZOMBIE, 'delivered');
  const v = engine.explain(ev({ ...ZOMBIE, stage: 'rcpt' }));
  t.notOk((await v).reason?.inputs['trusted'], 'deliveries after a hang-up never make it trusted');
});

t.test('a forged sender domain earns nothing: neither credit nor blame for an unknown client, credit only for a trusted one', async (t) => {
  const { engine } = engineFor();
  const real = { client: '192.0.2.80', clientName: 'mx.example.net', helo: 'mx.example.net', sender: 'news@example.net' };
  for (let i = 0; i < 20; i++) session(engine, real, 'delivered');
  const claim = { client: '203.0.113.90', clientName: 'unknown', helo: 'pc90.example.com', sender: 'news@example.net' };
  const v = await engine.explain(ev({ ...claim, stage: 'rcpt' }));
  t.equal(v.reason?.inputs['score_domain'], 0, 'an unknown client claiming a delivering domain: no credit');
  t.ok(v.reason?.trace.some((l) => /sender domain's score left out: the client itself is not known yet/.test(l)), 'explain says so');
  t.ok(v.delayMs > 0, `so it is held like any new client without rDNS (${v.delayMs} ms)`);
  session(engine, claim, 'abandoned');
  const known = await engine.explain(ev({ ...claim, stage: 'rcpt' }));
  t.equal(known.reason?.inputs['score_domain'], 0, 'known but not trusted: a good domain still counts nothing');
});

t.test('a client that abandons more than thresholds.trust_abandon_rate per delivery is probed at RCPT whatever its score', async (t) => {
  const { engine } = engineFor();
  const alternating = { client: '198.18.5.5', clientName: 'mail.example.org', helo: 'mail.example.org' };
  session(engine, alternating, 'delivered');
  t.match(session(engine, alternating, 'abandoned'), { delayMs: 0 }, 'one delivery: trusted, not held');
  const probed = session(engine, alternating, 'abandoned');
  t.ok(probed.score > -1 && probed.delayMs >= 15_000, `then one abandoned session per delivery: probed (score ${probed.score}, ${probed.delayMs} ms, ${probed.rule})`);
  t.equal(probed.rule, 'tarpit-probe');
  const mta = { client: '198.18.6.6', clientName: 'mx.example.net', helo: 'mx.example.net' };
  for (let i = 0; i < 8; i++) session(engine, mta, 'delivered');
  session(engine, mta, 'abandoned');
  t.match(session(engine, mta, 'ended'), { delayMs: 0, rule: 'reputation' }, 'a real MTA that loses one session in nine stays trusted');
});

t.test('explain names each step', async (t) => {
  const { engine } = engineFor();
  session(engine, ZOMBIE, 'hung-up');
  const v = await engine.explain(ev({ ...ZOMBIE, stage: 'rcpt' }));
  t.match(v, { kind: 'defer', rule: 'hung-up-under-hold' });
  t.ok(v.reason?.trace.some((l) => /hung up under a hold before/.test(l)), v.reason?.trace.join(' | ') ?? '');
});
