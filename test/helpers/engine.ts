// An engine on a fake clock with the built-in defaults, overridable per test.
import { fromText } from '../../dist/config/load.js';
import type { Config } from '../../dist/config/schema.js';
import { ReputationEngine, type EngineConfig } from '../../dist/engine/engine.js';
import type { StageEvent } from '../../dist/engine/types.js';

export function defaults(yaml = ''): Config {
  const r = fromText(yaml, 'test.yaml');
  if (!r.ok) throw new Error(r.problems.map((p) => p.message).join('; '));
  return r.config;
}

export interface FakeClock {
  now: number;
  advance(ms: number): void;
}

export function engineFor(yaml = ''): { engine: ReputationEngine; clock: FakeClock; config: EngineConfig } {
  const clock: FakeClock = { now: 1_800_000_000_000, advance(ms) { this.now += ms; } };
  const config = defaults(yaml);
  return { engine: new ReputationEngine(() => config, () => clock.now), clock, config };
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
