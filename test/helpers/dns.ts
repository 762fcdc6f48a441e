// DNS servers for the DNS list tests, all on 127.0.0.1 and free ports:
// rbldnsd (the Debian package) serving zones from a temp dir, a socket that
// never answers (a dead resolver), and one that answers SERVFAIL to all.
import { spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import type { Test } from 'tap';
import { RBLDNSD, startRbldnsd as startServer, type Zone } from '../../dist/sim/servers.js';

export { RBLDNSD };

/** Skips the file's tests, with the reason, when rbldnsd is missing; under CI a missing rbldnsd fails. */
export function rbldnsdGate(t: Test): { skip: string | false } {
  const missing = spawnSync(RBLDNSD, ['-h'], { encoding: 'utf8' }).error !== undefined;
  const why = missing ? 'Debian package rbldnsd is not installed (.ci/run installs it)' : undefined;
  if (why && process.env['CI']) t.fail(`DNS list tests cannot run under CI: ${why}`);
  return { skip: why && !process.env['CI'] ? why : false };
}

export type { Zone } from '../../dist/sim/servers.js';

/** rbldnsd on a free 127.0.0.1 port serving `zones`; stopped at teardown. Resolves once it answers. */
export async function startRbldnsd(t: Pick<Test, 'teardown'>, zones: readonly Zone[], ttl = 300): Promise<{ server: string; port: number }> {
  const r = await startServer(zones, ttl);
  t.teardown(() => r.stop());
  return { server: r.server, port: r.port };
}

/** A UDP socket on 127.0.0.1 that reads queries and answers none of them. */
export async function silentResolver(t: Test): Promise<{ server: string; queries: () => number }> {
  const s = dgram.createSocket('udp4');
  let n = 0;
  s.on('message', () => { n++; });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => s.close());
  return { server: `127.0.0.1:${s.address().port}`, queries: () => n };
}

/** A UDP socket on 127.0.0.1 that answers every query SERVFAIL (the question echoed, no records). */
export async function servfailResolver(t: Test): Promise<{ server: string }> {
  const s = dgram.createSocket('udp4');
  s.on('message', (q, from) => {
    if (q.length < 12) return;
    let end = 12;
    while (end < q.length && q[end] !== 0) end += q[end]! + 1;
    end += 5; // the root label, QTYPE and QCLASS
    const a = Buffer.from(q.subarray(0, Math.min(end, q.length)));
    a[2] = (a[2]! | 0x80) & ~0x04; // QR, not authoritative
    a[3] = (a[3]! & 0xf0) | 2; // RCODE 2: SERVFAIL
    a.writeUInt16BE(0, 6); // ANCOUNT
    a.writeUInt16BE(0, 8); // NSCOUNT
    a.writeUInt16BE(0, 10); // ARCOUNT
    s.send(a, from.port, from.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => s.close());
  return { server: `127.0.0.1:${s.address().port}` };
}
