// Fuzzing, short (the long run is `npm run fuzz`): mutated real captures and
// random bytes into both codecs and both live listeners. Properties: only
// typed peer errors (1xx) come out of the codecs; the daemon stays up; each
// malformed connection is closed with at most one warning; a well-behaved
// connection is served throughout.
import t from 'tap';
import net from 'node:net';
import { PolicyDecoder } from '../dist/policy/codec.js';
import { toRequest } from '../dist/policy/request.js';
import { FrameDecoder } from '../dist/milter/codec.js';
import { decodeCommand } from '../dist/milter/payload.js';
import { PeerError } from '../dist/shield/errors.js';
import { policyVectors, milterVectors } from './helpers/vectors.js';
import { Rng, mutate } from './helpers/fuzz.js';
import { startDaemon, until } from './helpers/daemon.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import { MilterClient, mta } from './helpers/milter-client.js';

const policyPool = policyVectors().slice(0, 200).map((v) => Buffer.from(v.raw, 'utf8'));
const milterPool = milterVectors().filter((v) => v.dir === 'in' && !v.cut).slice(0, 400).map((v) => Buffer.from(v.hex, 'hex'));
const LIMITS = { maxLineLength: 4096, maxRequestSize: 65536, maxAttributes: 256 };

t.test('codecs: only typed 1xx errors, whatever the bytes', async (t) => {
  const rng = new Rng(20261127);
  let policyErrors = 0;
  let milterErrors = 0;
  let frames = 0;
  for (let i = 0; i < 20_000; i++) {
    const p = mutate(policyPool[rng.int(policyPool.length)]!, rng, policyPool);
    const d = new PolicyDecoder(LIMITS);
    try {
      for (const a of d.push(p)) { try { toRequest(a); } catch (e) { if (!(e instanceof PeerError)) throw e; } }
      d.end();
    } catch (e) {
      if (!(e instanceof PeerError) || e.code >= 200) { t.fail(`policy: ${String(e)} on ${p.toString('hex')}`); return; }
      policyErrors++;
    }
    const m = mutate(Buffer.concat([milterPool[rng.int(milterPool.length)]!, milterPool[rng.int(milterPool.length)]!]), rng, milterPool);
    const f = new FrameDecoder(1 << 20);
    try {
      for (const fr of f.push(m)) { frames++; decodeCommand(fr); }
      f.end();
    } catch (e) {
      if (!(e instanceof PeerError) || e.code >= 200) { t.fail(`milter: ${String(e)} on ${m.toString('hex')}`); return; }
      milterErrors++;
    }
  }
  t.pass(`20,000 mutated inputs each: ${policyErrors} policy and ${milterErrors} milter inputs refused with a 1xx error, ${frames} frames decoded`);
});

t.test('live listeners: fuzzed connections are closed, the daemon and a good connection carry on', async (t) => {
  const h = await startDaemon(t);
  const policyPort = portOf(h.daemon.endpoints.policy[0]);
  const milterPort = portOf(h.daemon.endpoints.milter[0]);
  const good = await PolicyClient.connect({ port: policyPort });
  t.teardown(() => good.close());
  const goodM = await MilterClient.connect(milterPort);
  t.teardown(() => goodM.close());
  await goodM.open();
  const rng = new Rng(7);
  const N = 300;
  for (let i = 0; i < N; i++) {
    const milter = i % 2 === 1;
    const bytes = milter ? mutate(Buffer.concat([mta.optneg(), milterPool[rng.int(milterPool.length)]!]), rng, milterPool) : mutate(policyPool[rng.int(policyPool.length)]!, rng, policyPool);
    await new Promise<void>((resolve) => {
      const s = net.connect(milter ? milterPort : policyPort, '127.0.0.1', () => s.end(bytes));
      s.on('data', () => {});
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    });
    if (i % 50 === 49) {
      t.equal(await good.ask(rcptRequest({ instance: `g.${i}` })), 'action=DUNNO\n\n', `policy still served after ${i + 1}`);
      t.equal((await goodM.ask(mta.helo(`still-${i}`)))?.final.cmd, 0x63, `milter still served after ${i + 1}`);
    }
  }
  t.ok(await until(() => h.daemon.openConnections === 2, 5000), 'every fuzzed connection closed');
  const warnings = h.logs().filter((l) => (l['level'] as number) === 40 && typeof l['code'] === 'number');
  t.ok(warnings.length <= N, `${warnings.length} warnings for ${N} fuzzed connections (at most one each)`);
  const perConn = new Map<string, number>();
  for (const w of warnings) perConn.set(String(w['ctx']), (perConn.get(String(w['ctx'])) ?? 0) + 1);
  t.ok([...perConn.values()].every((n) => n === 1), 'never two warnings for one connection');
  t.notOk(h.logs().some((l) => l['code'] === 901), 'no internal error');
});
