// A rule wired in front of the engine by tests: the recipient's local part says what to do.
//   ACTION[.STAGE]@domain  - ACTION at STAGE (default rcpt); other stages pass
//   hold-MS        pass after holding MS milliseconds (not again for a repeat)
//   defer          defer 450 4.7.1
//   reject         reject 554 5.7.1
//   custom         reject 550 5.7.25 with a "%" in the text (REPLYCODE escaping)
//   throw          the rule throws                      (fault injection)
//   reject-promise the rule's promise rejects
//   garbage        the rule returns something that is not a verdict
//   anything else  pass
import type { Outcome, Rule, StageEvent, Verdict } from '../../dist/engine/types.js';

export class ScriptedRule implements Rule {
  readonly events: StageEvent[] = [];
  readonly outcomes: Outcome[] = [];

  decide(e: StageEvent): Verdict | Promise<Verdict> {
    this.events.push(e);
    const local = (e.recipient.split('@')[0] ?? '').toLowerCase();
    const [action = '', stage = 'rcpt'] = local.split('.');
    if (stage !== e.stage) return { kind: 'pass', delayMs: 0, rule: 'test-pass', score: 0 };
    const hold = /^hold-(\d+)$/.exec(action);
    if (hold) return { kind: 'pass', delayMs: e.repeat ? 0 : Number(hold[1]), rule: 'test-hold', score: -1 };
    switch (action) {
      case 'defer': return { kind: 'defer', delayMs: 0, rule: 'test-defer', score: -5, reply: { code: 450, enhanced: '4.7.1', text: 'sluice test defer' } };
      case 'reject': return { kind: 'reject', delayMs: 0, rule: 'test-reject', score: -9, reply: { code: 554, enhanced: '5.7.1', text: 'sluice test reject' } };
      case 'custom': return { kind: 'reject', delayMs: 0, rule: 'test-custom', score: -9, reply: { code: 550, enhanced: '5.7.25', text: 'sluice custom 100% reply' } };
      case 'throw': throw new Error('rule exploded');
      case 'reject-promise': return Promise.reject(new Error('rule promise rejected'));
      case 'garbage': return { kind: 'maybe' } as unknown as Verdict;
      default: return { kind: 'pass', delayMs: 0, rule: 'test-pass', score: 0 };
    }
  }

  record(o: Outcome): void {
    this.outcomes.push(o);
  }
}
