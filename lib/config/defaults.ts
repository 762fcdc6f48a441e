// defaults.ts - the one table of configuration defaults.
//
// Written in the same shape and units as the YAML file an admin writes, so
// that `sluiced --print-config`, contrib/sluice.yaml and sluice.conf(5) can
// all be checked against it. Every key here is documented in
// man/sluice.conf.5 (a test keeps them in step). Loading merges the file
// over this table and validates the result with schema.ts.

export const DEFAULTS = {
  // Where snapshots live. Empty: $STATE_DIRECTORY (systemd), else
  // /var/lib/sluice for root, else ~/.local/state/sluice.
  state_dir: '',
  // What to answer when deciding fails: pass (fail open) or defer.
  fail_mode: 'pass',
  log: {
    level: 'info',
    // auto: pretty on a terminal, JSON otherwise.
    format: 'auto',
    // Empty: standard output.
    file: '',
  },
  limits: {
    // Open connections across all listeners; more are refused.
    max_connections: 2000,
    // Above Postfix's smtpd_policy_service_max_idle (300s), so Postfix closes first.
    idle_timeout: '330s',
    // How long SIGTERM waits for in-flight work before closing connections.
    drain_timeout: '10s',
  },
  shield: {
    // Internal (9xx) errors within breaker_window that trip a restart.
    breaker_limit: 50,
    breaker_window: '60s',
  },
  policy: {
    listen: ['inet:127.0.0.1:10040'],
    // Octal mode of unix: sockets.
    socket_mode: '0660',
    max_line_length: '4KiB',
    max_request_size: '64KiB',
    max_attributes: 256,
    // Postfix's timeout for this service; holds end hold_margin before it.
    timeout: '60s',
    hold_margin: '5s',
    // Render defer as DEFER_IF_PERMIT (a later Postfix reject still wins)
    // rather than a plain 4xx.
    defer_if_permit: true,
    // Header name to PREPEND at DATA for passed mail (empty: none).
    prepend_header: '',
    // Requests repeated within this window (Postfix retries, one RCPT per
    // restriction list) are recognised and not counted again.
    dedupe_window: '10m',
    dedupe_entries: 100000,
  },
  milter: {
    listen: ['inet:127.0.0.1:10041'],
    socket_mode: '0660',
    // Largest frame accepted; one Postfix header can reach 102400 bytes.
    max_frame_size: '1MiB',
    // auto: recognised from the `v` macro; else postfix or sendmail.
    mta: 'auto',
    // PROGRESS cadence while a reply is held, below the MTA's timeout
    // (Postfix milter_command_timeout, Sendmail T=R:).
    progress_interval: '5s',
    // Holds end this long before the MTA would time out.
    hold_margin: '2s',
    // Sendmail's T=R: and T=E: for this filter (contrib/sendmail/sluice.mc).
    sendmail_read_timeout: '10s',
    sendmail_eom_timeout: '5m',
    // Header added at end of message to mail that passes (empty: none).
    header: '',
    // Quarantine (hold queue) instead of rejecting at end of message.
    quarantine: false,
  },
} as const;

type Widen<T> = T extends string ? string : T extends number ? number : T extends boolean ? boolean
  : T extends readonly (infer U)[] ? Widen<U>[] : { -readonly [K in keyof T]: Widen<T[K]> };

/** The raw (YAML-shaped) config type: what a file may contain. */
export type RawConfig = Widen<typeof DEFAULTS>;

/** Every key as a dotted path, depth-first: "policy.listen", ... */
export function configKeys(node: object = DEFAULTS, prefix = ''): string[] {
  const keys: string[] = [];
  for (const [k, v] of Object.entries(node)) {
    const path = prefix + k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) keys.push(...configKeys(v as object, path + '.'));
    else keys.push(path);
  }
  return keys;
}
