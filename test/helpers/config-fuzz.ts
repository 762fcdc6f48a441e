// Random values for every config key: what a config fuzz feeds the loader.
// Each case sets one to three keys (dotted paths from configKeys()) to
// values of every shape: numbers at and past every bound, durations and
// sizes past what timers and buffers take, ports 0 and past 65535,
// endpoints, modes, long strings, lists and mappings. Every address is a
// loopback one, so a resolver made from a case asks nobody.
import { stringify } from 'yaml';
import { configKeys } from '../../dist/config/defaults.js';
import type { Rng } from './fuzz.js';

const VALUES: unknown[] = [
  0, -1, 1, 2, 0.5, -0.5, 7, 100, 1000, 65535, 65536, 99999, 2 ** 31, 2 ** 32, 2 ** 53, 1e308, -1e308, '.nan', '.inf',
  true, false, null, '', ' ', 'x', 'yes', 'no', 'auto', 'defer', 'pass', 'observe', 'enforce', 'json', 'debug',
  '0s', '1ms', '9ms', '250ms', '30s', '5m', '25d', '30d', '999999999d', '1e9s', '-1s', '1.5s', 'soon',
  '0', '1KiB', '64KiB', '1MiB', '1TiB', '-1KiB', '0x10',
  '0660', '0777', '07777', '0999', 'rw', 660,
  '127.0.0.1:0', '127.0.0.1:53', '127.0.0.1:65535', '127.0.0.1:65536', '[::1]:0', '[::1]:53', '[::1]:70000', '127.0.0.1:99999', 'localhost:6379',
  'inet:127.0.0.1:0', 'inet:127.0.0.1:65535', 'inet:127.0.0.1:65536', 'inet:127.0.0.1:-1', 'inet6:[::1]:0', 'inet6:[::1]:70000', 'unix:', 'unix:/tmp/x\0y', 'unix:relative',
  'redis://127.0.0.1:6379', 'redis://127.0.0.1:0', 'redis://127.0.0.1:99999', 'rediss://[::1]:6380', 'unix:/nonexistent/redis.sock', 'http://x',
  '192.0.2.0/24', '192.0.2.0/33', '::/0', '@example.org', 'mx.example.org', '256.1.1.1',
  'zen.example=127.0.0.[2..11]*3', 'bl.example=127.0.0.[300..2]', '(', '^ *yes', '[',
  'x'.repeat(5000), '\u0000', 'é',
  [], [''], ['x'], [0], ['127.0.0.1:0'], ['127.0.0.1:65536'], ['inet:127.0.0.1:0'], [{ site: 'bl.example', ipv4_only: true }], [{ site: 1 }],
  {}, { a: 1 }, { site: 'bl.example', ipv4_only: 'maybe' },
];

/** One case: a YAML file setting a few keys, and the keys it set. */
export function configCase(rng: Rng): { text: string; keys: string[] } {
  const all = configKeys();
  const raw: Record<string, unknown> = {};
  const keys: string[] = [];
  for (let n = 1 + rng.int(3); n > 0; n--) {
    const key = all[rng.int(all.length)]!;
    keys.push(key);
    const v = VALUES[rng.int(VALUES.length)];
    const path = key.split('.');
    let o = raw;
    for (const p of path.slice(0, -1)) o = (o[p] ??= {}) as Record<string, unknown>;
    o[path.at(-1)!] = v;
  }
  // Strings YAML would read as other things stay strings; '.nan'/'.inf' are meant as YAML's own.
  const text = stringify(raw).replace(/'\.(nan|inf)'/g, '.$1');
  return { text, keys };
}
