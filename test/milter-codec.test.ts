// Tests for lib/milter codec and payload readers against real Postfix 3.7.11 frames.
import t from 'tap';
import { Frame, FrameDecoder, encodeFrame } from '../dist/milter/codec.js';
import { decodeCommand } from '../dist/milter/payload.js';
import { replyCodeText, replyCode, optnegReply, addHeader, insertHeader, quarantine } from '../dist/milter/replies.js';
import { negotiate } from '../dist/milter/negotiate.js';
import { mtaFromVersion, holdPlan } from '../dist/milter/mta.js';
import * as C from '../dist/milter/constants.js';
import { PeerError } from '../dist/shield/errors.js';
import { milterVectors } from './helpers/vectors.js';

const MAX = 1 << 20;

function frames(chunks: Buffer[]): Frame[] {
  const d = new FrameDecoder(MAX);
  const out: Frame[] = [];
  for (const c of chunks) out.push(...d.push(c));
  d.end();
  return out;
}

function codeOf(fn: () => unknown): number | undefined {
  try { fn(); } catch (err) { return err instanceof PeerError ? err.code : -1; }
  return undefined;
}

const whole = milterVectors().filter((v) => !v.cut);

t.test('every captured frame decodes, re-encodes to its bytes, and types as recorded', async (t) => {
  t.ok(whole.length > 1000, `${whole.length} whole frames`);
  for (const v of whole) {
    const bytes = Buffer.from(v.hex, 'hex');
    const [f] = frames([bytes]);
    t.equal(String.fromCharCode(f!.cmd), v.cmd);
    if (!t.equal(encodeFrame(f!.cmd, f!.payload).toString('hex'), v.hex, `${v.scenario} ${v.cmd} round-trips`)) break;
    if (v.dir !== 'in') continue;
    const c = decodeCommand(f!);
    const fl = v.fields;
    switch (c.kind) {
      case 'optneg': t.same([c.version, '0x' + c.actions.toString(16), '0x' + c.protocol.toString(16)], [fl['version'], fl['actions'], fl['protocol']]); break;
      case 'connect': t.same({ hostname: c.hostname, family: c.family, port: c.port, address: c.address }, fl); break;
      case 'helo': t.equal(c.helo, fl['helo']); break;
      case 'mail': case 'rcpt': t.same(c.args, fl['args']); break;
      case 'header': t.same({ name: c.name, value: c.value }, fl); break;
      case 'macro': {
        const want = Object.entries(fl['macros'] as Record<string, string>).map(([k, val]) => [k.replace(/^\{(.*)\}$/, '$1'), val]);
        t.same([...c.macros], want);
        t.equal(String.fromCharCode(c.stage), fl['for_cmd']);
        break;
      }
      case 'body': t.equal(c.chunk.length, fl['size']); break;
      default: t.ok(['data', 'eoh', 'eob', 'abort', 'quit'].includes(c.kind), c.kind);
    }
  }
});

t.test('each connection stream: whole, split at every offset, byte by byte', async (t) => {
  const byConn = new Map<string, Buffer[]>();
  for (const v of whole) {
    if (v.dir !== 'in') continue;
    if (v.scenario === 'burst') continue; // several connections interleaved
    const k = v.scenario;
    if (!byConn.has(k)) byConn.set(k, []);
    byConn.get(k)!.push(Buffer.from(v.hex, 'hex'));
  }
  const picked = ['ehlo-single', 'ipv6', 'starttls', 'headers', 'smtputf8', 'miltertest'].filter((k) => byConn.has(k));
  t.ok(picked.length >= 5, `${picked.length} streams`);
  for (const k of picked) {
    const parts = byConn.get(k)!;
    const stream = Buffer.concat(parts);
    const want = parts.map((p) => p.toString('hex'));
    const got = (fs: Frame[]): string[] => fs.map((f) => encodeFrame(f.cmd, f.payload).toString('hex'));
    t.same(got(frames([stream])), want, `${k}: whole`);
    let ok = true;
    for (let i = 0; i <= stream.length && ok; i++) {
      if (JSON.stringify(got(frames([stream.subarray(0, i), stream.subarray(i)]))) !== JSON.stringify(want)) { t.fail(`${k} split at ${i}`); ok = false; }
    }
    t.ok(ok, `${k}: ${stream.length + 1} splits, including inside every length field`);
    t.same(got(frames([...stream].map((b) => Buffer.from([b])))), want, `${k}: byte by byte`);
  }
  // A body frame above 64 KiB of header: one frame that straddles many chunks.
  const big = encodeFrame(C.SMFIC_HEADER, Buffer.concat([Buffer.from('X-Big\0'), Buffer.alloc(102400, 0x61), Buffer.from([0])]));
  const pieces: Buffer[] = [];
  for (let i = 0; i < big.length; i += 1000) pieces.push(big.subarray(i, i + 1000));
  const [f] = frames(pieces);
  t.equal(f!.payload.length, 102400 + 7, 'a 100 KiB header frame, fed in 1000-byte pieces');
});

t.test('malformed frames give a typed 1xx error, and nothing after it', async (t) => {
  const hello = Buffer.from('16030100a5010000a10303', 'hex');
  const cases: [string, Buffer, number][] = [
    ['length 0', Buffer.from('0000000063', 'hex'), 110],
    ['length 2^31', Buffer.from('8000000063', 'hex'), 110],
    ['GET / HTTP/1.0', Buffer.from('GET / HTTP/1.0\r\n\r\n'), 110],
    ['TLS ClientHello', hello, 110],
    ['above max_frame_size', Buffer.from('0010000163', 'hex'), 110],
  ];
  for (const [name, bytes, code] of cases) {
    const d = new FrameDecoder(MAX);
    t.equal(codeOf(() => d.push(bytes)), code, name);
    t.equal(codeOf(() => d.push(encodeFrame(C.SMFIC_ABORT))), code, `${name}: stays failed`);
  }
  const split = new FrameDecoder(MAX);
  t.same(split.push(Buffer.from('0000', 'hex')), []);
  t.equal(codeOf(() => split.push(Buffer.from('0000', 'hex'))), 110, 'length 0 found across a split header');
  const cut = new FrameDecoder(MAX);
  cut.push(Buffer.from('0000000a48616263', 'hex'));
  t.notOk(cut.idle);
  t.equal(codeOf(() => cut.end()), 106, 'EOF inside a frame');

  const payloadCases: [string, Frame, number][] = [
    ['HELO without its NUL', Frame.of(C.SMFIC_HELO, Buffer.from('abc')), 112],
    ['HELO with bytes left over', Frame.of(C.SMFIC_HELO, Buffer.from('abc\0xyz')), 112],
    ['OPTNEG too short', Frame.of(C.SMFIC_OPTNEG, Buffer.alloc(8)), 112],
    ['header value without its NUL', Frame.of(C.SMFIC_HEADER, Buffer.from('Subject\0hi')), 112],
    ['header with bytes left over', Frame.of(C.SMFIC_HEADER, Buffer.from('Subject\0hi\0x')), 112],
    ['header name only', Frame.of(C.SMFIC_HEADER, Buffer.from('Subject\0')), 112],
    ['CONNECT with an unknown family', Frame.of(C.SMFIC_CONNECT, Buffer.from('host\0X')), 112],
    ['CONNECT without port', Frame.of(C.SMFIC_CONNECT, Buffer.from('host\x004')), 112],
    ['MAIL with no address', Frame.of(C.SMFIC_MAIL, Buffer.alloc(0)), 112],
    ['DATA with a payload', Frame.of(C.SMFIC_DATA, Buffer.from('x')), 112],
    ['unknown command Z', Frame.of(0x5a, Buffer.alloc(0)), 111],
  ];
  for (const [name, f, code] of payloadCases) t.equal(codeOf(() => decodeCommand(f)), code, name);
  // Frames are read where they lie in their chunk: a string must end inside
  // its own frame, not at a NUL of the frame after it.
  const [unended, next] = new FrameDecoder(MAX).push(Buffer.concat([encodeFrame(C.SMFIC_HELO, Buffer.from('abc')), encodeFrame(C.SMFIC_HELO, Buffer.from('x\0'))]));
  t.equal(codeOf(() => decodeCommand(unended!)), 112, 'a string running into the next frame has no NUL of its own');
  t.same(decodeCommand(next!), { kind: 'helo', helo: 'x' }, 'and the next frame reads alone');
  const [macro] = new FrameDecoder(MAX).push(Buffer.concat([encodeFrame(C.SMFIC_MACRO, Buffer.from('Cj\0x')), encodeFrame(C.SMFIC_HELO, Buffer.from('y\0'))]));
  t.equal(codeOf(() => decodeCommand(macro!)), 112, 'a macro value running into the next frame too');
  const [short] = new FrameDecoder(MAX).push(Buffer.concat([encodeFrame(C.SMFIC_OPTNEG, Buffer.alloc(8)), encodeFrame(C.SMFIC_OPTNEG, Buffer.alloc(12))]));
  t.equal(codeOf(() => decodeCommand(short!)), 112, 'numbers must lie inside the frame too');
  const [empty] = new FrameDecoder(MAX).push(Buffer.concat([encodeFrame(C.SMFIC_DATA), encodeFrame(C.SMFIC_HELO, Buffer.from('y\0'))]));
  t.same(decodeCommand(empty!), { kind: 'data' }, 'an empty payload followed by another frame is empty');
  t.same(decodeCommand(Frame.of(C.SMFIC_CONNECT, Buffer.from('host\0U'))), { kind: 'connect', hostname: 'host', family: 'U', port: 0, address: '' });
  const odd = decodeCommand(Frame.of(C.SMFIC_MACRO, Buffer.from('Cj\0x\0v\0')));
  t.same(odd.kind === 'macro' ? [...odd.macros] : [], [['j', 'x'], ['v', '']], 'a name without a value reads as empty');
  const named = decodeCommand(Frame.of(C.SMFIC_MACRO, Buffer.from('M{auth_authen}\0alice\0i\0Q1\0{i}\0Q2\0{x\0a\0{}\0b\0')));
  if (named.kind !== 'macro') throw new Error(named.kind);
  t.equal(named.macros.get('auth_authen'), 'alice', 'a name sent in braces is found without them');
  t.equal(named.macros.get('{auth_authen}'), 'alice', 'and with them, as smfi_getsymval finds it');
  t.equal(named.macros.get('i'), 'Q2', 'the last of a name sent twice (bare, then in braces) wins');
  t.equal(named.macros.get('{x'), 'a', 'a brace that does not close is part of the name');
  t.equal(named.macros.get('x'), undefined);
  t.equal(named.macros.get(''), undefined, 'an empty name is not "{}"');
  t.same([...named.macros], [['auth_authen', 'alice'], ['i', 'Q2'], ['{x', 'a'], ['{}', 'b']], 'each name once, with its last value');
});

t.test('replies', async (t) => {
  t.equal(replyCodeText(451, '4.7.1', 'Slow down'), '451 4.7.1 Slow down');
  t.equal(replyCode(451, '4.7.1', 'Slow down').toString('hex'), '00000015' + '79' + Buffer.from('451 4.7.1 Slow down\0').toString('hex'), 'the spec example, byte for byte');
  t.equal(replyCodeText(550, '4.7.1', '100% spam'), '550 5.7.1 100%% spam', 'class digit matched, % doubled');
  t.equal(replyCodeText(550, 'junk', 'x'), '550 5.7.1 x');
  t.equal(replyCodeText(250, '2.0.0', 'x'), '451 4.0.0 x', 'never a 2xx REPLYCODE');
  t.equal(replyCodeText(421, '4.7.0', 'line one\nline two'), '421-4.7.0 line one\r\n421 4.7.0 line two');
  t.equal(replyCodeText(554, '5.7.1', '\0\r\n'), '554 5.7.1 Rejected');
  t.equal(replyCodeText(451, '4.7.1', 'x'.repeat(2000)).length, 10 + 900);
  t.equal(replyCodeText(451, '4.7.1', Array.from({ length: 40 }, (_, i) => `l${i}`).join('\n')).split('\r\n').length, 32);
  t.equal(addHeader('X-Sluice', 'a\r\nb').toString('latin1').slice(5), 'hX-Sluice\0a b\0'.slice(1));
  t.equal(insertHeader(0, 'X', 'y').subarray(5, 9).readUInt32BE(0), 0);
  t.match(quarantine('').toString('latin1'), /q.*sluice\0$/);
  const n = optnegReply({ version: 6, actions: 0, protocol: 0x370, symlists: new Map([[0, '{daemon_name} v']]) });
  t.equal(n.toString('hex'), '000000214f' + '00000006' + '00000000' + '00000370' + '00000000' + Buffer.from('{daemon_name} v\0').toString('hex'), 'the spec example OPTNEG reply');
  t.equal(optnegReply({ version: 6, actions: 0, protocol: 0x370, symlists: new Map([[1, 'i']]) }).subarray(21).toString('latin1'), 'i\0',
    'same numbers, other symlists: its own reply');
});

t.test('an OPTNEG reply made once per negotiated result, each with its own numbers', async (t) => {
  const wants = [
    { addHeader: true, quarantine: true, body: true },
    { addHeader: false, quarantine: false, body: false },
  ];
  const offers = [
    { version: 6, actions: 0x1ff, protocol: 0x1fffff }, { version: 6, actions: 0x1ff, protocol: 0x7f },
    { version: 6, actions: 0x0f, protocol: 0x1fffff }, { version: 4, actions: 0, protocol: 0 }, { version: 2, actions: 0x0f, protocol: 0x7f },
  ];
  // Twice round, so the second round is answered from what the first made.
  for (let round = 0; round < 2; round++) {
    for (const offer of offers) {
      for (const w of wants) {
        const n = negotiate(offer, w);
        const r = optnegReply(n);
        t.same([r.readUInt32BE(5), r.readUInt32BE(9), r.readUInt32BE(13)], [n.version, n.actions, n.protocol], `round ${round}: ${JSON.stringify({ offer, w })}`);
        t.equal(r.length > 17, n.symlists.size > 0, 'symlists exactly when negotiated');
      }
    }
  }
});

t.test('negotiation asks only for what was offered, never a no-reply flag', async (t) => {
  const full = negotiate({ version: 6, actions: 0x1ff, protocol: 0x1fffff }, { addHeader: true, quarantine: false, body: false });
  t.equal(full.version, 6);
  t.equal(full.actions, C.SMFIF_ADDHDRS | C.SMFIF_SETSYMLIST);
  t.equal(full.protocol & 0x0ff000, 0, 'no NR_* flags for stages sluice may hold');
  t.equal(full.protocol & C.SMFIP_NR_HDR, 0);
  t.ok(full.protocol & C.SMFIP_NOHDRS && full.protocol & C.SMFIP_NOBODY && full.protocol & C.SMFIP_NOUNKNOWN);
  t.match(full.symlists.get(C.SMFIM_CONNECT), /\bv\b/, 'asks for v to recognise the MTA');
  t.ok(full.symlists.has(C.SMFIM_EOH) && full.symlists.has(C.SMFIM_EOM), 'EOH list beside EOM (Sendmail quirk)');
  const v2 = negotiate({ version: 2, actions: 0x0f, protocol: 0x7f }, { addHeader: true, quarantine: true, body: true });
  t.equal(v2.version, 2);
  t.equal(v2.actions, C.SMFIF_ADDHDRS, 'no SETSYMLIST or QUARANTINE when not offered');
  t.equal(v2.symlists.size, 0);
  t.equal(v2.protocol & ~0x7f, 0, 'only offered protocol bits');
  t.equal(v2.protocol & C.SMFIP_NOBODY, 0, 'body kept when wanted');
  const v4 = negotiate({ version: 4, actions: 0, protocol: 0 }, { addHeader: false, quarantine: false, body: true });
  t.equal(v4.actions, 0);
  t.equal(v4.protocol & ~0x3f, 0, 'protocol 0 means version-1 flags');
  t.throws(() => negotiate({ version: 1, actions: 0x1ff, protocol: 0x1fffff }, { addHeader: false, quarantine: false, body: false }), { code: 114 });
});

t.test('MTA kind and hold plans', async (t) => {
  t.equal(mtaFromVersion('Postfix 3.7.11'), 'postfix');
  t.equal(mtaFromVersion('8.17.1'), 'sendmail');
  t.equal(mtaFromVersion('Exim'), 'unknown');
  t.equal(mtaFromVersion(undefined), 'unknown');
  const s = { progress_interval: 5000, hold_margin: 2000, sendmail_read_timeout: 10_000, sendmail_eom_timeout: 300_000 };
  t.same(holdPlan('postfix', 'rcpt', s), { cap: Infinity, progress: true });
  t.same(holdPlan('sendmail', 'rcpt', s), { cap: 8000, progress: false });
  t.same(holdPlan('sendmail', 'eom', s), { cap: 298_000, progress: true });
  t.same(holdPlan('unknown', 'connect', s), { cap: 8000, progress: false });
});
