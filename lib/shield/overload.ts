// overload.ts - one overload condition, reported when it starts and ends.
//
// DESIGN: overload (4xx) is shed, and logged on the transition. Each source -
// the connection cap, the hold budget, event-loop lag - says whether it is
// over its limit whenever it looks; when that turns true this logs one
// warning with the error's code and hands the error to the shield (which
// counts it), and when it turns false one info line. A flood is two lines.

import { OverloadError, type ErrorName } from './errors.js';
import type { Shield } from './shield.js';

interface Log {
  warn(fields: object, msg: string): void;
  info(fields: object, msg: string): void;
}

export class Overload {
  #on = false;

  constructor(
    private readonly shield: Shield,
    private readonly log: () => Log,
    private readonly symbol: ErrorName,
    private readonly endText: string,
  ) {}

  /** The condition as it is now; `why` words the start, `fields` go on either line. */
  set(on: boolean, why: () => string, fields: Record<string, unknown> = {}): void {
    if (on === this.#on) return;
    this.#on = on;
    if (!on) {
      this.log().info(fields, this.endText);
      return;
    }
    const err = new OverloadError(this.symbol, why());
    this.log().warn({ ...fields, code: err.code, err: err.symbol }, err.message);
    this.shield.raise({ label: `overload:${this.symbol}` }, err, 'timer');
  }

  get on(): boolean {
    return this.#on;
  }
}
