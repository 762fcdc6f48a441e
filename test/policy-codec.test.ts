// Tests for lib/policy/codec.ts against real Postfix 3.7.11 captures and malformed input.
import t from 'tap';
import { AttributePicker, PolicyDecoder, encodeRequest, type PolicyAttributes, type PolicyLimits } from '../dist/policy/codec.js';
import { PeerError } from '../dist/shield/errors.js';
import { policyVectors, vectorsPresent } from './helpers/vectors.js';

const LIMITS: PolicyLimits = { maxLineLength: 4096, maxRequestSize: 65536, maxAttributes: 256 };

function decodeAll(chunks: Buffer[], limits = LIMITS, picker?: AttributePicker): PolicyAttributes[] {
  const d = new PolicyDecoder(limits, picker);
  const out: PolicyAttributes[] = [];
  for (const c of chunks) out.push(...d.push(c));
  d.end();
  return out;
}

function codeOf(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof PeerError ? err.code : -1;
  }
  return undefined;
}

t.test('every captured request decodes to its recorded attributes', async (t) => {
  t.ok(vectorsPresent(), 'test/fixtures/vectors is present');
  const vectors = policyVectors();
  t.ok(vectors.length > 200, `${vectors.length} requests captured`);
  for (const v of vectors) {
    const bytes = Buffer.from(v.raw, 'utf8');
    const [whole] = decodeAll([bytes]);
    t.same(Object.fromEntries(whole ?? []), v.attrs);
  }
  // The whole capture as one stream: many requests on one persistent connection.
  const stream = Buffer.concat(vectors.map((v) => Buffer.from(v.raw, 'utf8')));
  const all = decodeAll([stream]);
  t.equal(all.length, vectors.length, 'one stream, every request');
});

t.test('split at every byte offset and fed byte by byte', async (t) => {
  const vectors = policyVectors();
  // One of each scenario keeps this fast; the offsets cover the whole request.
  const seen = new Set<string>();
  for (const v of vectors) {
    if (seen.has(v.scenario)) continue;
    seen.add(v.scenario);
    const bytes = Buffer.from(v.raw, 'utf8');
    // The decoder's own picker cuts its values out as lines arrive, by
    // another path than reading the request's lines afterwards: both checked.
    const picker = new AttributePicker([...Object.keys(v.attrs).reverse(), 'absent']);
    const picked = JSON.stringify([...Object.values(v.attrs).reverse(), null]);
    let ok = true;
    for (let i = 0; i <= bytes.length; i++) {
      const got = decodeAll([bytes.subarray(0, i), bytes.subarray(i)], LIMITS, picker);
      if (got.length !== 1 || JSON.stringify(Object.fromEntries(got[0]!)) !== JSON.stringify(v.attrs) ||
        JSON.stringify(got[0]!.pick(picker)) !== picked) { ok = false; t.fail(`${v.scenario} split at ${i}`); break; }
    }
    t.ok(ok, `${v.scenario}: ${bytes.length + 1} splits`);
    const single = decodeAll([...bytes].map((b) => Buffer.from([b])), LIMITS, picker);
    t.same(Object.fromEntries(single[0]!), v.attrs, `${v.scenario}: byte by byte`);
    t.equal(JSON.stringify(single[0]!.pick(picker)), picked, `${v.scenario}: byte by byte, picked as the lines came`);
  }
  t.ok(seen.size >= 20, `${seen.size} scenarios`);
});

t.test('values are split at the first "=" and keep UTF-8', async (t) => {
  const [r] = decodeAll([Buffer.from('request=smtpd_access_policy\nsender=SRS0=HHH=TT=example.com=alice@fwd.example\nrecipient=jörg@exämple.org\nhelo_name=\n\n')]);
  t.equal(r!.get('sender'), 'SRS0=HHH=TT=example.com=alice@fwd.example');
  t.equal(r!.get('recipient'), 'jörg@exämple.org');
  t.equal(r!.get('helo_name'), '');
});

t.test('a repeated name keeps its last value in the place of its first; lines from several chunks read as one request', async (t) => {
  const [r] = decodeAll([Buffer.from('request=smtpd_access_policy\nsender=a@b\nrecipient=x@y\nsender=c@d\n\n')]);
  t.equal(r!.get('sender'), 'c@d');
  t.same([...r!], [['request', 'smtpd_access_policy'], ['sender', 'c@d'], ['recipient', 'x@y']]);
  t.equal(r!.get('send'), undefined, 'a prefix of a name is not the name');
  // The picker reads the same values in one pass: names of one length told apart, the last line wins;
  // the same when the decoder was given the picker and cut them as the lines came.
  const picker = new AttributePicker(['sender', 'request', 'absent', 'recipient', 'sende', 'sendxr']);
  const want = ['c@d', 'smtpd_access_policy', undefined, 'x@y', undefined, undefined];
  t.same(r!.pick(picker), want);
  const [q] = decodeAll([Buffer.from('request=smtpd_access_policy\nsender=a@b\nrecipient=x@y\nsender=c@d\n\n')], LIMITS, picker);
  t.same(q!.pick(picker), want);
  t.same([...q!], [...r!]);
  // ASCII lines, a UTF-8 line and a line split across chunks, in one request.
  const [m] = decodeAll([Buffer.from('request=smtpd_access_policy\nhelo_name=mx.exa'), Buffer.from('mple.org\nrecipient=jörg@exämple.org\nsender=s@e\n'), Buffer.from('size=12\n\n')]);
  t.same(Object.fromEntries(m!), { request: 'smtpd_access_policy', helo_name: 'mx.example.org', recipient: 'jörg@exämple.org', sender: 's@e', size: '12' });
});

t.test('encodeRequest round-trips', async (t) => {
  const attrs: [string, string][] = [['request', 'smtpd_access_policy'], ['protocol_state', 'RCPT'], ['sender', 'a=b@c']];
  const [r] = decodeAll([encodeRequest(attrs)]);
  t.same([...r!], attrs);
  for (const v of policyVectors().slice(0, 30)) {
    t.equal(encodeRequest(Object.entries(v.attrs)).toString('utf8'), v.raw, `${v.scenario} re-encodes to the captured bytes`);
  }
});

t.test('a line that is not UTF-8 is kept byte for byte, as Postfix passes it on', async (t) => {
  const helo = Buffer.from([0x6d, 0x78, 0xf7, 0x45, 0xf0, 0xc3, 0x28]); // "mx", then bytes no UTF-8 decoder accepts
  const bytes = Buffer.concat([Buffer.from('request=smtpd_access_policy\nprotocol_state=RCPT\nhelo_name='), helo, Buffer.from('\nsender=a@b\n\n')]);
  for (const chunks of [[bytes], [bytes.subarray(0, 60), bytes.subarray(60)]]) {
    const [r] = decodeAll(chunks);
    t.ok(r, 'the request is decoded, not refused');
    t.same(Buffer.from(r!.get('helo_name')!, 'latin1'), helo, 'the same bytes come back');
    t.equal(r!.get('sender'), 'a@b', 'the other lines are read as usual');
  }
});

t.test('malformed input gives a typed 1xx error and nothing after it', async (t) => {
  const req = 'request=smtpd_access_policy\nprotocol_state=RCPT\n';
  const cases: [string, Buffer, number][] = [
    ['a line without "="', Buffer.from(req + 'garbage\n\n'), 104],
    ['an empty name', Buffer.from('=value\n\n'), 104],
    ['a NUL byte', Buffer.from(req + 'sender=a\0b\n\n'), 105],
    ['a 1 MiB line', Buffer.concat([Buffer.from('sender='), Buffer.alloc(1 << 20, 0x61), Buffer.from('\n\n')]), 101],
    ['10,000 attributes', Buffer.from(Array.from({ length: 10_000 }, (_, i) => `x${i}=1\n`).join('') + '\n'), 103],
    ['an empty request', Buffer.from('\n'), 108],
  ];
  for (const [name, bytes, code] of cases) {
    const d = new PolicyDecoder(LIMITS);
    t.equal(codeOf(() => d.push(bytes)), code, name);
    t.equal(codeOf(() => d.push(Buffer.from(req + '\n'))), code, `${name}: stays failed, emits nothing more`);
  }
  // The 1 MiB line is refused before it is all buffered, even in small pieces.
  const d = new PolicyDecoder(LIMITS);
  let thrownAt = -1;
  for (let i = 0; i < 256 && thrownAt < 0; i++) {
    if (codeOf(() => d.push(Buffer.alloc(4096, 0x61))) === 101) thrownAt = i;
  }
  t.equal(thrownAt, 1, 'refused as soon as the line passes the limit');
  const big = new PolicyDecoder({ ...LIMITS, maxRequestSize: 100 });
  t.equal(codeOf(() => big.push(Buffer.from('a=' + 'x'.repeat(60) + '\nb=' + 'y'.repeat(60) + '\n'))), 102, 'request size bound');
});

t.test('EOF in the middle of a request is PEER_TRUNCATED; between requests it is fine', async (t) => {
  const d = new PolicyDecoder(LIMITS);
  d.push(Buffer.from('request=smtpd_access_policy\nprotocol_state=RCPT\n'));
  t.notOk(d.idle);
  t.equal(codeOf(() => d.end()), 106);
  const e = new PolicyDecoder(LIMITS);
  t.equal(e.push(Buffer.from('request=smtpd_access_policy\n\n')).length, 1);
  t.ok(e.idle);
  t.equal(codeOf(() => e.end()), undefined);
  const partial = new PolicyDecoder(LIMITS);
  partial.push(Buffer.from('request=smtpd'));
  t.equal(codeOf(() => partial.end()), 106, 'a partial line counts too');
});
