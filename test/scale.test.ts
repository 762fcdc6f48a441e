// Abuse and life cycle at scale, against a real sluiced process: 10,000 idle
// connections reclaimed by the idle timeout; slow writers and a reader that
// stops reading (bounded buffers, backpressure); SIGHUP with a broken and then
// a good config during traffic; SIGTERM with 1,000 held replies.
import t, { type Test } from 'tap';
import { statSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { sluiced, shortDir, type Child } from './helpers/spawn.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import { MilterClient, mta } from './helpers/milter-client.js';
import { holdingConfig, holdMilter, holdPolicy, idle, metric, normalPolicy, openFilesLimit } from './helpers/load.js';
import { rssOf } from './bench/common.js';
import { encodeRequest } from '../dist/policy/codec.js';
import * as C from '../dist/milter/constants.js';
import { ConnectionCounter, Listener, type Connection } from '../dist/net/listener.js';
import { Outbox } from '../dist/net/outbox.js';
import { Shield } from '../dist/shield/shield.js';
import { parseEndpoint } from '../dist/config/endpoint.js';
import net from 'node:net';
import { pino } from 'pino';

interface Running {
  child: Child;
  policy: number;
  milter: number;
  metrics: string;
  config: string;
  dir: string;
}

async function start(t: Test, yaml: string): Promise<Running> {
  const dir = shortDir(t);
  const config = path.join(dir, 'sluice.yaml');
  const base = `state_dir: ${dir}\nlog:\n  format: json\npolicy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: "inet:127.0.0.1:0"\n`;
  writeFileSync(config, base + yaml);
  const child = sluiced(t, ['-c', config, '-f']);
  const ready = await child.waitFor((l) => String(l['msg']).startsWith('sluiced ready'));
  const listen = ready['listen'] as Record<string, string[]>;
  return { child, policy: portOf(listen['policy']![0]), milter: portOf(listen['milter']![0]), metrics: String(ready['metrics']), config, dir };
}

const closed = (s: import('node:net').Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.once('close', () => r())));

t.test('10,000 idle connections: all open at once, reclaimed by the idle timeout, the daemon serving throughout', async (t) => {
  const limit = openFilesLimit();
  t.ok(limit >= 10_500, `this process may open ${limit} files (the test needs 10,500: raise ulimit -n)`);
  if (limit < 10_500) return;
  const d = await start(t, 'limits:\n  max_connections: 10100\n  idle_timeout: 8s\n');
  const rss0 = rssOf(d.child.proc.pid!);
  const t0 = Date.now();
  const sockets = [...await idle(d.policy, 5000), ...await idle(d.milter, 5000)];
  const opened = Date.now() - t0;
  t.equal(sockets.length, 10_000);
  // A client's connect completes in the kernel's accept queue; the daemon may
  // still be accepting the last few (well before the 8 s idle timeout).
  let open = await metric(d.metrics, 'sluice_connections_open');
  for (const end = Date.now() + 3000; open < 10_000 && Date.now() < end;) {
    await new Promise((r) => setTimeout(r, 50));
    open = await metric(d.metrics, 'sluice_connections_open');
  }
  t.equal(open, 10_000, `all 10,000 open at once (opened in ${opened} ms)`);
  const rssPeak = rssOf(d.child.proc.pid!);
  const c = await PolicyClient.connect({ port: d.policy });
  const asked = Date.now();
  t.match(await c.ask(rcptRequest()), /^action=DUNNO\n\n$/, `a normal request is answered meanwhile (${Date.now() - asked} ms)`);
  c.close();
  await Promise.all(sockets.map(closed));
  const reclaimed = Date.now() - t0;
  t.ok(reclaimed < 8000 + opened + 10_000, `all reclaimed by the daemon ${reclaimed} ms after the first opened`);
  t.equal(await metric(d.metrics, 'sluice_connections_open'), 0, 'none left open');
  t.equal(await metric(d.metrics, 'sluice_exceptions_total', 'code="203"'), 10_000, 'each counted once as TRANSPORT_IDLE_TIMEOUT (203)');
  t.equal(d.child.lines().filter((l) => Number(l['level']) >= 40).length, 0, 'and not one warning: idleness is not an error of the peer');
  const again = await PolicyClient.connect({ port: d.policy });
  t.match(await again.ask(rcptRequest()), /^action=DUNNO/, 'still serving');
  again.close();
  t.comment(`sluiced RSS: ${(rss0 / 2 ** 20).toFixed(0)} MiB at start, ${(rssPeak / 2 ** 20).toFixed(0)} MiB with 10,000 idle connections`);
});

t.test('slow writers are served; a client that floods commands without reading is cut off', async (t) => {
  const d = await start(t, 'lists:\n  deny: ["@spam.example"]\n');
  // A policy request and a milter negotiation, a few bytes at a time.
  const slow = await PolicyClient.connect({ port: d.policy });
  const bytes = encodeRequest(Object.entries(rcptRequest()));
  const answer = slow.send(bytes.subarray(0, 1));
  const other = await PolicyClient.connect({ port: d.policy });
  for (let i = 1; i < bytes.length; i += 25) {
    slow.socket.write(bytes.subarray(i, i + 25));
    const t0 = Date.now();
    t.match(await other.ask(rcptRequest({ instance: `o${i}` })), /^action=DUNNO/);
    if (Date.now() - t0 > 250) t.fail(`another connection waited ${Date.now() - t0} ms behind the slow writer`);
    await new Promise((r) => setTimeout(r, 20));
  }
  t.match(await answer, /^action=DUNNO\n\n$/, `a request written in ${Math.ceil(bytes.length / 25)} pieces over ~${Math.ceil(bytes.length / 25) * 20} ms is answered`);
  const m = await MilterClient.connect(d.milter);
  const optneg = mta.optneg();
  const reply = m.ask(optneg.subarray(0, 1));
  for (let i = 1; i < optneg.length; i++) {
    await new Promise((r) => setTimeout(r, 20));
    m.socket.write(optneg.subarray(i, i + 1));
  }
  t.equal((await reply)?.final.cmd, C.SMFIC_OPTNEG, 'a milter negotiation sent byte by byte is answered');
  m.close();

  // A milter client that floods commands without reading: no MTA sends more
  // than a few frames ahead, so it is cut off before anything piles up.
  const flood = await MilterClient.connect(d.milter);
  await flood.open();
  flood.socket.pause();
  const mail = Buffer.concat([mta.macro(C.SMFIC_MAIL, { '{mail_addr}': 'x@spam.example' }), mta.mail('<x@spam.example>')]);
  const rss0 = rssOf(d.child.proc.pid!);
  for (let i = 0; i < 100; i++) flood.socket.write(Buffer.concat(Array.from({ length: 1000 }, () => mail)));
  await flood.idle;
  await d.child.waitFor((l) => /milter frames sent without waiting for replies/.test(String(l['msg'])));
  t.ok(rssOf(d.child.proc.pid!) - rss0 < 32 * 2 ** 20, 'its 100,000 commands cost the daemon no memory to speak of');
  const warnings = d.child.lines().filter((l) => Number(l['level']) >= 40);
  t.match(warnings.map((l) => l['msg']), [/milter frames sent without waiting for replies/], 'one warning, and the connection closed');
  const fresh = await MilterClient.connect(d.milter);
  t.equal((await fresh.open())?.final.cmd, C.SMFIR_CONTINUE, 'another milter connection is served');
  fresh.close();
});

for (const others of [0, 1]) t.test(`backpressure${others ? ' with another connection open (replies wait for the end of the turn)' : ''}: a peer that stops reading stops being read from, and nothing is lost`, async (t) => {
  // The listener itself, with a handler that answers each chunk it reads with
  // 64 KiB, so the write buffer fills far sooner than a protocol's own bounds allow.
  const shield = new Shield();
  const errors: string[] = [];
  shield.register((_ctx, err) => { errors.push(err.symbol); });
  const log = pino({ level: 'silent' });
  const reply = Buffer.alloc(64 * 1024, 0x61);
  let received = 0;
  let chunks = 0;
  let server: Connection | undefined;
  const listener = new Listener({
    protocol: 'policy', shield, log, counter: new ConnectionCounter(() => 10, shield, () => log), idleTimeout: () => 60_000, outbox: new Outbox(shield),
    nextId: () => 1, maxWriteBuffer: 256 * 1024,
    factory: (conn) => {
      const onData = (chunk: Buffer): void => {
        server = conn; // the other connection sends nothing
        received += chunk.length;
        chunks++;
        conn.send(reply);
      };
      return { busy: false, onData, onClose() {}, flush() {}, failMode() {} };
    },
  });
  const ep = parseEndpoint('inet:127.0.0.1:0');
  if (typeof ep === 'string') throw new Error(ep);
  await listener.open([ep], 0o660);
  t.teardown(() => { listener.stopAccepting(); listener.closeAll(); });
  const port = portOf(listener.bound[0]);
  for (let i = 0; i < others; i++) {
    const other = net.connect(port, '127.0.0.1');
    await new Promise((r) => other.once('connect', r));
    t.teardown(() => { other.destroy(); });
  }
  const client = net.connect(port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  client.pause();
  // Write until the server stops reading (the kernel's buffers take some
  // megabytes first), then write as much again: none of it may be read.
  let n = 0;
  const write = async (): Promise<void> => { client.write('x'); n++; await new Promise((r) => setImmediate(r)); };
  while (!server?.socket.isPaused() && n < 50_000) await write();
  t.ok(server?.socket.isPaused(), `the server socket was paused after ${n} requests (${(chunks * reply.length / 2 ** 20).toFixed(0)} MiB of replies in the kernel's buffers and ours)`);
  const stalled = received;
  for (let i = 0; i < 2000; i++) await write();
  await new Promise((r) => setTimeout(r, 300));
  t.equal(received, stalled, 'not one byte more is read while the peer does not read');
  t.ok(server!.socket.writableLength <= 256 * 1024 + reply.length, `${(server!.socket.writableLength / 1024).toFixed(0)} KiB wait in the process: at most the cap and one reply`);
  let got = 0;
  client.on('data', (d: Buffer) => { got += d.length; });
  client.resume();
  const deadline = Date.now() + 30_000;
  while ((received < n || got < chunks * reply.length) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.equal(received, n, 'once the peer reads, every byte it sent is read');
  t.equal(got, chunks * reply.length, `and all ${chunks} replies arrive whole`);
  t.same(errors, [], 'nothing went to the shield');
  client.destroy();
});

t.test('replies: written at once on the only connection, at the end of the turn with others open, in order, and before a close', async (t) => {
  const shield = new Shield();
  const errors: string[] = [];
  shield.register((_ctx, err) => { errors.push(err.symbol); });
  const log = pino({ level: 'silent' });
  /** Per request line: whether the reply had reached the socket when send() returned. */
  const atOnce: boolean[] = [];
  const listener = new Listener({
    protocol: 'policy', shield, log, counter: new ConnectionCounter(() => 10, shield, () => log), idleTimeout: () => 60_000, outbox: new Outbox(shield),
    nextId: () => 1, maxWriteBuffer: 256 * 1024,
    factory: (conn) => ({
      busy: false, onClose() {}, flush() {}, failMode() {},
      onData(chunk: Buffer): void {
        for (const line of chunk.toString('latin1').split('\n').filter(Boolean)) {
          const before = conn.socket.bytesWritten;
          conn.send(`${line} 1\n`);
          atOnce.push(conn.socket.bytesWritten > before);
          conn.send(Buffer.from(`${line} 2\n`));
          if (line.startsWith('bye')) conn.close();
        }
      },
    }),
  });
  const ep = parseEndpoint('inet:127.0.0.1:0');
  if (typeof ep === 'string') throw new Error(ep);
  await listener.open([ep], 0o660);
  t.teardown(() => { listener.stopAccepting(); listener.closeAll(); });
  const port = portOf(listener.bound[0]);
  const connect = async (): Promise<{ socket: net.Socket; text: () => string; ended: Promise<void> }> => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('latin1').on('data', (d: string) => { text += d; });
    const ended = new Promise<void>((r) => socket.once('close', () => r()));
    await new Promise((r) => socket.once('connect', r));
    t.teardown(() => { socket.destroy(); });
    return { socket, text: () => text, ended };
  };
  const until = async (ok: () => boolean): Promise<void> => {
    const deadline = Date.now() + 5000;
    while (!ok() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  };

  const alone = await connect();
  alone.socket.write('a\n');
  await until(() => alone.text() === 'a 1\na 2\n');
  t.equal(alone.text(), 'a 1\na 2\n', 'the only connection gets its replies');
  t.same(atOnce, [true], 'written by send() itself: nothing else to gather');

  const others = [await connect(), await connect()];
  atOnce.length = 0;
  for (const [i, o] of others.entries()) o.socket.write(`x${i}\ny${i}\n`);
  await until(() => others.every((o, i) => o.text() === `x${i} 1\nx${i} 2\ny${i} 1\ny${i} 2\n`));
  for (const [i, o] of others.entries()) t.equal(o.text(), `x${i} 1\nx${i} 2\ny${i} 1\ny${i} 2\n`, `connection ${i}: every reply, in the order sent`);
  t.ok(atOnce.length === 4 && atOnce.every((w) => !w), 'with other connections open, send() queues: the write comes at the end of the turn');

  alone.socket.write('bye\n');
  await alone.ended;
  t.equal(alone.text(), 'a 1\na 2\nbye 1\nbye 2\n', 'replies sent just before close() are written before the socket is destroyed');
  t.same(errors, [], 'nothing went to the shield');
});

t.test('SIGHUP during traffic: a broken config is refused, a good one applied, no request lost', async (t) => {
  const d = await start(t, holdingConfig(30, 100));
  let rejects = 0;
  let total = 0;
  const traffic = normalPolicy(d.policy, 5, 4000, (reply) => { total++; if (reply.startsWith('action=554')) rejects++; });
  await new Promise((r) => setTimeout(r, 1000));
  const good = (await import('node:fs')).readFileSync(d.config, 'utf8');
  writeFileSync(d.config, good + 'limits:\n  max_conections: 5\nlists:\n  deny: "not a list"\n');
  d.child.proc.kill('SIGHUP');
  await d.child.waitFor((l) => l['msg'] === 'reload refused: keeping the running configuration');
  const beforeGood = rejects;
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(rejects, 0, 'the broken config changed nothing');
  writeFileSync(d.config, good + 'lists:\n  deny: ["12.0.0.0/8"]\n');
  d.child.proc.kill('SIGHUP');
  await d.child.waitFor((l) => l['msg'] === 'configuration reloaded');
  const lat = await traffic;
  t.equal(beforeGood, 0);
  t.ok(rejects > 0, `the good config is in force at once: ${rejects} of ${total} requests rejected after it`);
  t.equal(lat.length, total, 'every request had its reply; no connection was dropped');
  const refused = d.child.lines().filter((l) => String(l['msg']).startsWith('reload refused: '));
  t.ok(refused.length >= 3, 'each problem of the broken file logged (file:line: key)');
  t.match(refused.map((l) => l['msg']).join('\n'), /max_conections: unknown key/);
  t.equal(d.child.proc.exitCode, null, 'still running');
});

t.test('SIGTERM with 1,000 held replies: all answered, snapshot written, exit 0 within 5 s', async (t) => {
  t.ok(openFilesLimit() >= 1200, 'enough file descriptors for 1,000 connections');
  const d = await start(t, `limits:\n  max_connections: 3000\n${holdingConfig(30, 2000)}`);
  const held = [...await holdPolicy(d.policy, 500), ...await holdMilter(d.milter, 500)];
  const deadline = Date.now() + 20_000;
  while (await metric(d.metrics, 'sluice_holds_in_progress') < 1000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  t.equal(await metric(d.metrics, 'sluice_holds_in_progress'), 1000, '1,000 replies held (500 policy, 500 milter)');
  const snapshot = path.join(d.dir, 'reputation.snapshot');
  const t0 = Date.now();
  d.child.proc.kill('SIGTERM');
  const exit = await d.child.exited;
  const took = Date.now() - t0;
  t.same(exit, { code: 0, signal: null }, 'exit status 0');
  t.ok(took < 5000, `exited ${took} ms after SIGTERM`);
  const answers = await Promise.all(held.map((h) => h.answer));
  const policy = answers.slice(0, 500).filter((a) => typeof a === 'string' && a === 'action=DUNNO\n\n').length;
  const milter = answers.slice(500).filter((a) => typeof a === 'object' && a?.final.cmd === C.SMFIR_CONTINUE).length;
  t.equal(policy, 500, 'every held policy reply was answered (DUNNO) before the close');
  t.equal(milter, 500, 'every held milter reply was answered (CONTINUE) before the close');
  t.ok(existsSync(snapshot) && statSync(snapshot).mtimeMs >= t0 - 1, 'the snapshot was written at shutdown');
  const msgs = d.child.lines().map((l) => l['msg']);
  t.ok(msgs.includes('snapshot written'), 'and logged');
  t.equal(msgs.at(-1), 'sluiced stopped', 'the last line, after the snapshot line: the log is closed in order before exit');
  for (const h of held) h.client.close();
});
