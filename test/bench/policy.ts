// npm run bench:policy - policy requests/s and latency at 1, 10 and 100
// connections: sluiced (engine wired in) beside a minimal Node responder,
// both in their own process, measured in the same run.
// Each figure is the median of five alternating runs after a warm-up; the
// spread of the per-round ratios is printed too, and each server's CPU time
// per request.
// Requests are realistic RCPT requests (Postfix 3.7 attribute set) from
// 1,000 client addresses, each with its own instance.
import { closedLoop, versus, versusTable } from './common.js';
import { encodeRequest } from '../../dist/policy/codec.js';
import path from 'node:path';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 3);

function request(i: number): Buffer {
  const c = i % 1000;
  return encodeRequest(Object.entries({
    request: 'smtpd_access_policy', protocol_state: 'RCPT', protocol_name: 'ESMTP',
    client_address: `198.51.${c >> 8}.${c & 255}`, client_name: 'unknown', client_port: String(20000 + (i % 40000)),
    reverse_client_name: `host-${c}.example.net`, server_address: '127.0.0.1', server_port: '25',
    helo_name: `host-${c}.example.net`, sender: `sender${c}@example.net`, recipient: `user${i % 50}@example.org`,
    recipient_count: '0', queue_id: '', instance: `${(i % 97).toString(16)}.66f0c1d2.${i.toString(16)}.0`, size: '0',
    etrn_domain: '', stress: '', sasl_method: '', sasl_username: '', sasl_sender: '', ccert_subject: '',
    ccert_issuer: '', ccert_fingerprint: '', ccert_pubkey_fingerprint: '', encryption_protocol: '',
    encryption_cipher: '', encryption_keysize: '0', policy_context: 'rcpt',
  }));
}

function replyLength(buf: Buffer): number {
  const i = buf.indexOf('\n\n');
  return i < 0 ? 0 : i + 2;
}

export function benchPolicy(seconds = SECONDS): Promise<(string | number)[][]> {
  return versus('policy RCPT', 'req/s', 'ref-policy.ts', 'policy', (port, conns) => closedLoop({ port, conns, seconds, request, replyLength }));
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const rows = await benchPolicy();
  process.stdout.write(versusTable(rows) + '\n');
}
