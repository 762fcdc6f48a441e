// The lookup seam on a manual clock: lookups start at a session's first
// event, one fetch per key however many sessions want it, a decision waits
// at most the budget, what arrives later is used by the next stage, a
// fetch no session wants any more is dropped, and what a dry run (explain)
// fetched is not kept.
import t from 'tap';
import { Enricher, type Provider } from '../dist/enrich/enricher.js';
import { ReputationEngine } from '../dist/engine/engine.js';
import type { Enrichment, StageEvent } from '../dist/engine/types.js';
import { ManualClock } from '../dist/util/clock.js';
import { defaults, ev } from './helpers/engine.js';
import { settle, track } from './helpers/daemon.js';

/** A provider whose answers the test hands out: one key per client address. */
class Hand implements Provider<number> {
  readonly name = 'hand';
  readonly asked: string[] = [];
  readonly kept: string[] = [];
  readonly #waiting = new Map<string, (n: number) => void>();
  readonly cache = new Map<string, number>();
  active(): boolean { return true; }
  budget(): number { return 500; }
  wants(e: StageEvent, add: (key: string) => void): void { add(`hand:${e.client}`); }
  known(key: string): number | undefined { return this.cache.get(key); }
  fetch(key: string): Promise<number> {
    this.asked.push(key);
    return new Promise((resolve) => this.#waiting.set(key, resolve));
  }
  keep(key: string): void {
    this.kept.push(key);
  }
  answer(key: string, n: number): void {
    this.cache.set(key, n);
    this.#waiting.get(key)?.(n);
  }
  judge(_e: StageEvent, answers: ReadonlyMap<string, number>, _explain: boolean): Enrichment | undefined {
    const [n] = [...answers.values()];
    if (n === undefined) return undefined;
    return { source: 'hand', points: -n, listed: n >= 10 ? 'reject' : undefined, trusted: n < 0, rule: `hand ${n}`, trace: [`hand said ${n}`] };
  }
}

function rig(): { clock: ManualClock; hand: Hand; lookups: Enricher; engine: ReputationEngine; errors: unknown[] } {
  const clock = new ManualClock();
  const hand = new Hand();
  const errors: unknown[] = [];
  const lookups = new Enricher([hand], clock, (e) => errors.push(e));
  const config = defaults();
  return { clock, hand, lookups, engine: new ReputationEngine(() => config, clock.now, [], lookups), errors };
}

t.test('one fetch per key, a decision waits for it, at most the budget', async (t) => {
  const { clock, hand, engine } = rig();
  const a = track(Promise.resolve(engine.decide(ev({ client: '203.0.113.1', session: 's1', stage: 'connect' }))));
  const b = track(Promise.resolve(engine.decide(ev({ client: '203.0.113.1', session: 's2', stage: 'connect' }))));
  await settle(5);
  t.same(hand.asked, ['hand:203.0.113.1'], 'two sessions of one client: one fetch');
  t.notOk(a.done || b.done, 'both wait for it');
  hand.answer('hand:203.0.113.1', 20);
  await settle(5);
  t.match(a.value, { kind: 'reject', rule: 'hand 20' }, 'the answer decides');
  t.match(b.value, { kind: 'reject' });

  const slow = track(Promise.resolve(engine.decide(ev({ client: '203.0.113.2', session: 's3', stage: 'rcpt' }))));
  clock.advance(499);
  await settle(5);
  t.notOk(slow.done, 'still waiting 1 ms before the budget');
  clock.advance(1);
  await settle(5);
  t.match(slow.value, { kind: 'pass' }, 'decided without it at the budget');
  hand.answer('hand:203.0.113.2', 20);
  await settle(5);
  t.match(engine.decide(ev({ client: '203.0.113.2', session: 's3', stage: 'rcpt' })), { kind: 'reject', rule: 'hand 20' }, 'a late answer is used by the next stage, at once');
  const cached = engine.decide(ev({ client: '203.0.113.2', session: 's4', stage: 'rcpt' }));
  t.notOk(cached instanceof Promise, 'a known answer costs no wait');
});

t.test('a fetch no session wants any more is dropped; a waiting decision goes on', async (t) => {
  const { hand, engine, lookups } = rig();
  const e = ev({ client: '203.0.113.3', session: 's5', stage: 'connect' });
  const v = track(Promise.resolve(engine.decide(e)));
  await settle(5);
  t.equal(lookups.inFlight, 1);
  engine.record({ kind: 'abandoned', event: e, held: false });
  await settle(5);
  t.ok(v.done, 'the waiting decision went on');
  t.equal(lookups.inFlight, 0, 'the last session ended: the fetch is no longer in the table');
  t.equal(engine.stats().sessions, 0, 'nothing kept for the session');
  hand.answer('hand:203.0.113.3', 20);
  await settle(5);
  t.same(hand.kept, [], 'an answer nobody waited for is not kept');
});

t.test('explain fetches, but what only it wanted is not kept; a live session\'s answer is', async (t) => {
  const { hand, engine } = rig();
  const dry = track(engine.explain(ev({ client: '203.0.113.9', session: 'explain:1', stage: 'rcpt' })));
  await settle(5);
  hand.answer('hand:203.0.113.9', 3);
  await settle(5);
  t.match(dry.value, { kind: 'pass' });
  t.ok((dry.value as { reason?: { trace: string[] } }).reason?.trace.includes('hand said 3'), 'explain saw the answer');
  t.same(hand.kept, [], 'and kept nothing');
  t.equal(engine.stats().sessions, 0, 'nor opened a session');
  const live = track(Promise.resolve(engine.decide(ev({ client: '203.0.113.10', session: 's9', stage: 'rcpt' }))));
  await settle(5);
  hand.answer('hand:203.0.113.10', 3);
  await settle(5);
  t.ok(live.done);
  t.same(hand.kept, ['hand:203.0.113.10'], 'a live session\'s answer is offered to keep');
});

t.test('a client a provider vouches for is never held and nothing is learned against it', async (t) => {
  const { hand, engine } = rig();
  hand.cache.set('hand:203.0.113.4', -1);
  const bad = { client: '203.0.113.4', clientName: 'unknown', helo: '203.0.113.4' };
  t.match(engine.decide(ev({ ...bad, session: 's6' })), { kind: 'pass', delayMs: 0 }, 'trusted: no hold despite a bare-IP HELO and no rDNS');
  engine.record({ kind: 'abandoned', event: ev({ ...bad, session: 's6' }), held: true });
  t.equal(engine.store.count('ip:203.0.113.4', 'abh'), 0, 'no learned penalty');
});

t.test('a provider that throws is reported, and the decision goes on', async (t) => {
  const clock = new ManualClock();
  const errors: unknown[] = [];
  const broken: Provider = {
    name: 'broken', active: () => true, budget: () => 500, wants: (_e, add) => add('x'), known: () => undefined,
    fetch: () => { throw new Error('provider bug'); }, judge: () => undefined,
  };
  const lookups = new Enricher([broken], clock, (e) => errors.push(e));
  const config = defaults();
  const engine = new ReputationEngine(() => config, clock.now, [], lookups);
  const v = await engine.decide(ev({ session: 's7' }));
  t.match(v, { kind: 'pass' });
  t.match(errors, [{ message: 'provider bug' }]);
});
