// Tests for lib/shield: the catalogue, guard/raise, process hooks, the breaker, the loop-lag watch.
import t from 'tap';
import { EventEmitter } from 'node:events';
import {
  CATALOGUE, ErrorClass, errorClass, InternalError, PeerError, SluiceError, TransportError, asTransportError, toSluiceError,
} from '../dist/shield/errors.js';
import { Shield, type ShieldContext, type EventKind } from '../dist/shield/shield.js';
import { CircuitBreaker } from '../dist/shield/breaker.js';
import { settle, startDaemon, track, until } from './helpers/daemon.js';
import { ManualClock } from '../dist/util/clock.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';

t.test('catalogue codes are unique, grouped by hundreds, and named', async (t) => {
  const codes = Object.values(CATALOGUE).map((e) => e.code);
  t.equal(new Set(codes).size, codes.length, 'no code used twice');
  for (const [name, { code }] of Object.entries(CATALOGUE)) {
    t.ok([1, 2, 3, 4, 5, 9].includes(errorClass(code)), `${name} ${code} in a known class`);
  }
  const e = new PeerError('PEER_LINE_TOO_LONG', 'x');
  t.equal(e.code, 101);
  t.equal(e.symbol, 'PEER_LINE_TOO_LONG');
  t.equal(errorClass(e.code), ErrorClass.Peer);
  t.match(e.name, /101 PEER_LINE_TOO_LONG/);
});

t.test('foreign thrown values are wrapped; errno codes become transport errors', async (t) => {
  const internal = toSluiceError(new TypeError('boom'));
  t.type(internal, InternalError);
  t.equal(internal.code, 901);
  t.equal(toSluiceError('a string').code, 901);
  t.equal(toSluiceError(undefined).code, 901);
  const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
  t.equal(toSluiceError(reset).code, 201);
  const pipe = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
  t.type(toSluiceError(pipe), TransportError);
  t.equal(toSluiceError(pipe).code, 202);
  const mine = new PeerError('PEER_TRUNCATED', 'x');
  t.equal(toSluiceError(mine), mine, 'ours pass through unchanged');
  t.equal(asTransportError(new Error('odd socket thing')).code, 204, 'socket errors never count as internal');
});

t.test('guard hands throws and rejections to the handler with ctx, kind and args', async (t) => {
  const shield = new Shield({ lastResort: () => t.fail('last resort not expected') });
  const seen: [ShieldContext, SluiceError, EventKind, unknown[]][] = [];
  shield.register((ctx, err, kind, ...args) => seen.push([ctx, err, kind, args]));
  const ctx: ShieldContext = { label: 'conn#1' };
  shield.guard(ctx, 'read', (a: number, b: string) => { throw new Error(`bad ${a}${b}`); }, 7, 'x');
  t.equal(seen.length, 1);
  const [c, err, kind, args] = seen[0]!;
  t.equal(c, ctx);
  t.equal(err.code, 901);
  t.equal(err.message, 'bad 7x');
  t.equal(kind, 'read');
  t.same(args, [7, 'x']);

  shield.guard(ctx, 'timer', async () => { throw new PeerError('PEER_BAD_ENCODING', 'nul'); });
  await new Promise((r) => setImmediate(r));
  t.equal(seen.length, 2, 'rejected promise reaches the handler');
  t.equal(seen[1]![1].code, 105);
  t.equal(seen[1]![2], 'timer');

  let ran = 0;
  shield.guard(ctx, 'write', () => { ran++; });
  t.equal(ran, 1, 'a callback that does not throw just runs');
  t.equal(seen.length, 2);

  const wrapped = shield.wrap(ctx, 'control', (n: number) => { if (n > 1) throw 'str'; });
  wrapped(1);
  wrapped(2);
  t.equal(seen.length, 3);
  t.equal(seen[2]![1].message, 'non-error thrown: str');
});

t.test('guarded timers and a throwing handler never escape', async (t) => {
  const lines: string[] = [];
  const shield = new Shield({ lastResort: (l) => lines.push(l) });
  shield.raise({ label: 'x' }, new Error('before register'), 'timer');
  t.match(lines[0], /no exception handler registered/);
  const seen: number[] = [];
  shield.register((_c, err) => { seen.push(err.code); if (err.message === 'bad handler') throw new Error('handler broke'); });
  await new Promise<void>((resolve) => {
    shield.setTimeout({ label: 't' }, 1, () => { setImmediate(resolve); throw new Error('in timer'); });
  });
  t.same(seen, [901]);
  shield.raise({ label: 'x' }, new Error('bad handler'), 'read');
  t.match(lines[1], /exception handler failed/);
  let ticks = 0;
  await new Promise<void>((resolve) => {
    const iv = shield.setInterval({ label: 'i' }, 1, () => { ticks++; if (ticks === 2) { shield.clear(iv); resolve(); } throw new Error('tick'); });
  });
  t.equal(seen.filter((c) => c === 901).length, 4, 'the timer, the raise and both ticks reached the handler');
});

t.test('uncaughtException and unhandledRejection go to the same handler', async (t) => {
  const shield = new Shield();
  const seen: [string, EventKind][] = [];
  shield.register((ctx, err, kind) => seen.push([err.message, kind]));
  const fake = new EventEmitter();
  const unhook = shield.installProcessHooks(fake);
  fake.emit('uncaughtException', new Error('escaped'));
  fake.emit('unhandledRejection', 'rejected');
  t.same(seen, [['escaped', 'process'], ['non-error thrown: rejected', 'process']]);
  unhook();
  t.equal(fake.listenerCount('uncaughtException'), 0);
});

t.test('circuit breaker trips once at the limit within the window, then re-arms', async (t) => {
  let now = 0;
  const b = new CircuitBreaker(3, 1000, () => now);
  t.equal(b.record(), false);
  now = 500;
  t.equal(b.record(), false);
  now = 1200; // the first one has left the window
  t.equal(b.record(), false);
  t.equal(b.count, 2);
  now = 1300;
  t.equal(b.record(), true, 'third within the window trips');
  t.equal(b.record(), false, 'trips only once');
  b.reset();
  t.equal(b.count, 0);
  t.equal(b.record(), false);
});

t.test('a lagging event loop sheds holds: 403 logged and counted once, then holds again', async (t) => {
  const clock = new ManualClock(); // holds and the once-a-second look run on it; the lag itself is real
  const h = await startDaemon(t, 'limits:\n  max_loop_lag: 150ms\ntarpit:\n  hold_per_point: 300ms\n  min_hold: 300ms\n', undefined, clock);
  const port = portOf(h.daemon.endpoints.policy[0]);
  const c = await PolicyClient.connect({ port });
  t.teardown(() => c.close());
  // A client without reverse DNS is held 300 ms while the loop keeps up.
  const ask = (n: number) => track(c.ask(rcptRequest({ client_address: `203.0.113.${n}`, client_port: String(30000 + n), instance: `lag${n}`, client_name: 'unknown', reverse_client_name: 'unknown' })));
  const heldTill = async (a: ReturnType<typeof ask>, ms: number): Promise<boolean> => {
    await settle();
    if (a.done) return false;
    clock.advance(ms);
    return until(() => a.done);
  };
  t.ok(await heldTill(ask(1), 300), 'held before');
  clock.advance(1000); // a look at a loop that kept up
  const busy = performance.now() + 400;
  while (performance.now() < busy); // the loop stalls for 400 ms
  await settle(); // the lag monitor notes it when the loop runs again
  clock.advance(1000); // the next look sees it
  t.ok(await until(() => h.logs().some((l) => l['code'] === 403), 3000), 'one 403 warning');
  const second = ask(2);
  t.ok(await until(() => second.done), 'not held while the loop lags: answered with the clock standing still');
  clock.advance(1000);
  t.ok(await until(() => h.logs().some((l) => /keeps up again/.test(String(l['msg']))), 3000), 'the end is logged');
  t.ok(await heldTill(ask(3), 300), 'held again');
  t.equal(h.logs().filter((l) => l['code'] === 403).length, 1, 'logged once');
  t.equal(h.daemon.errorCounts.get(403), 1, 'counted once');
});

t.test('a spent hold budget: 402 logged and counted when refusing starts, logged when it ends', async (t) => {
  const clock = new ManualClock();
  const h = await startDaemon(t, 'tarpit:\n  hold_per_point: 1500ms\n  min_hold: 1500ms\n  budget: 1\n', undefined, clock);
  const port = portOf(h.daemon.endpoints.policy[0]);
  const ask = async (n: number): Promise<string> => {
    const c = await PolicyClient.connect({ port });
    try {
      return await c.ask(rcptRequest({ client_address: `203.0.113.${n}`, client_port: String(31000 + n), instance: `b${n}`, client_name: 'unknown', reverse_client_name: 'unknown' }));
    } finally {
      c.close();
    }
  };
  const held = track(ask(1)); // takes the one hold
  await until(() => h.daemon.engine.stats().holdsActive === 1);
  await ask(2);
  await ask(3);
  t.pass('refused holds answer at once: with the clock standing still');
  clock.advance(1000);
  t.ok(await until(() => h.logs().some((l) => l['code'] === 402), 3000), 'a 402 warning');
  t.notOk(held.done, 'the granted hold still runs');
  clock.advance(500);
  t.ok(await until(() => held.done), 'and ends at 1,500 ms');
  clock.advance(1000);
  t.ok(await until(() => h.logs().some((l) => l['msg'] === 'hold budget available again'), 4000), 'the end is logged');
  t.equal(h.logs().filter((l) => l['code'] === 402).length, 1, 'logged once for two refusals');
  t.equal(h.daemon.errorCounts.get(402), 1, 'counted once');
});
