// share.ts - what the other hosts learned, taken in as it is written.
//
// Every flush of every host publishes, from inside the script that writes
// it, the entries it wrote as they now stand in the store (writer.ts). Each
// host takes the others' (its own it skips): the local entry becomes the
// fleet's value, plus this host's own changes not yet written (waiting or
// under way), so that one reputation holds everywhere within a flush
// interval, also for clients a host already knows, and no decision ever
// waits for the store. A message that cannot be read is counted and
// dropped; one warning a minute at most.
//
// Config keys: fleet.prefix.

import type { Logger } from '../log/logger.js';
import { FIELDS } from '../reputation/entry.js';
import type { ReputationStore } from '../reputation/store.js';
import type { Clock } from '../util/clock.js';
import type { FleetWriter } from './writer.js';

/** The channel entries are published on, under fleet.prefix. */
export const SHARE_CHANNEL = 'entries';

export class ReputationShare {
  /** Messages taken in, per publishing host. */
  readonly heard = new Map<string, number>();
  /** Messages that could not be read. */
  unreadable = 0;
  #warned = -Infinity;

  constructor(
    private readonly self: string, private readonly store: ReputationStore, private readonly writer: FleetWriter,
    private readonly clock: Clock, private readonly log: () => Logger, private readonly prefix: () => string,
  ) {}

  /** One published message: the sender's id, then "hash values..." per entry. */
  take(message: string): void {
    const nl = message.indexOf('\n');
    const from = nl < 0 ? message : message.slice(0, nl);
    if (from === this.self) return;
    this.heard.set(from, (this.heard.get(from) ?? 0) + 1);
    if (nl < 0) return;
    const head = `${this.prefix()}r:`;
    const now = this.clock.now();
    const values = new Float64Array(FIELDS);
    for (const line of message.slice(nl + 1).split('\n')) {
      const parts = line.split(' ');
      const hash = parts[0] ?? '';
      if (!hash.startsWith(head) || parts.length !== FIELDS + 1) {
        this.#bad(line);
        continue;
      }
      let ok = true;
      for (let i = 0; i < FIELDS; i++) {
        const v = Number(parts[i + 1]);
        if (!Number.isFinite(v)) ok = false;
        values[i] = v;
      }
      if (!ok) {
        this.#bad(line);
        continue;
      }
      const key = hash.slice(head.length);
      if (!this.store.adopt(key, values)) continue;
      const mine = this.writer.unsent(key, now);
      if (mine !== undefined) this.store.nudge(key, mine.delta, mine.counts);
    }
  }

  #bad(line: string): void {
    this.unreadable++;
    const now = this.clock.now();
    if (now - this.#warned < 60_000) return;
    this.#warned = now;
    this.log().warn({ line: line.slice(0, 200), unreadable: this.unreadable }, 'fleet store: an unreadable shared entry was ignored');
  }
}
