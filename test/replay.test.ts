// sluicectl replay: sessions rebuilt from the captured Postfix 3.7 logs
// (test/fixtures/maillog), would-have verdicts, both timestamp forms, gzip
// and standard input, lines that are not Postfix's.
import t from 'tap';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SessionBuilder, type LogSession } from '../dist/replay/maillog.js';
import { Replay } from '../dist/replay/replay.js';
import { defaults } from './helpers/engine.js';
import { run } from './helpers/spawn.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const LOGS = path.join(ROOT, 'test', 'fixtures', 'maillog');
const log = (name: string): string[] => readFileSync(path.join(LOGS, `${name}.log`), 'utf8').split('\n').filter(Boolean);

function sessionsOf(lines: string[]): LogSession[] {
  const out: LogSession[] = [];
  const b = new SessionBuilder((s) => out.push(s), 2026);
  for (const l of lines) b.line(l);
  b.finish();
  return out;
}

t.test('each captured log gives the session it shows', async (t) => {
  t.match(sessionsOf(log('quit-after-rcpt')), [{ client: '127.0.0.1', stages: ['connect', 'helo', 'mail', 'rcpt'], quit: true, delivered: 0, lostAt: undefined }], 'QUIT after RCPT');
  t.match(sessionsOf(log('drop-after-data')), [{ stages: ['connect', 'helo', 'mail', 'rcpt', 'data'], quit: false, delivered: 0, lostAt: 'data' }], 'lost after DATA');
  t.match(sessionsOf(log('rset-abort')), [{ stages: ['connect', 'helo', 'mail', 'rcpt', 'data', 'eom'], quit: true, delivered: 1, queueIds: ['5E7B720C085', '5F36020C085'] }], 'RSET, then a second transaction delivered');
  t.match(sessionsOf(log('bdat')), [{ stages: ['connect', 'helo', 'mail', 'rcpt', 'data', 'eom'], delivered: 1 }], 'BDAT');
  t.match(sessionsOf(log('pipelining')), [{ delivered: 1, quit: true }], 'pipelining: the disconnect line comes after the queue manager\'s');
  t.match(sessionsOf(log('ipv6')), [{ client: '::1', clientName: 'unknown', delivered: 1 }], 'IPv6');
  t.match(sessionsOf(log('starttls')), [{ stages: ['connect', 'helo', 'mail', 'rcpt', 'data', 'eom'], delivered: 1 }], 'STARTTLS');
  t.match(sessionsOf(log('all-rcpt-rejected')), [{ helo: 'vm', sender: 'sender@example.org', stages: ['connect', 'helo', 'mail', 'rcpt'], delivered: 0 }], 'HELO and sender from the reject line');
  t.equal(sessionsOf(log('two-msgs'))[0]?.delivered, 2, 'two messages on one connection');
  const burst = sessionsOf(log('burst'));
  t.equal(burst.length, 16, 'sixteen sessions from four smtpd processes at once, told apart by process');
  t.equal(burst.reduce((n, s) => n + s.delivered, 0), 16, 'sixteen messages');
  // Postfix's words for a client lost after RCPT (smtpd.c), as a zombie leaves.
  const lost = [
    'Nov 27 15:00:01 mx postfix/smtpd[2001]: connect from unknown[198.51.100.66]',
    'Nov 27 15:00:04 mx postfix/smtpd[2001]: lost connection after RCPT from unknown[198.51.100.66]',
    'Nov 27 15:00:04 mx postfix/smtpd[2001]: disconnect from unknown[198.51.100.66] ehlo=1 mail=1 rcpt=0/1 commands=2/3',
  ];
  const [z] = sessionsOf(lost);
  t.match(z, { client: '198.51.100.66', stages: ['connect', 'helo', 'mail', 'rcpt'], lostAt: 'rcpt', quit: false, delivered: 0 }, 'lost after RCPT');
  t.equal(z!.end - z!.start, 3000, 'three seconds after connect');
});

t.test('RFC 3339 timestamps read as the traditional form does; other lines are counted', async (t) => {
  const months: Record<string, string> = { Nov: '11' };
  const rfc = log('rset-abort').map((l) => l.replace(/^(\w{3}) (\d\d) (\d\d:\d\d:\d\d)/, (_m, mon: string, d: string, time: string) => `2026-${months[mon]}-${d}T${time}.000000+00:00`));
  t.same(sessionsOf(rfc), sessionsOf(log('rset-abort')));
  const b = new SessionBuilder(() => {}, 2026);
  for (const l of ['not a log line', 'Nov 27 15:00:01 mx kernel: [123.4] eth0 up', ...log('ipv6')]) b.line(l);
  t.equal(b.lines, 2 + log('ipv6').length);
  t.equal(b.unparsed, 2, 'two lines that are not Postfix\'s, counted and passed by');
});

t.test('would-have: delivering clients are not refused; a list says so when it refuses them; zombies are shaped', async (t) => {
  const all = ['quit-after-rcpt', 'drop-after-data', 'rset-abort', 'bdat', 'pipelining', 'ipv6', 'starttls', 'two-msgs', 'burst'].flatMap(log);
  const plain = new Replay(defaults(), 2026);
  for (const l of all) plain.line(l);
  const r = plain.finish();
  t.equal(r.deliveredButRefused, 0, 'no session that delivered would have been deferred or rejected');
  t.ok(r.delivered >= 10);

  const listed = new Replay(defaults('lists:\n  deny: ["127.0.0.1"]\n'), 2026);
  for (const l of all) listed.line(l);
  const lr = listed.finish();
  t.ok(lr.deliveredButRefused > 0, `with a deny list: ${lr.deliveredButRefused} delivering sessions would have been rejected`);
  t.match(lr.risk[0], { client: '127.0.0.1', verdict: 'reject', stage: 'connect', rule: 'deny 127.0.0.1' });
  t.match(lr.risk[0]?.reason.join('\n'), /deny-listed: 127\.0\.0\.1/, 'with the reason explain gives');

  // A zombie that drops after RCPT within seconds, again and again.
  const zombie = new Replay(defaults(), 2026);
  for (let i = 0; i < 12; i++) {
    const s = String(10 + i * 5).padStart(2, '0');
    const e = String(12 + i * 5).padStart(2, '0');
    zombie.line(`Nov 27 16:00:${s} mx postfix/smtpd[${3000 + i}]: connect from unknown[198.51.100.66]`);
    zombie.line(`Nov 27 16:00:${e} mx postfix/smtpd[${3000 + i}]: lost connection after RCPT from unknown[198.51.100.66]`);
    zombie.line(`Nov 27 16:00:${e} mx postfix/smtpd[${3000 + i}]: disconnect from unknown[198.51.100.66] ehlo=1 mail=1 rcpt=0/1 commands=2/3`);
  }
  const zr = zombie.finish();
  const shaped = Object.values(zr.verdicts).reduce((n, v) => n + (v['hold'] ?? 0) + (v['defer'] ?? 0) + (v['reject'] ?? 0), 0);
  t.ok(shaped > 0, `shaped ${shaped} times`);
  t.ok((zr.verdicts['rcpt']?.['defer'] ?? 0) + (zr.verdicts['rcpt']?.['reject'] ?? 0) > 0, 'deferred or rejected at RCPT once it had dropped enough');
  t.ok(zr.lostShapedEarlier >= 10, `${zr.lostShapedEarlier} of 12 lost sessions would have been shaped at or before RCPT`);
  t.ok(zr.holdSeconds > 0 && zr.peakHolds >= 1);
});

t.test('sluicectl replay: files, gzip, standard input, --json, --config', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-replay-'));
  const text = ['two-msgs', 'ipv6'].flatMap(log).join('\n') + '\n';
  writeFileSync(path.join(dir, 'mail.log'), text);
  writeFileSync(path.join(dir, 'mail.log.1.gz'), gzipSync(text));
  const ctl = async (args: string[], input?: string) => {
    const c = run(t, [path.join(ROOT, 'bin', 'sluicectl'), ...args], input ? { command: 'sh', node: [] } : {});
    return { code: (await c.exited).code, out: c.stdout(), err: c.stderr() };
  };
  const plain = await ctl(['replay', path.join(dir, 'mail.log')]);
  t.equal(plain.code, 0);
  t.match(plain.out, /2 sessions: 2 delivered, 0 lost/);
  t.match(plain.out, /^stage +pass +hold +defer +reject$/m);
  const gz = await ctl(['--json', 'replay', path.join(dir, 'mail.log.1.gz')]);
  t.match(JSON.parse(gz.out), { sessions: 2, delivered: 2, lines: text.split('\n').length - 1 }, 'a gzip file read as it is');
  const piped = run(t, ['-c', `cat ${path.join(dir, 'mail.log')} | ${process.execPath} ${path.join(ROOT, 'bin', 'sluicectl')} --json replay`], { command: 'sh' });
  await piped.exited;
  t.match(JSON.parse(piped.stdout()), { sessions: 2 }, 'standard input');
  writeFileSync(path.join(dir, 'deny.yaml'), 'lists:\n  deny: ["::1"]\n');
  const denied = await ctl(['--json', 'replay', '--config', path.join(dir, 'deny.yaml'), path.join(dir, 'mail.log')]);
  t.match(JSON.parse(denied.out), { deliveredButRefused: 1, risk: [{ client: '::1', verdict: 'reject' }] }, 'a candidate configuration');
  const bad = await ctl(['replay', '--config', path.join(dir, 'absent.yaml')]);
  t.equal(bad.code, 78, 'a configuration that does not load: EX_CONFIG, as sluiced');
  t.equal(bad.err, `sluicectl: ${path.join(dir, 'absent.yaml')}: cannot read: no such file\n`, 'its name once');
  // Input that cannot be read: one line naming it, EX_NOINPUT.
  writeFileSync(path.join(dir, 'cut.gz'), gzipSync(text.repeat(50)).subarray(0, 200));
  for (const [what, file, why] of [['a missing file', path.join(dir, 'absent.log'), 'no such file'], ['a directory', dir, 'a directory, not a log file'], ['a truncated gzip', path.join(dir, 'cut.gz'), 'truncated gzip data|unexpected end of file']] as const) {
    const r = await ctl(['replay', file]);
    t.equal(r.code, 66, `${what}: exit 66`);
    t.match(r.err, new RegExp(`^sluicectl: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: (${why})\n$`), `${what}: one line naming it`);
  }
  // A file that is no Postfix log: said, EX_DATAERR.
  writeFileSync(path.join(dir, 'passwd'), 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n');
  const notLog = await ctl(['replay', path.join(dir, 'passwd')]);
  t.equal(notLog.code, 65);
  t.match(notLog.err, /no Postfix smtpd sessions found in .*passwd \(2 lines, 2 not Postfix's\)/);
});

/** A session of 198.51.100.77 lost after RCPT, `i` minutes after 16:00 (issue 33, items 2 and 3). */
function lostSession(i: number, client = '198.51.100.77', name = 'unknown'): string[] {
  const m = String(i).padStart(2, '0');
  return [
    `Nov 27 16:${m}:10 mx postfix/smtpd[${4000 + i}]: connect from ${name}[${client}]`,
    `Nov 27 16:${m}:12 mx postfix/smtpd[${4000 + i}]: lost connection after RCPT from ${name}[${client}]`,
    `Nov 27 16:${m}:12 mx postfix/smtpd[${4000 + i}]: disconnect from ${name}[${client}] ehlo=1 mail=1 rcpt=0/1 commands=2/3`,
  ];
}

t.test('a delivery that a held session would have deferred later is counted as refused', async (t) => {
  const r = new Replay(defaults(), 2026);
  for (let i = 0; i < 8; i++) for (const l of lostSession(i)) r.line(l);
  // Then the same client delivers.
  for (const l of [
    'Nov 27 16:30:01 mx postfix/smtpd[5000]: connect from unknown[198.51.100.77]',
    'Nov 27 16:30:01 mx postfix/smtpd[5000]: 6A1B220C0F1: client=unknown[198.51.100.77]',
    'Nov 27 16:30:02 mx postfix/cleanup[5001]: 6A1B220C0F1: message-id=<x@y>',
    'Nov 27 16:30:02 mx postfix/qmgr[5002]: 6A1B220C0F1: from=<a@b.example>, size=400, nrcpt=1 (queue active)',
    'Nov 27 16:30:02 mx postfix/smtpd[5000]: disconnect from unknown[198.51.100.77] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5',
  ]) r.line(l);
  const rep = r.finish();
  t.equal(rep.delivered, 1);
  t.ok((rep.verdicts['rcpt']?.['defer'] ?? 0) > 0, 'RCPT deferrals in the table');
  t.equal(rep.deliveredButRefused, 1, 'the delivering session is one sluice would have refused');
  t.match(rep.risk, [{ client: '198.51.100.77', stage: 'rcpt', verdict: 'defer' }]);
});

t.test('a session\'s stages follow each other: its own holds are never at once', async (t) => {
  const one = new Replay(defaults(), 2026);
  for (const l of lostSession(0)) one.line(l);
  const r1 = one.finish();
  const holds = Object.values(r1.verdicts).reduce((n, v) => n + (v['hold'] ?? 0), 0);
  t.ok(holds >= 2, `one session held at ${holds} stages`);
  t.equal(r1.peakHolds, 1, 'one session: one hold at a time');
  const six = new Replay(defaults(), 2026);
  for (let i = 0; i < 6; i++) for (const l of lostSession(i * 1, `203.0.113.${i + 1}`)) six.line(l);
  const r6 = six.finish();
  t.equal(r6.peakHolds, 1, 'six sessions a minute apart: one hold at a time');
  t.equal(r6.holdsRefused, 0, 'no hold refused for want of budget');
});
