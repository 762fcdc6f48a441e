// schema.ts - what a valid configuration is, and the typed result.
//
// Unknown keys and wrong types are errors (strict objects). Durations and
// sizes are converted to milliseconds and bytes here, so the rest of sluice
// never parses units. Validation runs on the merged (defaults + file) raw
// object; load.ts maps each issue's path back to a line of the file.

import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';
import { parseEndpoint, type Endpoint } from './endpoint.js';

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (e.g. 250ms, 30s, 5m, 1h)` });
    return z.NEVER;
  }
  return ms;
});

const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const bytes = parseSize(v);
  if (bytes === undefined || bytes === 0) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (e.g. 4096, 64KiB, 1MiB)` });
    return z.NEVER;
  }
  return bytes;
});

const endpoint = z.string().transform((v, ctx): Endpoint => {
  const ep = parseEndpoint(v);
  if (typeof ep === 'string') {
    ctx.addIssue({ code: 'custom', message: ep });
    return z.NEVER;
  }
  return ep;
});

const headerName = z.string().regex(/^([A-Za-z][A-Za-z0-9-]*)?$/, 'expected a header name such as X-Sluice, or ""');
const mode = z.string().regex(/^0?[0-7]{3}$/, 'expected an octal mode such as "0660"').transform((v) => parseInt(v, 8));
const count = (min: number, max: number) => z.number().int().min(min).max(max);

export const schema = z.strictObject({
  state_dir: z.string(),
  fail_mode: z.enum(['pass', 'defer']),
  log: z.strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    format: z.enum(['auto', 'json', 'pretty']),
    file: z.string(),
  }),
  limits: z.strictObject({
    max_connections: count(1, 1_000_000),
    idle_timeout: duration,
    drain_timeout: duration,
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
});

/** The validated, unit-converted configuration. Deep-frozen once built. */
export type Config = z.output<typeof schema>;
