// scenario.ts - what a simulation runs: MX hosts and the populations that
// send them mail, as a YAML file (sluice-scenario(5) is the contract).
//
// Read through config/yaml.ts, like the config: every problem at once, with
// file, line and key; a key given twice in one mapping is refused; durations
// and sizes in the config's units. A population is only its parameters:
// `kind` says how its messages are counted in the report (real mail or
// botnet mail) and nothing else, so no outcome can come from it.

import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { duration, size } from '../config/schema.js';
import { parseYaml, readText, type ConfigProblem } from '../config/yaml.js';

/** A CIDR the populations draw addresses from: IPv4 /8 to /24, IPv6 /16 to /48. */
const network = z.string().transform((v, ctx) => {
  try {
    const [addr, bits] = ipaddr.parseCIDR(v);
    const v4 = addr.kind() === 'ipv4';
    if (v4 ? bits < 8 || bits > 24 : bits < 16 || bits > 48) {
      ctx.addIssue({ code: 'custom', message: `"${v}": the prefix must be from /8 to /24 (IPv6: /16 to /48), so that it holds whole networks` });
      return z.NEVER;
    }
    return { text: v, v4, base: toBig(addr), bits };
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a CIDR such as 172.16.0.0/12 or 2001:db8::/32` });
    return z.NEVER;
  }
});

/** An address as a number (IPv4 in the low 32 bits). */
export function toBig(a: ipaddr.IPv4 | ipaddr.IPv6): bigint {
  return a.toByteArray().reduce((n, b) => (n << 8n) | BigInt(b), 0n);
}

const share = z.number().min(0).max(1);
const positive = (what: z.ZodType<number>) => what.refine((n) => n > 0, 'must be above 0');
const zone = z.string().regex(/^([a-z0-9-]+\.)+[a-z0-9-]+$/i, 'expected a DNS zone name such as sim.bl');
/** A bandwidth: a size per second ("1MiB/s", or a size alone). */
const bandwidth = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const n = size.safeParse(typeof v === 'string' ? v.replace(/\s*\/\s*s$/, '') : v);
  if (!n.success || n.data <= 0) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a bandwidth (e.g. 1MiB/s)` });
    return z.NEVER;
  }
  return n.data;
});

const population = z.strictObject({
  name: z.string().min(1).max(60),
  kind: z.enum(['legitimate', 'zombie']),
  clients: z.number().int().min(1).max(1_000_000),
  per_network: z.number().int().min(1).max(254).default(1),
  network,
  rdns: z.enum(['fcrdns', 'generic', 'none']).default('fcrdns'),
  every: positive(duration),
  recipients: z.number().int().min(1).max(1000).default(1),
  sender_domain: zone.default('example.com'),
  patience: positive(duration).default(300_000),
  retry: z.array(positive(duration)).max(50).default([]),
  quit: share.default(1),
  abandon_after_rcpt: share.default(0),
  listed: share.default(0),
  spam: share.default(0),
  rtt: duration.default(100),
  size: positive(size).default(20 * 1024),
  bandwidth: bandwidth.default(1024 * 1024),
});

export const scenarioSchema = z.strictObject({
  name: z.string().min(1).max(200),
  duration: positive(duration).refine((n) => n <= 7 * 86_400_000, 'must be at most 7d'),
  seed: z.number().int().min(0).max(2 ** 32 - 1).default(1),
  hosts: z.strictObject({
    count: z.number().int().min(1).max(100).default(1),
    smtpd_processes: z.number().int().min(1).max(100_000).default(100),
    fleet: z.boolean().default(false),
  }),
  dns_list: zone.optional(),
  /** A content scanner behind every host: what it calls spam, and whether its verdicts reach sluice. */
  scanner: z.strictObject({
    catches: share,
    false_positives: share.default(0),
    delay: duration.default(2000),
    feedback: z.boolean().default(true),
  }).optional(),
  populations: z.array(population).min(1).max(100),
}).superRefine((s, ctx) => {
  const names = new Set<string>();
  s.populations.forEach((p, i) => {
    if (names.has(p.name)) ctx.addIssue({ code: 'custom', path: ['populations', i, 'name'], message: `"${p.name}" names two populations` });
    names.add(p.name);
    if (p.listed > 0 && s.dns_list === undefined) ctx.addIssue({ code: 'custom', path: ['populations', i, 'listed'], message: 'a population is listed only on a DNS list: set dns_list' });
  });
});

export type Scenario = z.output<typeof scenarioSchema>;

/** A scenario that passed the schema but cannot be run as written (a network too small for its population). */
export class ScenarioError extends Error {}
export type Population = Scenario['populations'][number];

export type ScenarioResult =
  | { readonly ok: true; readonly scenario: Scenario; readonly file: string }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[]; readonly file: string };

/** Reads and checks one scenario file. */
export async function loadScenario(file: string): Promise<ScenarioResult> {
  const r = await readText(file);
  return 'problem' in r ? { ok: false, file, problems: [r.problem] } : scenarioFromText(r.text, file);
}

export function scenarioFromText(text: string, file: string): ScenarioResult {
  const r = parseYaml(text, file, scenarioSchema);
  return r.ok ? { ok: true, scenario: r.value, file } : { ok: false, problems: r.problems, file };
}
