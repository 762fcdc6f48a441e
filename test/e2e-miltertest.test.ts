// End to end: OpenDKIM's miltertest (Debian package miltertest) drives
// sluice's milter with the Lua scripts in test/miltertest/.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { startDaemon } from './helpers/daemon.js';
import { ScriptedRule } from './helpers/scripted-rule.js';
import { portOf } from './helpers/policy-client.js';
import { ROOT } from './helpers/spawn.js';

const MILTERTEST = '/usr/bin/miltertest';

function gate(): { skip: string | false } {
  const why = existsSync(MILTERTEST) ? undefined : 'Debian package miltertest is not installed (.ci/run installs it)';
  if (why && process.env['CI']) t.fail(`cannot run under CI: ${why}`);
  return { skip: why && !process.env['CI'] ? why : false };
}

function miltertest(script: string, port: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(MILTERTEST, ['-s', path.join(ROOT, 'test', 'miltertest', script)], {
      env: { ...process.env, SLUICE_MILTER: `inet:${port}@127.0.0.1` }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    p.on('close', (code) => resolve({ code, out }));
  });
}

t.test('miltertest scripts pass against sluice', gate(), async (t) => {
  const engine = new ScriptedRule();
  const h = await startDaemon(t, 'milter:\n  listen: ["inet:127.0.0.1:0"]\n  header: X-Sluice\n  progress_interval: 300ms\n', engine);
  const port = portOf(h.daemon.endpoints.milter[0]);

  const tx = await miltertest('transaction.lua', port);
  t.equal(tx.code, 0, 'transaction.lua exit 0');
  t.match(tx.out, /ok - negotiation[\s\S]*ok - X-Sluice header added[\s\S]*ok - held end of message answered[\s\S]*ok - done/);
  if (tx.code !== 0) t.comment(tx.out);
  t.ok(engine.events.some((e) => e.client === '192.0.2.44' && e.stage === 'rcpt' && e.queueId === 'MT0001'), 'the engine saw the transaction');
  t.ok(h.logs().some((l) => l['rule'] === 'test-hold' && (l['held_ms'] as number) >= 1200), 'the end of message was held 1.2 s');

  const v2 = await miltertest('negotiate-v2.lua', port);
  t.equal(v2.code, 0, 'negotiate-v2.lua exit 0');
  if (v2.code !== 0) t.comment(v2.out);
  t.ok(engine.events.some((e) => e.client === '2001:db8::7'), 'IPv6 client address read');
  t.notOk(h.logs().some((l) => (l['level'] as number) >= 40), 'no warnings');
});
