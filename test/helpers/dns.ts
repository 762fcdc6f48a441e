// DNS servers for the DNS list tests, all on 127.0.0.1 and free ports:
// rbldnsd (the Debian package) serving zones from a temp dir, a socket that
// never answers (a dead resolver), and one that answers SERVFAIL to all.
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Resolver } from 'node:dns/promises';
import type { Test } from 'tap';

export const RBLDNSD = '/usr/sbin/rbldnsd';

/** Skips the file's tests, with the reason, when rbldnsd is missing; under CI a missing rbldnsd fails. */
export function rbldnsdGate(t: Test): { skip: string | false } {
  const missing = spawnSync(RBLDNSD, ['-h'], { encoding: 'utf8' }).error !== undefined;
  const why = missing ? 'Debian package rbldnsd is not installed (.ci/run installs it)' : undefined;
  if (why && process.env['CI']) t.fail(`DNS list tests cannot run under CI: ${why}`);
  return { skip: why && !process.env['CI'] ? why : false };
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface Zone {
  /** e.g. "bl.test" */
  readonly name: string;
  /** rbldnsd dataset type: ip4set, ip6trie, dnset. */
  readonly type: 'ip4set' | 'ip6trie' | 'dnset';
  /** The data file's lines (rbldnsd syntax). */
  readonly data: readonly string[];
}

/** rbldnsd on a free 127.0.0.1 port serving `zones`; stopped at teardown. Resolves once it answers. */
export async function startRbldnsd(t: Pick<Test, 'teardown'>, zones: readonly Zone[], ttl = 300): Promise<{ server: string; port: number }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-rbl-'));
  // Started as root, rbldnsd reads its files as its own user (rbldns).
  chmodSync(dir, 0o755);
  const specs = zones.map((z, i) => {
    writeFileSync(path.join(dir, `z${i}`), z.data.join('\n') + '\n', { mode: 0o644 });
    return `${z.name}:${z.type}:z${i}`;
  });
  for (let attempt = 0; ; attempt++) {
    const port = await freeUdpPort();
    const child = spawn(RBLDNSD, ['-n', '-b', `127.0.0.1/${port}`, '-w', dir, '-t', String(ttl), ...specs], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const server = `127.0.0.1:${port}`;
    const r = new Resolver({ timeout: 200, tries: 1 });
    r.setServers([server]);
    let up = false;
    for (let i = 0; i < 50 && child.exitCode === null && !up; i++) {
      try {
        await r.resolve4(`ready.probe.${zones[0]!.name}`);
        up = true;
      } catch (e) {
        up = (e as NodeJS.ErrnoException).code === 'ENOTFOUND';
        if (!up) await new Promise((res) => setTimeout(res, 50));
      }
    }
    if (up) {
      t.teardown(() => {
        child.kill('SIGTERM');
        rmSync(dir, { recursive: true, force: true });
      });
      return { server, port };
    }
    child.kill('SIGKILL');
    if (attempt >= 2) throw new Error(`rbldnsd did not start: ${err.trim()}`);
  }
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
