// Tests for lib/config: units, endpoints, loading with file:line:key problems, freezing.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseDuration, parseSize, formatDuration } from '../dist/config/units.js';
import { parseEndpoint } from '../dist/config/endpoint.js';
import { fromText, loadConfig, formatProblem, BUILTIN, keepStartOnly, START_ONLY } from '../dist/config/load.js';
import { configKeys, DEFAULTS } from '../dist/config/defaults.js';
import { stateDirFor } from '../dist/cli/state-dir.js';

t.test('durations and sizes', async (t) => {
  t.equal(parseDuration('30s'), 30_000);
  t.equal(parseDuration('5m'), 300_000);
  t.equal(parseDuration('1.5h'), 5_400_000);
  t.equal(parseDuration('250ms'), 250);
  t.equal(parseDuration('250'), 250);
  t.equal(parseDuration(42), 42);
  t.equal(parseDuration('fast'), undefined);
  t.equal(parseDuration(-1), undefined);
  t.equal(parseSize('64KiB'), 65536);
  t.equal(parseSize('1MiB'), 1 << 20);
  t.equal(parseSize('2k'), 2000);
  t.equal(parseSize(4096), 4096);
  t.equal(parseSize('lots'), undefined);
  t.equal(parseSize(1.5), undefined);
  t.equal(formatDuration(90_000), '90s');
  t.equal(formatDuration(3_600_000), '1h');
  t.equal(formatDuration(1500), '1500ms');
});

t.test('endpoints', async (t) => {
  t.match(parseEndpoint('inet:127.0.0.1:10040'), { kind: 'inet', host: '127.0.0.1', port: 10040 });
  t.match(parseEndpoint('inet6:[::1]:10041'), { kind: 'inet', host: '::1', port: 10041 });
  t.match(parseEndpoint('inet:localhost:0'), { kind: 'inet', host: 'localhost', port: 0 });
  t.match(parseEndpoint('unix:/run/sluice/policy'), { kind: 'unix', path: '/run/sluice/policy' });
  t.match(parseEndpoint('local:private/sluice'), { kind: 'unix', path: 'private/sluice' });
  t.match(parseEndpoint('inet:127.0.0.1:70000'), /above 65535/);
  t.match(parseEndpoint('inet6:[127.0.0.1]:1'), /IPv6/);
  t.match(parseEndpoint('inet:[::1]:1'), { kind: 'inet', host: '::1' });
  t.match(parseEndpoint('inet:[nope]:1'), /brackets are for IPv6/);
  t.match(parseEndpoint('tcp:1.2.3.4:5'), /expected inet/);
  t.match(parseEndpoint('unix:'), /needs a socket path/);
  t.match(parseEndpoint('inet:1.2.3.4'), /expected inet:HOST:PORT/);
});

t.test('built-in defaults load, are frozen, and match the table', async (t) => {
  const r = await loadConfig();
  t.ok(r.ok);
  if (!r.ok) return;
  t.equal(r.file, BUILTIN);
  t.ok(Object.isFrozen(r.config) && Object.isFrozen(r.config.policy) && Object.isFrozen(r.config.policy.listen));
  t.throws(() => { (r.config.policy as { timeout: number }).timeout = 1; });
  t.equal(r.config.policy.timeout, 60_000, "60s, the timeout= in contrib/postfix/main.cf");
  t.equal(r.config.policy.listen[0]?.kind, 'inet');
  t.same(r.raw, DEFAULTS, 'print-config shows the table itself');
  t.ok(configKeys().includes('policy.listen'));
  t.ok(r.config.policy.listen.every((e) => e.kind === 'inet' && e.host.startsWith('127.')), 'loopback only by default');
});

t.test('every problem at once, each with file, line and key', async (t) => {
  const text = [
    'log:',
    '  level: loud', // 2: bad enum
    'policy:',
    '  timeout: fast', // 4: bad duration
    '  max_attributes: "many"', // 5: wrong type
    'bogus: 1', // 6: unknown key
    'limits:',
    '  idel_timeout: 5s', // 8: unknown nested key (typo)
  ].join('\n');
  const r = fromText(text, 'sluice.yaml');
  t.notOk(r.ok);
  if (r.ok) return;
  const lines = r.problems.map(formatProblem);
  t.same(lines, [
    'sluice.yaml:2: log.level: expected one of fatal, error, warn, info, debug, trace, silent',
    'sluice.yaml:4: policy.timeout: "fast" is not a duration (e.g. 250ms, 30s, 5m, 1h)',
    'sluice.yaml:5: policy.max_attributes: expected a number',
    'sluice.yaml:6: bogus: unknown key',
    'sluice.yaml:8: limits.idel_timeout: unknown key',
  ]);
  t.ok(r.problems.every((p) => p.symbol === 'CONFIG_INVALID'));
});

t.test('keys that defeat each other are refused at the key to change', async (t) => {
  // Each valid alone; together the tarpit would silently do nothing.
  const r = fromText('policy:\n  timeout: 60s\n  hold_margin: 90s\nmilter:\n  hold_margin: 10m\n', 'sluice.yaml');
  t.notOk(r.ok);
  if (r.ok) return;
  t.same(r.problems.map(formatProblem), [
    'sluice.yaml:3: policy.hold_margin: 90s must be below policy.timeout (60s): every policy hold would be cut to nothing',
    'sluice.yaml:5: milter.hold_margin: 600s must be below milter.sendmail_read_timeout (10s): no Sendmail stage could be held',
    'sluice.yaml:5: milter.hold_margin: 600s must be below milter.sendmail_eom_timeout (300s): Sendmail\'s end of message could not be held',
  ]);
  t.ok(fromText('policy:\n  timeout: 60s\n  hold_margin: 59s\n', 'ok.yaml').ok, 'a margin below the timeout is fine');
});

t.test('every problem says what form is expected', async (t) => {
  const cases: [string, RegExp][] = [
    ['mode: strict', /mode: expected one of enforce, observe$/],
    ['tarpit:\n  hold_share: 2', /tarpit\.hold_share: must be at most 1$/],
    ['tarpit:\n  process_limit: 0', /tarpit\.process_limit: must be at least 1$/],
    ['policy:\n  timeout: 5', /policy\.timeout: 5ms must be above policy\.hold_margin \(5s\): every policy hold would be cut to nothing$/],
    ['metrics:\n  listen: "127.0.0.1:10042"', /metrics\.listen: "127\.0\.0\.1:10042": expected inet:HOST:PORT, inet6:\[ADDR\]:PORT or unix:PATH \(did you mean "inet:127\.0\.0\.1:10042"\?\), or "" for none$/],
    ['metrics:\n  listen: 10042', /metrics\.listen: 10042: expected a string such as "inet:127\.0\.0\.1:10040"/],
    ['policy:\n  listen: ["[::1]:10040"]', /did you mean "inet6:\[::1\]:10040"/],
    ['policy:\n  timeout: true', /policy\.timeout: true is not a duration \(e\.g\. 250ms/],
    ['policy:\n  max_line_length: [1]', /\[1\] is not a size \(e\.g\. 4096/],
    ['policy:\n  listen: "inet:127.0.0.1:1"', /policy\.listen: expected a list/],
    ['tarpit:\n  enabled: "yes"', /tarpit\.enabled: expected true or false/],
    ['policy:\n  socket_mode: "rw"', /expected an octal mode such as "0660"/],
    ['policy:\n  max_attributes: 1.5', /expected a whole number/],
  ];
  for (const [yaml, want] of cases) {
    const r = fromText(yaml, 'f.yaml');
    t.notOk(r.ok, yaml);
    if (!r.ok) {
      t.equal(r.problems.length, 1, `${yaml}: one problem`);
      t.match(formatProblem(r.problems[0]!), want);
      t.notMatch(r.problems[0]!.message, /^Invalid input$/, 'never a bare "Invalid input"');
    }
  }
  const mode = fromText('policy:\n  socket_mode: 660\n', 'f.yaml');
  t.ok(mode.ok && mode.config.policy.socket_mode === 0o660, 'an unquoted 660 is the mode 0660');
});

t.test('syntax errors, non-mappings, missing files', async (t) => {
  const s = fromText('policy:\n  listen: [\n', 'bad.yaml');
  t.notOk(s.ok);
  if (!s.ok) {
    t.equal(s.problems[0]?.symbol, 'CONFIG_SYNTAX');
    t.match(formatProblem(s.problems[0]!), /^bad\.yaml:\d+: /);
  }
  const dup = fromText('fail_mode: pass\nfail_mode: defer\n', 'dup.yaml');
  t.notOk(dup.ok, 'duplicate keys are an error');
  const list = fromText('- a\n- b\n', 'list.yaml');
  t.notOk(list.ok);
  if (!list.ok) t.match(list.problems[0]?.message, /mapping/);
  t.ok(fromText('', 'empty.yaml').ok, 'an empty file is all defaults');
  const missing = await loadConfig('/nonexistent/sluice.yaml');
  t.notOk(missing.ok);
  if (!missing.ok) t.equal(formatProblem(missing.problems[0]!), '/nonexistent/sluice.yaml: cannot read: no such file');
  const dir = t.testdir({});
  const f = path.join(dir, 'ok.yaml');
  writeFileSync(f, 'policy:\n  listen: ["inet6:[::1]:0", "unix:p.sock"]\n  max_request_size: 16KiB\n');
  const ok = await loadConfig(f);
  t.ok(ok.ok);
  if (ok.ok) t.equal(ok.config.policy.max_request_size, 16384);
});

t.test('state directory resolution', async (t) => {
  t.equal(stateDirFor('/srv/sluice', {}, 1000), '/srv/sluice');
  t.equal(stateDirFor('', { STATE_DIRECTORY: '/var/lib/sluice:/other' }, 1000), '/var/lib/sluice');
  t.equal(stateDirFor('', {}, 0), '/var/lib/sluice');
  t.equal(stateDirFor('', { XDG_STATE_HOME: '/home/u/.st' }, 1000), '/home/u/.st/sluice');
});

t.test('a reload keeps the start-only keys at their running value and names the ones the file changed', async (t) => {
  const running = fromText('', 'a.yaml');
  const next = fromText('policy:\n  dedupe_entries: 5000\n  timeout: 60s\nreputation:\n  half_life: 2h\nthresholds:\n  hold: -5\n', 'b.yaml');
  if (!running.ok || !next.ok) throw new Error('fixtures must parse');
  const { config, kept } = keepStartOnly(running.config, next.config);
  t.same(kept, ['policy.dedupe_entries', 'reputation.half_life']);
  t.equal(config.policy.dedupe_entries, running.config.policy.dedupe_entries, 'the running size stays');
  t.equal(config.reputation.half_life, running.config.reputation.half_life);
  t.equal(config.policy.timeout, 60_000, 'other keys of the same section take the new value');
  t.equal(config.thresholds.hold, -5);
  t.ok(Object.isFrozen(config) && Object.isFrozen(config.policy), 'frozen like any loaded config');
  t.equal(keepStartOnly(running.config, running.config).config, running.config, 'nothing changed: the same object');
  for (const key of START_ONLY) {
    const v = key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)?.[k], running.config);
    t.not(v, undefined, `${key} is a config key`);
  }
});
