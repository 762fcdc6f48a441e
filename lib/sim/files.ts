// files.ts - `sluicectl simulate`: scenario files in, one report each out.
//
// Every scenario is read and checked before anything runs: one bad file
// stops the command with its problems (file:line, key, what is wrong) and
// exit 65. The config under test (-c) is loaded as sluiced loads it; a bad
// one exits 78. A server a scenario needs that is not installed exits 69
// with the package to install. Reports are a table each on a terminal, or
// one JSON document (an array, one report per scenario) with --json; a
// progress line goes to standard error on a terminal.

import { loadConfig, formatProblem } from '../config/load.js';
import { loadScenario, ScenarioError, type Scenario } from './scenario.js';
import { simulate } from './run.js';
import { formatReport, type Report } from './report.js';
import { MissingTool } from './servers.js';

export interface SimulateFilesOptions {
  readonly config?: string;
  readonly store?: string;
  readonly json: boolean;
  readonly tty: boolean;
}

export interface SimulateFilesResult {
  /** 0, 65 (a bad scenario), 69 (a server missing), 78 (a bad config). */
  readonly status: number;
  readonly output?: string;
  readonly problem?: string;
}

export async function simulateFiles(files: readonly string[], o: SimulateFilesOptions): Promise<SimulateFilesResult> {
  const loaded = await loadConfig(o.config);
  if (!loaded.ok) return { status: 78, problem: loaded.problems.map(formatProblem).join('\n') };
  const scenarios: [string, Scenario][] = [];
  const problems: string[] = [];
  for (const f of files) {
    const r = await loadScenario(f);
    if (r.ok) scenarios.push([f, r.scenario]);
    else problems.push(...r.problems.map(formatProblem));
  }
  if (problems.length > 0) return { status: 65, problem: problems.join('\n') };
  const reports: Report[] = [];
  let text = '';
  for (const [file, s] of scenarios) {
    const progress = o.tty ? (done: number): void => { process.stderr.write(`\r${s.name}: ${Math.round(done * 100)}% of the simulated time`); } : undefined;
    try {
      reports.push(await simulate(s, { config: loaded.config, store: o.store, progress }));
    } catch (err) {
      if (err instanceof MissingTool) return { status: 69, problem: `${file}: ${err.message}` };
      if (err instanceof ScenarioError) return { status: 65, problem: `${file}: ${err.message}` };
      throw err;
    } finally {
      if (o.tty) process.stderr.write('\r\x1b[K');
    }
    if (!o.json) text += `${formatReport(reports.at(-1)!)}\n`;
  }
  return { status: 0, output: o.json ? `${JSON.stringify(reports, null, 2)}\n` : text };
}
