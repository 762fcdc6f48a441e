// The fleet store end to end: two sluiced share a real redis-server (and a
// three-node Redis Cluster, and a Sentinel setup). A client that gives up
// held sessions on A is shaped on B at its first request there (IPv4, and
// an IPv6 /48 through its /64s); a deny on A is enforced by B within a
// second; a restarted B still knows; the store killed under load loses no
// answer; a stop in the middle of a flush loses no change without a word.
import t from 'tap';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { startDaemon, settle, track, until, type Harness } from './helpers/daemon.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import { MilterClient, mta } from './helpers/milter-client.js';
import { redisGate, startCluster, startRedis, startSentinel } from './helpers/redis.js';
import { run } from './helpers/spawn.js';
import { ManualClock } from '../dist/util/clock.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const ZOMBIE = '203.0.113.66';

function fleetYaml(store: string): string {
  return `fleet:\n  ${store}\n  flush_interval: 100ms\n  read_wait: 2s\n`;
}

/** Gives up three held sessions on `h`'s milter (bare-IP HELO: held; the client goes at once), then has them written. */
async function zombieOn(t: Test, h: Harness, clock: ManualClock): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const m = await MilterClient.connect(portOf(h.daemon.endpoints.milter[0]));
    await m.open('Postfix 3.7.11', ZOMBIE, 'unknown');
    m.send(mta.helo(ZOMBIE));
    await settle(30);
    m.close();
    await m.idle;
  }
  // The first hang-up under a hold is answered with deferrals: no hold at the next sessions' HELO, so those are plain abandonments.
  t.ok(await until(() => h.daemon.engine.store.count(`ip:${ZOMBIE}`, 'abh') === 1 && h.daemon.engine.store.count(`ip:${ZOMBIE}`, 'ab') === 2), 'A learned one hang-up under a hold and two abandoned sessions');
  clock.advance(100);
  // Three keys: the address, its network and the HELO name.
  t.ok(await until(() => (h.daemon.status()['fleet'] as { written: number }).written >= 3), 'and wrote them to the store');
}

/**
 * B has never seen the zombie: its first request there is shaped from what
 * the fleet knows. `shared`: B was up while A wrote, so A's entry reached it
 * without a request (pushed); else (B started later) it is read at the
 * zombie's first request.
 */
async function shapedOn(t: Test, h: Harness, shared: boolean): Promise<void> {
  const local = (): number => h.daemon.engine.store.score(`ip:${ZOMBIE}`);
  if (shared) t.ok(await until(() => local() <= -10), `A's entry reached B before any request there: ${local()}`);
  else t.equal(local(), 0, 'B knows nothing of the client locally');
  const p = await PolicyClient.connect({ port: portOf(h.daemon.endpoints.policy[0]) });
  t.teardown(() => p.close());
  const reply = track(p.ask(rcptRequest({ client_address: ZOMBIE, instance: `z.${Math.random()}` })));
  await until(() => reply.done, 1000);
  t.ok(local() <= -10, `B has its score from the store: ${local()}`);
  t.ok(!reply.done || reply.value !== 'action=DUNNO\n\n', `shaped at its first request on B: ${reply.done ? JSON.stringify(reply.value) : 'held'}`);
  const fresh = await p.ask(rcptRequest({ client_address: '198.51.100.23', instance: `f.${Math.random()}` }));
  t.equal(fresh, 'action=DUNNO\n\n', 'a client the fleet does not know passes');
}

t.test('two hosts share reputation, lists and restarts through redis-server; the store killed under load loses nothing', redisGate(t), async (t) => {
  const redis = await startRedis(t);
  const ca = new ManualClock();
  const a = await startDaemon(t, fleetYaml(`url: "${redis.url}"`), undefined, ca);
  const b = await startDaemon(t, fleetYaml(`url: "${redis.url}"`), undefined, new ManualClock());
  t.ok(await until(() => (a.daemon.status()['fleet'] as { state: string }).state === 'up' && (b.daemon.status()['fleet'] as { state: string }).state === 'up'), 'both connected');
  t.match(a.daemon.status()['fleet'], { store: redis.url, state: 'up', pending_writes: 0 });

  await zombieOn(t, a, ca);
  t.match(redis.cli('hgetall', `sluice:r:ip:${ZOMBIE}`), /abh\n1/, 'the store holds the entry under the prefix');
  await shapedOn(t, b, true);

  // sluicectl deny on A: B enforces it within a second.
  const ctl = run(t, [path.join(ROOT, 'bin', 'sluicectl'), '--socket', a.daemon.controlSocket, 'deny', '192.0.2.99', '--reason', 'fleet test']);
  t.equal((await ctl.exited).code, 0);
  const pb = await PolicyClient.connect({ port: portOf(b.daemon.endpoints.policy[0]) });
  t.teardown(() => pb.close());
  const denied = async (p: PolicyClient): Promise<boolean> => (await p.ask(rcptRequest({ client_address: '192.0.2.99', instance: `d.${Math.random()}` }))).startsWith('action=554');
  const since = Date.now();
  let onB = false;
  while (!onB && Date.now() - since < 1000) onB = await denied(pb);
  t.ok(onB, `B enforces A's deny after ${Date.now() - since} ms`);

  // B restarts with an empty state directory: it still knows both.
  await b.daemon.stop();
  const b2 = await startDaemon(t, fleetYaml(`url: "${redis.url}"`), undefined, new ManualClock());
  t.ok(await until(() => b2.daemon.engine.lists.entries(Date.now()).some((e) => e.value === '192.0.2.99')), 'the restarted B read the deny list');
  await shapedOn(t, b2, false);

  // The store killed under load: every request answered, both alive, one warning each.
  const pa = await PolicyClient.connect({ port: portOf(a.daemon.endpoints.policy[0]) });
  const pb2 = await PolicyClient.connect({ port: portOf(b2.daemon.endpoints.policy[0]) });
  t.teardown(() => { pa.close(); pb2.close(); });
  let answered = 0;
  const load = async (p: PolicyClient, n: number, tag: string): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const r = await p.ask(rcptRequest({ client_address: `198.51.100.${i % 200}`, instance: `${tag}.${i}` }));
      if (r.startsWith('action=')) answered++;
    }
  };
  const loading = Promise.all([load(pa, 300, 'a'), load(pb2, 300, 'b')]);
  await settle(20);
  await redis.kill();
  await loading;
  t.equal(answered, 600, 'every request answered while the store died');
  t.ok(await until(() => a.logs().some((l) => /fleet store is away/.test(String(l['msg']))) && b2.logs().some((l) => /fleet store is away/.test(String(l['msg'])))), 'each host said so');
  await load(pa, 50, 'a2');
  t.equal(a.logs().filter((l) => /fleet store is away/.test(String(l['msg']))).length, 1, 'once');
  t.equal(b2.logs().filter((l) => /fleet store is away/.test(String(l['msg']))).length, 1, 'once on B too');
  t.match(a.daemon.status()['fleet'], { state: 'down' });
  // Writes wait while it is away, and go once it is back.
  a.daemon.engine.store.add('ip:192.0.2.150', -3, 'ab');
  ca.advance(100);
  await redis.restart();
  t.ok(await until(() => a.logs().some((l) => /fleet store is back/.test(String(l['msg']))), 8000), 'A says the store is back');
  ca.advance(100);
  t.ok(await until(() => /ab\n1/.test(redis.cli('hgetall', 'sluice:r:ip:192.0.2.150')), 3000), 'and the waiting write landed');
});

t.test('a three-node Redis Cluster: a zombie on A is shaped on B', redisGate(t, ['/usr/bin/redis-server', '/usr/bin/redis-cli']), async (t) => {
  const seeds = await startCluster(t);
  const store = `cluster: [${seeds.map((s) => `"${s}"`).join(', ')}]`;
  const ca = new ManualClock();
  const a = await startDaemon(t, fleetYaml(store), undefined, ca);
  const b = await startDaemon(t, fleetYaml(store), undefined, new ManualClock());
  t.ok(await until(() => (a.daemon.status()['fleet'] as { state: string }).state === 'up' && (b.daemon.status()['fleet'] as { state: string }).state === 'up', 8000), 'both connected to the cluster');
  await zombieOn(t, a, ca);
  await shapedOn(t, b, true);
});

t.test('Sentinel: a zombie on A is shaped on B', redisGate(t, ['/usr/bin/redis-server', '/usr/bin/redis-sentinel']), async (t) => {
  const sentinel = await startSentinel(t);
  const store = `sentinels: ["${sentinel}"]\n  master_name: mymaster`;
  const ca = new ManualClock();
  const a = await startDaemon(t, fleetYaml(store), undefined, ca);
  const b = await startDaemon(t, fleetYaml(store), undefined, new ManualClock());
  t.ok(await until(() => (a.daemon.status()['fleet'] as { state: string }).state === 'up' && (b.daemon.status()['fleet'] as { state: string }).state === 'up', 8000), 'both found the master through the sentinel');
  await zombieOn(t, a, ca);
  await shapedOn(t, b, true);
});

t.test('a password from fleet.password_file: used, and never logged, shown or printed', redisGate(t), async (t) => {
  const redis = await startRedis(t, ['--requirepass', 'hunter2-fleet']);
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-pass-'));
  const file = path.join(dir, 'redis.pass');
  writeFileSync(file, 'hunter2-fleet\n', { mode: 0o600 });
  const h = await startDaemon(t, `fleet:\n  url: "${redis.url}"\n  password_file: "${file}"\n`);
  t.ok(await until(() => (h.daemon.status()['fleet'] as { state: string }).state === 'up'), 'connected with the password');
  const shown = JSON.stringify(h.daemon.status()) + JSON.stringify(h.logs());
  t.notOk(shown.includes('hunter2'), 'not in status or the log');
  const printed = run(t, [path.join(ROOT, 'bin', 'sluiced'), '--config', h.configFile, '--print-config']);
  await printed.exited;
  t.match(printed.stdout(), /password_file: .*redis\.pass/, '--print-config shows the file');
  t.notOk(printed.stdout().includes('hunter2'), 'and not the password');
  // An unreadable password file stops the start with a configuration error (exit 78), in one line.
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, `state_dir: ${dir}\npolicy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: []\nmetrics:\n  listen: ""\nfleet:\n  url: "${redis.url}"\n  password_file: "${dir}/absent.pass"\n`);
  const refused = run(t, [path.join(ROOT, 'bin', 'sluiced'), '--foreground', '--config', bad]);
  t.equal((await refused.exited).code, 78, 'exit 78');
  t.match(refused.stderr(), /bad\.yaml:10: fleet\.password_file: cannot read .*absent\.pass: no such file/);
});

t.test('IPv6: several /64s of one /48 hang up under holds on A; a new /64 of that /48 is shaped on B at its first request', redisGate(t), async (t) => {
  const redis = await startRedis(t);
  const ca = new ManualClock();
  const a = await startDaemon(t, fleetYaml(`url: "${redis.url}"`), undefined, ca);
  t.ok(await until(() => (a.daemon.status()['fleet'] as { state: string }).state === 'up'), 'A connected');
  const NET = 'net:2001:db8:1::/48';
  for (let i = 1; i <= 8; i++) {
    const client = `2001:db8:1:${i}::66`;
    const m = await MilterClient.connect(portOf(a.daemon.endpoints.milter[0]));
    await m.open('Postfix 3.7.11', client, 'unknown');
    m.send(mta.helo(client));
    await settle(30);
    m.close();
    await m.idle;
  }
  const gone = (): number => a.daemon.engine.store.count(NET, 'abh') + a.daemon.engine.store.count(NET, 'ab');
  t.ok(await until(() => gone() === 8), `A learned that eight /64s of the /48 hung up (${a.daemon.engine.store.count(NET, 'abh')} under a hold)`);
  t.ok(a.daemon.engine.store.score(NET) < -30, `the /48's score on A: ${a.daemon.engine.store.score(NET)}`);
  const p = await PolicyClient.connect({ port: portOf(a.daemon.endpoints.policy[0]) });
  t.teardown(() => p.close());
  const onA = track(p.ask(rcptRequest({ client_address: '2001:db8:1:99::1', instance: `a6.${Math.random()}` })));
  await until(() => onA.done, 1000);
  t.ok(!onA.done || onA.value !== 'action=DUNNO\n\n', `A itself shapes a new /64 of that /48: ${onA.done ? JSON.stringify(onA.value) : 'held'}`);
  ca.advance(100);
  t.ok(await until(() => /first/.test(redis.cli('hgetall', `sluice:r:${NET}`))), 'the /48 is in the store');

  // B starts now: nothing was pushed to it, so what it knows it reads at the first request.
  const b = await startDaemon(t, fleetYaml(`url: "${redis.url}"`), undefined, new ManualClock());
  t.ok(await until(() => (b.daemon.status()['fleet'] as { state: string }).state === 'up'), 'B connected');
  t.equal(b.daemon.engine.store.score(NET), 0, 'B knows nothing of the /48 locally');
  const pb = await PolicyClient.connect({ port: portOf(b.daemon.endpoints.policy[0]) });
  t.teardown(() => pb.close());
  const reply = track(pb.ask(rcptRequest({ client_address: '2001:db8:1:77::1', instance: `b6.${Math.random()}` })));
  await until(() => reply.done, 1000);
  t.ok(b.daemon.engine.store.score(NET) < -10, `B read the /48 from the store: ${b.daemon.engine.store.score(NET)}`);
  t.ok(!reply.done || reply.value !== 'action=DUNNO\n\n', `a new /64 is shaped at its first request on B: ${reply.done ? JSON.stringify(reply.value) : 'held'}`);
});

/** Keys in the store under the reputation prefix. */
const stored = (cli: (...a: string[]) => string): number => Number(cli('eval', "return #redis.call('keys', 'sluice:r:*')", '0').trim());

t.test('stopped in the middle of a flush to a slow store: every change is written, or counted as dropped and logged', redisGate(t), async (t) => {
  const redis = await startRedis(t);
  const clock = new ManualClock();
  const h = await startDaemon(t, fleetYaml(`url: "${redis.url}"`), undefined, clock);
  t.ok(await until(() => (h.daemon.status()['fleet'] as { state: string }).state === 'up'), 'connected');
  const store = h.daemon.engine.store;
  const add = (from: number, n: number): void => { for (let i = from; i < from + n; i++) store.add(`ip:198.18.${(i >> 8) & 255}.${i & 255}`, -1, 'ab'); };
  add(0, 20_000);
  process.kill(redis.pid()!, 'SIGSTOP');
  t.teardown(() => { try { process.kill(redis.pid()!, 'SIGCONT'); } catch { /* gone */ } });
  clock.advance(100);
  await settle(50);
  t.equal((h.daemon.status()['fleet'] as { pending_writes: number }).pending_writes, 0, 'a flush of 20,000 keys is under way, the store not answering');
  add(20_000, 20_000);
  const stopping = h.daemon.stop();
  await settle(300);
  process.kill(redis.pid()!, 'SIGCONT');
  await stopping;
  t.equal(stored(redis.cli), 40_000, 'every change is in the store after the stop');
  t.notOk(h.logs().some((l) => /could not be written before stop/.test(String(l['msg']))), 'nothing dropped');
});

t.test('a store that never answers at stop: what is unwritten is counted as dropped and said in one line', redisGate(t), async (t) => {
  const redis = await startRedis(t);
  const clock = new ManualClock();
  const h = await startDaemon(t, fleetYaml(`url: "${redis.url}"`), undefined, clock);
  t.ok(await until(() => (h.daemon.status()['fleet'] as { state: string }).state === 'up'), 'connected');
  for (let i = 0; i < 3000; i++) h.daemon.engine.store.add(`ip:198.19.${(i >> 8) & 255}.${i & 255}`, -1, 'ab');
  process.kill(redis.pid()!, 'SIGSTOP');
  t.teardown(() => { try { process.kill(redis.pid()!, 'SIGCONT'); } catch { /* gone */ } });
  clock.advance(100);
  await settle(50);
  const stopping = h.daemon.stop();
  await settle(50);
  clock.advance(5000);
  await stopping;
  const said = h.logs().filter((l) => /could not be written before stop/.test(String(l['msg'])));
  t.equal(said.length, 1, 'one line');
  t.match(said[0], { dropped: 3000 }, 'naming every key whose changes were not confirmed');
});

t.test('one reputation, continuously: what A learns of a client B already knows reaches B within a flush, with no request to the store', redisGate(t), async (t) => {
  const redis = await startRedis(t);
  const ca = new ManualClock();
  const cb = new ManualClock();
  const a = await startDaemon(t, fleetYaml(`url: "${redis.url}"`), undefined, ca);
  const b = await startDaemon(t, fleetYaml(`url: "${redis.url}"`), undefined, cb);
  t.ok(await until(() => [a, b].every((h) => (h.daemon.status()['fleet'] as { state: string }).state === 'up')), 'both connected');
  const key = 'ip:192.0.2.77';
  b.daemon.engine.store.add(key, 3, 'ok');
  cb.advance(100);
  t.ok(await until(() => a.daemon.engine.store.score(key) === 3), 'B\'s delivery reached A');
  const reads = async (): Promise<number> => ((await b.daemon.stats())['fleet_ops_total'] as { op: string; result: string; value: number }[] | undefined ?? [])
    .filter((x) => x.op === 'read').reduce((n, x) => n + x.value, 0);
  const before = await reads();
  for (let i = 0; i < 3; i++) a.daemon.engine.store.add(key, -6, 'abh');
  b.daemon.engine.store.add(key, 1, 'ok');
  ca.advance(100);
  t.ok(await until(() => b.daemon.engine.store.count(key, 'abh') === 3), 'A\'s three hang-ups reached B, which knew the client already');
  t.equal(Math.round(b.daemon.engine.store.score(key)), 3 - 18 + 1, 'B\'s own change not yet written is kept on top of the fleet\'s value');
  t.equal(b.daemon.engine.store.count(key, 'ok'), 2, 'and its count');
  t.equal(await reads(), before, 'B asked the store nothing for it');
  cb.advance(100);
  t.ok(await until(() => Math.round(a.daemon.engine.store.score(key)) === -14), 'B\'s own change reaches A in turn');
  // Published garbage changes nothing and is said once.
  for (const junk of ['someone\nsluice:r:ip:192.0.2.77 NaN 1 2 3', 'someone\nnot-a-hash 1 2', 'someone\nsluice:r:ip:192.0.2.77 1 2']) redis.cli('publish', 'sluice:entries', junk);
  t.ok(await until(() => b.logs().some((l) => /unreadable shared entry/.test(String(l['msg'])))), 'an unreadable shared entry is logged');
  t.equal(b.logs().filter((l) => /unreadable shared entry/.test(String(l['msg']))).length, 1, 'once');
  t.equal(Math.round(b.daemon.engine.store.score(key)), -14, 'and changes nothing');
});

t.test('lists through an outage: a deny made while the store is away, and a store restarted empty', redisGate(t), async (t) => {
  const redis = await startRedis(t);
  const a = await startDaemon(t, fleetYaml(`url: "${redis.url}"`));
  const b = await startDaemon(t, fleetYaml(`url: "${redis.url}"`));
  const up = (h: Harness): boolean => (h.daemon.status()['fleet'] as { state: string }).state === 'up';
  t.ok(await until(() => up(a) && up(b), 5000), 'both connected');
  const has = (h: Harness, value: string): boolean => h.daemon.engine.lists.dynamic(Date.now()).some((e) => e.value === value);
  const stored = (): string => redis.cli('hkeys', 'sluice:lists');
  // Before the outage: a deny and an allow on A, shared; then B removes the allow.
  a.daemon.engine.lists.add('deny', '192.0.2.0/24', Date.now(), undefined, 'before');
  a.daemon.engine.lists.add('allow', '198.51.100.9', Date.now());
  t.ok(await until(() => has(b, '192.0.2.0/24') && has(b, '198.51.100.9')), 'shared before the outage');
  b.daemon.engine.lists.remove('198.51.100.9');
  t.ok(await until(() => !has(a, '198.51.100.9')), 'the removal shared');

  await redis.kill();
  t.ok(await until(() => !up(a) && !up(b), 5000), 'both see the store away');
  // While away: a deny on A (it cannot be shared now).
  await settle(50);
  a.daemon.engine.lists.add('deny', '203.0.113.0/24', Date.now(), undefined, 'while away');
  t.ok(await until(() => a.logs().some((l) => /a list change could not be shared/.test(String(l['msg'])))), 'said, and kept to be sent');

  // The store comes back empty (no persistence).
  await redis.restart();
  t.ok(await until(() => up(a) && up(b), 8000), 'both back');
  t.ok(await until(() => has(b, '203.0.113.0/24'), 5000), 'the deny made while away reached B');
  t.ok(await until(() => /203\.0\.113\.0\/24/.test(stored()) && /192\.0\.2\.0\/24/.test(stored()), 5000), 'the store has the lists again: the one made while away and the one it lost');
  t.notOk(has(a, '198.51.100.9') || has(b, '198.51.100.9'), 'an entry removed before the outage stays removed');
  // A host started now reads them from the store.
  const c = await startDaemon(t, fleetYaml(`url: "${redis.url}"`));
  t.ok(await until(() => has(c, '203.0.113.0/24') && has(c, '192.0.2.0/24'), 5000), 'a new host reads both');
});
