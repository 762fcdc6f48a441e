// queue.ts - the simulation's agenda: what happens next, earliest first.
//
// A binary heap of (time, sequence) with the action to run; equal times run
// in the order they were scheduled, so a run is the same every time.

interface Item {
  readonly at: number;
  readonly seq: number;
  readonly run: () => void;
}

export class Agenda {
  readonly #heap: Item[] = [];
  #seq = 0;

  get size(): number {
    return this.#heap.length;
  }

  at(at: number, run: () => void): void {
    const h = this.#heap;
    const item: Item = { at, seq: this.#seq++, run };
    let i = h.length;
    h.push(item);
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (!before(item, h[up]!)) break;
      h[i] = h[up]!;
      i = up;
    }
    h[i] = item;
  }

  /** The earliest item, taken off the agenda. */
  next(): Item | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (h.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const m = r < h.length && before(h[r]!, h[l]!) ? r : l;
      if (!before(h[m]!, last)) break;
      h[i] = h[m]!;
      i = m;
    }
    h[i] = last;
    return top;
  }
}

function before(a: Item, b: Item): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
