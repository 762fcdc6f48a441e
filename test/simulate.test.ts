// sluicectl simulate: the scenario format (every refusal at its line), the
// same seed giving the same report, and every key moving the report the way
// it must, each in a small scenario where it alone changes. The runs use the
// real engine; a DNS list or a fleet store is a real rbldnsd or
// redis-server.
import t from 'tap';
import path from 'node:path';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { fromText } from '../dist/config/load.js';
import type { Config } from '../dist/config/schema.js';
import { scenarioFromText, type Scenario } from '../dist/sim/scenario.js';
import { simulate } from '../dist/sim/run.js';
import { populate, random } from '../dist/sim/world.js';
import { formatReport, type PopulationReport, type Report } from '../dist/sim/report.js';
import { installed, RBLDNSD, REDIS_SERVER } from '../dist/sim/servers.js';
import { run } from './helpers/spawn.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const DEFAULTS = (fromText('', 'defaults') as { config: Config }).config;

/** A small scenario: 20 real MTAs and 60 zombies over 20 minutes, with `over` lines replacing or adding keys. */
function yaml(o: { top?: string; real?: string; bot?: string } = {}): string {
  return `name: small
duration: 20m
seed: 7
hosts:
  count: 1
  smtpd_processes: 100
${o.top ?? ''}
populations:
  - name: real
    kind: legitimate
    clients: 20
    network: 172.16.0.0/16
    every: 5m
    patience: 300s
    retry: [1m, 5m]
${o.real ?? ''}
  - name: bots
    kind: zombie
    clients: 60
    per_network: 10
    network: 10.0.0.0/16
    every: 2m
    sender_domain: example.org
    patience: 10s
${o.bot ?? ''}
`;
}

function scenario(text: string): Scenario {
  const r = scenarioFromText(text, 'test.yaml');
  if (!r.ok) throw new Error(r.problems.map((p) => `${p.line}: ${p.key}: ${p.message}`).join('\n'));
  return r.scenario;
}

async function sim(text: string, config: Config = DEFAULTS): Promise<Report> {
  return simulate(scenario(text), { config });
}

const pop = (r: Report, name: string): PopulationReport => r.populations.find((p) => p.name === name)!;

t.test('bad scenarios: each problem refused at its line, with its key', async (t) => {
  const bad: [string, string, number, RegExp][] = [
    ['an unknown key', yaml({ top: 'colour: blue' }), 7, /colour: unknown key/],
    ['a key given twice', yaml().replace('seed: 7', 'seed: 7\nseed: 8'), 4, /[Dd]uplicate|unique/],
    ['a bad duration', yaml().replace('duration: 20m', 'duration: soon'), 2, /duration: "soon" is not a duration/],
    ['a duration over 7d', yaml().replace('duration: 20m', 'duration: 8d'), 2, /duration: must be at most 7d/],
    ['a bad seed', yaml().replace('seed: 7', 'seed: -1'), 3, /seed/],
    ['no hosts', yaml().replace('  count: 1', '  count: 0'), 5, /hosts\.count/],
    ['no smtpd processes', yaml().replace('smtpd_processes: 100', 'smtpd_processes: 0'), 6, /hosts\.smtpd_processes/],
    ['fleet not a boolean', yaml({ top: '  fleet: yes please' }), 7, /hosts\.fleet: expected true or false/],
    ['a bad zone', yaml({ top: 'dns_list: not a zone' }), 7, /dns_list: expected a DNS zone name/],
    ['a scanner catching more than all', yaml({ top: 'scanner:\n  catches: 1.5' }), 8, /scanner\.catches/],
    ['an unknown kind', yaml().replace('kind: legitimate', 'kind: friendly'), 10, /populations\.0\.kind/],
    ['no clients', yaml().replace('clients: 20', 'clients: 0'), 11, /populations\.0\.clients/],
    ['a network that is not a CIDR', yaml().replace('172.16.0.0/16', '172.16.0.0'), 12, /populations\.0\.network: "172\.16\.0\.0" is not a CIDR/],
    ['a network narrower than a /24', yaml().replace('172.16.0.0/16', '172.16.0.0/28'), 12, /populations\.0\.network: .*from \/8 to \/24/],
    ['per_network over 254', yaml().replace('per_network: 10', 'per_network: 300'), 20, /populations\.1\.per_network/],
    ['an unknown rdns', yaml({ real: '    rdns: sometimes' }), 16, /populations\.0\.rdns/],
    ['every 0', yaml().replace('every: 5m', 'every: 0s'), 13, /populations\.0\.every: must be above 0/],
    ['a bad retry', yaml().replace('retry: [1m, 5m]', 'retry: [1m, later]'), 15, /populations\.0\.retry\.1: "later" is not a duration/],
    ['a share above 1', yaml({ bot: '    abandon_after_rcpt: 1.5' }), 25, /populations\.1\.abandon_after_rcpt/],
    ['quit below 0', yaml({ real: '    quit: -0.1' }), 16, /populations\.0\.quit/],
    ['listed without a DNS list', yaml({ bot: '    listed: 0.3' }), 25, /populations\.1\.listed: a population is listed only on a DNS list: set dns_list/],
    ['a spam share above 1', yaml({ bot: '    spam: 2' }), 25, /populations\.1\.spam/],
    ['a bad size', yaml({ real: '    size: huge' }), 16, /populations\.0\.size: "huge" is not a size/],
    ['a bad bandwidth', yaml({ real: '    bandwidth: fast' }), 16, /populations\.0\.bandwidth: "fast" is not a bandwidth/],
    ['a bad rtt', yaml({ real: '    rtt: quick' }), 16, /populations\.0\.rtt/],
    ['two populations of one name', yaml().replace('name: bots', 'name: real'), 17, /populations\.1\.name: "real" names two populations/],
    ['a bad recipients count', yaml({ real: '    recipients: 0' }), 16, /populations\.0\.recipients/],
    ['a bad sender domain', yaml().replace('sender_domain: example.org', 'sender_domain: "@@"'), 23, /populations\.1\.sender_domain/],
    ['a bad patience', yaml().replace('patience: 10s', 'patience: 0ms'), 24, /populations\.1\.patience: must be above 0/],
    ['no populations', 'name: x\nduration: 1h\nhosts: {}\npopulations: []\n', 4, /populations/],
    ['a missing name', yaml().replace('name: small\n', ''), 1, /name/],
  ];
  for (const [what, text, line, message] of bad) {
    const r = scenarioFromText(text, 'bad.yaml');
    t.notOk(r.ok, `${what}: refused`);
    if (r.ok) continue;
    const p = r.problems.find((x) => message.test(`${x.key}: ${x.message}`) || message.test(x.message));
    t.ok(p, `${what}: ${r.problems.map((x) => `${x.line}: ${x.key}: ${x.message}`).join(' | ')}`);
    if (p && line > 1) t.equal(p.line, line, `${what}: at line ${line}`);
  }
});

t.test('sluicectl simulate: a bad scenario exits 65 before anything runs, naming file:line; a bad config exits 78', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-sim-'));
  const good = path.join(dir, 'good.yaml');
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(good, yaml());
  writeFileSync(bad, yaml().replace('every: 2m', 'every: often'));
  const r = run(t, [path.join(ROOT, 'bin', 'sluicectl'), 'simulate', good, bad]);
  t.equal((await r.exited).code, 65);
  t.match(r.stderr(), new RegExp(`${bad.replace(/[.]/g, '\\.')}:22: populations\\.1\\.every: "often" is not a duration`));
  t.equal(r.stdout(), '', 'nothing ran');
  const conf = path.join(dir, 'bad.conf');
  writeFileSync(conf, 'tarpit:\n  budget: lots\n');
  const c = run(t, [path.join(ROOT, 'bin', 'sluicectl'), 'simulate', '-c', conf, good]);
  t.equal((await c.exited).code, 78);
  t.match(c.stderr(), /bad\.conf:2: tarpit\.budget/);
  const ok = run(t, [path.join(ROOT, 'bin', 'sluicectl'), '--json', 'simulate', good]);
  t.equal((await ok.exited).code, 0);
  const reports = JSON.parse(ok.stdout()) as Report[];
  t.equal(reports.length, 1, 'one JSON document, a report per scenario');
  t.match(reports[0], { scenario: 'small', seed: 7, populations: [{ name: 'real' }, { name: 'bots' }], totals: [{ kind: 'legitimate' }, { kind: 'zombie' }] });
  const table = run(t, [path.join(ROOT, 'bin', 'sluicectl'), 'simulate', good]);
  t.equal((await table.exited).code, 0);
  t.match(table.stdout(), /acc%: accepted/, 'the table says what its columns mean');
  t.ok(table.stdout().split('\n').every((l) => l.length <= 100), 'within 100 columns');
});

t.test('the same seed gives the same report, byte for byte; another seed another', async (t) => {
  const a = JSON.stringify(await sim(yaml()));
  const b = JSON.stringify(await sim(yaml()));
  t.equal(a, b, 'same seed, same JSON');
  const c = JSON.stringify(await sim(yaml().replace('seed: 7', 'seed: 8')));
  t.not(a, c, 'another seed, another run');
});

t.test('addresses: per_network to a /24 in order; overlapping networks share /24s, never an address; IPv6 one /64 each', async (t) => {
  const s = scenario(yaml().replace('network: 10.0.0.0/16', 'network: 172.16.0.0/16'));
  const [real, bots] = populate(s, random(1));
  t.equal(real![0]!.address, '172.16.0.1');
  t.equal(real![1]!.address, '172.16.1.1', 'one a /24');
  t.equal(bots![0]!.address, '172.16.0.2', 'the other population shares the /24 ...');
  t.equal(bots![9]!.address, '172.16.0.11', '... ten to a /24');
  t.equal(bots![10]!.address, '172.16.1.2');
  const all = [...real!, ...bots!].map((c) => c.address);
  t.equal(new Set(all).size, all.length, 'never an address twice');
  const v6 = populate(scenario(yaml().replace('network: 10.0.0.0/16', 'network: 2001:db8::/32')), random(1))[1]!;
  t.equal(v6[0]!.address, '2001:db8:0:1::1');
  t.equal(v6[1]!.address, '2001:db8:0:2::1', 'a /64 each within the /48');
  t.equal(v6[10]!.address, '2001:db8:1:1::1', 'the next /48 after per_network');
  const none = populate(scenario(yaml({ bot: '    rdns: none' })), random(1))[1]!;
  t.match(none[0], { name: 'unknown', helo: '[10.0.0.1]' }, 'rdns none: no name, an address literal');
  const generic = populate(scenario(yaml({ bot: '    rdns: generic' })), random(1))[1]!;
  t.match(generic[0], { name: 'host-10-0-0-1.dsl.example.net', helo: 'host-10-0-0-1.dsl.example.net' });
});

t.test('each key moves the report the way it must', async (t) => {
  const base = await sim(yaml());
  t.match(base, { scenario: 'small', hosts: [{ host: 1 }] });
  t.equal(pop(base, 'real').rejected + pop(base, 'real').lost, 0, 'real mail: nothing rejected or lost');

  t.equal((await sim(yaml().replace('name: small', 'name: renamed'))).scenario, 'renamed', 'name');
  t.ok(pop(await sim(yaml().replace('duration: 20m', 'duration: 40m')), 'bots').messages > 1.5 * pop(base, 'bots').messages, 'duration: more messages');
  t.equal((await sim(yaml().replace('  count: 1', '  count: 3'))).hosts.length, 3, 'hosts.count: three hosts');
  t.ok(pop(await sim(yaml().replace('clients: 20', 'clients: 40')), 'real').messages > 1.5 * pop(base, 'real').messages, 'clients: more messages');
  t.ok(pop(await sim(yaml().replace('every: 5m', 'every: 1m')), 'real').messages > 3 * pop(base, 'real').messages, 'every: more messages');
  t.equal((await sim(yaml().replace('name: real', 'name: mtas'))).populations[0]!.name, 'mtas', 'population name');
  t.equal((await sim(yaml().replace('kind: legitimate', 'kind: zombie'))).totals.length, 1, 'kind: all counted as botnet mail');

  // Holds: no reverse name and a bare-IP HELO get held; clients that wait 5 s hang up under them.
  const held = await sim(yaml({ bot: '    rdns: none' }));
  t.ok(pop(held, 'bots').holds_granted > pop(base, 'bots').holds_granted, `rdns none: more holds (${pop(held, 'bots').holds_granted} vs ${pop(base, 'bots').holds_granted})`);
  const patient = await sim(yaml({ bot: '    rdns: none' }).replace('patience: 10s', 'patience: 300s'));
  const impatient = await sim(yaml({ bot: '    rdns: none' }).replace('patience: 10s', 'patience: 2s'));
  t.ok(pop(impatient, 'bots').holds_abandoned > pop(patient, 'bots').holds_abandoned, `patience: the impatient hang up under holds (${pop(impatient, 'bots').holds_abandoned} vs ${pop(patient, 'bots').holds_abandoned})`);

  // The MTA's process limit: five processes and holds make real mail wait.
  const five = await sim(yaml({ bot: '    rdns: none' }).replace('smtpd_processes: 100', 'smtpd_processes: 5').replace('patience: 10s', 'patience: 300s'));
  t.ok(pop(five, 'real').waited_for_process > 0, `smtpd_processes 5: real mail waited for a process (${pop(five, 'real').waited_for_process} sessions)`);
  t.ok(pop(five, 'real').delay_p99_s > pop(patient, 'real').delay_p99_s, `and was delayed (p99 ${pop(five, 'real').delay_p99_s} s vs ${pop(patient, 'real').delay_p99_s} s)`);
  t.ok(five.hosts[0]!.peak_busy_processes <= 5, 'never more than five busy');

  // Retries: greylisting defers every first try; with no retry the message is lost, with one it goes through.
  const grey = fromText('greylist:\n  enabled: true\n  min_delay: 1m\n', 'grey.yaml') as { config: Config };
  const noRetry = await sim(yaml().replace('retry: [1m, 5m]', 'retry: []'), grey.config);
  const retried = await sim(yaml().replace('retry: [1m, 5m]', 'retry: [2m]'), grey.config);
  t.ok(pop(noRetry, 'real').lost > 0, `retry []: deferred mail is lost (${pop(noRetry, 'real').lost})`);
  t.equal(pop(retried, 'real').lost, 0, `retry [2m]: none lost (accepted ${pop(retried, 'real').accepted_pct} %)`);
  t.ok(pop(retried, 'real').deferred_once_pct > 0, `deferred at least once: ${pop(retried, 'real').deferred_once_pct} %`);
  t.ok(pop(retried, 'real').delay_max_s >= 120, `and delayed by the retry (max ${pop(retried, 'real').delay_max_s} s)`);

  // The session's length: recipients, rtt, size and bandwidth hold the process longer; a drop frees it sooner than QUIT.
  const busy = (r: Report): number => r.hosts[0]!.busy_process_seconds;
  t.ok(busy(await sim(yaml({ real: '    recipients: 5' }))) > busy(base), 'recipients: longer sessions');
  t.ok(busy(await sim(yaml({ real: '    rtt: 2s' }))) > busy(base), 'rtt: longer sessions');
  t.ok(busy(await sim(yaml({ real: '    size: 5MiB' }))) > busy(base), 'size: longer sessions');
  t.ok(busy(await sim(yaml({ real: '    bandwidth: 10KiB/s' }))) > busy(base), 'bandwidth: longer sessions');
  t.ok(busy(await sim(yaml({ real: '    quit: 0', bot: '    quit: 0' }).replace('rtt', 'rtt'))) < busy(base), 'quit 0: drops free the process sooner');

  // Dropping after RCPT: never delivered, retried by retry.
  const dropper = await sim(yaml({ bot: '    abandon_after_rcpt: 1' }));
  t.equal(pop(dropper, 'bots').accepted_pct, 0, 'abandon_after_rcpt 1: nothing accepted');
  t.equal(pop(dropper, 'bots').lost + pop(dropper, 'bots').rejected, pop(dropper, 'bots').messages, 'and, with no retry, all lost (or rejected once they had dropped enough)');

  // The sender domain: zombies forging the domain real mail delivers for earn nothing by it (a forged domain is no
  // credit), so the report does not move; with the credit allowed to anyone it would (the engine does see the domain).
  const forged = await sim(yaml({ bot: '    rdns: none' }).replace('sender_domain: example.org', 'sender_domain: example.com'));
  t.equal(JSON.stringify(pop(forged, 'bots')), JSON.stringify(pop(held, 'bots')), 'sender_domain: forging the real senders\' domain earns the zombies nothing');

  // per_network: zombies crowded in few /24s share their networks' reputation.
  const spread = await sim(yaml({ bot: '    rdns: none' }).replace('per_network: 10', 'per_network: 1'));
  t.not(JSON.stringify(pop(spread, 'bots')), JSON.stringify(pop(held, 'bots')), 'per_network: the report moves');

  // network: an IPv6 network runs the same way.
  const v6 = await sim(yaml().replace('network: 10.0.0.0/16', 'network: 2001:db8::/32'));
  t.ok(pop(v6, 'bots').messages > 0 && pop(v6, 'bots').sessions > 0, 'network: IPv6 clients');

  // spam: read only by a scanner; without one it changes nothing.
  t.equal(JSON.stringify(await sim(yaml({ bot: '    spam: 0.9' }))), JSON.stringify(base), 'spam: no change without a scanner');
  // scanner: its verdicts keep spam out; with feedback off, or for mail that is not spam, nothing moves.
  const scanned = (top: string): Promise<Report> => sim(yaml({ bot: '    retry: [5m]\n    spam: 0.95', top }).replace('patience: 10s', 'patience: 60s'));
  const off = await scanned('scanner:\n  catches: 0.9\n  feedback: false');
  const on = await scanned('scanner:\n  catches: 0.9');
  t.ok(pop(on, 'bots').accepted_pct < pop(off, 'bots').accepted_pct / 2, `scanner: spam accepted ${pop(off, 'bots').accepted_pct} % without its verdicts, ${pop(on, 'bots').accepted_pct} % with them`);
  t.equal(pop(on, 'real').accepted_pct, 100, 'scanner: real mail, called ham, all accepted');
  const caughtNone = await scanned('scanner:\n  catches: 0');
  t.equal(pop(caughtNone, 'bots').accepted_pct, pop(off, 'bots').accepted_pct, 'scanner.catches 0: spam called ham keeps it in');
  t.ok(pop(await scanned('scanner:\n  catches: 0.9\n  false_positives: 1'), 'real').accepted_pct < 100, 'scanner.false_positives: real mail called spam is deferred');
});

t.test('a DNS list and a fleet store are real servers', { skip: installed(RBLDNSD, '-h') && installed(REDIS_SERVER) ? false : 'rbldnsd or redis-server is not installed (.ci/run installs them)' }, async (t) => {
  const listed = yaml({ top: 'dns_list: sim.bl', bot: '    listed: 1' });
  const asked = fromText('dnsbl:\n  sites: [sim.bl]\n', 'c.yaml') as { config: Config };
  const withList = await sim(listed, asked.config);
  t.ok(withList.dns_queries > 0, `dns_list: the zone is asked (${withList.dns_queries} queries)`);
  t.equal(pop(withList, 'bots').accepted_pct, 0, 'listed 1: every zombie deferred');
  t.equal(pop(withList, 'real').accepted_pct, 100, 'real mail untouched');
  const notAsked = await sim(listed);
  t.equal(notAsked.dns_queries, 0, 'the config under test decides whether to ask');
  const fleet = await sim(yaml({ top: '  fleet: true' }).replace('  count: 1', '  count: 2'));
  t.ok(fleet.store_calls > 0, `fleet: the hosts use the store (${fleet.store_calls} calls)`);
  t.equal((await sim(yaml().replace('  count: 1', '  count: 2'))).store_calls, 0, 'and not without it');
});

t.test('long delays keep their columns apart', async (t) => {
  const p: PopulationReport = {
    name: 'patient botnet', kind: 'zombie', messages: 72289, accepted_pct: 0.8, accepted_first_try_pct: 0.7, deferred_once_pct: 37.6, rejected: 49365, lost: 22329,
    delay_p50_s: 1050.6, delay_p99_s: 4561.2, delay_max_s: 4831.2, sessions: 1, waited_for_process: 0, holds_granted: 23343, holds_refused_budget: 313727, holds_abandoned: 0,
  };
  const text = formatReport({ scenario: 's', seed: 1, duration_s: 7200, populations: [p], totals: [], hosts: [], store_calls: 0, dns_queries: 0, lookups_failed: 0 });
  const row = text.split('\n').find((l) => l.startsWith('patient botn'))!;
  t.match(row, / 1051 +4561 +4831 /, `each delay in its own column: ${row}`);
  t.ok(row.length <= 100);
});
