// npm run bench:simulate - how fast sluicectl simulate runs: simulated
// sessions per second of wall time, beside the same run with every question
// answered at once by a rule in front of the engine (the agenda, the
// sessions and the dice alone: the difference is the engine's cost in the
// simulation), and a 24 h scenario with three hosts sharing a real
// redis-server and 10,000 clients (about 1.4 million sessions), whose wall
// time must stay under 3 minutes on this machine.
import { fromText } from '../../dist/config/load.js';
import type { Config } from '../../dist/config/schema.js';
import { PASS } from '../../dist/engine/types.js';
import { scenarioFromText, type Scenario } from '../../dist/sim/scenario.js';
import { simulate } from '../../dist/sim/run.js';
import { table } from './common.js';

const config = (fromText('', 'defaults') as { config: Config }).config;

function scenario(hours: number, hosts: number, fleet: boolean): Scenario {
  const r = scenarioFromText(`name: bench, ${hours} h, ${hosts} hosts
duration: ${hours}h
seed: 1
hosts: { count: ${hosts}, smtpd_processes: 100, fleet: ${fleet} }
populations:
  - { name: real, kind: legitimate, clients: 1000, network: 172.16.0.0/12, every: 10m, patience: 300s, retry: [5m, 10m, 20m, 40m], abandon_after_rcpt: 0.02 }
  - { name: bots, kind: zombie, clients: 9000, per_network: 10, network: 10.0.0.0/8, every: 10m, sender_domain: example.org, patience: 10s, quit: 0.5, abandon_after_rcpt: 0.5 }
`, 'bench.yaml');
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  return r.scenario;
}

async function timed(s: Scenario, reference: boolean): Promise<{ sessions: number; seconds: number }> {
  const t0 = process.hrtime.bigint();
  const r = await simulate(s, { config, rules: reference ? [{ decide: () => PASS }] : undefined });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { sessions: r.hosts.reduce((n, h) => n + h.sessions, 0), seconds };
}

const rows: (string | number)[][] = [['run', 'sessions', 'wall s', 'sessions/s', 'reference sessions/s', 'ratio', 'target']];
const short = scenario(2, 1, false);
const engine = await timed(short, false);
const ref = await timed(short, true);
rows.push(['2 h, 1 host, 10,000 clients', engine.sessions, engine.seconds, engine.sessions / engine.seconds, ref.sessions / ref.seconds, (engine.sessions / engine.seconds) / (ref.sessions / ref.seconds), '']);
const day = await timed(scenario(24, 3, true), false);
rows.push(['24 h, 3 hosts + store, 10,000 clients', day.sessions, day.seconds, day.sessions / day.seconds, '', '', `wall < 180 s: ${day.seconds < 180 ? 'met' : 'NOT met'}`]);
process.stdout.write(table(rows) + '\n');
