// pass-engine.ts - the engine that lets everything pass.
//
// Stands behind the seam until the reputation engine lands: every stage
// passes, outcomes are ignored. Real types, no decisions.

import { PASS, type Engine, type Verdict } from './types.js';

export class PassEngine implements Engine {
  decide(): Verdict {
    return PASS;
  }

  record(): void {}
}
