// Tests for lib/policy: request mapping, reply rendering, and the session on a live listener.
import t from 'tap';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import v8 from 'node:v8';
import vm from 'node:vm';
import { statSync, unlinkSync, writeFileSync } from 'node:fs';
import { repeatKey, toRequest, toStageEvent } from '../dist/policy/request.js';
import { encodeRequest, PolicyDecoder, type PolicyAttributes } from '../dist/policy/codec.js';
import { RecentQuestions } from '../dist/policy/repeats.js';
import { canonicalAddress } from '../dist/net/address.js';
import { renderReply, renderPrepend, replyText } from '../dist/policy/render.js';
import type { StageEvent, Verdict } from '../dist/engine/types.js';
import { PolicyOutcomes } from '../dist/policy/outcomes.js';
import { engineFor, ev } from './helpers/engine.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import { heldFor, settle, startDaemon, track, until } from './helpers/daemon.js';
import { ManualClock } from '../dist/util/clock.js';
import { ScriptedRule } from './helpers/scripted-rule.js';
import { shortDir } from './helpers/spawn.js';

/** A request as the decoder hands it over. */
function attrsOf(o: Record<string, string>): PolicyAttributes {
  const [a] = new PolicyDecoder({ maxLineLength: 4096, maxRequestSize: 65536, maxAttributes: 256 }).push(encodeRequest(Object.entries(o)));
  return a!;
}

t.test('request mapping', async (t) => {
  const r = toRequest(attrsOf(rcptRequest({ client_address: '::FFFF:192.0.2.7', stress: 'yes', protocol_state: 'rcpt', extra_future_attr: 'x' })));
  t.equal(r.stage, 'rcpt', 'protocol_state is case-insensitive');
  t.equal(r.client, '192.0.2.7', 'IPv4-mapped IPv6 counts as IPv4');
  t.equal(r.stress, true);
  t.equal(r.clientPort, 41234);
  const e = toStageEvent(r, 'rcpt', false);
  t.equal(e.via, 'policy');
  t.equal(e.mta, 'postfix');
  t.equal(e.session, '192.0.2.7:41234:25');
  t.equal(toRequest(attrsOf(rcptRequest({ protocol_state: 'END-OF-MESSAGE' }))).stage, 'eom');
  t.equal(toRequest(attrsOf(rcptRequest({ protocol_state: 'EHLO' }))).stage, 'helo');
  t.equal(toRequest(attrsOf(rcptRequest({ protocol_state: 'VRFY' }))).stage, undefined);
  t.throws(() => toRequest(attrsOf({ request: 'other' })), { code: 107 });
  t.equal(canonicalAddress('2001:DB8::1'), '2001:db8::1');
  t.equal(canonicalAddress('not-an-ip'), 'unknown');
  const a = toRequest(attrsOf(rcptRequest()));
  const b = toRequest(attrsOf(rcptRequest({ client_port: '1' })));
  t.same(repeatKey(a), repeatKey(b), 'same instance, state and recipient is the same question');
  t.notSame(repeatKey(a), repeatKey(toRequest(attrsOf(rcptRequest({ recipient: 'x@y' })))));
});

t.test('what a request leaves behind does not keep the request text alive', async (t) => {
  // Sessions, the tracker and reputation keys keep request values for
  // minutes; a value that is a slice of the request text would keep the
  // whole text (here padded to 20 KB) alive with it.
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const N = 2000;
  const kept: string[] = [];
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < N; i++) {
    const r = toRequest(attrsOf(rcptRequest({
      client_address: `203.113.${i >> 8}.${100 + (i & 127)}`, client_name: `mail-${i}.example.net`, reverse_client_name: `mail-${i}.example.net`,
      helo_name: `mail-${i}.example.net`, sender: `someone@d${i}.example.org`, recipient: `user-${i}@example.com`,
      instance: `${i}.66f0c1d2.abcdef.0`, queue_id: `QUEUE${i}ABCDEFG`, sasl_username: `user-${i}@example.com`,
      encryption_protocol: 'TLSv1.3-with-a-long-name', encryption_cipher: 'TLS_AES_256_GCM_SHA384',
      ...Object.fromEntries(Array.from({ length: 10 }, (_, j) => [`padding${j}`, 'x'.repeat(2000)])),
    })));
    for (const v of Object.values(r)) if (typeof v === 'string') kept.push(v);
  }
  gc();
  const perRequest = (process.memoryUsage().heapUsed - before) / N;
  t.ok(perRequest < 4000, `${perRequest.toFixed(0)} bytes kept per request for its ${kept.length / N} values (the text alone is 20 KB)`);
});

t.test('recent questions: a repeat inside the window counts once; the window and the cap expire the oldest', async (t) => {
  const q = new RecentQuestions(3, () => 10_000);
  const t0 = 1_000_000_000_000;
  t.equal(q.repeated(['a'], t0), false, 'first asked');
  t.equal(q.repeated(['a'], t0 + 9_000), true, 'asked again inside the window');
  t.equal(q.repeated(['a'], t0 + 10_000), false, 'asked again once the window has passed: a new question');
  t.equal(q.repeated(['a'], t0 + 15_000), true, 'and its window starts over');
  t.equal(q.repeated(['b'], t0 + 15_000), false);
  t.equal(q.repeated(['c'], t0 + 15_000), false);
  t.equal(q.size, 3);
  t.equal(q.repeated(['d'], t0 + 15_000), false);
  t.equal(q.size, 3, 'the cap holds');
  t.equal(q.repeated(['a'], t0 + 16_000), false, 'the oldest went first');
  t.equal(q.repeated(['d'], t0 + 16_000), true);
  t.equal(q.repeated(['e'], t0 + 40_000), false);
  t.equal(q.repeated(['e', 'f'], t0 + 40_000), false, 'more parts, another question');
  t.equal(q.repeated(['e|f'], t0 + 40_000), true, 'the parts are one question, as if joined by "|"');
  t.equal(q.size, 2, 'everything older than the window is gone: e and e|f remain');
  // The ring grows as it fills (from 1,024 up to the cap), keeping the order across a wrapped start.
  const big = new RecentQuestions(3000, () => 10_000);
  for (let i = 0; i < 2000; i++) big.repeated([`a${i}`], t0);
  t.equal(big.repeated(['x'], t0 + 10_000), false);
  t.equal(big.size, 1, 'the first 2,000 expired');
  for (let i = 0; i < 2999; i++) big.repeated([`b${i}`], t0 + 11_000);
  t.equal(big.size, 3000);
  let repeats = 0;
  for (let i = 0; i < 2999; i++) if (big.repeated([`b${i}`], t0 + 12_000)) repeats++;
  t.equal(repeats, 2999, 'every one of them is still known after growing');
  t.equal(big.repeated(['y'], t0 + 12_000), false);
  t.equal(big.repeated(['x'], t0 + 12_000), false, 'the oldest (x) made room for y');
});

t.test('recent questions: the hashed ring answers as a plain map of keys would, through growth, expiry, the cap and probe runs', async (t) => {
  // The model: every question kept by its key, in arrival order, with the same window and cap.
  class Model {
    readonly order: [string, number][] = [];
    readonly asked = new Map<string, number>();
    constructor(readonly max: number, readonly window: number) {}
    repeated(key: string, now: number): boolean {
      const sec = Math.floor(now / 1000);
      const first = this.asked.get(key);
      if (first !== undefined && (sec - first) * 1000 < this.window) return true;
      while (this.order.length > 0 && (this.order.length >= this.max || (sec - this.order[0]![1]) * 1000 >= this.window)) {
        const [k, at] = this.order.shift()!;
        if (this.asked.get(k) === at) this.asked.delete(k);
      }
      this.asked.set(key, sec);
      this.order.push([key, sec]);
      return false;
    }
  }
  let seed = 42;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  for (const [max, keys, steps, tick] of [[50, 120, 20_000, 4], [3000, 5000, 40_000, 400], [1, 3, 2000, 4]] as const) {
    const window = 10_000;
    const q = new RecentQuestions(max, () => window);
    const m = new Model(max, window);
    let now = 1_000_000_000_000;
    let mismatches = 0;
    let repeats = 0;
    let most = 0;
    for (let i = 0; i < steps; i++) {
      now += rand(tick) === 0 ? rand(3000) : 0;
      const parts = [`${rand(keys).toString(16)}.66f0c1d2`, 'RCPT', `user${rand(3)}@example.org`];
      const got = q.repeated(parts, now);
      const want = m.repeated(parts.join('|'), now);
      if (got !== want) mismatches++;
      if (want) repeats++;
      most = Math.max(most, q.size);
    }
    t.equal(mismatches, 0, `max ${max}: ${steps} questions, ${repeats} of them repeats, answered as the model does (at most ${most} remembered)`);
    t.equal(q.size, m.order.length, `max ${max}: as many remembered`);
  }
});

t.test('rendering never says OK, never a bare code, never CR', async (t) => {
  const opts = { deferIfPermit: false, failMode: 'pass' } as const;
  const pass: Verdict = { kind: 'pass', delayMs: 0, rule: 'r', score: 0 };
  t.equal(String(renderReply(pass, opts)), 'action=DUNNO\n\n');
  t.equal(String(renderReply({ ...pass, kind: 'accept' }, opts)), 'action=DUNNO\n\n', 'accept is DUNNO, never OK');
  const defer: Verdict = { kind: 'defer', delayMs: 0, rule: 'r', score: 0, reply: { code: 451, enhanced: '4.7.1', text: 'slow\r\ndown' } };
  t.equal(String(renderReply(defer, opts)), 'action=451 4.7.1 slow down\n\n');
  t.equal(String(renderReply(defer, { ...opts, deferIfPermit: true })), 'action=DEFER_IF_PERMIT 4.7.1 slow down\n\n');
  const reject: Verdict = { kind: 'reject', delayMs: 0, rule: 'r', score: 0, reply: { code: 554, enhanced: '4.7.1', text: '' } };
  t.equal(String(renderReply(reject, opts)), 'action=554 5.7.1 Rejected by policy\n\n', 'class digit forced to match, empty text filled');
  const wrong: Verdict = { kind: 'reject', delayMs: 0, rule: 'r', score: 0, reply: { code: 250, enhanced: 'junk', text: 'x' } };
  t.equal(String(renderReply(wrong, opts)), 'action=550 5.7.1 x\n\n');
  // An unknown verdict is the fail mode, in the policy protocol as in the milter's (milter.test.ts).
  t.equal(String(renderReply({ kind: 'nonsense' } as unknown as Verdict, opts)), 'action=DUNNO\n\n', 'unknown verdict, fail_mode pass: DUNNO');
  t.equal(String(renderReply({ kind: 'nonsense' } as unknown as Verdict, { ...opts, failMode: 'defer' })), 'action=451 4.3.0 Temporary policy failure, try again later\n\n', 'unknown verdict, fail_mode defer: the deferral');
  t.equal(renderPrepend('X-Sluice', 'score=1'), 'action=PREPEND X-Sluice: score=1\n\n');
  t.equal(replyText('é'.repeat(5), 'f'), 'f');
  t.equal(replyText('x'.repeat(1000), 'f').length, 300);
});

t.test('live session: pass, defer, reject, hold, fail mode, repeats', async (t) => {
  const engine = new ScriptedRule();
  const clock = new ManualClock();
  const h = await startDaemon(t, 'policy:\n  listen: ["inet:127.0.0.1:0"]\n  defer_if_permit: false\n  timeout: 2s\n  hold_margin: 500ms\n', engine, clock);
  const port = portOf(h.daemon.endpoints.policy[0]);
  const c = await PolicyClient.connect({ port });
  t.teardown(() => c.close());
  t.equal(await c.ask(rcptRequest()), 'action=DUNNO\n\n');
  t.equal(await c.ask(rcptRequest({ recipient: 'defer@x' })), 'action=450 4.7.1 sluice test defer\n\n');
  t.equal(await c.ask(rcptRequest({ recipient: 'reject@x' })), 'action=554 5.7.1 sluice test reject\n\n');

  // A held reply (on the daemon's clock) does not block another connection.
  const other = await PolicyClient.connect({ port });
  t.teardown(() => other.close());
  const held = c.ask(rcptRequest({ recipient: 'hold-400@x' }));
  t.equal(await other.ask(rcptRequest()), 'action=DUNNO\n\n', 'the other connection answered during the hold');
  t.equal(await heldFor(t, clock, held, 400, 'a 400 ms hold'), 'action=DUNNO\n\n');

  // The hold is cut to timeout - margin (1.5 s), and dropped under stress.
  const capped = c.ask(rcptRequest({ recipient: 'hold-60000@x', instance: 'cap' }));
  await until(() => engine.events.some((e) => e.recipient === 'hold-60000@x'));
  t.equal(await heldFor(t, clock, capped, 1500, 'a 60 s hold cut to timeout - hold_margin'), 'action=DUNNO\n\n');
  t.equal(await c.ask(rcptRequest({ recipient: 'hold-60000@x', stress: 'yes' })), 'action=DUNNO\n\n', 'no hold under stress=yes: answered with the clock standing still');

  // Engine failures answer with the fail mode (pass) and are logged with their code.
  t.equal(await c.ask(rcptRequest({ recipient: 'throw@x' })), 'action=DUNNO\n\n');
  t.equal(await c.ask(rcptRequest({ recipient: 'reject-promise@x' })), 'action=DUNNO\n\n');
  t.equal(await c.ask(rcptRequest({ recipient: 'garbage@x' })), 'action=DUNNO\n\n');
  t.ok(await until(() => h.logs().filter((l) => l['code'] === 301).length === 2), 'two DECISION_RULE_FAILED lines');
  t.ok(await until(() => h.logs().some((l) => l['code'] === 303)), 'one DECISION_BAD_VERDICT line');

  // Postfix asks the same RCPT once per restriction list: only the first is new.
  engine.events.length = 0;
  for (let i = 0; i < 4; i++) await c.ask(rcptRequest({ instance: 'dup.1', recipient: 'r@x' }));
  const other2 = await PolicyClient.connect({ port }); // a retry arrives on a new connection
  t.teardown(() => other2.close());
  await other2.ask(rcptRequest({ instance: 'dup.1', recipient: 'r@x' }));
  t.same(engine.events.map((e) => e.repeat), [false, true, true, true, true]);

  // VRFY/ETRN: DUNNO without asking the engine.
  engine.events.length = 0;
  t.equal(await c.ask(rcptRequest({ protocol_state: 'ETRN' })), 'action=DUNNO\n\n');
  t.equal(engine.events.length, 0);

  // Non-pass verdicts and holds are logged with queue id, client, stage, rule, held ms.
  const lines = h.logs().filter((l) => l['verdict']);
  t.ok(lines.some((l) => l['verdict'] === 'reject' && l['rule'] === 'test-reject' && l['client'] === '192.0.2.10' && l['stage'] === 'rcpt'));
  t.ok(lines.some((l) => l['rule'] === 'test-hold' && l['held_ms'] === 400), 'held 400 ms by the clock');
  t.ok(lines.some((l) => l['rule'] === 'test-hold' && l['held_ms'] === 1500), 'and the capped one 1,500 ms');
});

t.test('the next session on a connection concludes the one before it, from all its stages', async (t) => {
  const h = await startDaemon(t, 'policy:\n  listen: ["inet:127.0.0.1:0"]\nrates:\n  abandon_window: 1h\ntarpit:\n  hold_per_point: 200ms\n  min_hold: 200ms\n');
  const port = portOf(h.daemon.endpoints.policy[0]);
  const rep = h.daemon.engine;
  // One smtpd process, two check_policy_service strings: RCPT asked on a, end of message on b.
  const a = await PolicyClient.connect({ port });
  const b = await PolicyClient.connect({ port });
  t.teardown(() => { a.close(); b.close(); });
  const first = { client_address: '192.0.2.81', client_port: '40001', instance: 'i1' };
  await a.ask(rcptRequest(first));
  await b.ask(rcptRequest({ ...first, protocol_state: 'END-OF-MESSAGE' }));
  // The next client on that process (another network, no reverse DNS: held at RCPT): the first session delivered, so it ended.
  const second = { client_address: '198.51.100.82', client_port: '40002', instance: 'i2', client_name: 'unknown', reverse_client_name: 'unknown', helo_name: 'pc82.example.com', sender: 'x@example.com' };
  await a.ask(rcptRequest(second));
  t.equal(rep.store.entry('ip:192.0.2.81')?.ok, 1, 'delivered');
  t.equal(rep.store.entry('ip:192.0.2.81')?.ab, 0, 'and not abandoned');
  // The third: the second gave up after its held RCPT, learned at once and logged once.
  await a.ask(rcptRequest({ client_address: '192.0.2.83', client_port: '40003', instance: 'i3' }));
  t.equal(rep.store.entry('ip:198.51.100.82')?.abh, 1, 'abandoned at RCPT under hold, without waiting for abandon_window');
  t.ok(await until(() => h.logs().filter((l) => l['msg'] === 'abandoned at rcpt' && l['client'] === '198.51.100.82' && l['held'] === true).length === 1), 'one log line');
  t.equal(rep.stats().sessions, 1, 'only the third is live');
});

t.test('asked at RCPT alone, sessions end unjudged, and the log says why once', async (t) => {
  const h = await startDaemon(t, 'policy:\n  listen: ["inet:127.0.0.1:0"]\nrates:\n  abandon_window: 1h\ntarpit:\n  hold_per_point: 100ms\n  min_hold: 100ms\n');
  const port = portOf(h.daemon.endpoints.policy[0]);
  const rep = h.daemon.engine;
  const a = await PolicyClient.connect({ port });
  t.teardown(() => a.close());
  // Held at RCPT (no reverse DNS), then the next client on that smtpd process, then a third.
  await a.ask(rcptRequest({ client_address: '198.51.100.84', client_port: '40004', instance: 'j1', client_name: 'unknown', reverse_client_name: 'unknown', helo_name: 'pc84.example.com', sender: 'x@example.com' }));
  await a.ask(rcptRequest({ client_address: '192.0.2.85', client_port: '40005', instance: 'j2' }));
  await a.ask(rcptRequest({ client_address: '192.0.2.86', client_port: '40006', instance: 'j3' }));
  t.equal(rep.store.entry('ip:198.51.100.84')?.abh ?? 0, 0, 'the held one is not counted as abandoned');
  t.equal(rep.store.entry('ip:192.0.2.85')?.ab ?? 0, 0, 'nor the next');
  t.ok(await until(() => h.logs().some((l) => /abandonment is not learned/.test(String(l['msg'])))), 'the log says why');
  t.equal(h.logs().filter((l) => /abandonment is not learned/.test(String(l['msg']))).length, 1, 'once');
  t.notOk(h.logs().some((l) => String(l['msg']).startsWith('abandoned')), 'no abandoned lines');
});

t.test('bad bytes close only that connection, with one warning', async (t) => {
  const h = await startDaemon(t);
  const port = portOf(h.daemon.endpoints.policy[0]);
  const good = await PolicyClient.connect({ port });
  t.teardown(() => good.close());
  t.equal(await good.ask(rcptRequest()), 'action=DUNNO\n\n');
  const bad: [string, Buffer | string, number][] = [
    ['HTTP request', 'GET / HTTP/1.0\r\n\r\n', 104],
    ['TLS ClientHello', Buffer.from('16030100a5010000a10303' + 'ab'.repeat(32) + '0000', 'hex'), 105],
    ['NUL', 'request=smtpd_access_policy\nsender=\0\n\n', 105],
    ['wrong request type', 'request=other\n\n', 107],
    ['1 MiB line', 'sender=' + 'a'.repeat(1 << 20) + '\n\n', 101],
    ['pipelined flood', Array.from({ length: 10 }, () => 'request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=hold-1000@x\n\n').join(''), 109],
  ];
  for (const [name, bytes, code] of bad) {
    const before = h.logs().filter((l) => l['code'] === code).length;
    const c = await PolicyClient.connect({ port });
    const reply = await c.send(bytes);
    await c.closedPromise;
    t.equal(reply, '', `${name}: no reply`);
    t.ok(await until(() => h.logs().filter((l) => l['code'] === code).length === before + 1), `${name}: one warning with code ${code}`);
    t.equal(await good.ask(rcptRequest()), 'action=DUNNO\n\n', `${name}: the other connection still served`);
  }
  const warn = h.logs().find((l) => l['code'] === 104)!;
  t.equal(warn['level'], 40);
  t.match(warn['msg'], /GET \/ HTTP\/1\.0\\x0d/, 'the bad bytes are shown printable');
  for (const l of h.logs().filter((l) => typeof l['code'] === 'number' && (l['code'] as number) < 200)) {
    t.match(l['msg'], /^[\x20-\x7e]*$/, `${l['err']}: the warning carries no raw bytes`);
  }
  // A HELO name that is not UTF-8 (Postfix passes 8-bit bytes through) is answered, not dropped.
  const helo = Buffer.from('request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.10\nhelo_name=mx\xf7\xc3(\ninstance=8bit.1\n\n', 'latin1');
  t.equal(await good.send(helo), 'action=DUNNO\n\n', 'an 8-bit HELO name gets its answer');

  // EOF in the middle of a request: one PEER_TRUNCATED warning.
  const c = await PolicyClient.connect({ port });
  c.socket.end('request=smtpd_access_policy\nprotocol_state=RCPT\n');
  await c.closedPromise;
  t.ok(await until(() => h.logs().some((l) => l['code'] === 106)));
});

t.test('a connection closed during a hold cancels the reply', async (t) => {
  const engine = new ScriptedRule();
  const clock = new ManualClock();
  const h = await startDaemon(t, '', engine, clock);
  const port = portOf(h.daemon.endpoints.policy[0]);
  const c = await PolicyClient.connect({ port });
  const timers = clock.pending;
  void c.ask(rcptRequest({ recipient: 'hold-300@x' }));
  await until(() => engine.events.length === 1);
  t.equal(clock.pending, timers + 1, 'the hold is one timer');
  c.close();
  await c.closedPromise;
  await until(() => h.daemon.openConnections === 0);
  t.equal(clock.pending, timers, 'cancelled when the peer went away');
  clock.advance(400);
  await settle();
  t.notOk(h.logs().some((l) => l['level'] as number >= 50), 'no error when the held timer would have fired');
  t.equal(h.daemon.openConnections, 0);
});

t.test('unix socket endpoint, mode, and stale socket removal', async (t) => {
  const dir = shortDir(t); // socket paths must stay under 108 bytes wherever the checkout is
  writeFileSync(`${dir}/policy.sock`, ''); // a regular file is refused
  const h0 = startDaemon(t, `policy:\n  listen: ["unix:${dir}/policy.sock"]\n`);
  await t.rejects(h0, { code: 504, message: /exists and is not a socket/ });
  unlinkSync(`${dir}/policy.sock`);
  const srv = net.createServer().listen(`${dir}/policy.sock`);
  await new Promise((r) => srv.once('listening', r));
  await t.rejects(startDaemon(t, `policy:\n  listen: ["unix:${dir}/policy.sock"]\n`), { code: 504, message: /another process is listening/ });
  await new Promise<void>((r) => { srv.close(() => r()); });
  // A stale socket: left behind by a process that died without closing it.
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(dir + '/stale.sock')}, () => process.kill(process.pid, 'SIGKILL'))`]);
  t.ok(statSync(`${dir}/stale.sock`).isSocket(), 'stale socket left behind');
  const hs = await startDaemon(t, `policy:\n  listen: ["unix:${dir}/stale.sock"]\n`);
  const cs = await PolicyClient.connect({ path: `${dir}/stale.sock` });
  t.equal(await cs.ask(rcptRequest()), 'action=DUNNO\n\n', 'stale socket replaced');
  cs.close();
  await hs.daemon.stop();
  const h = await startDaemon(t, `policy:\n  listen: ["unix:policy.sock"]\n  socket_mode: "0600"\n`);
  const sock = `${h.dir}/policy.sock`;
  t.same(h.daemon.endpoints.policy, ['unix:policy.sock']);
  t.equal(statSync(sock).mode & 0o777, 0o600, 'relative path under state_dir, mode applied');
  const c = await PolicyClient.connect({ path: sock });
  t.teardown(() => c.close());
  t.equal(await c.ask(rcptRequest()), 'action=DUNNO\n\n');
});

t.test('idle timeout: counted from the last request or reply, never early, not long after', async (t) => {
  const engine = new ScriptedRule();
  const clock = new ManualClock();
  const h = await startDaemon(t, 'limits:\n  idle_timeout: 400ms\n', engine, clock);
  const port = portOf(h.daemon.endpoints.policy[0]);
  const t0 = clock.now();
  const [silent, talker, held] = await Promise.all([0, 1, 2].map(() => PolicyClient.connect({ port })));
  await until(() => h.daemon.openConnections === 3);
  const answered = track(held!.ask(rcptRequest({ recipient: 'hold-900@x' })));
  await until(() => engine.events.some((e) => e.recipient === 'hold-900@x'));
  // The clock moves 50 ms a step (the sweep's period at 400 ms); the talker asks every 150 ms.
  let silentAt = -1;
  let answeredAt = -1;
  let heldClosedAt = -1;
  for (let ms = 0; ms < 2000 && heldClosedAt < 0; ms += 50) {
    if (ms % 150 === 0 && ms <= 1200) t.equal(await talker!.ask(rcptRequest()), 'action=DUNNO\n\n');
    clock.advance(50);
    await settle(15);
    const at = clock.now() - t0;
    if (silentAt < 0 && silent!.closed) silentAt = at;
    if (answeredAt < 0 && answered.done) answeredAt = at;
    if (heldClosedAt < 0 && held!.closed) heldClosedAt = at;
    if (at === 1150) t.notOk(held!.closed, 'idleness counts from the reply: still open 250 ms after it');
  }
  t.notOk(talker!.closed, 'a connection asking every 150 ms is never idle');
  t.ok(silentAt >= 400 && silentAt <= 550, `the silent one closed ${silentAt} ms after it opened (400 ms timeout)`);
  t.equal(answered.value, 'action=DUNNO\n\n', 'the held reply came');
  t.ok(answeredAt >= 900 && answeredAt <= 950, `after its hold (${answeredAt} ms)`);
  t.ok(heldClosedAt - answeredAt >= 400 && heldClosedAt - answeredAt <= 550, `closed ${heldClosedAt - answeredAt} ms after its reply`);
  t.equal(h.daemon.errorCounts.get(203), 2, 'counted once each, the two idle ones (203)');
  talker!.close();
});

t.test('connection cap: a clean refusal, logged once per transition; idle timeout spares held replies', async (t) => {
  const engine = new ScriptedRule();
  const clock = new ManualClock();
  const h = await startDaemon(t, 'limits:\n  max_connections: 3\n  idle_timeout: 400ms\n', engine, clock);
  const port = portOf(h.daemon.endpoints.policy[0]);
  const open = await Promise.all([0, 1, 2].map(() => PolicyClient.connect({ port })));
  await until(() => h.daemon.openConnections === 3);
  const refused = await Promise.all([0, 1].map(() => PolicyClient.connect({ port })));
  for (const r of refused) {
    await r.closedPromise;
    t.ok(r.closed, 'over the cap: closed at once');
  }
  t.ok(await until(() => h.logs().filter((l) => l['code'] === 401).length === 1), 'one line for the transition, not one per refusal');
  // A held reply is not idleness; the idle ones are reclaimed.
  const held = track(open[0]!.ask(rcptRequest({ recipient: 'hold-900@x' })));
  await until(() => engine.events.some((e) => e.recipient === 'hold-900@x'));
  clock.advance(600);
  await open[1]!.closedPromise;
  t.ok(open[1]!.closed, 'an idle connection is closed after limits.idle_timeout');
  t.notOk(open[0]!.closed, 'the held one is not idle');
  clock.advance(300);
  t.ok(await until(() => held.done), 'the held one got its answer');
  t.equal(held.value, 'action=DUNNO\n\n');
  t.ok(await until(() => h.logs().some((l) => l['msg'] === 'accepting connections again')));
  const again = await PolicyClient.connect({ port });
  t.equal(await again.ask(rcptRequest()), 'action=DUNNO\n\n', 'accepted again below the cap');
  for (const c of [...open, again]) c.close();
});

// How policy sessions end (outcomes.ts): inferred from what the MTA asked and was told, recorded by the engine.
const S = 1000;
t.test('policy sessions: silence after a stage is abandonment there; end of message is delivery', async (t) => {
  const { engine, clock, po, ask } = policyFor('rates:\n  abandon_window: 60s\n');
  sawEndOfMessage(ask, po);
  const zombie = ev({ via: 'policy', client: '203.0.113.60', clientName: 'unknown', helo: 'pc60.example.com', session: 'z:1:25' });
  t.ok(ask(zombie).delayMs > 0);
  ask({ ...zombie, repeat: true });
  clock.advance(30 * S);
  t.same(po.due(clock.now(), 60 * S), [], 'not yet');
  clock.advance(31 * S);
  t.same(po.due(clock.now(), 60 * S), [], 'the window starts after the 15 s hold');
  clock.advance(15 * S);
  const due = po.due(clock.now(), 60 * S);
  t.match(due, [{ kind: 'abandoned', held: true, event: { stage: 'rcpt', client: '203.0.113.60' } }]);
  t.equal(engine.store.entry('ip:203.0.113.60')?.abh, 1, 'recorded once');
  t.same(po.due(clock.now(), 60 * S), []);
  const mta = ev({ via: 'policy', client: '192.0.2.61', session: 'm:1:25' });
  ask(mta);
  ask({ ...mta, stage: 'data' });
  ask({ ...mta, stage: 'eom' });
  ask({ ...mta, stage: 'eom', repeat: true });
  t.equal(engine.store.entry('ip:192.0.2.61')?.ok, 1, 'delivered once at end of message');
  clock.advance(61 * S);
  t.match(po.due(clock.now(), 60 * S), [{ kind: 'ended' }]);
  const few = new PolicyOutcomes(engine, 2);
  for (const s of ['a', 'b', 'c']) few.answered(ev({ session: s }), 'pass', false, 0);
  t.equal(few.size, 2, 'bounded');
});

t.test('a policy session known to be over is concluded at once, from all its stages, once', async (t) => {
  const { engine, po, ask } = policyFor('rates:\n  abandon_window: 60s\n');
  sawEndOfMessage(ask, po);
  const zombie = ev({ via: 'policy', client: '203.0.113.70', clientName: 'unknown', helo: 'pc70.example.com', session: 'z:2:25' });
  ask({ ...zombie, stage: 'helo' });
  t.ok(ask(zombie).delayMs > 0, 'held at RCPT');
  t.equal(engine.stats().sessions, 1);
  t.match(po.over('z:2:25'), { kind: 'abandoned', held: true, event: { stage: 'rcpt' } }, 'abandoned at its last stage, held');
  t.equal(engine.store.entry('ip:203.0.113.70')?.abh, 1);
  t.equal(engine.stats().sessions, 0, 'its live session ends with it');
  t.equal(po.over('z:2:25'), undefined, 'only once');
  t.equal(po.over('never-seen'), undefined);
  // Asked about on two connections (RCPT on one, end of message on another): still one session.
  const mta = ev({ via: 'policy', client: '192.0.2.71', session: 'm:2:25' });
  ask(mta);
  ask({ ...mta, stage: 'eom' });
  t.match(po.over('m:2:25'), { kind: 'ended' }, 'past end of message it ended');
  t.equal(engine.store.entry('ip:192.0.2.71')?.ab, 0, 'not counted as abandoned');
});

t.test('asked at RCPT alone (no end of message ever seen), sessions end unjudged', async (t) => {
  const { engine, clock, po, ask } = policyFor('rates:\n  abandon_window: 60s\n');
  const held = ev({ via: 'policy', client: '203.0.113.90', clientName: 'unknown', helo: 'pc90.example.com', session: 'u:1:25' });
  t.ok(ask(held).delayMs > 0, 'held at RCPT');
  ask(ev({ via: 'policy', client: '192.0.2.91', session: 'u:2:25' }));
  t.match(po.over('u:1:25'), { kind: 'ended' }, 'a held RCPT then the next session: ended, not abandoned');
  clock.advance(61 * S);
  t.match(po.due(clock.now(), 60 * S), [{ kind: 'ended' }], 'silence: ended too');
  t.equal(engine.store.entry('ip:203.0.113.90')?.abh ?? 0, 0, 'nothing learned for the held one');
  t.equal(engine.store.entry('ip:192.0.2.91')?.ab ?? 0, 0, 'nor the other');
  t.equal(po.unjudged, 2, 'both counted as unjudged');
  t.equal(engine.stats().sessions, 0, 'their live sessions ended');
  // From the first end of message on, endings are judged.
  sawEndOfMessage(ask, po);
  ask({ ...held, session: 'u:3:25' });
  t.match(po.over('u:3:25'), { kind: 'abandoned', held: true });
  t.equal(po.unjudged, 2);
});

t.test('a policy session that ends after we refused it was not abandoned', async (t) => {
  const { engine, po, ask } = policyFor('rates:\n  abandon_window: 60s\nthresholds:\n  hold: -1\n  defer: -1\n  reject: -1\n');
  sawEndOfMessage(ask, po);
  const bad = ev({ via: 'policy', client: '203.0.113.95', clientName: 'unknown', helo: '203.0.113.95', session: 'r:1:25' });
  t.equal(ask(bad).kind, 'reject', 'rejected at RCPT');
  t.match(po.over('r:1:25'), { kind: 'ended' }, 'then quit: ended');
  t.equal(engine.store.entry('ip:203.0.113.95')?.ab ?? 0, 0, 'not counted as abandoned');
});

/** Some session of another client was asked about at end of message: the MTA asks sluice there. */
function sawEndOfMessage(ask: (e: StageEvent) => Verdict, po: PolicyOutcomes): void {
  const mta = ev({ via: 'policy', client: '192.0.2.250', helo: 'mx.eom.example', sender: 'a@eom.example', session: 'eom:1:25' });
  ask({ ...mta, stage: 'eom' });
  po.over('eom:1:25');
}

/** The engine as the policy service asks it: each answer is told to PolicyOutcomes, which records the outcomes. */
function policyFor(yaml: string) {
  const { engine, clock } = engineFor(yaml);
  const po = new PolicyOutcomes(engine, 10_000);
  const ask = (e: StageEvent): Verdict => {
    const v = engine.decide(e);
    po.answered(e, v.kind, v.delayMs > 0, clock.now() + v.delayMs);
    return v;
  };
  return { engine, clock, po, ask };
}

t.test('a client we rejected that then quits is counted once: a reject, not an abandonment too', async (t) => {
  const clock = new ManualClock();
  const h = await startDaemon(t, 'rates:\n  abandon_window: 2s\nlists:\n  deny: ["203.0.113.99"]\n', undefined, clock);
  const p = await PolicyClient.connect({ port: portOf(h.daemon.endpoints.policy[0]) });
  t.teardown(() => p.close());
  // Postfix asks at end of message too, so endings are judged.
  await p.ask(rcptRequest({ client_address: '192.0.2.40', client_port: '4999', instance: 'e.1', protocol_state: 'END-OF-MESSAGE' }));
  t.match(await p.ask(rcptRequest({ client_address: '203.0.113.99', client_port: '5000', instance: 'r.1' })), /^action=554 5\.7\.1 /, 'rejected at RCPT');
  // It quits. The next session on the connection concludes it; another, on its own, is concluded by silence.
  await p.ask(rcptRequest({ client_address: '192.0.2.41', client_port: '5001', instance: 'n.1' }));
  await p.ask(rcptRequest({ client_address: '192.0.2.41', client_port: '5001', instance: 'n.1', protocol_state: 'END-OF-MESSAGE' }));
  const q = await PolicyClient.connect({ port: portOf(h.daemon.endpoints.policy[0]) });
  t.teardown(() => q.close());
  t.match(await q.ask(rcptRequest({ client_address: '203.0.113.99', client_port: '5002', instance: 'r.2' })), /^action=554/);
  clock.advance(5000);
  const stats = await h.daemon.stats() as Record<string, { stage?: string; verdict?: string; held?: string; value: number }[]>;
  t.equal(stats['verdicts_total']?.find((r) => r.stage === 'rcpt' && r.verdict === 'reject')?.value, 2, 'two rejects counted');
  t.same(stats['abandoned_total'] ?? [], [], 'and no abandonment, after the next session or after the silence');
  t.notOk(h.logs().some((l) => String(l['msg']).startsWith('abandoned')), 'nor logged');
});
