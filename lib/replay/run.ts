// run.ts - `sluicectl replay`: the files (or standard input) through a Replay.
//
// Plain and gzip files (by content: the gzip magic, not the name), read line
// by line as a stream; a progress line on standard error once a second when
// it is a terminal. Prints a table, or the report as JSON. A file that
// cannot be read (missing, a directory, a truncated gzip) is a
// ReplayInputError naming it.

import { createReadStream } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { createInterface } from 'node:readline';
import { open, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Config } from '../config/schema.js';
import { SYSTEM_CLOCK } from '../util/clock.js';
import { Replay, type ReplayReport } from './replay.js';

async function isGzip(file: string): Promise<boolean> {
  const fh = await open(file, 'r');
  try {
    const b = Buffer.alloc(2);
    await fh.read(b, 0, 2, 0);
    return b[0] === 0x1f && b[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

async function source(file: string | undefined): Promise<Readable> {
  if (file === undefined || file === '-') return process.stdin;
  const raw = createReadStream(file);
  return (await isGzip(file)) ? raw.pipe(createGunzip()) : raw;
}

/** A log that cannot be read to its end: its name and why. */
export class ReplayInputError extends Error {}

function why(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'Z_BUF_ERROR' ? 'truncated gzip data' : (err as Error).message;
}

/** Replays the logs with `config`; resolves with the report. Rejects with a ReplayInputError naming a file that cannot be read. */
export async function replayFiles(config: Config, files: readonly string[], progress?: (lines: number) => void): Promise<ReplayReport> {
  const now = SYSTEM_CLOCK.now;
  const replay = new Replay(config, new Date(now()).getUTCFullYear());
  let next = now() + 1000;
  for (const file of files.length ? files : [undefined]) {
    const name = file ?? 'standard input';
    try {
      if (file !== undefined && file !== '-' && (await stat(file)).isDirectory()) throw new ReplayInputError(`${name}: a directory, not a log file`);
      const input = await source(file);
      const lines = createInterface({ input, crlfDelay: Infinity });
      // A stream error (a truncated gzip) ends the lines; it is thrown here, not lost.
      let failed: unknown;
      input.once('error', (err) => { failed = err; lines.close(); });
      let n = 0;
      for await (const line of lines) {
        replay.line(line);
        if (progress && ++n % 10_000 === 0 && now() >= next) {
          next = now() + 1000;
          progress(n);
        }
      }
      if (failed !== undefined) throw failed;
    } catch (err) {
      throw err instanceof ReplayInputError ? err : new ReplayInputError(`${name}: ${why(err)}`);
    }
  }
  return replay.finish();
}

/** The report as a terminal table. */
export function formatReport(r: ReplayReport): string {
  const out: string[] = [];
  out.push(`${r.lines} lines (${r.unparsed} not Postfix's), ${r.sessions} sessions: ${r.delivered} delivered, ${r.lost} lost or left without QUIT`);
  out.push('', 'stage      pass    hold   defer  reject');
  for (const [stage, v] of Object.entries(r.verdicts)) {
    out.push(`${stage.padEnd(7)}${[v['pass'], v['hold'], v['defer'], v['reject']].map((n) => String(n ?? 0).padStart(8)).join('')}`);
  }
  out.push('', `delivered in the log but would have been deferred or rejected: ${r.deliveredButRefused} sessions`);
  for (const row of r.risk) {
    out.push(`  ${row.client} (${row.name}): ${row.sessions} sessions, ${row.verdict} at ${row.stage} by ${row.rule}`);
    for (const line of row.reason) out.push(`      ${line}`);
  }
  out.push(`lost in the log and shaped at or before where they were lost: ${r.lostShapedEarlier} sessions`);
  out.push(`hold time asked of the MTA: ${Math.round(r.holdSeconds)} s; peak holds at once: ${r.peakHolds} (budget ${r.holdBudget}); holds not granted for want of budget: ${r.holdsRefused}`);
  return out.join('\n');
}
