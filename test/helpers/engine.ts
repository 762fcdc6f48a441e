// An engine on a manual clock with the built-in defaults, overridable per test.
import { fromText } from '../../dist/config/load.js';
import type { Config } from '../../dist/config/schema.js';
import { ReputationEngine, type EngineConfig } from '../../dist/engine/engine.js';
import type { StageEvent, Verdict } from '../../dist/engine/types.js';
import { ManualClock } from '../../dist/util/clock.js';

export function defaults(yaml = ''): Config {
  const r = fromText(yaml, 'test.yaml');
  if (!r.ok) throw new Error(r.problems.map((p) => p.message).join('; '));
  return r.config;
}

/** The engine as tests ask it: an answer at once (no rule here waits for anything). */
export class SyncEngine extends ReputationEngine {
  override decide(e: StageEvent): Verdict {
    const v = super.decide(e);
    if (v instanceof Promise) throw new Error('the engine answered later; this test expects an answer at once');
    return v;
  }
}

export function engineFor(yaml = ''): { engine: SyncEngine; clock: ManualClock; config: EngineConfig } {
  const clock = new ManualClock();
  const config = defaults(yaml);
  return { engine: new SyncEngine(() => config, clock.now), clock, config };
}

let port = 40000;
export function ev(over: Partial<StageEvent> = {}): StageEvent {
  const client = over.client ?? '192.0.2.10';
  return {
    stage: 'rcpt', session: over.session ?? `${client}:${port++}:25`, via: 'milter', mta: 'postfix',
    client, port: 0, clientName: 'mx.example.net', helo: 'mx.example.net', sender: 'alice@example.net',
    recipient: 'bob@example.org', recipientCount: 0, size: 0, queueId: '', saslUser: '', tls: undefined,
    stress: false, repeat: false, ...over,
  };
}
