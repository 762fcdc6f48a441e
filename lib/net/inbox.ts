// inbox.ts - what a peer sent ahead of our replies, and whether it broke.
//
// Both protocols are lock-step: the MTA waits for each reply before the next
// question. A peer that sends more than `cap` ahead is not an MTA (or is a
// broken one) and is cut off with PEER_PIPELINED. Bad input from a peer is
// worth one warning: once a peer error has closed the connection, the close
// that follows says nothing more (no second "truncated" warning). Knows no
// protocol: the session decodes into `items` and reads them off in order.

import { PeerError } from '../shield/errors.js';

export class Inbox<T> {
  readonly items: T[] = [];
  #broken = false;

  /** `cap`: items a peer may send ahead; `what`: their name in the error ("requests"). */
  constructor(private readonly cap: number, private readonly what: string) {}

  /**
   * Runs `decode(chunk, items)` (a function made once per connection: this
   * runs per chunk); a throw, or too many items, marks the peer broken and
   * goes on up.
   */
  take(decode: (chunk: Buffer, into: T[]) => void, chunk: Buffer): void {
    try {
      decode(chunk, this.items);
      if (this.items.length > this.cap) throw new PeerError('PEER_PIPELINED', `${this.items.length} ${this.what} sent without waiting for replies`);
    } catch (err) {
      throw this.broke(err);
    }
  }

  /** The peer's input is bad (`err`, thrown on by the caller): its one warning is spent. */
  broke(err: unknown): unknown {
    this.#broken = true;
    return err;
  }

  /** The connection closed: nothing more is read; `end` (the decoder's end of input) is told unless the peer broke. */
  close(end: () => void): void {
    this.items.length = 0;
    if (!this.#broken) end();
  }
}
