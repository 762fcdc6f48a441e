// Tests for lib/engine: the pipeline per stage, learning, budgets and windows, on an injected clock.
import t from 'tap';
import { defaults, engineFor, ev, SyncEngine } from './helpers/engine.js';
import { holdFor, HoldBudget } from '../dist/engine/tarpit.js';
import { heuristics } from '../dist/engine/heuristics.js';
import { Lists } from '../dist/engine/lists.js';
import { YoungMap } from '../dist/util/young-map.js';
import { RateWindows } from '../dist/engine/limits.js';
import { ManualClock } from '../dist/util/clock.js';
import type { StageEvent } from '../dist/engine/types.js';

const S = 1000;

t.test('a fresh, well-named client passes without a hold; one without rDNS is held tarpit.min_hold', async (t) => {
  const { engine } = engineFor();
  t.match(engine.decide(ev()), { kind: 'pass', delayMs: 0, rule: 'reputation', score: 0 });
  const v = engine.decide(ev({ client: '198.51.100.7', clientName: 'unknown' }));
  t.match(v, { kind: 'pass', rule: 'tarpit', delayMs: 15_000, score: -1 });
  t.equal(v.reason, undefined, 'no trace built on the hot path');
  const x = await engine.explain(ev({ client: '198.51.100.7', clientName: 'unknown' }));
  t.match(x.reason?.trace.join('\n'), /no_reverse_dns -1[\s\S]*hold 15000 ms/, 'explain shows the rule trace');
  t.equal(x.reason?.inputs['score'], -1);
});

t.test('learning: a hang-up under a hold is answered with a deferral; delivery earns trust and ends holds', async (t) => {
  const { engine } = engineFor();
  const zombie = { client: '203.0.113.5', clientName: 'unknown', helo: '203.0.113.5' };
  const first = engine.decide(ev(zombie));
  t.ok(first.delayMs > 0, `first hold ${first.delayMs} ms (bare-IP HELO, no rDNS)`);
  engine.record({ kind: 'abandoned', event: ev({ ...zombie, stage: 'rcpt' }), held: true });
  t.match(engine.decide(ev(zombie)), { kind: 'defer', rule: 'hung-up-under-hold', delayMs: 0 }, 'after hanging up under a hold: deferred at RCPT, not held again');
  t.equal(engine.store.count('ip:203.0.113.5', 'abh'), 1);
  // Two held abandonments: ip -12, net -12 x 0.5, HELO -12 x 0.25, findings -4 = -25.
  engine.record({ kind: 'abandoned', event: ev(zombie), held: true });
  t.match(engine.decide(ev(zombie)), { kind: 'defer', rule: 'reputation-defer', score: -25, reply: { code: 451 } }, 'deferred at RCPT once the score is low enough');
  engine.record({ kind: 'abandoned', event: ev(zombie), held: true });
  t.match(engine.decide(ev(zombie)), { kind: 'reject', rule: 'reputation-reject', reply: { code: 550 } });
  t.match(engine.decide(ev({ ...zombie, stage: 'mail' })), { kind: 'pass' }, 'reject and defer by score only at RCPT');

  const mta = { client: '192.0.2.50', clientName: 'unknown' };
  t.ok(engine.decide(ev(mta)).delayMs > 0, 'a new MTA without rDNS is held once');
  engine.record({ kind: 'delivered', event: ev(mta) });
  const after = engine.decide(ev(mta));
  t.match(after, { kind: 'pass', delayMs: 0 }, 'after its first delivery it is never held');
  t.match((await engine.explain(ev(mta))).reason?.trace.join('\n'), /trusted/);
});

t.test('decay: a bad score heals with time', async (t) => {
  const { engine, clock } = engineFor();
  const c = { client: '203.0.113.9', clientName: 'mx.example.net' };
  for (let i = 0; i < 6; i++) engine.record({ kind: 'abandoned', event: ev(c), held: true });
  t.equal(engine.decide(ev(c)).kind, 'reject');
  clock.advance(6.5 * 86_400_000); // six and a half half-lives: above thresholds.hold again
  t.equal(engine.decide(ev(c)).kind, 'pass');
});

t.test('lists: deny rejects at every stage, allow accepts, dynamic entries expire', async (t) => {
  const { engine, clock } = engineFor('lists:\n  allow: ["192.0.2.0/24", "@partner.example"]\n  deny: ["203.0.113.0/24", "evil.example"]\n');
  t.match(engine.decide(ev({ client: '203.0.113.1', stage: 'connect' })), { kind: 'reject', rule: 'deny 203.0.113.0/24', reply: { code: 554 } });
  t.match(engine.decide(ev({ client: '198.51.100.1', helo: 'EVIL.example.' })), { kind: 'reject', rule: 'deny evil.example' });
  t.match(engine.decide(ev({ client: '192.0.2.9', clientName: 'unknown', helo: '1.2.3.4' })), { kind: 'accept', rule: 'allow 192.0.2.0/24' });
  t.match(engine.decide(ev({ client: '198.51.100.2', sender: 'x@mail.partner.example', clientName: 'unknown' })), { kind: 'accept' }, 'subdomains of an @domain');
  t.match(engine.decide(ev({ client: '::ffff:203.0.113.3' })), { kind: 'reject' }, 'mapped IPv4 matches IPv4 CIDRs');
  t.equal(engine.lists.add('deny', '198.51.100.0/24', clock.now(), 60 * S, 'test') && 'ok', 'ok');
  t.match(engine.decide(ev({ client: '198.51.100.77' })), { kind: 'reject' });
  clock.advance(61 * S);
  t.match(engine.decide(ev({ client: '198.51.100.77' })), { kind: 'pass' }, 'expired');
  t.equal(engine.lists.add('allow', 'not a value!', clock.now()), '"not a value!" is not an address, CIDR, HELO name or @domain');
  engine.lists.add('allow', '2001:db8::/32', clock.now());
  t.match(engine.decide(ev({ client: '2001:db8::1' })), { kind: 'accept' });
  t.ok(engine.lists.remove('2001:db8::/32'));
  t.notOk(engine.lists.remove('2001:db8::/32'));
  const l = new Lists();
  t.same(l.setStatic(['bogus value'], [], 0), ['"bogus value" is not an address, CIDR, HELO name or @domain']);
});

t.test('a session keeps what it worked out until a list, its HELO or its sender changes', async (t) => {
  const { engine, clock } = engineFor();
  const session = '198.51.100.50:1:25';
  const at = (over: Partial<StageEvent> = {}) => engine.decide(ev({ client: '198.51.100.50', session, ...over }));
  t.match(at({ stage: 'connect', helo: '' }), { kind: 'pass', score: 0 });
  t.match(at({ stage: 'helo', helo: 'localhost' }), { score: -2 }, 'a HELO given after CONNECT is judged');
  engine.lists.add('deny', '@spam.example', clock.now(), 60 * S);
  t.match(at({ stage: 'mail', helo: 'localhost', sender: 'x@spam.example' }), { kind: 'reject' }, 'a list entry added mid-session counts at the next stage');
  t.match(at({ stage: 'rcpt', helo: 'localhost', sender: 'x@spam.example' }), { kind: 'reject' });
  clock.advance(61 * S);
  t.match(at({ stage: 'rcpt', helo: 'localhost', sender: 'x@spam.example' }), { kind: 'pass' }, 'and its expiry too');
  engine.record({ kind: 'abandoned', held: false, event: ev({ client: '198.51.100.50', session, helo: 'localhost', sender: 'x@spam.example' }) });
  t.ok((engine.store.entry('helo:localhost')?.ab ?? 0) === 1, 'the outcome is learned for the HELO the session gave');
  t.equal(engine.stats().sessions, 0, 'and the session is closed');
});

t.test("a client's next session reuses its profile only while HELO, sender, name and config repeat", async (t) => {
  const clock = new ManualClock();
  let config = defaults();
  const engine = new SyncEngine(() => config, clock.now);
  const client = '198.51.100.60';
  const next = (over: Partial<StageEvent> = {}) => engine.decide(ev({ client, ...over }));
  t.match(next({ helo: 'localhost' }), { score: -2 }, 'non-FQDN HELO');
  t.match(next({ helo: 'mx.example.net' }), { score: 0 }, 'a new session with another HELO is judged on that HELO');
  t.match(next({ helo: 'localhost', clientName: 'unknown' }), { score: -3 }, 'and with another name on that name');
  t.match(next({ helo: 'localhost', clientName: 'unknown' }), { score: -3 }, 'the same again: the same judgement');
  t.match(next({ helo: 'localhost' }), { score: -2 }, 'only the name back: judged on it again');
  t.match(next({ helo: 'localhost', clientName: 'unknown' }), { score: -3 });
  engine.record({ kind: 'abandoned', held: false, event: ev({ client, helo: 'localhost', clientName: 'unknown' }) });
  // ip -2, net -2 x 0.5, HELO -2 x 0.25, findings -3
  t.match(next({ helo: 'localhost', clientName: 'unknown' }), { score: -6.5 }, 'what was learned since shows through the kept profile');
  t.match(next({ helo: 'localhost', clientName: 'unknown', sender: 'x@other.example' }), { score: -6.5 }, 'another sender domain, still unknown');
  engine.record({ kind: 'delivered', event: ev({ client: '192.0.2.1', sender: 'y@other.example' }) });
  t.match(next({ helo: 'localhost', clientName: 'unknown', sender: 'x@other.example' }), { score: -6.5 }, "and that domain's delivery lifts no client not trusted on its own record");
  config = defaults('weights:\n  non_fqdn_helo: -5\n');
  t.match(next({ helo: 'localhost', clientName: 'unknown', sender: 'x@other.example' }), { score: -9.5 }, 'a new config is applied at the next session');
});

t.test('a session that tells HELO and sender as it goes finds a kept profile at every stage of its next session', async (t) => {
  const clock = new ManualClock();
  const engine = new SyncEngine(() => defaults(), clock.now);
  const client = '198.51.100.61';
  const walk = (session: string, helo: string, sender: string): number[] => [
    engine.decide(ev({ client, session, stage: 'connect', helo: '', sender: '' })).score,
    engine.decide(ev({ client, session, stage: 'helo', helo, sender: '' })).score,
    engine.decide(ev({ client, session, stage: 'mail', helo, sender })).score,
    engine.decide(ev({ client, session, stage: 'rcpt', helo, sender })).score,
  ];
  const store = engine.store;
  const ref = store.ref.bind(store);
  let refs = 0;
  store.ref = (key: string) => { refs++; return ref(key); };
  t.same(walk('s1', 'localhost', 'a@one.example'), [0, -2, -2, -2], 'non-FQDN HELO counts from HELO on');
  t.ok(refs > 0, `the first session made its profiles (${refs} refs looked up)`);
  refs = 0;
  t.same(walk('s2', 'localhost', 'a@one.example'), [0, -2, -2, -2], 'the same judgement at every stage');
  t.equal(refs, 0, 'the next session looked up no refs: a kept profile at each stage');
  t.same(walk('s3', 'localhost', 'b@two.example'), [0, -2, -2, -2], 'another sender');
  t.equal(refs, 1, 'only the new sender domain is looked up');
  engine.record({ kind: 'abandoned', held: false, event: ev({ client, session: 's3', helo: 'localhost', sender: 'b@two.example' }) });
  // ip -2, net -2 x 0.5; from HELO on also HELO -2 x 0.25 and the finding -2
  t.same(walk('s4', 'localhost', 'b@two.example'), [-3, -5.5, -5.5, -5.5], 'what was learned since shows through every kept profile');
});

t.test('rate records carry at most 20,000 profiles; an evicted record gives its place back', async (t) => {
  const rates = new RateWindows(30_000);
  const profile = {};
  for (let i = 0; i < 20_000; i++) rates.keep(rates.get(`ip:${i}`, 0), profile);
  const over = rates.get('ip:over', 0);
  rates.keep(over, profile);
  t.equal(over.profile, undefined, 'the 20,001st record gets none');
  const again = rates.get('ip:0', 0);
  const newer = {};
  rates.keep(again, newer);
  t.equal(again.profile, newer, 'a record that has one takes the newer');
  for (let i = 0; i < 30_000; i++) rates.get(`ip:next${i}`, 0); // evicts every record above
  const fresh = rates.get('ip:fresh', 0);
  rates.keep(fresh, profile);
  t.equal(fresh.profile, profile, 'once evicted, the profiled records free their places');
});

t.test('rates and concurrency per window, counted once per question', async (t) => {
  const { engine, clock } = engineFor('rates:\n  connections_per_client: 3\n  recipients_per_client: 4\n  concurrency_per_client: 2\n');
  const c = '198.51.100.20';
  const sessions = [`${c}:1:25`, `${c}:2:25`];
  for (const s of sessions) t.equal(engine.decide(ev({ client: c, session: s, stage: 'connect' })).kind, 'pass');
  t.match(engine.decide(ev({ client: c, session: `${c}:3:25`, stage: 'connect' })), { kind: 'defer', rule: 'rate concurrency_per_client' });
  engine.record({ kind: 'ended', event: ev({ client: c, session: `${c}:3:25` }) });
  engine.record({ kind: 'ended', event: ev({ client: c, session: sessions[1] }) });
  t.match(engine.decide(ev({ client: c, session: `${c}:4:25`, stage: 'connect' })), { kind: 'defer', rule: 'rate connections_per_client' }, 'the 4th connection in the window');
  t.ok((engine.store.entry(`ip:${c}`)?.rate ?? 0) >= 2, 'exceeding costs points');
  clock.advance(61 * S);
  engine.record({ kind: 'ended', event: ev({ client: c, session: `${c}:4:25` }) });
  const s = `${c}:5:25`;
  for (let i = 0; i < 3; i++) t.equal(engine.decide(ev({ client: c, session: s, recipient: `r${i}@x` })).kind, 'pass');
  for (let i = 0; i < 3; i++) engine.decide(ev({ client: c, session: s, recipient: 'r0@x', repeat: true }));
  t.equal(engine.decide(ev({ client: c, session: s, recipient: 'r4@x' })).kind, 'pass', 'repeats are not counted');
  t.match(engine.decide(ev({ client: c, session: s, recipient: 'r5@x' })), { kind: 'defer', rule: 'rate recipients_per_client' });
});

t.test('greylisting: new triplet deferred, early retry deferred, retry in the window passes, auto-allow', async (t) => {
  const { engine, clock } = engineFor('greylist:\n  enabled: true\n  min_delay: 60s\n  retry_window: 1h\n  auto_allow_after: 2\nrates:\n  connections_per_client: 1000\n');
  const g = (rcpt: string) => engine.decide(ev({ client: '198.51.100.30', recipient: rcpt }));
  t.match(g('a@x'), { kind: 'defer', rule: 'greylist-new' });
  clock.advance(30 * S);
  t.match(g('a@x'), { kind: 'defer', rule: 'greylist-early' });
  clock.advance(31 * S);
  t.match(g('a@x'), { kind: 'pass' });
  t.equal(engine.store.entry('ip:198.51.100.30')?.grey, 1, 'a triplet that came back is learned');
  t.match(g('a@x'), { kind: 'pass' }, 'known triplet');
  t.match(g('b@x'), { kind: 'defer' });
  clock.advance(2 * 3_600_000);
  t.match(g('b@x'), { kind: 'defer', rule: 'greylist-new' }, 'a retry after the window starts over');
  clock.advance(61 * S);
  t.match(g('b@x'), { kind: 'pass' });
  t.match(engine.decide(ev({ client: '198.51.100.31', recipient: 'c@x' })), { kind: 'pass' }, 'the network is auto-allowed after 2 passes');
  t.match((await engine.explain(ev({ client: '203.0.113.40', recipient: 'z@x' }))), { kind: 'defer', rule: 'greylist-new' });
  t.match((await engine.explain(ev({ client: '203.0.113.40', recipient: 'z@x' }))), { kind: 'defer', rule: 'greylist-new' }, 'explain records no triplet');
});

t.test('tarpit: growth, caps, budget leases, stress, repeats, CONNECT opt-in', async (t) => {
  t.equal(holdFor(0, -1, 2000, 30_000, 'rcpt'), 0);
  t.equal(holdFor(-1, -1, 2000, 30_000, 'rcpt'), 2000);
  t.equal(holdFor(-5, -1, 2000, 30_000, 'rcpt'), 10_000);
  t.equal(holdFor(-50, -1, 2000, 300_000, 'data'), 90_000, 'DATA: cut to the client patience');
  t.equal(holdFor(-50, -1, 2000, 30_000, 'rcpt'), 30_000, 'cut to max_hold');
  const b = new HoldBudget();
  t.equal(b.grant('n1', 1000, 0, 3, 2), 'granted');
  t.equal(b.grant('n1', 1000, 0, 3, 2), 'granted');
  t.equal(b.grant('n1', 1000, 0, 3, 2), 'network');
  t.equal(b.grant('n2', 1000, 0, 3, 2), 'granted');
  t.equal(b.grant('n3', 1000, 0, 3, 2), 'total');
  t.equal(b.active(500), 3);
  t.equal(b.grant('n3', 1000, 1000, 3, 2), 'granted', 'leases end with their hold');
  t.equal(b.active(1000), 1);
  // Leases of mixed lengths end in time order, the same as a plain list would say.
  const heap = new HoldBudget();
  const plain: { net: string; end: number }[] = [];
  let seed = 7;
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
  let agree = 0;
  for (let now = 0; now < 20_000; now += rnd(40)) {
    const net = `n${rnd(5)}`;
    const ms = 1 + rnd(3000);
    const live = plain.filter((l) => l.end > now);
    const want = live.length >= 40 ? 'total' : live.filter((l) => l.net === net).length >= 10 ? 'network' : 'granted';
    if (want === 'granted') plain.push({ net, end: now + ms });
    if (heap.grant(net, ms, now, 40, 10) === want && heap.active(now) === plain.filter((l) => l.end > now).length) agree++;
    else { t.fail(`differs at ${now}`); break; }
  }
  t.ok(agree > 500, `the heap agreed with a list on ${agree} grants`);

  const { engine, clock } = engineFor('tarpit:\n  budget: 2\n  budget_per_network: 2\n  min_hold: 4s\n');
  const bad = (n: number, over = {}) => ev({ client: `203.0.113.${n}`, clientName: 'unknown', ...over });
  t.ok(engine.decide(bad(1)).delayMs > 0);
  t.ok(engine.decide(bad(2)).delayMs > 0);
  t.match(engine.decide(bad(3)), { delayMs: 0, rule: 'tarpit-budget-spent' }, 'budget spent: answered at once');
  t.equal(engine.stats().holdsRefused, 1);
  clock.advance(5 * S); // the 4 s holds have ended
  t.ok(engine.decide(bad(3)).delayMs > 0, 'the budget refills as holds end');
  clock.advance(5 * S);
  t.match(engine.decide(bad(4, { stress: true })), { delayMs: 0 });
  t.match((await engine.explain(bad(4, { stress: true }))).reason?.trace.join(' '), /no hold: stress=yes/);
  t.match(engine.decide(bad(4, { repeat: true })), { delayMs: 0 }, 'a repeated question is not held again');
  engine.shedHolds(true);
  t.match(engine.decide(bad(6)), { delayMs: 0, rule: 'reputation' }, 'no holds while the event loop lags');
  t.match((await engine.explain(bad(6))).reason?.trace.join(' '), /no hold: the event loop lags/);
  engine.shedHolds(false);
  t.ok(engine.decide(bad(7)).delayMs > 0, 'holds again once it keeps up');
  t.match(engine.decide(bad(4, { stage: 'connect' })), { delayMs: 0 }, 'no holds at CONNECT by default');
  const opt = engineFor('tarpit:\n  at_connect: true\n').engine;
  t.ok(opt.decide(bad(5, { stage: 'connect' })).delayMs > 0, 'holds at CONNECT when opted in');
  t.match((await opt.explain(bad(5))), { rule: 'tarpit' });
  t.equal(opt.stats().holdsActive, 1, 'explain grants no lease');
});

t.test('HELO and reverse-DNS heuristics', async (t) => {
  const w = { bare_ip_helo: -3, non_fqdn_helo: -2, helo_is_us: -8, no_reverse_dns: -1 };
  const names = (h: string, n = 'x.example') => heuristics(h, n, ['mx.example.org'], ['198.51.100.1'], w).map((f) => f.name);
  t.same(names('mail.example.net'), []);
  t.same(names('[192.0.2.1]'), ['bare_ip_helo']);
  t.same(names('192.0.2.1'), ['bare_ip_helo']);
  t.same(names('localhost'), ['non_fqdn_helo']);
  t.same(names('MX.example.org'), ['helo_is_us']);
  t.same(names('198.51.100.1'), ['helo_is_us']);
  t.same(names('mail.example.net', 'unknown'), ['no_reverse_dns']);
  t.same(names(''), [], 'no HELO yet: nothing to judge');
});

t.test('YoungMap: renewed as sessions come and go, it keeps the live entries in insertion order', async (t) => {
  const m = new YoungMap<string, number>();
  // 100 live at a time, 5,000 inserted: many renewals.
  let deleted = 0;
  for (let i = 0; i < 5000; i++) {
    m.set(`s${i}`, i);
    if (i >= 100 && m.delete(`s${i - 100}`)) deleted++;
  }
  t.equal(deleted, 4900, 'every delete found its key');
  t.equal(m.size, 100);
  t.equal(m.first(), 's4900', 'the oldest live key first');
  t.same([...m].map(([k]) => k), Array.from({ length: 100 }, (_, i) => `s${4900 + i}`));
  t.same([...m].slice(0, 2), [['s4900', 4900], ['s4901', 4901]]);
  t.equal(m.get('s4999'), 4999);
  t.equal(m.get('s4899'), undefined, 'a deleted key stays deleted across renewals');
  t.equal(m.get('s4950'), 4950);
  // Re-setting a key keeps its place, as a Map does.
  m.set('s4900', -1);
  t.equal(m.first(), 's4900');
  t.equal(m.get('s4900'), -1);
  // A large map is renewed no more often than every 2 x size insertions, and stays whole.
  const big = new YoungMap<number, number>();
  for (let i = 0; i < 20_000; i++) big.set(i, i);
  for (let i = 0; i < 20_000; i++) { big.delete(i); big.set(20_000 + i, i); }
  t.equal(big.size, 20_000);
  t.equal(big.first(), 20_000);
  t.equal([...big.values()].reduce((a, b) => a + b, 0), (20_000 * 19_999) / 2);
});

t.test('a bad sender domain does not count against a client at first contact', async (t) => {
  // Measured as a new user: after a zombie gave up twenty times with MAIL FROM
  // <...@example.org>, a new client with a clean address and a valid HELO was
  // held 8 s at every stage for the domain's score.
  const { engine } = engineFor();
  const zombie = { client: '203.0.113.66', clientName: 'unknown', helo: 'ylmf-pc', sender: 'x@example.org' };
  for (let i = 0; i < 20; i++) engine.record({ kind: 'abandoned', event: ev({ ...zombie, stage: 'rcpt' }), held: true });
  t.ok(engine.store.score('dom:example.org') >= 0, 'abandonment is not learned against the sender domain');
  const fresh = { client: '198.51.100.23', clientName: 'mail.newcomer.example', helo: 'mail.newcomer.example', sender: 'someone@example.org' };
  for (const stage of ['mail', 'rcpt'] as const) {
    t.match(engine.decide(ev({ ...fresh, stage })), { kind: 'pass', delayMs: 0, score: 0 }, `${stage}: a new client is not held after the zombie`);
  }
  // A bad domain score that came from elsewhere (a snapshot of an older
  // version, another host's weights) is left out for a client not known yet.
  engine.store.add('dom:example.org', -200, 'ab');
  const other = { ...fresh, client: '198.51.100.24' };
  for (const stage of ['mail', 'rcpt'] as const) {
    t.match(engine.decide(ev({ ...other, stage })), { kind: 'pass', delayMs: 0, rule: 'reputation', score: 0 }, `${stage}: a new client is not held for a bad domain score`);
  }
  t.match((await engine.explain(ev(other))).reason?.trace.join('\n'), /sender domain's score left out: the client itself is not known yet/);
  // Once the client itself is known, its sender domain counts again.
  engine.record({ kind: 'abandoned', event: ev({ ...other, stage: 'rcpt' }), held: false });
  const known = engine.decide(ev(other));
  t.ok(known.score < -40, `a known client carries the domain's share: score ${known.score}`);
});
