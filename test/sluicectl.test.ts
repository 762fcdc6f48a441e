// End to end: sluiced and sluicectl as an admin runs them; the control socket,
// every command in table and JSON form, exit statuses, and metrics that move.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { sluiced, run, shortDir, ROOT } from './helpers/spawn.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import { MilterClient, mta } from './helpers/milter-client.js';
import { freePort } from './helpers/postfix.js';
import { engineFor } from './helpers/engine.js';
import { commands, type Controller } from '../dist/control/commands.js';
import { EngineOperator, type Operator } from '../dist/engine/operator.js';

/** The daemon's side of the control commands, with the engine's and the policy service's parts real and the rest idle. */
function controller(engine: Operator, policy = { timeout: 60_000, hold_margin: 5_000 }): Controller {
  return { engine, policy: () => policy, status: () => ({}), stats: async () => ({}), reload: async () => [], snapshot: async () => ({ file: '', entries: 0 }), setLogLevel: () => undefined, learn: () => ({ learned: false, why: 'no scanner here' }) };
}

t.test('sluicectl against a running sluiced', async (t) => {
  const dir = shortDir(t);
  const metricsPort = await freePort();
  const cfg = path.join(dir, 'sluice.yaml');
  writeFileSync(cfg, [
    `state_dir: ${dir}`, 'log:', '  format: json',
    'policy:', '  listen: ["inet:127.0.0.1:0"]', 'milter:', '  listen: ["inet:127.0.0.1:0"]',
    'metrics:', `  listen: "inet:127.0.0.1:${metricsPort}"`,
    'lists:', '  allow: ["192.0.2.0/24"]', 'rates:', '  abandon_window: 1s', 'tarpit:', '  hold_per_point: 300ms', '  min_hold: 300ms', '',
  ].join('\n'));
  const d = sluiced(t, ['-c', cfg, '-f']);
  const ready = await d.waitFor((l) => String(l['msg']).startsWith('sluiced ready'));
  t.equal(ready['control'], path.join(dir, 'control.sock'));
  t.equal(ready['metrics'], `http://127.0.0.1:${metricsPort}/metrics`);
  const listen = ready['listen'] as { policy: string[]; milter: string[] };
  const ctl = async (...args: string[]): Promise<{ code: number | null; out: string; err: string }> => {
    const c = run(t, [path.join(ROOT, 'bin', 'sluicectl'), '--socket', path.join(dir, 'control.sock'), ...args]);
    const { code } = await c.exited;
    return { code, out: c.stdout(), err: c.stderr() };
  };
  const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const before = await scrape();
  t.match(before, /sluice_verdicts_total|# TYPE sluice_verdicts_total counter/);

  // Traffic: a policy client held and silent (abandoned), a milter zombie that drops under hold.
  const p = await PolicyClient.connect({ port: portOf(listen.policy[0]) });
  // Postfix asks at end of message too (contrib/postfix/main.cf): endings are judged.
  await p.ask(rcptRequest({ client_address: '192.0.2.40', instance: 'e.1', client_port: '4999', protocol_state: 'END-OF-MESSAGE' }));
  t.equal(await p.ask(rcptRequest({ client_address: '203.0.113.50', client_name: 'unknown', reverse_client_name: 'unknown', helo_name: '203.0.113.50', instance: 'a.1', client_port: '5000' })), 'action=DUNNO\n\n');
  p.close();
  const z = await MilterClient.connect(portOf(listen.milter[0]));
  await z.open('Postfix 3.7.11', '198.51.100.99', '[198.51.100.99]');
  await z.ask(mta.helo('198.51.100.99'));
  await z.ask(mta.mail('<x@y>'));
  z.send(mta.rcpt('<a@b>'));
  await new Promise((r) => setTimeout(r, 300));
  z.close();
  await d.waitFor((l) => l['msg'] === 'abandoned at rcpt' && l['via'] === 'milter');
  await d.waitFor((l) => l['msg'] === 'abandoned at rcpt' && l['via'] === 'policy', 8000);

  const status = await ctl('status');
  t.equal(status.code, 0);
  t.match(status.out, /^version +0\.1\.0$/m);
  t.match(status.out, /^reputation_entries +\d+$/m);
  const sj = JSON.parse((await ctl('--json', 'status')).out) as Record<string, unknown>;
  t.equal(sj['pid'], d.proc.pid);
  t.ok((sj['reputation_entries'] as number) >= 4);

  const show = await ctl('show', '198.51.100.99');
  t.equal(show.code, 0);
  t.match(show.out, /^KEY +SCORE +DELIVERED +ABANDONED +ABANDONED_HELD/m);
  t.match(show.out, /^ip:198\.51\.100\.99 +-\d/m);
  t.match(show.out, /^net:198\.51\.100\.0\/24 +-\d/m);
  const shj = JSON.parse((await ctl('--json', 'show', '198.51.100.99')).out) as { entries: { key: string; abandoned_held: number }[] };
  t.equal(shj.entries[0]?.abandoned_held, 1, 'abandoned under hold, learned from the milter close');
  t.equal((await ctl('show', '192.168.250.1')).code, 1, 'unknown address: exit 1');
  const domain = await ctl('show', 'example.net');
  t.equal(domain.code, 1);
  t.equal(domain.err, 'sluicectl: nothing known about example.net as a HELO name (a sender domain is shown as @example.net)\n', 'the hint for a domain');
  const bad = await ctl('show', 'not an address');
  t.equal(bad.code, 64);
  t.equal(bad.err, 'sluicectl: "not an address" is not an address, CIDR, HELO name or @domain\n', 'one line');
  const typo = await ctl('show', '10.0.0.999');
  t.equal(typo.code, 64, 'a malformed address is a usage error (sluicectl(8)), not "nothing known"');
  t.equal(typo.err, 'sluicectl: "10.0.0.999" is not an address, CIDR, HELO name or @domain\n');

  const top = await ctl('top', '-n', '3');
  t.match(top.out, /^KEY +SCORE +HOLDS +DROPS +DELIVERED\n(ip|net):/m);
  const tj = JSON.parse((await ctl('--json', 'top', '--by', 'holds', '-n', '2')).out) as { rows: { key: string; holds: number }[] };
  t.equal(tj.rows[0]?.holds, 1);

  // explain: allow-listed, fresh, bad.
  const allowed = await ctl('explain', '-c', '192.0.2.44', '--helo', '1.2.3.4');
  t.match(allowed.out, /^rcpt from 192\.0\.2\.44: accept\nrule allow 192\.0\.2\.0\/24/m);
  const fresh = await ctl('explain', '-c', '192.168.77.1', '--helo', 'mx.example.net', '--client-name', 'mx.example.net');
  t.match(fresh.out, /: pass\nrule reputation, score 0/);
  const badc = await ctl('--json', 'explain', '-c', '198.51.100.99', '--helo', '198.51.100.99');
  const bj = JSON.parse(badc.out) as { verdict: { kind: string; delayMs: number; reason: { trace: string[] } } };
  t.ok(bj.verdict.delayMs > 0 || bj.verdict.kind !== 'pass', `bad client: ${bj.verdict.kind}, held ${bj.verdict.delayMs} ms`);
  t.match(bj.verdict.reason.trace.join('\n'), /bare_ip_helo/);
  const shownAgain = JSON.parse((await ctl('--json', 'show', '198.51.100.99')).out) as { entries: { abandoned_held: number }[] };
  t.equal(shownAgain.entries[0]?.abandoned_held, 1, 'explain recorded nothing');
  t.equal((await ctl('explain', '-c', 'not-an-ip')).code, 64);

  // Lists.
  const deny = await ctl('deny', '198.51.100.0/24', '--ttl', '1h', '--reason', 'botnet wave');
  t.equal(deny.code, 0);
  t.match(deny.out, /^expires +\d{4}-/m);
  const lists = await ctl('lists');
  t.match(lists.out, /^deny +198\.51\.100\.0\/24 +dynamic +\d{4}-\S+ +botnet wave$/m);
  t.match(lists.out, /^allow +192\.0\.2\.0\/24 +config/m);
  t.match((await ctl('explain', '-c', '198.51.100.7')).out, /reject \(554 5\.7\.1 Access denied\)/);
  t.equal((await ctl('deny', '300.1.2.3/8')).code, 64, 'malformed CIDR');
  t.equal((await ctl('allow', '192.0.2.9', '--ttl', 'soon')).code, 64, 'malformed duration');
  t.equal((await ctl('forget', '198.51.100.0/24')).code, 0);
  t.equal((await ctl('forget', '198.51.100.0/24')).code, 1, 'already gone');

  t.equal((await ctl('snapshot')).code, 0);
  t.equal((await ctl('log-level', 'debug')).code, 0);
  t.equal((await ctl('log-level', 'loud')).code, 64);
  t.equal((await ctl('reload')).code, 0);
  writeFileSync(cfg, 'bogus: 1\n');
  const refused = await ctl('reload');
  t.equal(refused.code, 70);
  t.match(refused.err, /reload refused/);
  t.match(refused.err, /sluice\.yaml:1: bogus: unknown key/, 'the problem itself, not a pointer to the log');
  t.equal((await ctl('frobnicate')).code, 64, 'unknown command');
  const stats = JSON.parse((await ctl('--json', 'stats')).out) as Record<string, { stage?: string; held?: string; value: number }[]>;
  t.ok(stats['abandoned_total']?.some((s) => s.stage === 'rcpt' && s.held === 'true' && s.value >= 1));
  t.ok(stats['held_seconds']?.some((s) => s.value > 0), 'held seconds summed');
  for (const [name, rows] of Object.entries(stats)) for (const r of rows) t.match(String(r.value), /^-?\d+(\.\d{1,3})?$/, `${name}: ${r.value} printed to the millisecond at most`);

  // Metrics moved with the traffic.
  const after = await scrape();
  t.match(after, /sluice_verdicts_total\{stage="rcpt",verdict="pass",via="policy"\} [1-9]/);
  t.match(after, /sluice_abandoned_total\{stage="rcpt",held="true",via="milter"\} 1/);
  t.match(after, /sluice_connections_total\{protocol="milter"\} [1-9]/);
  t.match(after, /sluice_holds_total [1-9]/);
  t.match(after, /sluice_reputation_entries [1-9]/);
  t.match(after, /sluice_event_loop_lag_seconds \d/);

  // A reader that goes away ends sluicectl quietly (it died on EPIPE with a stack trace).
  const piped = run(t, ['-c', `set -o pipefail; "${process.execPath}" "${path.join(ROOT, 'bin', 'sluicectl')}" --socket "${path.join(dir, 'control.sock')}" top --watch 0.2 | head -3`], { command: 'bash' });
  const pipedExit = await piped.exited;
  t.equal(piped.stderr(), '', 'top --watch | head: nothing on stderr');
  t.equal(pipedExit.code, 0, 'top --watch | head: exit 0');
  t.equal(piped.stdout().split('\n').length, 4, 'head had its three lines');

  d.proc.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  const gone = await ctl('status');
  t.equal(gone.code, 69, 'daemon unreachable');
  t.match(gone.err, new RegExp(`^sluicectl: cannot reach sluiced at ${dir}/control\\.sock: `));
});

t.test('top ranks clients and networks by score, holds or drops, and counts them all', async (t) => {
  const { engine, clock } = engineFor();
  const s = engine.store;
  for (let i = 1; i <= 30; i++) s.add(`ip:192.0.2.${i}`, -i, 'ab');
  for (let i = 1; i <= 5; i++) for (let k = 0; k < i; k++) s.add(`net:198.51.${i}.0/24`, -1, 'abh');
  s.add('helo:zombie.example', -100, 'abh');
  const ctl = controller(new EngineOperator(engine, clock.now));
  const top = async (by: string, n: number) => (await commands(ctl, clock.now)({ v: 1, cmd: 'top', args: { by, n } })) as { total: number; rows: { key: string; score: number; holds: number; drops: number }[] };
  const byScore = await top('score', 3);
  t.equal(byScore.total, 35, 'every client and network counted; HELO and domain keys are not ranked');
  t.same(byScore.rows.map((r) => r.key), ['ip:192.0.2.30', 'ip:192.0.2.29', 'ip:192.0.2.28'], 'worst score first');
  const byHolds = await top('holds', 2);
  t.same(byHolds.rows.map((r) => [r.key, r.holds]), [['net:198.51.5.0/24', 5], ['net:198.51.4.0/24', 4]], 'most holds first');
  const byDrops = await top('drops', 40);
  t.equal(byDrops.rows.length, 35, 'n larger than the store: all of them');
  t.same(byDrops.rows.slice(0, 2).map((r) => r.drops), [5, 4], 'most drops first');
  t.ok(byDrops.rows.slice(5).every((r) => r.drops === 1), 'then the rest');
});

t.test('counts kept as plain numbers reach every scrape exactly, and a scrape does not add them again', async (t) => {
  const { Metrics } = await import('../dist/metrics/metrics.js');
  const m = new Metrics({ lruSize: () => 0, lruEvictions: () => 0, holdsActive: () => 0, openConnections: () => 0, loopLagMs: () => 0, fleetWrites: () => ({ pending: 0, dropped: 0 }), patience: () => [] });
  for (let i = 0; i < 3; i++) m.connected('milter');
  m.connected('policy');
  for (let i = 0; i < 5; i++) m.verdict('rcpt', 'pass', 'policy');
  m.verdict('eom', 'reject', 'milter');
  m.abandonedAt('rcpt', true, 'milter');
  for (let scrape = 1; scrape <= 2; scrape++) {
    const text = await m.registry.metrics();
    t.match(text, /^sluice_connections_total\{protocol="milter"\} 3$/m, `scrape ${scrape}`);
    t.match(text, /^sluice_connections_total\{protocol="policy"\} 1$/m);
    t.notMatch(text, /protocol="control"/, 'no series for a protocol with no connection');
    t.match(text, /^sluice_verdicts_total\{stage="rcpt",verdict="pass",via="policy"\} 5$/m);
    t.match(text, /^sluice_verdicts_total\{stage="eom",verdict="reject",via="milter"\} 1$/m);
    t.match(text, /^sluice_abandoned_total\{stage="rcpt",held="true",via="milter"\} 1$/m);
  }
  m.connected('milter');
  t.match(await m.registry.metrics(), /^sluice_connections_total\{protocol="milter"\} 4$/m, 'and one more after');
});

t.test('stats: sums of seconds to the millisecond, without float noise', async (t) => {
  const { startDaemon } = await import('./helpers/daemon.js');
  const h = await startDaemon(t);
  for (const s of [0.1, 0.2, 48.001, 0.001]) h.daemon.metrics.heldSeconds.observe(s);
  const stats = await h.daemon.stats() as Record<string, { series?: string; value: number }[]>;
  const sum = stats['held_seconds']?.find((r) => r.series === 'held_seconds_sum');
  t.equal(sum?.value, 48.302, 'printed as 48.302, not 48.302000000000006');
});

t.test('explain holds as the policy service would: cut to policy.timeout minus policy.hold_margin', async (t) => {
  const { engine, clock } = engineFor('tarpit:\n  hold_per_point: 4s\n  min_hold: 4s\n  max_hold: 60s\n');
  const ctl = controller(new EngineOperator(engine, clock.now), { timeout: 10_000, hold_margin: 4_000 });
  const ask = async (args: Record<string, unknown>) => (await commands(ctl, clock.now)({ v: 1, cmd: 'explain', args })) as { verdict: { delayMs: number; reason: { trace: string[] } } };
  const raw = await engine.explain({ stage: 'rcpt', session: 'x', via: 'policy', mta: 'postfix', client: '203.0.113.50', port: 0, clientName: 'unknown', helo: '203.0.113.50', sender: '', recipient: '', recipientCount: 0, size: 0, queueId: '', saslUser: '', tls: undefined, stress: false, repeat: false });
  t.ok(raw.delayMs > 6000, `the engine alone asks for ${raw.delayMs} ms`);
  const v = (await ask({ client: '203.0.113.50', helo: '203.0.113.50' })).verdict;
  t.equal(v.delayMs, 6000, 'explain says the 6 s the daemon would hold');
  t.match(v.reason.trace.at(-1), /^hold cut to 6000 ms: policy\.timeout 10000 ms minus policy\.hold_margin 4000 ms$/);
  t.equal((await ask({ client: '203.0.113.50', helo: '203.0.113.50', stress: true })).verdict.delayMs, 0, 'and nothing under stress=yes');
});
