// The DNS list sites parser against postconf(5)'s postscreen_dnsbl_sites
// examples: weights, filters with ranges and lists, negative weights.
import t from 'tap';
import { isRefusal, matches } from '../dist/dns/match.js';
import { parseSite } from '../dist/config/sites.js';
import { fromText } from '../dist/config/load.js';

t.test('postconf(5) examples parse with their weights and filters', async (t) => {
  const examples: [string, string, string, number][] = [
    ['zen.spamhaus.org*3', 'zen.spamhaus.org', '', 3],
    ['b.barracudacentral.org=127.0.0.[2..11]*2', 'b.barracudacentral.org', '127.0.0.[2..11]', 2],
    ['bl.spameatingmonkey.net*2', 'bl.spameatingmonkey.net', '', 2],
    ['bl.spamcop.net', 'bl.spamcop.net', '', 1],
    ['swl.spamhaus.org*-4', 'swl.spamhaus.org', '', -4],
    ['list.dnswl.org=127.[0..255].[0..255].0*-2', 'list.dnswl.org', '127.[0..255].[0..255].0', -2],
    ['list.dnswl.org=127.[0..255].[0..255].[2..3]*-6', 'list.dnswl.org', '127.[0..255].[0..255].[2..3]', -6],
    ['example.com=127.0.0.[2,4,6..8]', 'example.com', '127.0.0.[2,4,6..8]', 1],
    ['wl.mailspike.net=127.0.0.[17;18]*-1', 'wl.mailspike.net', '127.0.0.[17;18]', -1],
  ];
  for (const [text, zone, filter, weight] of examples) t.match(parseSite(text), { zone, filter, weight, ipv4Only: false }, text);
});

t.test('filters match answers as postscreen does', async (t) => {
  const s = (x: string) => { const r = parseSite(x); if (typeof r === 'string') throw new Error(r); return r; };
  const ranged = s('example.com=127.0.0.[2,4,6..8]');
  for (const a of ['127.0.0.2', '127.0.0.4', '127.0.0.6', '127.0.0.7', '127.0.0.8']) t.ok(matches(ranged, a), `${a} matches [2,4,6..8]`);
  for (const a of ['127.0.0.3', '127.0.0.5', '127.0.0.9', '127.0.1.2']) t.notOk(matches(ranged, a), `${a} does not`);
  const dnswl = s('list.dnswl.org=127.[0..255].[0..255].[2..3]*-6');
  t.ok(matches(dnswl, '127.0.15.3'));
  t.notOk(matches(dnswl, '127.0.15.1'));
  t.ok(matches(s('zen.spamhaus.org*3'), '127.0.0.10'), 'no filter: any answer');
  t.ok(isRefusal('127.255.255.254'), 'a refusal code');
  t.notOk(isRefusal('127.0.0.2'));
});

t.test('bad sites are refused with a message naming what is wrong', async (t) => {
  t.match(parseSite('zen.spamhaus.org=127.0.0*3'), /does not have four fields/);
  t.match(parseSite('zen.spamhaus.org=127.0.0.[11..2]'), /low to high/);
  t.match(parseSite('zen.spamhaus.org=127.0.0.300'), /0\.\.255/);
  t.match(parseSite('zen.spamhaus.org*x'), /is not zone\[=filter\]\[\*weight\]/);
  t.match(parseSite('not a zone'), /is not/);
  const r = fromText('dnsbl:\n  sites: ["zen.spamhaus.org*3", "bad.example=1.2.3*2"]\n', 'test.yaml');
  t.notOk(r.ok);
  if (!r.ok) t.match(r.problems.map((p) => p.message).join('\n'), /dnsbl\.sites\.1.*four fields|four fields/);
  const ok = fromText('dnsbl:\n  sites: ["zen.spamhaus.org=127.0.0.[2..11]*3", { site: "v4.example", ipv4_only: true }]\n  allowlist_threshold: -1\n', 'test.yaml');
  t.ok(ok.ok, 'postscreen syntax and { site, ipv4_only } both load');
  const inverted = fromText('dnsbl:\n  threshold: -2\n  allowlist_threshold: -1\n', 'test.yaml');
  t.notOk(inverted.ok, 'threshold at or below allowlist_threshold is refused');
  const resolvers = fromText('dns:\n  resolvers: ["127.0.0.1:5353", "[::1]:53", "not-an-address"]\n', 'test.yaml');
  t.notOk(resolvers.ok, 'a resolver that is not an address is refused');
});
