// sluiced.ts - the daemon's command line.
//
//   sluiced [--config FILE] [--foreground] [--log-level LEVEL]
//   sluiced [--config FILE] --check-config | --print-config
//   sluiced --version
//
// Without --foreground it starts a detached copy of itself, waits until that
// copy listens (or fails, and sends why over IPC), prints where (or the
// problems), and returns. Exit statuses: 0 ok, 64 a bad option (EX_USAGE,
// one line), 78 configuration (EX_CONFIG: bad file, endpoint that cannot be
// opened, state directory not writable), 70 anything else (EX_SOFTWARE).
// Problems are printed one per line, never as a stack trace.

import { Command, Option } from '@commander-js/extra-typings';
import { spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { firstFew, loadConfig, formatProblem } from '../config/load.js';
import { LOG_LEVELS } from '../config/schema.js';
import { SluiceError } from '../shield/errors.js';
import { Daemon } from './daemon.js';
import type { EarlySignals } from './early-signals.js';
import { ensureStateDir, stateDirFor } from './state-dir.js';
import { VERSION } from './version.js';

export const EX_OK = 0;
export const EX_USAGE = 64;
export const EX_SOFTWARE = 70;
export const EX_CONFIG = 78;


function fail(message: string, status: number): never {
  process.stderr.write(`sluiced: ${message.split('\n').join('\nsluiced: ')}\n`);
  process.exit(status);
}

function statusOf(err: unknown): number {
  return err instanceof SluiceError && err.code >= 500 && err.code < 600 ? EX_CONFIG : EX_SOFTWARE;
}

/** `early`: the stop and reload signals bin/sluiced kept while this loaded (early-signals.ts). */
export async function main(argv: string[], early?: EarlySignals): Promise<void> {
  const program = new Command()
    .name('sluiced')
    .description('sluice, a traffic-shaping daemon for mail servers: a Postfix policy service and a milter (Postfix, Sendmail) that hold, defer or reject clients at each SMTP stage from per-client reputation')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .option('-c, --config <file>', 'YAML configuration file (default: built-in defaults, loopback only)')
    .option('--check-config', 'validate the configuration, print every problem, exit 0 or 78')
    .option('--print-config', 'print the effective configuration (file merged over defaults) as YAML')
    .option('-f, --foreground', 'stay in the foreground, logging to stdout unless log.file is set')
    .addOption(new Option('-l, --log-level <level>', 'override log.level').choices(LOG_LEVELS))
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`sluiced: ${str.replace(/^error: /, '').trimEnd()} (see sluiced --help)\n`) });
  try {
    program.parse(argv);
  } catch (err) {
    // commander's own: --help and --version (0), or a usage problem, said in one line above.
    const code = (err as { exitCode?: number }).exitCode ?? EX_USAGE;
    process.exit(code === 0 ? EX_OK : EX_USAGE);
  }
  const opts = program.opts();
  // Only the foreground daemon acts on a kept signal; elsewhere a stop has its default action, as it would have had.
  if (opts.checkConfig || opts.printConfig || !opts.foreground) early?.release();

  if (opts.checkConfig || opts.printConfig) {
    const loaded = await loadConfig(opts.config);
    if (!loaded.ok) fail(loaded.problems.map(formatProblem).join('\n'), EX_CONFIG);
    if (opts.printConfig) process.stdout.write(stringify(loaded.raw));
    else process.stdout.write(`sluiced: ${loaded.file}: configuration OK\n`);
    return;
  }

  if (!opts.foreground) return detach(argv, opts.config);

  let daemon: Daemon;
  try {
    daemon = await Daemon.start({
      configFile: opts.config,
      logLevel: opts.logLevel,
      signals: true,
      onStopped: () => void daemon.closeLog().finally(() => process.exit(EX_OK)),
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    // A detaching parent is told why first (it prints the problems themselves).
    if (process.send) process.send({ problems: message.split('\n') }, () => fail(message, statusOf(err)));
    else fail(message, statusOf(err));
    return;
  }
  // Tell a detaching parent that we are up.
  if (process.send) {
    process.send({ ready: true, listen: daemon.endpoints, pid: process.pid });
    process.disconnect();
  }
  // A SIGTERM or SIGHUP that came while starting now reaches the daemon's handlers.
  early?.release();
}

/** The problems a failed start sent, the first few and how many more (in the log); else where to look. */
function shown(problems: readonly string[], where: string): string {
  return problems.length === 0 ? `see ${where}` : firstFew(problems, (n) => `(and ${n} more: see ${where})`).join('\n');
}

/** argv is the whole process.argv. Starts `sluiced --foreground` detached, logging to a file, and reports how it went. */
async function detach(argv: string[], configFile: string | undefined): Promise<void> {
  const loaded = await loadConfig(configFile);
  if (!loaded.ok) fail(loaded.problems.map(formatProblem).join('\n'), EX_CONFIG);
  const stateDir = stateDirFor(loaded.config.state_dir);
  try {
    await ensureStateDir(stateDir);
  } catch (err) {
    fail((err as Error).message, EX_CONFIG);
  }
  const logFile = loaded.config.log.file || path.join(stateDir, 'sluiced.log');
  const out = openSync(logFile, 'a');
  const child = spawn(process.execPath, [...process.execArgv, ...argv.slice(1), '--foreground'], {
    detached: true,
    stdio: ['ignore', out, out, 'ipc'],
  });
  let problems: readonly string[] = [];
  const result = await new Promise<{ ok: boolean; text: string; code: number }>((resolve) => {
    child.on('message', (m: { listen?: { policy: string[]; milter: string[] }; pid?: number; problems?: string[] }) => {
      if (m.problems) problems = m.problems;
      else resolve({ ok: true, code: 0, text: `started, pid ${m.pid}; policy on ${m.listen?.policy.join(', ') || '(none)'}, milter on ${m.listen?.milter.join(', ') || '(none)'}; log: ${logFile}` });
    });
    child.once('exit', (code) => resolve({ ok: false, code: code ?? EX_SOFTWARE, text: `failed to start (exit ${code}):\n${shown(problems, logFile)}` }));
  });
  if (!result.ok) fail(result.text, result.code);
  child.unref();
  child.disconnect();
  process.stdout.write(`sluiced: ${result.text}\n`);
}
