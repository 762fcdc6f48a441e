// DNS lists end to end: rbldnsd serves the zones on loopback, sluiced asks
// them at a client's first event through the policy service and the milter.
// Each daemon runs on a clock that stands still: an answer that arrives came
// from the lookups (or their budget being spent on that clock), never a hold.
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon, settle, track, until } from './helpers/daemon.js';
import { PolicyClient, portOf, rcptRequest } from './helpers/policy-client.js';
import { MilterClient, mta, text } from './helpers/milter-client.js';
import { rbldnsdGate, servfailResolver, silentResolver, startRbldnsd } from './helpers/dns.js';
import { run } from './helpers/spawn.js';
import { ManualClock } from '../dist/util/clock.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const gate = rbldnsdGate(t);
const SAMPLE = {
  stage: 'rcpt' as const, session: 's', via: 'policy' as const, mta: 'postfix' as const, client: '192.0.2.10', port: undefined, clientName: 'unknown',
  helo: '', sender: '', recipient: '', recipientCount: 0, size: 0, queueId: '', saslUser: '', tls: undefined, stress: false, repeat: false,
};

const ZONES = [
  { name: 'bl.test', type: 'ip4set', data: [':127.0.0.2:listed', '192.0.2.10', '192.0.2.12 :127.0.0.20:', '198.51.100.0/24'] },
  { name: 'bl.test', type: 'ip6trie', data: [':127.0.0.2:v6 listed', '2001:db8:bad::/48'] },
  { name: 'wl.test', type: 'ip4set', data: ['192.0.2.30 :127.0.2.1:'] },
  { name: 'refusing.test', type: 'ip4set', data: [':127.255.255.254:', '192.0.2.0/24'] },
  { name: 'rhs.test', type: 'dnset', data: [':127.0.0.2:', 'bad.example'] },
] as const;

function dnsbl(server: string, action = 'defer', extra = ''): string {
  return `dns:\n  resolvers: ["${server}"]\n  timeout: 2s\n`
    + 'dnsbl:\n  sites: ["bl.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].[1..3]*-2", "refusing.test"]\n'
    + `  rhsbl_sites: ["rhs.test*3"]\n  threshold: 3\n  allowlist_threshold: -1\n  action: ${action}\n${extra}`;
}

t.test('listed, unlisted, allowlisted, RHSBL and IPv6 clients through the policy service and the milter', gate, async (t) => {
  const { server } = await startRbldnsd(t, ZONES);
  const clock = new ManualClock();
  const h = await startDaemon(t, dnsbl(server) + 'tarpit:\n  hold_per_point: 2s\n  min_hold: 2s\n', undefined, clock);
  const p = await PolicyClient.connect({ port: portOf(h.daemon.endpoints.policy[0]) });
  t.teardown(() => p.close());
  const ask = (over: Record<string, string>) => p.ask(rcptRequest(over));

  t.match(await ask({ client_address: '192.0.2.10', instance: 'd.1' }), /^action=DEFER_IF_PERMIT 4\.7\.1 /, 'listed: deferred at its first request');
  t.ok(await until(() => h.logs().some((l) => l['client'] === '192.0.2.10' && l['rule'] === 'dnsbl bl.test')), 'the log names the list');
  t.equal(await ask({ client_address: '192.0.2.11', instance: 'd.2' }), 'action=DUNNO\n\n', 'not listed: passes');
  t.equal(await ask({ client_address: '192.0.2.12', instance: 'd.3' }), 'action=DUNNO\n\n', 'an answer outside the filter does not count');
  // No reverse name and a bare-IP HELO: held without the allowlist.
  const bare = { client_name: 'unknown', reverse_client_name: 'unknown' };
  t.equal(await ask({ client_address: '192.0.2.30', helo_name: '192.0.2.30', ...bare, instance: 'd.4' }), 'action=DUNNO\n\n', 'allowlisted: never held (answered while the clock stands still)');
  const held = track(ask({ client_address: '192.0.2.31', helo_name: '192.0.2.31', ...bare, instance: 'd.5' }));
  await settle(200);
  t.notOk(held.done, 'the same client without the allowlist is held');
  clock.advance(60_000);
  t.ok(await until(() => held.done));
  t.match(await p.ask(rcptRequest({ client_address: '192.0.2.11', sender: 'x@bad.example', instance: 'd.6' })), /^action=DEFER_IF_PERMIT/, 'RHSBL: a listed sender domain adds its weight');
  t.match(await ask({ client_address: '2001:db8:bad::5', instance: 'd.7' }), /^action=DEFER_IF_PERMIT/, 'IPv6: asked in the nibble form');
  t.equal(await ask({ client_address: '2001:db8:600d::5', instance: 'd.8' }), 'action=DUNNO\n\n');

  // A list answering 127.255.255.x refuses our resolver: one warning, the zone left out.
  t.ok(await until(() => h.logs().some((l) => l['zone'] === 'refusing.test')), 'a warning names the refusing zone');
  t.equal(h.logs().filter((l) => l['zone'] === 'refusing.test').length, 1, 'one line for many clients');
  const counted = await h.daemon.metrics.registry.metrics();
  t.match(counted, /sluice_dns_queries_total\{zone="refusing\.test",result="refused"\} [1-9]/, 'a refusal is counted as refused');
  t.notMatch(counted, /sluice_dns_queries_total\{zone="refusing\.test",result="listed"\}/, 'not as listed');
  t.match(h.daemon.status()['dns_lists'], { refusing: ['refusing.test'] }, 'status shows it');

  // Milter: CONNECT is the first event.
  const m = await MilterClient.connect(portOf(h.daemon.endpoints.milter[0]));
  t.teardown(() => m.close());
  t.match(text((await m.open('Postfix 3.7.11', '198.51.100.7'))?.final), /^y 451 4\.7\.1 /, 'milter: a listed client is deferred at CONNECT');
  const ok = await MilterClient.connect(portOf(h.daemon.endpoints.milter[0]));
  t.teardown(() => ok.close());
  t.equal(text((await ok.open('Postfix 3.7.11', '192.0.2.11'))?.final), 'c', 'milter: an unlisted client goes on');

  // sluicectl: explain shows each zone's answer and weight; show the cached answers.
  const ctl = async (...args: string[]) => {
    const c = run(t, [path.join(ROOT, 'bin', 'sluicectl'), '--socket', h.daemon.controlSocket, ...args]);
    await c.exited;
    return c.stdout();
  };
  const explained = await ctl('explain', '-c', '192.0.2.10');
  t.match(explained, /bl\.test=127\.0\.0\.\[2\.\.11\]\*3 for 10\.2\.0\.192: answered 127\.0\.0\.2, weight 3/, 'explain: the zone, its answer and weight');
  t.match(explained, /dnsbl sum 3: at or above dnsbl\.threshold 3, defer/);
  const shown = await ctl('show', '192.0.2.10');
  t.match(shown, /^dnsbl bl\.test: 127\.0\.0\.2 \(cached for \d+s more\)$/m, 'show: the cached answer');

  // Metrics: queries by zone and result, cache hits, latency.
  t.match(await ask({ client_address: '192.0.2.10', instance: 'd.9' }), /^action=DEFER_IF_PERMIT/, 'again, from the cache');
  const text2 = await h.daemon.metrics.registry.metrics();
  t.match(text2, /sluice_dns_queries_total\{zone="bl.test",result="listed"\} \d+/);
  t.match(text2, /sluice_dns_queries_total\{zone="bl.test",result="clean"\} \d+/);
  t.match(text2, /sluice_dns_cache_hits_total\{zone="bl.test"\} [1-9]/);
  t.match(text2, /sluice_dns_query_seconds_count [1-9]/);
});

t.test('action hold: a listed client is held at each stage, within the budget', gate, async (t) => {
  const { server } = await startRbldnsd(t, ZONES);
  const clock = new ManualClock();
  const h = await startDaemon(t, dnsbl(server, 'hold'), undefined, clock);
  const p = await PolicyClient.connect({ port: portOf(h.daemon.endpoints.policy[0]) });
  t.teardown(() => p.close());
  const reply = track(p.ask(rcptRequest({ client_address: '192.0.2.10', instance: 'h.1' })));
  await settle(200);
  t.notOk(reply.done, 'held');
  clock.advance(60_000);
  t.ok(await until(() => reply.done));
  t.equal(reply.value, 'action=DUNNO\n\n', 'then let through');
  t.ok(await until(() => h.logs().some((l) => l['rule'] === 'tarpit dnsbl bl.test' && (l['held_ms'] as number) > 0)), 'the log says why it was held');
});

t.test('a resolver that never answers delays a first decision by at most dns.timeout; SERVFAIL fails open', gate, async (t) => {
  const silent = await silentResolver(t);
  const clock = new ManualClock();
  const h = await startDaemon(t, dnsbl(silent.server), undefined, clock);
  const p = await PolicyClient.connect({ port: portOf(h.daemon.endpoints.policy[0]) });
  t.teardown(() => p.close());
  const reply = track(p.ask(rcptRequest({ client_address: '192.0.2.10', instance: 's.1' })));
  await settle(100);
  t.notOk(reply.done, 'waiting for the lists');
  clock.advance(1999);
  await settle(50);
  t.notOk(reply.done, 'still waiting 1 ms before dns.timeout');
  clock.advance(1);
  t.ok(await until(() => reply.done), 'answered at dns.timeout');
  t.equal(reply.value, 'action=DUNNO\n\n', 'not listed: fail open');
  t.ok(silent.queries() > 0, 'the lists were asked');
  // The daemon stays up and answers others.
  const next = track(p.ask(rcptRequest({ client_address: '192.0.2.11', instance: 's.2' })));
  clock.advance(2000);
  t.ok(await until(() => next.done), 'another client is answered');

  const failing = await servfailResolver(t);
  const h2 = await startDaemon(t, dnsbl(failing.server), undefined, new ManualClock());
  const p2 = await PolicyClient.connect({ port: portOf(h2.daemon.endpoints.policy[0]) });
  t.teardown(() => p2.close());
  t.equal(await p2.ask(rcptRequest({ client_address: '192.0.2.10', instance: 'f.1' })), 'action=DUNNO\n\n', 'SERVFAIL: not listed, answered at once');
  t.match(await h2.daemon.metrics.registry.metrics(), /sluice_dns_queries_total\{zone="bl.test",result="servfail"\} [1-9]/, 'counted per zone');
  // Once the resolver gives up on the silent server (2 s of real time), the timeouts are counted per zone.
  let scraped = '';
  for (let i = 0; i < 100 && !/result="timeout"\} [1-9]/.test(scraped); i++) {
    scraped = await h.daemon.metrics.registry.metrics();
    await settle(50);
  }
  t.match(scraped, /sluice_dns_queries_total\{zone="bl.test",result="timeout"\} [1-9]/, 'timeouts counted per zone');
  // Said once, with why; explain says the lookup timed out.
  const said = (x: typeof h, why: string) => x.logs().filter((l) => l['zone'] === 'bl.test' && l['why'] === why && l['level'] === 40);
  t.ok(await until(() => said(h, 'timeout').length > 0), 'a timing-out list is said in a warning');
  t.match(said(h, 'timeout')[0]?.['msg'], /DNS list bl\.test fails \(no answer within dns\.timeout 2000 ms\)/);
  const explained = h.daemon.engine.explain({ ...SAMPLE, client: '192.0.2.99', session: 'explain-1' });
  await settle(50);
  clock.advance(2000);
  t.match((await explained).reason?.trace.join('\n'), /timed out \(no answer within dns\.timeout 2000 ms\), counted as not listed/);
  t.equal(said(h2, 'servfail').length, 1, 'SERVFAIL: one warning');
  await p2.ask(rcptRequest({ client_address: '192.0.2.12', instance: 'f.2' }));
  t.equal(said(h2, 'servfail').length, 1, 'still one for the next client');
  // The list answers again (the resolver now rbldnsd): one line.
  const { server } = await startRbldnsd(t, ZONES);
  writeFileSync(h2.configFile, readFileSync(h2.configFile, 'utf8').replace(failing.server, server));
  t.ok(await h2.daemon.reload(), 'reloaded');
  await p2.ask(rcptRequest({ client_address: '192.0.2.13', instance: 'f.3' }));
  t.ok(await until(() => h2.logs().some((l) => l['msg'] === 'DNS list bl.test answers again')), 'one line when it answers again');
});
