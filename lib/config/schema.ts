// schema.ts - what a valid configuration is, and the typed result.
//
// Unknown keys and wrong types are errors (strict objects); keys that are
// valid alone but defeat each other (a hold margin as long as the timeout it
// is taken from) are errors at the key to change. Durations and
// sizes are converted to milliseconds and bytes here, and endpoints, DNS
// list sites and host:port values to typed values, so the rest of sluice
// never parses a config value again. Validation runs on the merged (defaults + file) raw
// object; load.ts maps each issue's path back to a line of the file.

import { z } from 'zod';
import { unreadableFile, unwritableDir } from './paths.js';
import { parseDuration, parseSize } from './units.js';
import { parseEndpoint, type Endpoint } from './endpoint.js';
import { parseListValue } from './list-value.js';
import { isIP } from 'node:net';
import { siteOf, type Site } from './sites.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** A value given as text or a number, turned into a number by `parse`; `form` says what is expected. */
const unit = (parse: (v: string | number) => number | undefined, form: string) => z.unknown().transform((v, ctx) => {
  const n = typeof v === 'string' || typeof v === 'number' ? parse(v) : undefined;
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `${shown(v)} is not ${form}` });
    return z.NEVER;
  }
  return n;
});

export const duration = unit(parseDuration, 'a duration (e.g. 250ms, 30s, 5m, 1h)');
/** A size, at most 1GiB: buffers are made from these, and a peer may ask for the most one allows. */
export const size = unit((v) => parseSize(v) || undefined, 'a size (e.g. 4096, 64KiB, 1MiB)').refine((n) => n <= 2 ** 30, 'must be at most 1GiB');

/** An endpoint in the admin's words; `orNone` ends the message when "" would also do. */
function toEndpoint(v: unknown, ctx: z.RefinementCtx, orNone = ''): Endpoint {
  const ep = typeof v === 'string' ? parseEndpoint(v) : `${shown(v)}: expected a string such as "inet:127.0.0.1:10040", "inet6:[::1]:10040" or "unix:/run/sluice/policy.sock"`;
  if (typeof ep === 'string') {
    ctx.addIssue({ code: 'custom', message: ep + orNone });
    return z.NEVER;
  }
  return ep;
}
const endpoint = z.unknown().transform((v, ctx) => toEndpoint(v, ctx));
const optionalEndpoint = z.unknown().transform((v, ctx) => (v === '' ? undefined : toEndpoint(v, ctx, ', or "" for none')));

/** A value as the admin wrote it, for messages. */
function shown(v: unknown): string {
  return typeof v === 'string' ? `"${v}"` : JSON.stringify(v) ?? String(v);
}

const listValue = z.string().superRefine((v, ctx) => {
  const m = parseListValue(v);
  if (typeof m === 'string') ctx.addIssue({ code: 'custom', message: m });
});
const replyText = z.string().min(1).max(300).regex(/^[\x20-\x7e]+$/, 'printable ASCII only');

const headerName = z.string().regex(/^([A-Za-z][A-Za-z0-9-]*)?$/, 'expected a header name such as X-Sluice, or ""');
const mode = z.unknown().transform((v, ctx) => {
  const text = typeof v === 'number' ? String(v) : v;
  if (typeof text !== 'string' || !/^0?[0-7]{3}$/.test(text)) {
    ctx.addIssue({ code: 'custom', message: `${shown(v)}: expected an octal mode such as "0660"` });
    return z.NEVER;
  }
  return parseInt(text, 8);
});
/** A path the daemon will use as `check` says ('' is none, or the default). */
const usablePath = (check: (path: string) => string | undefined) => z.string().superRefine((v, ctx) => {
  const bad = v === '' ? undefined : check(v);
  if (bad) ctx.addIssue({ code: 'custom', message: bad });
});
const redisUrl = z.string().refine((v) => v === '' || /^(rediss?:\/\/|unix:\/)/.test(v), 'expected redis://host:port[/db], rediss://... (TLS), unix:/path, or "" for off');
const count = (min: number, max: number) => z.number().int().min(min).max(max);

/** A port as every listener and client takes it: c-ares aborts the process on 0, and the kernel knows no port past 65535. */
function port(text: string): number | undefined {
  const n = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** A server's address and port, parsed once. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
  /** As written, for messages and status. */
  readonly text: string;
}

/** "host:port", the host a name, an IPv4 address or a bracketed IPv6 address; the port 1-65535. */
const hostPort = z.string().transform((v, ctx): HostPort => {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(v);
  const p = m ? port(m[3]!) : undefined;
  if (!m || p === undefined || (m[1] !== undefined && isIP(m[1]) !== 6)) {
    ctx.addIssue({ code: 'custom', message: m ? `"${v}": the port must be from 1 to 65535` : `"${v}": expected host:port, e.g. 127.0.0.1:26379` });
    return z.NEVER;
  }
  return { host: m[1] ?? m[2]!, port: p, text: v };
});
/** A DNS server as Node's resolver takes it: an address, with a port (1-65535) after a colon, IPv6 in brackets when it has one. */
const resolverAddress = z.string().refine((v) => {
  if (isIP(v) !== 0) return true;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(v);
  if (!m || port(m[3]!) === undefined) return false;
  return m[1] !== undefined ? isIP(m[1]) === 6 : isIP(m[2]!) === 4;
}, 'expected a DNS server address such as "127.0.0.1", "127.0.0.1:5353" or "[::1]:53" (port 1-65535)');
/** A DNS list site in postscreen's syntax, or { site, ipv4_only }: parsed here, once. */
const dnsSite = z.union([z.string(), z.strictObject({ site: z.string(), ipv4_only: z.boolean() })]).transform((v, ctx): Site => {
  const s = siteOf(v);
  if (typeof s === 'string') {
    ctx.addIssue({ code: 'custom', message: s });
    return z.NEVER;
  }
  return s;
});

export const schema = z.strictObject({
  state_dir: usablePath(unwritableDir),
  mode: z.enum(['enforce', 'observe']),
  fail_mode: z.enum(['pass', 'defer']),
  log: z.strictObject({
    level: z.enum(LOG_LEVELS),
    format: z.enum(['auto', 'json', 'pretty']),
    file: z.string(),
  }),
  limits: z.strictObject({
    max_connections: count(1, 1_000_000),
    idle_timeout: duration,
    drain_timeout: duration,
    max_loop_lag: duration,
    max_write_buffer: size,
  }),
  shield: z.strictObject({
    breaker_limit: count(1, 1_000_000),
    breaker_window: duration,
  }),
  policy: z.strictObject({
    listen: z.array(endpoint),
    socket_mode: mode,
    max_line_length: size,
    max_request_size: size,
    max_attributes: count(1, 100_000),
    timeout: duration,
    hold_margin: duration,
    defer_if_permit: z.boolean(),
    prepend_header: headerName,
    dedupe_window: duration,
    dedupe_entries: count(1, 10_000_000),
  }),
  milter: z.strictObject({
    listen: z.array(endpoint),
    socket_mode: mode,
    max_frame_size: size.refine((n) => n >= 65536 + 1, 'must be at least 64KiB + 1 (body chunks are 65535 bytes)'),
    mta: z.enum(['auto', 'postfix', 'sendmail']),
    progress_interval: duration.refine((n) => n >= 100, 'must be at least 100ms'),
    hold_margin: duration,
    sendmail_read_timeout: duration,
    sendmail_eom_timeout: duration,
    header: headerName,
    quarantine: z.boolean(),
  }),
  reputation: z.strictObject({
    max_entries: count(1000, 100_000_000),
    ttl: duration,
    half_life: duration.refine((n) => n > 0, 'must be above 0'),
    snapshot_file: z.string().min(1),
    snapshot_interval: duration.refine((n) => n >= 1000, 'must be at least 1s'),
  }),
  weights: z.strictObject({
    delivered: z.number(),
    abandoned: z.number(),
    abandoned_held: z.number(),
    rate_exceeded: z.number(),
    greylist_passed: z.number(),
    bare_ip_helo: z.number(),
    non_fqdn_helo: z.number(),
    helo_is_us: z.number(),
    no_reverse_dns: z.number(),
    spam: z.number().max(0),
    ham: z.number().min(0),
    network_share: z.number().min(0).max(1),
    helo_share: z.number().min(0).max(1),
    domain_share: z.number().min(0).max(1),
  }),
  thresholds: z.strictObject({
    hold: z.number(),
    defer: z.number(),
    reject: z.number(),
    trust_abandon_rate: z.number().min(0),
  }).refine((t) => t.reject <= t.defer && t.defer <= t.hold, 'expected reject <= defer <= hold'),
  tarpit: z.strictObject({
    enabled: z.boolean(),
    hold_per_point: duration,
    max_hold: duration,
    min_hold: duration,
    learn_patience: z.boolean(),
    at_connect: z.boolean(),
    process_limit: count(1, 1_000_000),
    hold_share: z.number().min(0).max(1),
    budget: z.union([z.literal('auto'), count(0, 1_000_000)]),
    budget_per_network: count(0, 1_000_000),
    when_spent: z.enum(['defer', 'pass']),
    network_hangups: count(0, 1_000_000),
  }).transform((t) => ({ ...t, budget: t.budget === 'auto' ? Math.floor(t.process_limit * t.hold_share) : t.budget })),
  rates: z.strictObject({
    window: duration.refine((n) => n >= 1000, 'must be at least 1s'),
    connections_per_client: count(1, 1e9),
    connections_per_network: count(1, 1e9),
    messages_per_client: count(1, 1e9),
    recipients_per_client: count(1, 1e9),
    recipients_per_network: count(1, 1e9),
    concurrency_per_client: count(1, 1e9),
    concurrency_per_network: count(1, 1e9),
    abandon_window: duration.refine((n) => n >= 1000, 'must be at least 1s'),
    max_entries: count(1000, 100_000_000),
  }),
  greylist: z.strictObject({
    enabled: z.boolean(),
    min_delay: duration,
    retry_window: duration,
    auto_allow_after: count(1, 1e6),
    auto_allow_ttl: duration,
    max_entries: count(1000, 100_000_000),
  }),
  lists: z.strictObject({
    allow: z.array(listValue),
    deny: z.array(listValue),
    our_names: z.array(z.string().min(1)),
    our_addresses: z.array(z.string().refine((v) => isIP(v) !== 0, 'expected an IP address')),
  }),
  control: z.strictObject({
    socket: z.string().min(1).refine((v) => !v.includes('\0'), 'not a path'),
    socket_mode: mode,
    max_connections: count(1, 1000),
  }),
  metrics: z.strictObject({
    listen: optionalEndpoint,
  }),
  dns: z.strictObject({
    resolvers: z.array(resolverAddress),
    timeout: duration.refine((n) => n >= 10 && n <= 30_000, 'must be from 10ms to 30s'),
    min_ttl: duration,
    max_ttl: duration,
    cache_entries: count(1, 100_000_000),
  }),
  dnsbl: z.strictObject({
    sites: z.array(dnsSite),
    threshold: z.number(),
    allowlist_threshold: z.number().max(0),
    action: z.enum(['hold', 'defer', 'reject']),
    points: z.number().min(0),
    rhsbl_sites: z.array(dnsSite),
  }),
  fleet: z.strictObject({
    url: redisUrl,
    password_file: usablePath(unreadableFile),
    sentinels: z.array(hostPort),
    master_name: z.string().min(1),
    cluster: z.array(hostPort),
    prefix: z.string().max(100),
    flush_interval: duration.refine((n) => n >= 10 && n <= 60_000, 'must be from 10ms to 60s'),
    read_wait: duration.refine((n) => n <= 10_000, 'must be at most 10s'),
  }).refine((f) => [f.url !== '', f.sentinels.length > 0, f.cluster.length > 0].filter(Boolean).length <= 1, 'set one of url, sentinels and cluster'),
  feedback: z.strictObject({
    channel: z.string().max(200),
    url: redisUrl,
    header: headerName,
    header_spam: z.string().superRefine((v, ctx) => {
      try {
        new RegExp(v, 'i');
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `not a regular expression: ${(err as Error).message}` });
      }
    }),
    remember: duration.refine((n) => n >= 1000, 'must be at least 1s'),
    remember_entries: count(1, 100_000_000),
  }),
  replies: z.strictObject({
    defer: replyText,
    reject: replyText,
    rate: replyText,
    greylist: replyText,
    deny: replyText,
  }),
}).superRefine((c, ctx) => {
  // Keys that are each valid but useless together: say so at the key to change.
  const s = (ms: number): string => (ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);
  // A problem of two keys is said at the one the file sets (yaml.ts reads `otherwise`): "timeout: 5" at the timeout.
  const below = (path: [string, string], value: number, limit: number, limitKey: string, why: string): void => {
    if (value < limit) return;
    const otherwise = { path: limitKey.split('.'), message: `${s(limit)} must be above ${path.join('.')} (${s(value)}): ${why}` };
    ctx.addIssue({ code: 'custom', path, message: `${s(value)} must be below ${limitKey} (${s(limit)}): ${why}`, params: { otherwise } });
  };
  if (c.dns.min_ttl > c.dns.max_ttl) ctx.addIssue({ code: 'custom', path: ['dns', 'min_ttl'], message: `${s(c.dns.min_ttl)} must not be above dns.max_ttl (${s(c.dns.max_ttl)})` });
  if (c.dnsbl.threshold <= c.dnsbl.allowlist_threshold) ctx.addIssue({ code: 'custom', path: ['dnsbl', 'threshold'], message: `${c.dnsbl.threshold} must be above dnsbl.allowlist_threshold (${c.dnsbl.allowlist_threshold})` });
  if (c.feedback.channel !== '' && c.feedback.url === '' && c.fleet.url === '' && c.fleet.sentinels.length === 0 && c.fleet.cluster.length === 0) {
    ctx.addIssue({ code: 'custom', path: ['feedback', 'channel'], message: 'needs a server: set feedback.url, or a fleet store (fleet.url, fleet.sentinels or fleet.cluster)' });
  }
  below(['policy', 'hold_margin'], c.policy.hold_margin, c.policy.timeout, 'policy.timeout', 'every policy hold would be cut to nothing');
  below(['milter', 'hold_margin'], c.milter.hold_margin, c.milter.sendmail_read_timeout, 'milter.sendmail_read_timeout', 'no Sendmail stage could be held');
  below(['milter', 'hold_margin'], c.milter.hold_margin, c.milter.sendmail_eom_timeout, 'milter.sendmail_eom_timeout', 'Sendmail\'s end of message could not be held');
});

/** The validated, unit-converted configuration. Deep-frozen once built. */
export type Config = z.output<typeof schema>;
