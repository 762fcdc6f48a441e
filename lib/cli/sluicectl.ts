// sluicectl.ts - the admin's command line to a running sluiced.
//
// Talks to the control socket (protocol.ts). Tables for people, --json for
// scripts. Exit statuses: 0 ok, 1 not found, 64 bad arguments (EX_USAGE),
// 65 a bad scenario file, a queue id learn cannot place, a log with no
// Postfix sessions (EX_DATAERR), 66 a log that cannot be read (EX_NOINPUT), 69 daemon unreachable, or a server
// a simulation needs missing (EX_UNAVAILABLE; the message names the socket
// or the package), 70 the command failed in the daemon, 78 a bad
// configuration file (EX_CONFIG: simulate, replay). Each problem is one line on stderr.
// The socket is --socket, else $SLUICE_SOCKET, else control.sock in the
// state directory sluiced would use.

import { ASKED } from '../engine/types.js';
import { Command, Option } from '@commander-js/extra-typings';
import net from 'node:net';
import path from 'node:path';
import { stateDirFor } from './state-dir.js';
import { VERSION } from './version.js';
import { CONTROL_VERSION, MAX_LINE, type Response } from '../control/protocol.js';
import { loadConfig, formatProblem } from '../config/load.js';
import { formatReport, replayFiles, ReplayInputError } from '../replay/run.js';
import { simulateFiles } from '../sim/files.js';
import { SYSTEM_CLOCK } from '../util/clock.js';

export const EXIT = { ok: 0, notFound: 1, usage: 64, dataErr: 65, noInput: 66, unavailable: 69, failed: 70, config: 78 } as const;

class Exit extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** One request, one response; rejects with Exit(69) when the daemon cannot be reached. */
export function request(socket: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<Response> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket);
    let buf = '';
    const fail = (why: string): void => { s.destroy(); reject(new Exit(EXIT.unavailable, `cannot reach sluiced at ${socket}: ${why}`)); };
    s.setTimeout(timeoutMs, () => fail('no answer'));
    s.on('error', (err: NodeJS.ErrnoException) => fail(err.code === 'ENOENT' ? 'no such socket (is sluiced running? see --socket)' : err.code === 'ECONNREFUSED' ? 'connection refused (sluiced not running)' : err.code === 'EACCES' ? 'permission denied (are you in the socket\'s group?)' : err.message));
    s.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      if (buf.length > 64 * MAX_LINE) fail('answer too long');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      s.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as Response);
      } catch {
        reject(new Exit(EXIT.failed, 'the daemon sent something that is not an answer'));
      }
    });
    s.on('connect', () => s.write(`${JSON.stringify({ v: CONTROL_VERSION, cmd, args })}\n`));
  });
}

function table(rows: Record<string, unknown>[], columns?: string[]): string {
  if (rows.length === 0) return '(none)';
  const cols = columns ?? Object.keys(rows[0]!);
  const cell = (v: unknown): string => (v === undefined || v === null ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]): string => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(cols.map((c) => c.toUpperCase())), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n');
}

function pairs(o: Record<string, unknown>): string {
  const w = Math.max(...Object.keys(o).map((k) => k.length));
  return Object.entries(o).map(([k, v]) => `${k.padEnd(w)}  ${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`).join('\n');
}

type Printer = (data: unknown) => string;

const print: Record<string, Printer> = {
  status: (d) => pairs(d as Record<string, unknown>),
  stats: (d) => Object.entries(d as Record<string, Record<string, unknown>[]>)
    .map(([name, values]) => `${name}\n${table(values).replace(/^/gm, '  ')}`).join('\n\n'),
  show: (d) => {
    const o = d as { target: string; entries: Record<string, unknown>[]; listed: Record<string, unknown> | null; lookups?: Record<string, { zone: string; answer: string; expires_in_s?: number }[]> };
    const l = o.listed ? `\nlisted: ${o.listed['kind']} ${o.listed['value']}${o.listed['reason'] ? ` (${o.listed['reason']})` : ''}${o.listed['expires'] ? ` until ${new Date(o.listed['expires'] as number).toISOString()}` : ''}` : '';
    const looked = Object.entries(o.lookups ?? {}).flatMap(([source, zones]) => zones.map((z) => `\n${source} ${z.zone}: ${z.answer}${z.expires_in_s !== undefined ? ` (cached for ${z.expires_in_s}s more)` : ''}`)).join('');
    return (o.entries.length ? table(o.entries, ['key', 'score', 'delivered', 'abandoned', 'abandoned_held', 'rate_exceeded', 'spam', 'ham', 'first_seen', 'last_change']) : 'no reputation entry') + l + looked;
  },
  top: (d) => {
    const o = d as { by: string; total: number; rows: Record<string, unknown>[] };
    return `${table(o.rows, ['key', 'score', 'holds', 'drops', 'delivered'])}\n(${o.rows.length} of ${o.total} clients and networks, by ${o.by})`;
  },
  explain: (d) => {
    const o = d as { event: Record<string, unknown>; verdict: { kind: string; delayMs: number; rule: string; score: number; reply?: { code: number; enhanced: string; text: string }; reason?: { trace: string[] } } };
    const v = o.verdict;
    const head = `${o.event['stage']} from ${o.event['client']}: ${v.kind}${v.delayMs ? ` after a hold of ${v.delayMs} ms` : ''}${v.reply ? ` (${v.reply.code} ${v.reply.enhanced} ${v.reply.text})` : ''}\nrule ${v.rule}, score ${v.score}`;
    return `${head}\n${(v.reason?.trace ?? []).map((l) => `  - ${l}`).join('\n')}`;
  },
  learn: (d) => {
    const o = d as { verdict: string; client: string; by: string; keys: string[]; held_ms: number };
    return `learned ${o.verdict} for ${o.client} (found by ${o.by}): ${o.keys.join(', ')}${o.held_ms ? `; its message waited out a hold of ${o.held_ms} ms, counted as a hold that failed` : ''}`;
  },
  lists: (d) => table((d as { entries: Record<string, unknown>[] }).entries.map((e) => ({ ...e, expires: e['expires'] ? new Date(e['expires'] as number).toISOString() : undefined, added: undefined })), ['kind', 'value', 'source', 'expires', 'reason']),
};

const entry: Printer = (d) => {
  const e = d as Record<string, unknown>;
  return pairs({ ...e, added: new Date(e['added'] as number).toISOString(), expires: e['expires'] ? new Date(e['expires'] as number).toISOString() : 'never' });
};
print['allow'] = entry;
print['deny'] = entry;

const simple: Printer = (d) => (d && typeof d === 'object' ? pairs(d as Record<string, unknown>) : String(d));

const toStdout = (s: string): void => { process.stdout.write(s); };

/**
 * `sluicectl top --watch | head`: once the reader has gone, sluicectl ends
 * quietly with status 0, as a command whose output was all taken would,
 * rather than dying on EPIPE with a stack trace.
 */
function quietWhenStdoutCloses(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.ok);
    process.stderr.write(`sluicectl: cannot write the answer: ${err.message}\n`);
    process.exit(EXIT.failed);
  });
}

export async function main(argv: string[], out: (s: string) => void = toStdout): Promise<number> {
  if (out === toStdout) quietWhenStdoutCloses();
  let status: number = EXIT.ok;
  const program = new Command()
    .name('sluicectl')
    .description('talk to a running sluiced over its control socket')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .option('-s, --socket <path>', 'control socket (default: $SLUICE_SOCKET, else control.sock in the state directory)')
    .option('--json', 'print the answer as JSON, for scripts')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), outputError: (s, write) => write(`sluicectl: ${s.replace(/^error: /, '')}`) })
    .showHelpAfterError(false);

  const run = async (cmd: string, args: Record<string, unknown>): Promise<void> => {
    const g = program.opts();
    const socket = g.socket ?? process.env['SLUICE_SOCKET'] ?? path.join(stateDirFor(''), 'control.sock');
    const r = await request(socket, cmd, args);
    if (!r.ok) {
      const code = r.error.code === 'not_found' ? EXIT.notFound : r.error.code === 'unknown_message' ? EXIT.dataErr : r.error.code === 'bad_request' || r.error.code === 'unknown_command' ? EXIT.usage : EXIT.failed;
      if (g.json) out(`${JSON.stringify(r.error)}\n`);
      throw new Exit(code, r.error.message);
    }
    out(`${g.json ? JSON.stringify(r.data, null, 2) : (print[cmd] ?? simple)(r.data)}\n`);
  };
  const action = (cmd: string, args: () => Record<string, unknown>) => async () => run(cmd, args());

  program.command('status').description('what sluiced is doing: endpoints, connections, holds, reputation size, errors').action(() => run('status', {}));
  program.command('stats').description('counters: verdicts by stage, holds, abandoned sessions, exceptions by code').action(() => run('stats', {}));
  program.command('show').argument('<target>', 'an address, a CIDR, a HELO name, or @domain').description('the reputation of one client, network, HELO name or sender domain')
    .action((target) => run('show', { target }));
  const top = program.command('top').description('the worst clients and networks')
    .addOption(new Option('-n, --number <n>', 'how many rows').default('20'))
    .addOption(new Option('--by <what>', 'sort by').choices(['score', 'holds', 'drops']).default('score'))
    .option('-w, --watch [seconds]', 'refresh in place, like top(1), until interrupted');
  top.action(async (o) => {
    const args = { n: Number(o.number), by: o.by };
    if (!o.watch) return run('top', args);
    const every = Number(o.watch === true ? 2 : o.watch) * 1000;
    for (;;) {
      let text = '';
      const save = out;
      out = (s) => { text += s; };
      try { await run('top', args); } finally { out = save; }
      out(`\x1b[H\x1b[2J${new Date(SYSTEM_CLOCK.now()).toISOString()}  sluicectl top --by ${o.by}\n\n${text}`);
      await new Promise((r) => setTimeout(r, every));
    }
  });
  program.command('explain').description('dry-run a decision and print its rule trace; records nothing')
    .requiredOption('-c, --client <ip>', 'client address')
    .option('--helo <name>', 'HELO name', '')
    .option('--client-name <name>', 'reverse DNS name, or unknown', 'unknown')
    .option('--sender <address>', 'envelope sender', '')
    .option('--recipient <address>', 'envelope recipient', '')
    .addOption(new Option('--stage <stage>', 'SMTP stage').choices(ASKED).default('rcpt'))
    .action((o) => run('explain', { client: o.client, helo: o.helo, client_name: o.clientName, sender: o.sender, recipient: o.recipient, stage: o.stage }));
  for (const kind of ['allow', 'deny'] as const) {
    program.command(kind).argument('<value>', 'an address or CIDR, a HELO name, or @domain')
      .description(kind === 'allow' ? 'let a client through without checks' : 'reject a client at every stage')
      .option('--ttl <duration>', 'expire after this long (e.g. 30m, 12h, 7d); default: never')
      .option('--reason <text>', 'why, for the list and the logs')
      .action((value, o) => run(kind, { value, ttl: o.ttl ?? '', reason: o.reason ?? '' }));
  }
  program.command('forget').argument('<value>', 'as for allow/deny').description('remove a dynamic list entry and the reputation of that key').action((value) => run('forget', { value }));
  program.command('learn').argument('<verdict>', 'spam or ham')
    .description('learn a content scanner\'s (or a person\'s) verdict on a message: by its queue id, or by the client that sent it')
    .option('--client <ip>', 'the client that sent it')
    .option('--queue-id <id>', 'the message\'s queue id, as the MTA logged it (sluice remembers those it saw delivered for feedback.remember)')
    .action((verdict: string, o: { client?: string; queueId?: string }) => run('learn', { verdict, client: o.client ?? '', queue_id: o.queueId ?? '' }));
  program.command('lists').description('the allow and deny lists, static and dynamic').action(action('lists', () => ({})));
  program.command('reload').description('reread the configuration file (as SIGHUP)').action(action('reload', () => ({})));
  program.command('snapshot').description('write the reputation snapshot now').action(action('snapshot', () => ({})));
  program.command('replay').argument('[log...]', 'Postfix log files (plain or gzip); standard input when none')
    .description('what sluice would have done with the sessions of a Postfix log (offline: no daemon needed)')
    .option('-c, --config <file>', 'the configuration to try (default: the built-in defaults)')
    .action(async (logs: string[], o: { config?: string }) => {
      const loaded = await loadConfig(o.config);
      if (!loaded.ok) throw new Exit(EXIT.config, loaded.problems.map(formatProblem).join('\n'));
      const tty = process.stderr.isTTY;
      const r = await replayFiles(loaded.config, logs, tty ? (n) => process.stderr.write(`\r${n} lines...`) : undefined).catch((err: unknown) => {
        if (err instanceof ReplayInputError) throw new Exit(EXIT.noInput, err.message);
        throw err;
      }).finally(() => { if (tty) process.stderr.write('\r\x1b[K'); });
      if (r.sessions === 0) throw new Exit(EXIT.dataErr, `no Postfix smtpd sessions found in ${logs.length ? logs.join(', ') : 'standard input'} (${r.lines} lines, ${r.unparsed} not Postfix's): is it a Postfix mail log?`);
      out(`${program.opts().json ? JSON.stringify(r, null, 2) : formatReport(r)}\n`);
    });
  program.command('simulate').argument('<scenario...>', 'scenario files (sluice-scenario(5))')
    .description('run scenarios against the real engine on a simulated clock (offline: no daemon needed)')
    .option('-c, --config <file>', 'the configuration under test (default: the built-in defaults)')
    .option('--store <url>', 'an existing fleet store (redis://...) for scenarios that share reputation, instead of a private redis-server')
    .action(async (files: string[], o: { config?: string; store?: string }) => {
      const r = await simulateFiles(files, { ...o, json: program.opts().json === true, tty: process.stderr.isTTY === true });
      if (r.output) out(r.output);
      if (r.status !== EXIT.ok) throw new Exit(r.status, r.problem ?? 'simulation failed');
    });
  program.command('log-level').argument('<level>', 'fatal, error, warn, info, debug, trace or silent').description('change the log level until the next reload').action((level) => run('log-level', { level }));

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof Exit) {
      process.stderr.write(`sluicectl: ${err.message}\n`);
      status = err.status;
    } else if (err && typeof err === 'object' && 'exitCode' in err) {
      // commander's own: help (0) or a usage problem, already printed.
      const code = (err as { exitCode: number; code?: string }).exitCode;
      status = code === 0 ? EXIT.ok : EXIT.usage;
    } else {
      throw err;
    }
  }
  return status;
}
