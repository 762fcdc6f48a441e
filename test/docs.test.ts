// The documentation matches the code: error codes in sluiced(8), config keys in sluice.conf(5),
// the example config in contrib/, and the man pages render.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { CATALOGUE } from '../dist/shield/errors.js';
import { configKeys, DEFAULTS } from '../dist/config/defaults.js';
import { loadConfig, START_ONLY } from '../dist/config/load.js';
import { ROOT } from './helpers/spawn.js';

const man = (name: string): string => readFileSync(path.join(ROOT, 'man', name), 'utf8');

function section(text: string, name: string): string {
  const start = text.indexOf(`.SH ${name}`);
  const end = text.indexOf('\n.SH ', start + 1);
  return text.slice(start, end < 0 ? undefined : end);
}

t.test('sluiced(8) DIAGNOSTICS lists exactly the catalogue', async (t) => {
  const diag = section(man('sluiced.8'), 'DIAGNOSTICS');
  const documented = [...diag.matchAll(/^\.B (\d{3}) ([A-Z_]+)$/gm)].map((m) => `${m[1]} ${m[2]}`);
  const catalogued = Object.entries(CATALOGUE).map(([name, { code }]) => `${code} ${name}`);
  t.same(documented.sort(), catalogued.sort());
});

function valueText(v: unknown): string {
  if (Array.isArray(v)) return JSON.stringify(v);
  // Empty strings and strings with spaces are shown quoted; single words as they are.
  if (typeof v === 'string' && (v === '' || v.includes(' '))) return JSON.stringify(v);
  return String(v);
}

function lookup(key: string): unknown {
  return key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], DEFAULTS);
}

t.test('sluice.conf(5) has every key with its default, and no stale key', async (t) => {
  const keysSection = section(man('sluice.conf.5'), 'KEYS');
  const entries = [...keysSection.matchAll(/^\.TP\n\.B ([a-z_.]+)\n([\s\S]*?)(?=^\.TP\n|$(?![\s\S]))/gm)];
  const documented = entries.map((m) => m[1]!);
  t.same([...documented].sort(), [...configKeys()].sort(), 'the same keys');
  for (const m of entries) {
    const key = m[1]!;
    const want = key.endsWith('.socket_mode') ? '"0660"' : valueText(lookup(key));
    t.match(m[2], `Default: \\fB${want}\\fP.`, `${key} default ${want}`);
  }
});

t.test('sluice.conf(5) says "Takes effect at the next start." of exactly the keys a reload keeps', async (t) => {
  const keysSection = section(man('sluice.conf.5'), 'KEYS');
  const entries = [...keysSection.matchAll(/^\.TP\n\.B ([a-z_.]+)\n([\s\S]*?)(?=^\.TP\n|$(?![\s\S]))/gm)];
  const marked = entries.filter((m) => m[2]!.includes('Takes effect at the next start.')).map((m) => m[1]!);
  t.same(marked.sort(), [...START_ONLY].sort());
});

t.test('contrib/sluice.yaml parses and lists every default', async (t) => {
  const file = path.join(ROOT, 'contrib', 'sluice.yaml');
  const r = await loadConfig(file);
  t.ok(r.ok, 'the example parses');
  const text = readFileSync(file, 'utf8');
  for (const key of configKeys()) {
    const leaf = key.split('.').pop()!;
    t.match(text, new RegExp(`^#? *${leaf}:`, 'm'), `${key} is in the example`);
  }
});

const hasMan = spawnSync('sh', ['-c', 'command -v man'], { encoding: 'utf8' }).status === 0;

t.test('man pages render with no groff warning (man --warnings)', { skip: hasMan ? false : 'man is not installed here (.ci/run installs man-db)' }, async (t) => {
  const render = (page: string) => spawnSync('man', ['--warnings', '-l', '-Tutf8', path.join(ROOT, 'man', page)], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80' } });
  for (const page of ['sluiced.8', 'sluice.conf.5', 'sluicectl.8', 'sluice-scenario.5']) {
    const r = render(page);
    t.equal(r.status, 0, `${page} renders`);
    t.equal(r.stderr.trim(), '', `${page}: no groff warnings`);
  }
  const plain = spawnSync('man', ['-l', path.join(ROOT, 'man', 'sluicectl.8')], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', MAN_KEEP_FORMATTING: '' } }).stdout.replace(/.\x08/g, '');
  t.match(plain, /^ {7}top \[-n N\] \[--by score\|holds\|drops\] \[-w \[seconds\]\]$/m, 'sluicectl(8): top\'s options on its own line, apart from the description');
});

t.test('sluice.conf(5): every key says what it does', async (t) => {
  const keysSection = section(man('sluice.conf.5'), 'KEYS');
  for (const m of keysSection.matchAll(/^\.TP\n\.B ([a-z_.]+)\n([\s\S]*?)(?=^\.TP\n|$(?![\s\S]))/gm)) {
    const text = m[2]!.replace(/^Default:.*$|^Takes effect at the next start\.$/gm, '').replace(/\\f[BIRP]|^\.[A-Z]+ ?/gm, '');
    t.ok(text.split(/\s+/).filter((w) => /[a-z]{2}/i.test(w)).length >= 3, `${m[1]} has a description`);
  }
});

t.test('contrib snippets match the defaults they depend on', async (t) => {
  const mc = readFileSync(path.join(ROOT, 'contrib', 'sendmail', 'sluice.mc'), 'utf8');
  const m = /INPUT_MAIL_FILTER\(`sluice', `S=inet:(\d+)@([\d.]+), T=C:\w+;S:\w+;R:(\w+);E:(\w+)'\)/.exec(mc);
  t.ok(m, 'an INPUT_MAIL_FILTER line with T= values');
  if (!m) return;
  t.equal(`inet:${m[2]}:${m[1]}`, DEFAULTS.milter.listen[0], 'S= is the default milter endpoint');
  t.equal(m[3], DEFAULTS.milter.sendmail_read_timeout, 'T=R: equals milter.sendmail_read_timeout');
  t.equal(m[4], DEFAULTS.milter.sendmail_eom_timeout, 'T=E: equals milter.sendmail_eom_timeout');
  const pf = readFileSync(path.join(ROOT, 'contrib', 'postfix', 'main.cf'), 'utf8');
  t.match(pf, `sluice_policy = ${DEFAULTS.policy.listen[0]}`);
  for (const line of pf.match(/check_policy_service \{[^}]*\}/g) ?? []) {
    t.match(line, `timeout=${DEFAULTS.policy.timeout}`, 'timeout= equals policy.timeout');
    t.match(line, 'default_action=DUNNO', 'fails open');
  }
  const mf = readFileSync(path.join(ROOT, 'contrib', 'postfix', 'milter.cf'), 'utf8');
  t.match(mf, `sluice_milter = ${DEFAULTS.milter.listen[0]}`);
  const cmd = /command_timeout=(\d+)s/.exec(mf);
  t.ok(cmd && Number(cmd[1]) * 1000 >= 3 * parseInt(DEFAULTS.milter.progress_interval, 10) * 1000, 'PROGRESS cadence well below command_timeout');
  t.match(mf, 'default_action=accept', 'fails open');
});

t.test('contrib: systemd unit hardened, logrotate by unit, Grafana queries only metrics sluiced exports', async (t) => {
  const unit = path.join(ROOT, 'contrib', 'systemd', 'sluiced.service');
  // systemd-analyze verify and security run on the installed unit (package.test.ts).
  const text = readFileSync(unit, 'utf8');
  for (const line of ['User=sluice', 'StateDirectory=sluice', 'RuntimeDirectory=sluice', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6']) {
    t.match(text, new RegExp(`^${line}$`, 'm'), line);
  }
  t.match(text, /RestartPreventExitStatus=78/, 'no restart loop on a configuration error');
  t.match(readFileSync(path.join(ROOT, 'contrib', 'systemd', 'sluice.sysusers'), 'utf8'), /^u sluice /m, 'the dedicated user, for systemd-sysusers');
  const rotate = readFileSync(path.join(ROOT, 'contrib', 'logrotate', 'sluice'), 'utf8');
  t.match(rotate, /systemctl kill --signal=SIGUSR1 --kill-whom=main sluiced\.service/, 'logrotate signals the unit\'s main process');
  t.notMatch(rotate, /pkill|killall/, 'never a match on command lines');

  const { Metrics } = await import('../dist/metrics/metrics.js');
  const m = new Metrics({ lruSize: () => 0, lruEvictions: () => 0, holdsActive: () => 0, openConnections: () => 0, loopLagMs: () => 0, fleetWrites: () => ({ pending: 0, dropped: 0 }), patience: () => [] });
  t.teardown(() => m.close());
  const exported = new Set((await m.registry.getMetricsAsJSON()).map((x) => x.name));
  const dash = JSON.parse(readFileSync(path.join(ROOT, 'contrib', 'grafana', 'sluice-dashboard.json'), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
  const used = new Set<string>();
  for (const p of dash.panels) for (const q of p.targets) for (const name of q.expr.match(/sluice_[a-z_]+/g) ?? []) used.add(name.replace(/_(bucket|sum|count)$/, ''));
  t.ok(used.size >= 8, `${used.size} metrics queried`);
  for (const name of used) t.ok(exported.has(name), `${name} is exported`);
  t.ok(dash.panels.some((p) => /abandoned by stage/i.test(p.title)), 'a drops-by-stage graph');
});
