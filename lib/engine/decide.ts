// decide.ts - ask the engine, and never let its failure reach the protocol.
//
// A rule that throws, rejects or returns something that is not a verdict
// becomes a 3xx DecisionError (raised to the shield, so it is logged and
// counted) and the configured fail mode answers instead. Every request gets
// exactly one verdict. A synchronous engine gets a synchronous answer: no
// promise, no microtask on the hot path.

import { DecisionError } from '../shield/errors.js';
import { failVerdict, isVerdict, type Engine, type StageEvent, type Verdict } from './types.js';

type Report = (err: DecisionError) => void;

export function safeDecide(engine: Engine, event: StageEvent, failMode: 'pass' | 'defer', report: Report): Verdict | Promise<Verdict> {
  let v: unknown;
  try {
    v = engine.decide(event);
  } catch (err) {
    return failed(err, failMode, report);
  }
  if (v instanceof Promise) {
    return v.then((r: unknown) => checked(r, failMode, report), (err: unknown) => failed(err, failMode, report));
  }
  return checked(v, failMode, report);
}

function failed(err: unknown, failMode: 'pass' | 'defer', report: Report): Verdict {
  report(new DecisionError('DECISION_RULE_FAILED', err instanceof Error ? err.message : String(err), { cause: err }));
  return failVerdict(failMode);
}

function checked(v: unknown, failMode: 'pass' | 'defer', report: Report): Verdict {
  if (isVerdict(v)) return v;
  report(new DecisionError('DECISION_BAD_VERDICT', `engine returned ${String(JSON.stringify(v)).slice(0, 100)}`));
  return failVerdict(failMode);
}
