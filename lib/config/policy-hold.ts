// policy-hold.ts - how long a policy reply may be held, from the config.
//
// Postfix waits policy.timeout for an answer, then gives up on the request
// and resends it on a new connection: a held reply ends policy.hold_margin
// before that. Under stress=yes Postfix asks not to be slowed: no hold. The
// session and `sluicectl explain` both take the hold from here, so explain
// says what the daemon would do. It is here, below both, because it is
// arithmetic on two config keys and nothing of the protocol's bytes.
//
// Config keys: policy.timeout, policy.hold_margin.

import type { Config } from './schema.js';

/** The hold the policy service grants a verdict that asks for `delayMs` (0: none). */
export function policyHold(delayMs: number, stress: boolean, p: Pick<Config['policy'], 'timeout' | 'hold_margin'>): number {
  return stress ? 0 : Math.min(delayMs, Math.max(0, p.timeout - p.hold_margin));
}
