// Simulation: a mixed population replayed through the engine over six
// simulated hours, on an injected clock. Sessions go as a milter sees them
// (the session reports delivered / abandoned / ended to the engine).
//   - well-behaved MTAs: wait for held replies, retry deferrals 5 min later, deliver;
//   - zombies: bare-IP or junk HELO, no rDNS; give up on any hold over 10 s; never retry;
//   - a dictionary attacker: one address, hundreds of recipients per session;
//   - a burst sender: 40 addresses of one /24 opening sessions as fast as they can.
// It prints a confusion table and checks the promises in issue 5.
import t from 'tap';
import { engineFor, ev } from './helpers/engine.js';
import type { StageEvent } from '../dist/engine/types.js';
import { conclude, drive, type Driven } from '../dist/engine/drive.js';

type Kind = 'mta' | 'zombie' | 'dictionary' | 'burst';
type End = 'delivered' | 'held+delivered' | 'deferred' | 'rejected' | 'abandoned under hold';

interface Agent {
  kind: Kind;
  client: string;
  clientName: string;
  helo: string;
  delivered: boolean;
  heldAfterTrust: number;
  rejected: number;
  retryAt?: number;
}

let seed = 42;
const rnd = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31; };

const { engine, clock } = engineFor();
const start = clock.now();
const agents: Agent[] = [];
for (let i = 0; i < 30; i++) {
  const noRdns = i % 5 === 0; // some real MTAs lack reverse DNS: they get held once
  agents.push({ kind: 'mta', client: `192.0.${2 + (i % 3)}.${10 + i}`, clientName: noRdns ? 'unknown' : `mx${i}.example.net`, helo: `mx${i}.example.net`, delivered: false, heldAfterTrust: 0, rejected: 0 });
}
for (let i = 0; i < 300; i++) {
  const a = `${100 + Math.floor(rnd() * 100)}.${Math.floor(rnd() * 250)}.${Math.floor(rnd() * 250)}.${1 + Math.floor(rnd() * 250)}`;
  agents.push({ kind: 'zombie', client: a, clientName: 'unknown', helo: i % 2 ? a : `pc${i}`, delivered: false, heldAfterTrust: 0, rejected: 0 });
}
agents.push({ kind: 'dictionary', client: '203.0.113.66', clientName: 'unknown', helo: 'mail.dict.example', delivered: false, heldAfterTrust: 0, rejected: 0 });
for (let i = 0; i < 40; i++) agents.push({ kind: 'burst', client: `198.51.100.${10 + i}`, clientName: `b${i}.bulk.example`, helo: `b${i}.bulk.example`, delivered: false, heldAfterTrust: 0, rejected: 0 });

const table = new Map<Kind, Record<End, number>>();
const count = (k: Kind, e: End): void => {
  const row = table.get(k) ?? { delivered: 0, 'held+delivered': 0, deferred: 0, rejected: 0, 'abandoned under hold': 0 };
  row[e]++;
  table.set(k, row);
};

let port = 1000;
/** One SMTP session, driven stage by stage (lib/engine/drive.ts); returns how it ended. */
function session(a: Agent, recipients: number): End {
  const base: Partial<StageEvent> = { client: a.client, clientName: a.clientName, helo: a.helo, session: `${a.client}:${port++}:25`, sender: `u@${a.kind}.example`, via: 'milter' };
  const events = [
    ...(['connect', 'helo', 'mail'] as const).map((stage) => ev({ ...base, stage })),
    ...Array.from({ length: recipients }, (_, r) => ev({ ...base, stage: 'rcpt', recipient: `user${r}@example.org` })),
    ...(['data', 'eoh', 'eom'] as const).map((stage) => ev({ ...base, stage })),
  ];
  let held = false;
  let gaveUp = false;
  let accepted = 0;
  let refused: End | undefined;
  const driven = drive(engine, events, ({ event, verdict: v }, i) => {
    if (v.delayMs > 0) {
      if (a.delivered && a.kind === 'mta') a.heldAfterTrust++;
      if (a.kind === 'zombie' && v.delayMs > 10_000) {
        gaveUp = true;
        return false;
      }
      // Holds overlap in real time: the session waits, the clock is shared.
      held = true;
    }
    if (event.stage === 'rcpt') {
      if (v.kind === 'pass' || v.kind === 'accept') accepted++;
      else refused ??= v.kind === 'defer' ? 'deferred' : 'rejected';
      // Past the last recipient with none accepted, the client has nothing to send.
      return events[i + 1]?.stage === 'rcpt' || accepted > 0;
    }
    if (v.kind === 'defer' || v.kind === 'reject') refused = v.kind === 'defer' ? 'deferred' : 'rejected';
    return v.kind !== 'defer' && v.kind !== 'reject';
  }) as Driven;
  const last = driven.steps.at(-1)!.event;
  if (gaveUp) {
    conclude(engine, last, { delivered: false, abandoned: true, held: true });
    return 'abandoned under hold';
  }
  conclude(engine, last, { delivered: driven.finished, abandoned: false });
  if (!driven.finished) return refused ?? 'deferred';
  a.delivered = true;
  return held ? 'held+delivered' : 'delivered';
}

// Six hours, a minute at a time; each session starts at its own second.
for (let minute = 0; minute < 360; minute++) {
  const runs: [number, Agent, number][] = [];
  for (const a of agents) {
    let go = false;
    let rcpts = 1 + Math.floor(rnd() * 2);
    switch (a.kind) {
      case 'mta': go = a.retryAt !== undefined ? start + minute * 60_000 >= a.retryAt : rnd() < 0.1; break;
      case 'zombie': go = rnd() < 0.07; break;
      case 'dictionary': go = minute % 10 === 0; rcpts = 400; break;
      case 'burst': go = minute >= 120 && minute < 130; break;
    }
    if (!go) continue;
    for (let i = 0; i < (a.kind === 'burst' ? 6 : 1); i++) runs.push([Math.floor(rnd() * 60_000), a, rcpts]);
  }
  runs.sort((x, y) => x[0] - y[0]);
  for (const [offset, a, rcpts] of runs) {
    clock.advance(Math.max(0, start + minute * 60_000 + offset - clock.now()));
    const end = session(a, rcpts);
    count(a.kind, end);
    if (end === 'rejected') a.rejected++;
    if (a.kind === 'mta') a.retryAt = end === 'deferred' ? clock.now() + 5 * 60_000 : undefined;
  }
  clock.advance(Math.max(0, start + (minute + 1) * 60_000 - clock.now()));
  engine.tick();
}

const ends: End[] = ['delivered', 'held+delivered', 'deferred', 'rejected', 'abandoned under hold'];
const lines = [['population', ...ends, 'sessions'].map((c, i) => (i ? c.padStart(12) : c.padEnd(12))).join(' ')];
for (const [k, row] of table) {
  const total = ends.reduce((s, e) => s + row[e], 0);
  lines.push([k.padEnd(12), ...ends.map((e) => String(row[e]).padStart(12)), String(total).padStart(12)].join(' '));
}
process.stdout.write(`\n${lines.join('\n')}\n\n`);

const mtas = agents.filter((a) => a.kind === 'mta');
const row = (k: Kind): Record<End, number> => table.get(k)!;
const zombie = row('zombie');
const zTotal = ends.reduce((s, e) => s + zombie[e], 0);
const zStopped = zombie.deferred + zombie.rejected + zombie['abandoned under hold'];

t.equal(mtas.reduce((s, a) => s + a.rejected, 0), 0, 'no well-behaved MTA is rejected');
t.equal(mtas.reduce((s, a) => s + a.heldAfterTrust, 0), 0, 'after its first delivery a well-behaved MTA is never held again');
t.ok(mtas.every((a) => a.delivered), 'every well-behaved MTA delivered');
t.ok(zStopped / zTotal > 0.5, `most zombie sessions end deferred, rejected or abandoned under hold: ${zStopped}/${zTotal} (${Math.round((100 * zStopped) / zTotal)}%)`);
t.ok(row('dictionary').delivered + row('dictionary')['held+delivered'] < row('dictionary').deferred + row('dictionary').rejected, 'the dictionary attacker is mostly refused');
const burst = row('burst');
t.ok(burst.deferred > 0, `the burst from one /24 is rate limited (${burst.deferred} deferred)`);
