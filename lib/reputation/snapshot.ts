// snapshot.ts - the reputation store and dynamic lists on disk.
//
// Atomic: written to a temp file in the same directory, fsynced, renamed over
// the old one, and the directory fsynced, so a crash leaves either the old
// snapshot or the new one, never half of one. Versioned: the first line names
// the format and version and counts the entries; each further line is one
// entry as a JSON array. A file that does not parse, is of another format or
// version, or is short of its count is set aside (renamed *.corrupt-TIME)
// with a warning, and sluice starts empty.

import { open, rename, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Entry } from './score.js';

export const FORMAT = 'sluice-snapshot';
export const VERSION = 1;

export interface Snapshot<L> {
  readonly written: number;
  readonly entries: [string, Entry][];
  readonly lists: L[];
}

export class SnapshotError extends Error {}

const LINES_PER_WRITE = 20_000;

export async function writeSnapshot<L>(file: string, entries: Iterable<[string, Entry]>, lists: readonly L[], now: number): Promise<number> {
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o640);
  let count = 0;
  try {
    const body: string[] = [];
    let batch: string[] = [];
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      await fh.write(batch.join(''));
      batch = [];
    };
    // The count goes in the header, so the entries are gathered first.
    for (const [k, e] of entries) {
      body.push(`${JSON.stringify([k, round(e.s), e.at, e.first, e.ok, e.ab, e.abh, e.rate, e.grey])}\n`);
      count++;
    }
    await fh.write(`${JSON.stringify({ format: FORMAT, version: VERSION, written: now, entries: count, lists })}\n`);
    for (const line of body) {
      batch.push(line);
      if (batch.length >= LINES_PER_WRITE) await flush();
    }
    await flush();
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  await rename(tmp, file);
  const dir = await open(path.dirname(file), 'r');
  try { await dir.sync(); } finally { await dir.close(); }
  return count;
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

/** The snapshot, undefined when there is none, or a SnapshotError saying what is wrong. */
export async function readSnapshot<L>(file: string): Promise<Snapshot<L> | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SnapshotError(`cannot read: ${(err as Error).message}`);
  }
  const nl = text.indexOf('\n');
  let head: { format?: unknown; version?: unknown; written?: unknown; entries?: unknown; lists?: unknown };
  try {
    head = JSON.parse(nl < 0 ? text : text.slice(0, nl)) as typeof head;
  } catch {
    throw new SnapshotError('not a sluice snapshot (the first line is not JSON)');
  }
  if (head.format !== FORMAT) throw new SnapshotError(`not a sluice snapshot (format ${JSON.stringify(head.format)})`);
  if (head.version !== VERSION) throw new SnapshotError(`snapshot version ${String(head.version)}; this sluice reads version ${VERSION}`);
  if (typeof head.entries !== 'number' || typeof head.written !== 'number' || !Array.isArray(head.lists)) throw new SnapshotError('snapshot header is incomplete');
  const entries: [string, Entry][] = [];
  let pos = nl + 1;
  while (pos < text.length) {
    const end = text.indexOf('\n', pos);
    if (end < 0) throw new SnapshotError(`truncated after ${entries.length} entries`);
    const line = text.slice(pos, end);
    pos = end + 1;
    let a: unknown;
    try { a = JSON.parse(line); } catch { throw new SnapshotError(`entry ${entries.length + 1} is not JSON`); }
    if (!Array.isArray(a) || a.length !== 9 || typeof a[0] !== 'string' || !a.slice(1).every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw new SnapshotError(`entry ${entries.length + 1} is malformed`);
    }
    const [k, s, at, first, ok, ab, abh, rate, grey] = a as [string, number, number, number, number, number, number, number, number];
    entries.push([k, { s, at, first, ok, ab, abh, rate, grey }]);
  }
  if (entries.length !== head.entries) throw new SnapshotError(`expected ${head.entries} entries, found ${entries.length}`);
  return { written: head.written, entries, lists: head.lists as L[] };
}

/** Moves a bad snapshot out of the way; returns where it went. */
export async function setAside(file: string, now: number): Promise<string> {
  const to = `${file}.corrupt-${new Date(now).toISOString().replace(/[:.]/g, '-')}`;
  await rename(file, to);
  return to;
}
