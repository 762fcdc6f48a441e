// The config loader against random values for every key (a few seconds
// here; `npm run fuzz` runs many more): every case is either a config or a
// list of problems, never a throw; a config's resolvers are handed to c-ares
// as the daemon hands them; and `sluiced --check-config` ends with
// "configuration OK" or exit 78, never a crash (issue 33, item 1).
import t from 'tap';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fromText } from '../dist/config/load.js';
import { ListResolver } from '../dist/dns/resolver.js';
import { SYSTEM_CLOCK } from '../dist/util/clock.js';
import { configCase } from './helpers/config-fuzz.js';
import { Rng } from './helpers/fuzz.js';
import { run, shortDir, SLUICED } from './helpers/spawn.js';

const CASES = Number(process.env['CONFIG_FUZZ_CASES'] ?? 3000);
const SPAWNED = Number(process.env['CONFIG_FUZZ_SPAWNED'] ?? 6);

t.test('random values for every key: a config or problems, never a throw', async (t) => {
  const rng = new Rng(20261207);
  let ok = 0;
  let refused = 0;
  for (let i = 0; i < CASES; i++) {
    const c = configCase(rng);
    let r: ReturnType<typeof fromText>;
    try {
      r = fromText(c.text, 'fuzz.yaml');
    } catch (err) {
      t.fail(`case ${i} threw: ${String(err)}\n${c.text}`);
      continue;
    }
    if (!r.ok) {
      refused++;
      if (!r.problems.every((p) => p.file === 'fuzz.yaml' && p.message.length > 0)) t.fail(`case ${i}: a problem without a message\n${c.text}`);
      continue;
    }
    ok++;
    // What reaches c-ares: the resolvers, made as the daemon makes them (then cancelled; all loopback).
    const config = r.config;
    const resolver = new ListResolver(() => config.dns, SYSTEM_CLOCK);
    const asked = resolver.query('2.0.0.127.fuzz.invalid');
    resolver.cancel();
    await asked;
  }
  t.ok(ok > 0 && refused > 0, `${ok} configs taken, ${refused} refused with their problems`);
});

t.test('sluiced --check-config: OK or exit 78, nothing else', async (t) => {
  const rng = new Rng(7);
  const dir = shortDir(t);
  for (let i = 0; i < SPAWNED; i++) {
    const c = configCase(rng);
    const file = path.join(dir, `case-${i}.yaml`);
    writeFileSync(file, c.text);
    const p = run(t, [SLUICED, '-c', file, '--check-config']);
    const { code, signal } = await p.exited;
    t.ok(code === 0 || code === 78, `case ${i} (${c.keys.join(', ')}): exit ${code}${signal ? ` ${signal}` : ''}`);
    if (code === 0) t.match(p.stdout(), /configuration OK/);
    else t.notMatch(p.stderr(), /Assertion|    at /, `case ${i}: problems, no crash or stack`);
  }
});

t.test('every port in every key is checked: out of range refused at its line, port 0 only for a listener', async (t) => {
  const cases: [string, RegExp][] = [
    ['dns:\n  resolvers: ["127.0.0.1:0"]\n', /fuzz\.yaml:2: dns\.resolvers\.0: /],
    ['dns:\n  resolvers: ["127.0.0.1:65536"]\n', /fuzz\.yaml:2: dns\.resolvers\.0: /],
    ['dns:\n  resolvers: ["[::1]:70000"]\n', /fuzz\.yaml:2: dns\.resolvers\.0: /],
    ['dns:\n  resolvers: ["8.8.8.8:99999"]\n', /fuzz\.yaml:2: dns\.resolvers\.0: /],
    ['fleet:\n  sentinels: ["127.0.0.1:0"]\n', /fuzz\.yaml:2: fleet\.sentinels\.0: /],
    ['fleet:\n  cluster: ["127.0.0.1:65536"]\n', /fuzz\.yaml:2: fleet\.cluster\.0: /],
    ['policy:\n  listen: ["inet:127.0.0.1:65536"]\n', /fuzz\.yaml:2: policy\.listen\.0: /],
    ['milter:\n  listen: ["inet6:[::1]:70000"]\n', /fuzz\.yaml:2: milter\.listen\.0: /],
    ['metrics:\n  listen: "inet:127.0.0.1:99999"\n', /fuzz\.yaml:2: metrics\.listen: /],
    ['milter:\n  max_frame_size: 2048MiB\n', /fuzz\.yaml:2: milter\.max_frame_size: must be at most 1GiB/],
  ];
  for (const [text, want] of cases) {
    const r = fromText(text, 'fuzz.yaml');
    t.notOk(r.ok, `refused: ${text.trim().replace(/\n\s*/g, ' ')}`);
    if (!r.ok) t.match(r.problems.map((p) => `${p.file}:${p.line}: ${p.key}: ${p.message}`).join('\n'), want);
  }
  t.ok(fromText('policy:\n  listen: ["inet:127.0.0.1:0"]\n', 'fuzz.yaml').ok, 'a listener on port 0 takes a free port (the ready line names it)');
});

t.test('a duration longer than Node\'s timers take waits, rather than firing at once', async (t) => {
  let fired = 0;
  const timer = SYSTEM_CLOCK.setInterval(() => { fired++; }, 30 * 86_400_000);
  await new Promise((r) => setTimeout(r, 50));
  SYSTEM_CLOCK.clear(timer);
  t.equal(fired, 0, 'a 30d interval (reputation.snapshot_interval: 30d) did not fire within 50 ms');
});
