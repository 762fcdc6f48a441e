// snapshot.ts - the reputation store and dynamic lists on disk.
//
// Atomic: written to a temp file in the same directory, fsynced, renamed over
// the old one, and the directory fsynced, so a crash leaves either the old
// snapshot or the new one, never half of one.
// Versioned: the first line is JSON naming the format and version, the time
// written, the entry count and the dynamic allow/deny entries. Then the
// entries, binary: `u16 key length | key (UTF-8) | 10 x float64` (score, when,
// first seen, seven counters: reputation/entry.ts), little-endian, then the
// 8-byte end marker. Version 1 had the first five counters only (8 values):
// it is read with the scanner's verdict counters at 0.
// Binary because a million entries as text cost seconds in number formatting.
// Entries are written in the store's slot order, a slice at a time between
// turns of the event loop: ordering a million of them by recency is a sort
// that would hold up every reply for a tenth of a second. The reader, which
// runs at start with nothing to hold up, puts them back least recently
// changed first, so the LRU order survives.
// A file that is not of this format or version, that ends early, whose count
// does not match, or whose values are not finite is refused with a
// SnapshotError (it is read in chunks, once, and checked whole before any
// entry is taken);
// the daemon sets it aside (renamed *.corrupt-TIME) with a warning and
// starts empty.

import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import path from 'node:path';
import { leastRecentFirst } from './store.js';
import { AT, FIELDS } from './entry.js';

export const FORMAT = 'sluice-snapshot';
export const VERSION = 2;
/** Values per entry in each version this sluice reads. */
const WIDTH: Readonly<Record<number, number>> = { 1: 8, [VERSION]: FIELDS };
const END = Buffer.from('SLUICEND');
const CHUNK = 4 << 20;
const LITTLE_ENDIAN = endianness() === 'LE';

export class SnapshotError extends Error {}

/** Where entries come from: slots 0 to exportSlots, and each live slot's key and eight values. */
export interface EntrySource {
  readonly exportSlots: number;
  exportSlot(slot: number, now: number, fn: (key: string, values: Float64Array, at: number) => void): boolean;
}

/** Entries encoded between two turns of the event loop (a few milliseconds' work). */
const SLICE = 10_000;

export interface Restored<L> {
  readonly written: number;
  readonly count: number;
  readonly lists: L[];
}

/**
 * Writes the snapshot. The entries are encoded a slice of slots at a time,
 * yielding to the event loop in between: a million take about a second to
 * encode, and replies must not wait for that. An entry that changes
 * meanwhile is written as it is when its slice comes; one that has gone is
 * left out; one that moved to a slot already passed is left out too (it is
 * new since the snapshot began).
 */
export async function writeSnapshot<L>(file: string, store: EntrySource, lists: readonly L[], now: number): Promise<number> {
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o640);
  let count: number;
  try {
    count = await writeEntries(fh, store, lists, now);
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

/** Room for the largest entry: a 65,535-byte key and its values. */
const MAX_ENTRY = 2 + 0xffff + FIELDS * 8;

/**
 * The header, the entries and the end marker, through one reused buffer
 * written out each time it fills: the file is never held in memory (81 MiB
 * at a million entries, which made V8 collect the whole heap at once, a
 * pause replies waited for). The header is written first with the count
 * blank, padded to a fixed width, and rewritten in place at the end.
 */
async function writeEntries<L>(fh: FileHandle, store: EntrySource, lists: readonly L[], now: number): Promise<number> {
  const header = (count: number): Buffer => {
    const json = JSON.stringify({ format: FORMAT, version: VERSION, written: now, entries: count, lists });
    // JSON allows blanks after a value: the count's width never changes the header's length.
    return Buffer.from(`${json.replace(`"entries":${count}`, `"entries":${String(count).padEnd(16)}`)}\n`);
  };
  const blank = header(0);
  await fh.write(blank, 0, blank.length, 0);
  let pos = blank.length;
  const buf = Buffer.allocUnsafe(CHUNK + MAX_ENTRY);
  let off = 0;
  const flush = async (): Promise<void> => {
    await fh.write(buf, 0, off, pos);
    pos += off;
    off = 0;
  };
  const put = (key: string, values: Float64Array, at: number): void => {
    const klen = buf.write(key, off + 2, 0xffff, 'utf8');
    buf.writeUInt16LE(klen, off);
    off += 2 + klen;
    for (let i = 0; i < FIELDS; i++) off = buf.writeDoubleLE(values[at + i]!, off);
  };
  let count = 0;
  for (let slot = 0; slot < store.exportSlots; slot++) {
    if (slot > 0 && slot % SLICE === 0) await new Promise((resolve) => setImmediate(resolve));
    if (off >= CHUNK) await flush();
    if (store.exportSlot(slot, now, put)) count++;
  }
  off += END.copy(buf, off);
  await flush();
  await fh.write(header(count), 0, blank.length, 0);
  return count;
}

/** Takes one entry: its key, and its eight values in `values` from index `at` (valid during the call only). */
export type Take = (key: string, values: Float64Array, at: number) => void;

/**
 * Reads a snapshot, handing each entry to `take`, least recently changed
 * first; undefined when there is none. Throws SnapshotError before taking
 * anything if the file is not whole and sound. The file is read in 4 MiB
 * chunks into the keys and one array of values (72 MiB at a million
 * entries, let go when the read is done), not held whole.
 */
export async function readSnapshot<L>(file: string, take: Take): Promise<Restored<L> | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SnapshotError(`cannot read: ${(err as Error).message}`);
  }
  try {
    return await readOpen<L>(fh, take);
  } finally {
    await fh.close();
  }
}

async function readOpen<L>(fh: FileHandle, take: Take): Promise<Restored<L>> {
  let size: number;
  let first: { text: string; nl: number };
  try {
    size = (await fh.stat()).size;
    first = await firstLine(fh, size);
  } catch (err) {
    throw err instanceof SnapshotError ? err : new SnapshotError(`cannot read: ${(err as Error).message}`);
  }
  const nl = first.nl;
  let head: { format?: unknown; version?: unknown; written?: unknown; entries?: unknown; lists?: unknown };
  try {
    head = JSON.parse(first.text) as typeof head;
  } catch {
    throw new SnapshotError('not a sluice snapshot (the first line is not JSON)');
  }
  if (head === null || typeof head !== 'object' || head.format !== FORMAT) throw new SnapshotError(`not a sluice snapshot (format ${JSON.stringify(head?.format)})`);
  const width = typeof head.version === 'number' ? WIDTH[head.version] : undefined;
  if (width === undefined) throw new SnapshotError(`snapshot version ${String(head.version)}; this sluice reads versions ${Object.keys(WIDTH).join(' and ')}`);
  if (typeof head.entries !== 'number' || typeof head.written !== 'number' || !Array.isArray(head.lists)) throw new SnapshotError('snapshot header is incomplete');
  const tail = Buffer.alloc(END.length);
  if (size >= nl + 1 + END.length) await fh.read(tail, 0, END.length, size - END.length);
  if (size < nl + 1 + END.length || !tail.equals(END)) throw new SnapshotError('truncated: no end marker');
  const end = size - END.length;
  const room = Math.floor((end - nl - 1) / (3 + width * 8));
  if (!Number.isSafeInteger(head.entries) || head.entries < 0 || head.entries > room) throw new SnapshotError(`expected ${head.entries} entries, the file has room for ${room}`);
  const expected = head.entries;

  // One pass reads and checks every entry into memory; only a file that is
  // whole and sound is then taken (a bad one takes nothing). The eight values
  // are copied byte by byte (on a little-endian machine) rather than read one
  // double at a time: a million entries are 8 million reads.
  const keys: string[] = new Array<string>(expected);
  const all = new Float64Array(expected * FIELDS);
  const bytes = new Uint8Array(all.buffer);
  const readValues = LITTLE_ENDIAN
    ? (b: Buffer, p: number, at: number): void => { for (let i = 0; i < width * 8; i++) bytes[at * 8 + i] = b[p + i]!; }
    : (b: Buffer, p: number, at: number): void => { for (let i = 0; i < width; i++) all[at + i] = b.readDoubleLE(p + i * 8); };
  const found = await eachEntry(fh, nl + 1, end, width, (b, p, klen, n) => {
    if (n > expected) throw new SnapshotError(`more than the ${expected} entries the header claims`);
    const at = (n - 1) * FIELDS;
    readValues(b, p + 2 + klen, at);
    for (let i = at; i < at + FIELDS; i++) {
      if (!Number.isFinite(all[i])) throw new SnapshotError(`entry ${n} has a value that is not a number`);
    }
    keys[n - 1] = b.toString('utf8', p + 2, p + 2 + klen);
  });
  if (found !== expected) throw new SnapshotError(`expected ${expected} entries, found ${found}`);
  for (const i of leastRecentFirst(found, (i) => all[i * FIELDS + AT]!)) take(keys[i]!, all, i * FIELDS);
  return { written: head.written, count: found, lists: head.lists as L[] };
}

/**
 * The header line and the offset of its LF (-1 if there is none). The header
 * carries the dynamic lists, so it may be megabytes long: it is read until
 * its LF, but a file that does not start as JSON is refused at once.
 */
async function firstLine(fh: FileHandle, size: number): Promise<{ text: string; nl: number }> {
  const parts: Buffer[] = [];
  for (let pos = 0; pos < size;) {
    const b = Buffer.allocUnsafe(Math.min(1 << 20, size - pos));
    const { bytesRead } = await fh.read(b, 0, b.length, pos);
    if (bytesRead === 0) break;
    if (pos === 0 && b[0] !== 0x7b) throw new SnapshotError('not a sluice snapshot (the first line is not JSON)');
    const lf = b.subarray(0, bytesRead).indexOf(0x0a);
    if (lf >= 0) {
      parts.push(b.subarray(0, lf));
      return { text: Buffer.concat(parts).toString('utf8'), nl: pos + lf };
    }
    parts.push(b.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return { text: Buffer.concat(parts).toString('utf8'), nl: -1 };
}

/**
 * Walks the entries in [start, end) of the file (`width` values each), a chunk at a time; `each`
 * gets the chunk, the entry's offset in it, its key length and its number
 * (from 1). Returns how many there were.
 */
async function eachEntry(fh: FileHandle, start: number, end: number, width: number, each: (b: Buffer, p: number, klen: number, n: number) => void): Promise<number> {
  // Room for the largest entry (a 65,535-byte key) whatever the chunk holds.
  const buf = Buffer.allocUnsafe(CHUNK + 2 + 0xffff + width * 8);
  let pos = start;
  let have = 0;
  let n = 0;
  for (;;) {
    if (pos < end) {
      const { bytesRead } = await fh.read(buf, have, Math.min(buf.length - have, end - pos), pos);
      if (bytesRead === 0) throw new SnapshotError(`entry ${n + 1} is cut short`);
      pos += bytesRead;
      have += bytesRead;
    }
    let p = 0;
    while (have - p >= 2) {
      const klen = buf.readUInt16LE(p);
      const size = 2 + klen + width * 8;
      if (klen === 0 || (pos === end && p + size > have)) throw new SnapshotError(`entry ${n + 1} is malformed`);
      if (p + size > have) break;
      each(buf, p, klen, ++n);
      p += size;
    }
    if (pos === end) {
      if (p < have) throw new SnapshotError(`entry ${n + 1} is cut short`);
      return n;
    }
    buf.copy(buf, 0, p, have);
    have -= p;
  }
}

/** Moves a bad snapshot out of the way; returns where it went. */
export async function setAside(file: string, now: number): Promise<string> {
  const to = `${file}.corrupt-${new Date(now).toISOString().replace(/[:.]/g, '-')}`;
  await rename(file, to);
  return to;
}
