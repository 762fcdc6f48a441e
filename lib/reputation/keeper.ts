// keeper.ts - the reputation's life on disk: restore at start, write on a
// timer, on demand and at stop.
//
// One write at a time (a second ask joins the one under way). A snapshot
// that cannot be read (corrupt, foreign, another version) is set aside as
// *.corrupt-TIME with one warning, and sluice starts empty; a write that
// fails is logged as DECISION_STORE_FAILED and the next one tries again.
// The timer runs on the injected clock through the shield; retime() sets a
// new interval (a reload that changed reputation.snapshot_interval).
//
// Config keys: reputation.snapshot_file, reputation.snapshot_interval
// (through the daemon).

import { CATALOGUE } from '../shield/errors.js';
import type { Shield } from '../shield/shield.js';
import type { Logger } from '../log/logger.js';
import type { Timer } from '../util/clock.js';
import { readSnapshot, setAside, writeSnapshot, SnapshotError, type EntrySource } from './snapshot.js';

/** What is kept: the store's entries, and the dynamic list entries that ride in the header. */
export interface Kept<L> {
  readonly store: EntrySource & { put(key: string, values: ArrayLike<number>, at?: number): boolean; readonly size: number };
  lists(now: number): readonly L[];
  restoreLists(lists: readonly L[], now: number): void;
}

const STORE_FAILED = { code: CATALOGUE.DECISION_STORE_FAILED.code, err: 'DECISION_STORE_FAILED' };

export class SnapshotKeeper<L> {
  readonly #kept: Kept<L>;
  readonly #file: string;
  readonly #shield: Shield;
  readonly #log: () => Logger;
  #writing: Promise<number> | undefined;
  #timer: Timer | undefined;
  #intervalMs = 0;

  constructor(kept: Kept<L>, file: string, shield: Shield, log: () => Logger) {
    this.#kept = kept;
    this.#file = file;
    this.#shield = shield;
    this.#log = log;
  }

  get file(): string {
    return this.#file;
  }

  /** Loads the last snapshot, if any; a bad one is set aside and sluice starts empty. */
  async restore(): Promise<void> {
    const now = this.#shield.clock.now;
    const file = this.#file;
    try {
      let n = 0;
      const snap = await readSnapshot<L>(file, (key, values, at) => { if (this.#kept.store.put(key, values, at)) n++; });
      if (!snap) return;
      this.#kept.restoreLists(snap.lists, now());
      this.#log().info({ file, entries: n, written: new Date(snap.written).toISOString() }, 'reputation restored');
    } catch (err) {
      if (!(err instanceof SnapshotError)) throw err;
      const aside = await setAside(file, now()).catch(() => undefined);
      this.#log().warn({ ...STORE_FAILED, file, moved_to: aside }, `snapshot set aside, starting empty: ${err.message}`);
    }
  }

  /** Writes the snapshot now (atomically); resolves with the entries written, 0 when it failed. */
  write(): Promise<number> {
    this.#writing ??= (async () => {
      const now = this.#shield.clock.now;
      const t0 = now();
      try {
        const n = await writeSnapshot(this.#file, this.#kept.store, this.#kept.lists(t0), t0);
        this.#log().info({ file: this.#file, entries: n, ms: now() - t0 }, 'snapshot written');
        return n;
      } catch (err) {
        this.#log().error({ ...STORE_FAILED, file: this.#file }, `snapshot not written: ${(err as Error).message}`);
        return 0;
      } finally {
        this.#writing = undefined;
      }
    })();
    return this.#writing;
  }

  /** Writes every intervalMs from now on (again from now when the interval changes). */
  retime(intervalMs: number): void {
    if (intervalMs === this.#intervalMs && this.#timer) return;
    this.stop();
    this.#intervalMs = intervalMs;
    this.#timer = this.#shield.setInterval({ label: 'timer:snapshot' }, intervalMs, () => this.write());
  }

  stop(): void {
    this.#shield.clear(this.#timer);
    this.#timer = undefined;
  }
}
