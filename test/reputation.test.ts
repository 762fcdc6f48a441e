// Tests for lib/reputation: keys, decay, the store (TTL and LRU by an injected clock), snapshots.
import t, { type Test } from 'tap';
import { writeFileSync, readFileSync, readdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import { addressKeys, keysFor, keyFromText } from '../dist/reputation/keys.js';
import { decay } from '../dist/reputation/score.js';
import { ReputationStore } from '../dist/reputation/store.js';
import { readSnapshot, setAside, writeSnapshot, SnapshotError } from '../dist/reputation/snapshot.js';

const H = 3_600_000;

t.test('keys: /32 and /24, /64 and /48, mapped IPv4, HELO, domain', async (t) => {
  t.same(addressKeys('192.0.2.77'), { ip: 'ip:192.0.2.77', net: 'net:192.0.2.0/24' });
  t.same(addressKeys('::ffff:192.0.2.77'), { ip: 'ip:192.0.2.77', net: 'net:192.0.2.0/24' }, 'IPv4-mapped counts as IPv4');
  t.same(addressKeys('2001:db8:a:b:c::1'), { ip: 'ip:2001:db8:a:b::/64', net: 'net:2001:db8:a::/48' });
  t.equal(addressKeys('unknown'), undefined);
  t.same(keysFor('192.0.2.1', 'MX.Example.NET.', 'Alice@Example.ORG'), { ip: 'ip:192.0.2.1', net: 'net:192.0.2.0/24', helo: 'helo:mx.example.net', domain: 'dom:example.org' });
  t.same(keysFor('192.0.2.1', '', ''), { ip: 'ip:192.0.2.1', net: 'net:192.0.2.0/24', helo: '', domain: '' }, 'no HELO or sender: no key');
  t.same(keysFor('unknown', 'x', 'a@b.'), { ip: '', net: '', helo: 'helo:x', domain: 'dom:b' }, 'no address: no address keys');
  t.equal(keyFromText('192.0.2.9'), 'ip:192.0.2.9');
  t.equal(keyFromText('192.0.2.0/24'), 'net:192.0.2.0/24');
  t.equal(keyFromText('2001:db8::/48'), 'net:2001:db8:0::/48');
  t.equal(keyFromText('mx.example.net'), 'helo:mx.example.net');
  t.equal(keyFromText('@example.org'), 'dom:example.org');
  t.equal(keyFromText('not valid!'), undefined);
});

/** Equal to within rounding (decay computes with Math.exp, correct to a bit or two). */
function near(t: Test, found: number, wanted: number, msg?: string): void {
  t.ok(Math.abs(found - wanted) <= 1e-12 * Math.max(1, Math.abs(wanted)), msg ?? `${found} is ${wanted}`);
}

t.test('decay halves toward zero each half-life, as a pure function of time', async (t) => {
  t.equal(decay(-8, 0, 0, H), -8);
  near(t, decay(-8, 0, H, H), -4);
  near(t, decay(-8, 0, 3 * H, H), -1);
  near(t, decay(-8, 0, H / 2, H), -8 * Math.SQRT1_2, 'between half-lives too');
  t.equal(decay(-8, 0, -5, H), -8, 'no growth for a clock that went back');
});

t.test('the store decays on read, expires by TTL and evicts the least recently changed', async (t) => {
  let now = 1_000_000;
  const s = new ReputationStore({ maxEntries: 3, ttlMs: 10 * H, halfLifeMs: H, now: () => now });
  s.add('ip:a', -8, 'abh');
  t.equal(s.score('ip:a'), -8);
  now += H;
  near(t, s.score('ip:a'), -4);
  s.add('ip:a', 2, 'ok');
  near(t, s.score('ip:a'), -2, 'the change adds to the decayed value');
  t.match(s.entry('ip:a'), { abh: 1, ok: 1 });
  t.equal(s.score(undefined), 0);
  t.equal(s.score('ip:never'), 0);
  now += 11 * H;
  t.equal(s.score('ip:a'), 0, 'forgotten after the TTL');
  for (const k of ['b', 'c', 'd', 'e']) s.add(`ip:${k}`, -1);
  t.equal(s.size, 3, 'bounded by max_entries');
  t.ok(s.evictions >= 1);
  t.equal(s.score('ip:b'), 0, 'the oldest went first');
  t.same([...s.entries()].map(([k]) => k), ['ip:c', 'ip:d', 'ip:e'], 'oldest first');
  t.ok(s.forget('ip:c'));
  t.equal(s.size, 2);
  t.equal(s.score('ip:d'), -1, 'a read...');
  s.add('ip:e', -1);
  s.add('ip:f', -1);
  s.add('ip:g', -1);
  t.equal(s.score('ip:d'), 0, '...does not keep an entry: only changes do (recency runs with the TTL)');
});

t.test('refs read an entry again without a lookup, and notice eviction, expiry, forget and a new entry', async (t) => {
  let now = 1_000_000;
  const s = new ReputationStore({ maxEntries: 2, ttlMs: 10 * H, halfLifeMs: H, now: () => now });
  const a = s.ref('ip:a');
  t.equal(s.scoreOf(a, now), 0, 'absent');
  s.add('ip:a', -4, 'ok');
  t.equal(s.scoreOf(a, now), -4, 'an entry added after the ref is found');
  t.equal(s.countOf(a, 'ok', now), 1);
  s.add('ip:a', -4);
  t.equal(s.scoreOf(a, now), -8, 'changes are seen through the ref');
  t.ok(s.forget('ip:a'));
  t.equal(s.scoreOf(a, now), 0, 'forgotten');
  s.add('ip:b', -1);
  t.equal(s.scoreOf(a, now), 0, 'its slot, taken by another key, is not read as its own');
  s.add('ip:a', -2);
  s.add('ip:c', -3);
  s.add('ip:d', -5);
  t.equal(s.scoreOf(a, now), 0, 'evicted');
  t.equal(s.scoreOf(s.ref('ip:d'), now), -5);
  const d = s.ref('ip:d');
  t.equal(s.scoreOf(d, now), -5);
  now += 11 * H;
  t.equal(s.scoreOf(d, now), 0, 'expired by TTL');
  t.equal(s.size, 1, 'and dropped');
  t.equal(s.scoreOf(s.ref(''), now), 0, 'no key, no entry');
});

t.test('export order is the order of last change, whatever the slots; scan sees every live entry', async (t) => {
  let now = 1_000_000;
  const s = new ReputationStore({ maxEntries: 4, ttlMs: 10 * H, halfLifeMs: H, now: () => now });
  for (const k of ['a', 'b', 'c', 'd']) { s.add(`ip:${k}`, -1); now += 10; }
  t.ok(s.forget('ip:b'));
  s.add('ip:e', -2, 'abh'); // takes b's slot, the second
  now += 10;
  s.add('ip:a', 1, 'ok'); // the first slot, changed last
  now += 10;
  s.add('ip:f', -1); // evicts c, the least recently changed, and takes its slot
  const keys = (): string[] => [...s.entries()].map(([k]) => k);
  t.same(keys(), ['ip:d', 'ip:e', 'ip:a', 'ip:f'], 'least recently changed first');
  const seen = new Map<string, number[]>();
  s.scan(now, (key, score, ok, ab, abh) => seen.set(key, [score, ok, ab, abh]));
  t.same([...seen.keys()].sort(), ['ip:a', 'ip:d', 'ip:e', 'ip:f']);
  t.same(seen.get('ip:e'), [s.score('ip:e'), 0, 0, 1], 'decayed score and counters');
  t.same(seen.get('ip:a'), [s.score('ip:a'), 1, 0, 0]);
  now += 10 * H;
  let n = 0;
  s.scan(now, () => n++);
  t.equal(n, 0, 'entries past their TTL are not scanned');
  t.same(keys(), [], 'nor exported');
});

t.test('a large snapshot is encoded in slices, letting the event loop run between them, and read back in chunks', async (t) => {
  const dir = t.testdir({});
  const now = 5 * H;
  const s = new ReputationStore({ maxEntries: 70_000, ttlMs: 10 * H, halfLifeMs: H, now: () => now });
  for (let i = 0; i < 60_000; i++) s.add(`ip:10.0.${i >> 8}.${i & 255}`, -1);
  let turns = 0;
  let running = true;
  const spin = (): void => { turns++; if (running) setImmediate(spin); };
  setImmediate(spin);
  const turnsAt: number[] = [];
  const source = {
    exportSlots: s.exportSlots,
    exportSlot: (slot: number, at: number, fn: (key: string, values: Float64Array, off: number) => void) => { turnsAt.push(turns); return s.exportSlot(slot, at, fn); },
  };
  t.equal(await writeSnapshot(path.join(dir, 'big.snapshot'), source, [], now), 60_000);
  running = false;
  t.ok(turnsAt[turnsAt.length - 1]! > turnsAt[0]!, `the event loop turned while entries were encoded (${turnsAt[turnsAt.length - 1]! - turnsAt[0]!} turns)`);
  const back = new ReputationStore({ maxEntries: 70_000, ttlMs: 10 * H, halfLifeMs: H, now: () => now });
  // 60,000 entries are about 5 MiB: the reader's 4 MiB chunks end inside one.
  t.equal((await readSnapshot(path.join(dir, 'big.snapshot'), (k, v, at) => back.put(k, v, at)))?.count, 60_000, 'it reads back whole');
  for (const i of [0, 52_000, 59_999]) t.same(back.entry(`ip:10.0.${i >> 8}.${i & 255}`), s.entry(`ip:10.0.${i >> 8}.${i & 255}`), `entry ${i} exact`);
  t.same([...back.entries()].map(([k]) => k), [...s.entries()].map(([k]) => k), 'in the same order');
  // Dynamic list entries ride in the header line, which may outgrow any read of the file.
  const lists = Array.from({ length: 20_000 }, (_, i) => ({ kind: 'deny', value: `198.51.${i >> 8}.${i & 255}`, source: 'dynamic', added: now, reason: `wave ${i} `.repeat(8) }));
  await writeSnapshot(path.join(dir, 'lists.snapshot'), s, lists, now);
  const withLists = await readSnapshot<(typeof lists)[number]>(path.join(dir, 'lists.snapshot'), () => undefined);
  t.equal(withLists?.lists.length, 20_000, 'a header of several MiB is read whole');
  t.same(withLists?.lists[19_999], lists[19_999]);
});

t.test('snapshots: atomic write, exact restore, corrupt and foreign files refused', async (t) => {
  const dir = t.testdir({});
  const file = path.join(dir, 'rep.snapshot');
  let now = 5 * H;
  const a = new ReputationStore({ maxEntries: 100, ttlMs: 10 * H, halfLifeMs: H, now: () => now });
  a.add('ip:192.0.2.1', -6, 'abh');
  a.add('net:192.0.2.0/24', 3, 'ok');
  now += 1000;
  a.add('helo:x', -2);
  const lists = [{ kind: 'deny', value: '203.0.113.0/24', source: 'dynamic', added: now, reason: 'botnet' }];
  t.equal(await writeSnapshot(file, a, lists, now), 3);
  t.same(readdirSync(dir), ['rep.snapshot'], 'no temp file left behind');
  const b = new ReputationStore({ maxEntries: 100, ttlMs: 10 * H, halfLifeMs: H, now: () => now });
  const snap = await readSnapshot<(typeof lists)[number]>(file, (k, v, at) => b.put(k, v, at));
  t.equal(snap?.count, 3);
  t.same(snap?.lists, lists);
  for (const k of ['ip:192.0.2.1', 'net:192.0.2.0/24', 'helo:x']) t.equal(b.score(k), a.score(k), `${k} restored`);
  t.same(b.entry('ip:192.0.2.1'), a.entry('ip:192.0.2.1'), 'counters restored');
  t.same([...b.entries()].map(([k]) => k), [...a.entries()].map(([k]) => k), 'recency kept');
  now += 10 * H - 500; // ip and net are now past the TTL, helo (1 s younger) is not
  const c = new ReputationStore({ maxEntries: 100, ttlMs: 10 * H, halfLifeMs: H, now: () => now });
  let kept = 0;
  await readSnapshot(file, (k, v, at) => { if (c.put(k, v, at)) kept++; });
  t.equal(kept, 1, 'entries past their TTL are not restored');

  t.equal(await readSnapshot(path.join(dir, 'none'), () => t.fail('nothing to take')), undefined, 'no snapshot: undefined');
  const good = readFileSync(file);
  const nl = good.indexOf(0x0a);
  const headText = good.subarray(0, nl).toString();
  const withHead = (h: string): Buffer => Buffer.concat([Buffer.from(h), good.subarray(nl)]);
  const nan = Buffer.from(good);
  nan.writeDoubleLE(Number.NaN, nl + 1 + 2 + 'ip:192.0.2.1'.length);
  const bad: [string, Buffer, RegExp][] = [
    ['garbage', Buffer.from('hello world\n'), /first line is not JSON/],
    ['foreign', Buffer.from('{"format":"other"}\n'), /not a sluice snapshot/],
    ['future version', withHead(headText.replace('"version":2', '"version":99')), /version 99; this sluice reads versions 1 and 2/],
    ['truncated', good.subarray(0, good.length - 20), /truncated/],
    ['short of its count', withHead(headText.replace('"entries":3', '"entries":4')), /expected 4 entries, the file has room for 3/],
    ['more than its count', withHead(headText.replace('"entries":3', '"entries":2')), /more than the 2 entries the header claims/],
    ['not a number', nan, /not a number/],
    ['cut inside an entry', Buffer.concat([good.subarray(0, good.length - 8 - 30), good.subarray(good.length - 8)]), /malformed|cut short/],
  ];
  // Version 1 (before the scanner's spam and ham counters): 8 values an entry, read with those at 0.
  const v1: Buffer[] = [Buffer.from(headText.replace('"version":2', '"version":1') + '\n')];
  for (let p = nl + 1; p < good.length - 8;) {
    const klen = good.readUInt16LE(p);
    v1.push(good.subarray(p, p + 2 + klen + 8 * 8));
    p += 2 + klen + 10 * 8;
  }
  v1.push(good.subarray(good.length - 8));
  writeFileSync(path.join(dir, 'v1.snapshot'), Buffer.concat(v1));
  const old = new ReputationStore({ maxEntries: 100, ttlMs: 10 * H, halfLifeMs: H, now: () => 5 * H + 1000 });
  t.equal((await readSnapshot(path.join(dir, 'v1.snapshot'), (k, v, at) => old.put(k, v, at)))?.count, 3, 'a version 1 snapshot is read');
  t.same(old.entry('ip:192.0.2.1'), { s: -6, at: 5 * H, first: 5 * H, ok: 0, ab: 0, abh: 1, rate: 0, grey: 0, spam: 0, ham: 0 }, 'its entries whole, the verdict counters at 0');
  for (const [name, bytes, want] of bad) {
    const f = path.join(dir, `${name}.snapshot`);
    writeFileSync(f, bytes);
    let took = 0;
    const err = await readSnapshot(f, () => { took++; }).then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof SnapshotError, `${name}: a SnapshotError`);
    t.match((err as Error | undefined)?.message, want, name);
    t.equal(took, 0, `${name}: nothing taken from a bad file`);
  }
  const moved = await setAside(path.join(dir, 'garbage.snapshot'), now);
  t.ok(existsSync(moved) && !existsSync(path.join(dir, 'garbage.snapshot')), 'set aside under a new name');
  t.match(moved, /garbage\.snapshot\.corrupt-/);
});
