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
  // enforce: answer as decided. observe: decide, learn, log and count as
  // in enforce mode, but always let the MTA go on at once (a safe rollout).
  mode: 'enforce',
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
    // While the event loop runs later than this, no reply is held (0: never shed).
    max_loop_lag: '1s',
    // Replies waiting to be written to one connection before sluice stops
    // reading from it (a peer that does not read its answers).
    max_write_buffer: '256KiB',
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
  reputation: {
    // Keys kept (client /32 or /64, network /24 or /48, HELO, sender domain).
    max_entries: 1000000,
    // An entry not touched for this long is forgotten.
    ttl: '7d',
    // Scores halve toward zero this often.
    half_life: '1d',
    // Snapshot file (relative: in state_dir), written this often and at shutdown.
    snapshot_file: 'reputation.snapshot',
    snapshot_interval: '5m',
  },
  weights: {
    delivered: 3,
    abandoned: -2,
    abandoned_held: -6,
    rate_exceeded: -2,
    greylist_passed: 2,
    bare_ip_helo: -3,
    non_fqdn_helo: -2,
    helo_is_us: -8,
    no_reverse_dns: -1,
    // A content scanner's verdict on a message (feedback.*), for its client,
    // network and HELO: one spam verdict takes a client past thresholds.defer.
    spam: -16,
    ham: 1,
    // How much of the network's, HELO's and sender domain's score counts for a client.
    network_share: 0.5,
    helo_share: 0.25,
    domain_share: 0.25,
  },
  thresholds: {
    // At or below this score a reply is held; below defer and reject, the
    // client is deferred or rejected at RCPT.
    hold: -1,
    defer: -15,
    reject: -30,
    // A client is trusted (never shaped by score) once it has delivered, has
    // a score of 0 or more, never hung up under a hold, and abandoned at most
    // this many sessions per delivery.
    trust_abandon_rate: 0.25,
  },
  tarpit: {
    enabled: true,
    hold_per_point: '4s',
    max_hold: '30s',
    // The shortest hold: one a giving-up client waits out teaches nothing.
    min_hold: '15s',
    // Make holds outlast the 90th percentile of how long clients that hung up
    // under a hold lasted (per stage, learned), times 1.5.
    learn_patience: true,
    // Holds at CONNECT (Postfix asks there only with smtpd_delay_reject = no).
    at_connect: false,
    // The MTA's smtpd process limit (Postfix default_process_limit), and the
    // share of it holds may take: each held reply pins a process.
    process_limit: 100,
    hold_share: 0.2,
    // Concurrent holds: auto = process_limit x hold_share; and per network.
    budget: 'auto' as number | 'auto',
    budget_per_network: 4,
    // A would-be hold when the budget is spent: defer (4xx at RCPT) or pass.
    when_spent: 'defer' as 'defer' | 'pass',
    // Hang-ups under a hold in a network (with its score at or below
    // thresholds.hold) before its new clients are deferred at RCPT.
    network_hangups: 2,
  },
  rates: {
    window: '60s',
    connections_per_client: 30,
    connections_per_network: 120,
    messages_per_client: 60,
    recipients_per_client: 300,
    recipients_per_network: 1200,
    concurrency_per_client: 10,
    concurrency_per_network: 40,
    // A policy session with no word for this long has ended (sooner when the
    // next session begins on its connection); if it never reached end of
    // message, it was abandoned at its last stage.
    abandon_window: '60s',
    max_entries: 200000,
  },
  greylist: {
    enabled: false,
    min_delay: '1m',
    retry_window: '8h',
    auto_allow_after: 3,
    auto_allow_ttl: '30d',
    max_entries: 200000,
  },
  lists: {
    // Addresses or CIDRs, HELO names, or @domains.
    allow: [] as string[],
    deny: [] as string[],
    // Our own HELO names and addresses: a client claiming them lies.
    our_names: [] as string[],
    our_addresses: [] as string[],
  },
  control: {
    // The sluicectl socket (relative: in state_dir); whoever may open it may
    // change lists and reload: keep the mode and group tight.
    socket: 'control.sock',
    socket_mode: '0660',
    // sluicectl connections at once; apart from limits.max_connections, so a
    // flood never locks the admin out.
    max_connections: 16,
  },
  metrics: {
    // Prometheus text on http://HOST:PORT/metrics; empty: no listener.
    listen: 'inet:127.0.0.1:10042',
  },
  dns: {
    // DNS servers for the lists: "127.0.0.1", "127.0.0.1:5353", "[::1]:53".
    // Empty: the system's (/etc/resolv.conf).
    resolvers: [] as string[],
    // Per query; a decision waits at most this long for a client's lookups.
    timeout: '2s',
    // Answers are cached for their DNS TTL clamped to [min_ttl, max_ttl];
    // "not listed" (NXDOMAIN) for min_ttl.
    min_ttl: '60s',
    max_ttl: '1h',
    cache_entries: 100000,
  },
  dnsbl: {
    // DNS lists asked about the client's address at its first event, in
    // postscreen_dnsbl_sites syntax: zone[=filter][*weight], e.g.
    // "zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-2";
    // or { site: "...", ipv4_only: true } for a list with no IPv6 data.
    // Empty: no DNS lists.
    sites: [] as (string | { site: string; ipv4_only: boolean })[],
    // A sum of matching weights at or above this: the client is listed.
    threshold: 1,
    // At or below this (when negative): trusted, never held, nothing
    // learned against it. 0: off.
    allowlist_threshold: 0,
    // What "listed" does: hold (tarpit it at each stage), defer or reject.
    action: 'defer',
    // Each unit of the sum also lowers (a negative sum raises) the score
    // the decision uses by this much.
    points: 4,
    // Same syntax, asked about the HELO name and the sender domain; their
    // weights add to the same sum.
    rhsbl_sites: [] as (string | { site: string; ipv4_only: boolean })[],
  },
  fleet: {
    // A Redis or Valkey server that MX hosts share their reputation through:
    // redis://host:6379/0, rediss://host:6380 (TLS), unix:/run/redis/redis.sock.
    // Empty: off (each host learns alone).
    url: '',
    // A file holding the store's password (never logged or printed). Empty: none.
    password_file: '',
    // Sentinels ("host:port") to ask for the master named master_name,
    // instead of url.
    sentinels: [] as string[],
    master_name: 'mymaster',
    // Seed nodes ("host:port") of a Redis Cluster, instead of url.
    cluster: [] as string[],
    // Every key is under this prefix, so a shared server can host others.
    prefix: 'sluice:',
    // What this host learns is written to the store in batches at most this
    // far apart.
    flush_interval: '1s',
    // How long a new client's first decision may wait for what the store knows.
    read_wait: '20ms',
  },
  feedback: {
    // A Redis Pub/Sub channel carrying a content scanner's verdicts as JSON
    // (rspamd's metadata_exporter: contrib/rspamd/). Empty: off.
    channel: '',
    // The server that carries it: redis://host:6379, rediss://..., unix:/path.
    // Empty: the fleet store's (fleet.*).
    url: '',
    // A header a content scanner's milter listed before sluice adds
    // (X-Spam-Flag, X-Spam-Status, X-Spam), read at end of message: a value
    // that matches header_spam is spam, any other ham. Empty: off.
    header: '',
    header_spam: '^ *yes',
    // How long a delivered message's queue id is remembered, to find its
    // client when a verdict names the message; at most this many.
    remember: '2h',
    remember_entries: 100000,
  },
  replies: {
    defer: 'Your reputation is poor; try again later',
    reject: 'Rejected for poor reputation',
    rate: 'Too many connections or messages; slow down',
    greylist: 'Greylisted; please try again later',
    deny: 'Access denied',
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
