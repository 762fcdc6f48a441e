// decide.ts - ask the engine, and never let its failure reach the protocol.
//
// A rule that throws, rejects or returns something that is not a verdict
// becomes a 3xx DecisionError (raised to the shield, so it is logged and
// counted) and the configured fail mode answers instead. Every request gets
// exactly one verdict.

import { DecisionError } from '../shield/errors.js';
import { failVerdict, isVerdict, type Engine, type StageEvent, type Verdict } from './types.js';

export async function safeDecide(
  engine: Engine,
  event: StageEvent,
  failMode: 'pass' | 'defer',
  report: (err: DecisionError) => void,
): Promise<Verdict> {
  let v: unknown;
  try {
    v = await engine.decide(event);
  } catch (err) {
    report(new DecisionError('DECISION_RULE_FAILED', err instanceof Error ? err.message : String(err), { cause: err }));
    return failVerdict(failMode);
  }
  if (!isVerdict(v)) {
    report(new DecisionError('DECISION_BAD_VERDICT', `engine returned ${JSON.stringify(v)?.slice(0, 100)}`));
    return failVerdict(failMode);
  }
  return v;
}
