// report.ts - what `sluicectl status` and `sluicectl stats` show.
//
// status: who and where the daemon is, what it is doing now, its memory and
// its errors by code, from facts the daemon gathers. stats: every counter
// the metrics registry holds, reshaped for a table (histogram buckets left
// out, their sum and count kept), values to the millisecond at most so that
// sums of seconds print without float noise.

import type { Registry } from 'prom-client';

export interface StatusFacts {
  readonly version: string;
  readonly startedAt: number;
  readonly now: number;
  readonly mode: string;
  readonly config: string;
  readonly stateDir: string;
  readonly listen: { policy: string[]; milter: string[] };
  readonly control: string;
  readonly metrics: string | null;
  readonly connectionsOpen: number;
  readonly holdsInProgress: number;
  readonly holdsRefused: number;
  readonly reputationEntries: number;
  readonly sessions: number;
  readonly errors: ReadonlyMap<number, number>;
  /** The DNS lists' state, when any are configured. */
  readonly dnsLists?: Record<string, unknown>;
  /** The fleet store's state, when one is configured. */
  readonly fleet?: Record<string, unknown>;
}

export function statusReport(f: StatusFacts): Record<string, unknown> {
  const mem = process.memoryUsage();
  const mib = (n: number): number => Math.round(n / 2 ** 20);
  return {
    version: f.version, pid: process.pid, uptime_s: Math.round((f.now - f.startedAt) / 1000), started: new Date(f.startedAt).toISOString(),
    mode: f.mode, config: f.config, state_dir: f.stateDir, listen: f.listen, control: f.control, metrics: f.metrics,
    connections_open: f.connectionsOpen, holds_in_progress: f.holdsInProgress, holds_refused: f.holdsRefused,
    reputation_entries: f.reputationEntries, sessions: f.sessions,
    rss_mib: mib(mem.rss), heap_used_mib: mib(mem.heapUsed), heap_total_mib: mib(mem.heapTotal), buffers_mib: mib(mem.arrayBuffers),
    errors: Object.fromEntries(f.errors),
    ...(f.dnsLists ? { dns_lists: f.dnsLists } : {}),
    ...(f.fleet ? { fleet: f.fleet } : {}),
  };
}

export async function statsReport(registry: Registry): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const m of await registry.getMetricsAsJSON()) {
    out[m.name.replace(/^sluice_/, '')] = (m.values as { labels: Record<string, string | number>; value: number; metricName?: string }[])
      .filter((v) => !v.metricName || v.metricName.endsWith('_sum') || v.metricName.endsWith('_count') || !v.metricName.includes('_bucket'))
      .map((v) => ({ ...v.labels, ...(v.metricName && v.metricName !== m.name ? { series: v.metricName.replace(/^sluice_/, '') } : {}), value: Math.round(v.value * 1000) / 1000 }));
  }
  return out;
}
