// dnsbl.ts - DNS lists as a first-contact lookup (a Provider of lib/enrich).
//
// At a client's first event every zone of dnsbl.sites is asked about its
// address (reversed octets; IPv6 as 32 reversed nibbles, unless the site is
// IPv4-only), and every zone of dnsbl.rhsbl_sites about its HELO name and
// sender domain once they are known. Each site whose filter matches an
// answer adds its weight to one sum, as postscreen adds them: at or above
// dnsbl.threshold the client is listed (dnsbl.action), at or below a
// negative dnsbl.allowlist_threshold it is trusted, and each unit moves the
// decision's score by dnsbl.points. A failed lookup counts as not listed
// (fail open) and is counted per zone. An answer in 127.255.255.0/24 means
// the list refuses our resolver: the zone is left out, with one warning,
// and asked about its test point (127.0.0.2, RFC 5782) every 5 minutes
// until it answers again, with one line per change.
//
// Config keys: dnsbl.*, dns.* (resolver.ts).

import ipaddr from 'ipaddr.js';
import type { Config } from '../config/schema.js';
import type { Enrichment, StageEvent } from '../engine/types.js';
import type { Provider } from '../enrich/enricher.js';
import type { Logger } from '../log/logger.js';
import type { Clock, Timer } from '../util/clock.js';
import { CachedResolver, type Answer } from './resolver.js';
import { isRefusal, matches, siteOf, type Site, type SiteEntry } from './sites.js';

/** How often a zone that refuses us is asked again. */
export const RECHECK_MS = 5 * 60_000;

/** What the DNS lists count, for metrics. */
export interface DnsReport {
  /** One query answered (or failed) after `seconds`. */
  queried(zone: string, result: Answer['kind'] | Extract<Answer, { kind: 'failed' }>['why'], seconds: number): void;
  /** A lookup answered from the cache. */
  cacheHit(zone: string): void;
}

type DnsblConfig = Pick<Config, 'dns' | 'dnsbl'>;

interface Parsed {
  readonly from: Config['dnsbl'];
  readonly ip: readonly Site[];
  readonly names: readonly Site[];
  readonly ipZones: readonly { zone: string; ipv4Only: boolean }[];
  readonly nameZones: readonly string[];
}

export class DnsLists implements Provider<Answer> {
  readonly name = 'dnsbl';
  readonly resolver: CachedResolver;
  readonly #config: () => DnsblConfig;
  readonly #clock: Clock;
  readonly #log: () => Logger;
  readonly #report: DnsReport;
  #parsed: Parsed | undefined;
  /** Zones that refuse our resolver, with the timer that asks them again. */
  readonly #refusing = new Map<string, Timer>();

  constructor(config: () => DnsblConfig, clock: Clock, log: () => Logger, report: DnsReport) {
    this.#config = config;
    this.#clock = clock;
    this.#log = log;
    this.#report = report;
    this.resolver = new CachedResolver(() => config().dns, clock);
  }

  active(): boolean {
    const d = this.#config().dnsbl;
    return d.sites.length > 0 || d.rhsbl_sites.length > 0;
  }

  budget(): number {
    return this.#config().dns.timeout;
  }

  /** Zones left out because they refuse our resolver. */
  get refusing(): string[] {
    return [...this.#refusing.keys()];
  }

  wants(e: StageEvent, add: (key: string) => void): void {
    const p = this.#sites();
    const v4 = reversed(e.client, false);
    const v6 = v4 === undefined ? reversed(e.client, true) : undefined;
    for (const z of p.ipZones) {
      const name = v4 ?? (z.ipv4Only ? undefined : v6);
      if (name !== undefined && !this.#refusing.has(z.zone)) add(`${name}.${z.zone}`);
    }
    if (p.nameZones.length === 0) return;
    for (const d of domainsOf(e)) for (const zone of p.nameZones) if (!this.#refusing.has(zone)) add(`${d}.${zone}`);
  }

  known(key: string): Answer | undefined {
    const a = this.resolver.cached(key);
    if (a !== undefined) this.#report.cacheHit(this.#zoneOf(key));
    return a;
  }

  async fetch(key: string): Promise<Answer> {
    const zone = this.#zoneOf(key);
    const { answer, ms } = await this.resolver.query(key);
    this.#report.queried(zone, answer.kind === 'failed' ? answer.why : answer.kind, ms / 1000);
    if (answer.kind === 'listed' && answer.addresses.some(isRefusal)) {
      this.#refused(zone, answer.addresses);
      return { kind: 'clean' };
    }
    return answer;
  }

  judge(e: StageEvent, answers: ReadonlyMap<string, Answer>): Enrichment | undefined {
    const p = this.#sites();
    const c = this.#config().dnsbl;
    const trace: string[] = [];
    const hits: string[] = [];
    let sum = 0;
    const weigh = (site: Site, name: string): void => {
      const what = `${site.zone}${site.filter ? `=${site.filter}` : ''}*${site.weight} for ${name}`;
      if (this.#refusing.has(site.zone)) { trace.push(`${what}: zone left out (it refuses our resolver)`); return; }
      const a = answers.get(`${name}.${site.zone}`);
      if (a === undefined) trace.push(`${what}: no answer yet`);
      else if (a.kind === 'failed') trace.push(`${what}: ${a.why}, counted as not listed`);
      else if (a.kind === 'clean') trace.push(`${what}: not listed`);
      else {
        const hit = a.addresses.find((x) => !isRefusal(x) && matches(site, x));
        if (hit === undefined) trace.push(`${what}: answered ${a.addresses.join(' ')}, no match`);
        else {
          sum += site.weight;
          hits.push(site.zone);
          trace.push(`${what}: answered ${hit}, weight ${site.weight}`);
        }
      }
    };
    const v4 = reversed(e.client, false);
    const v6 = v4 === undefined ? reversed(e.client, true) : undefined;
    for (const s of p.ip) {
      const name = v4 ?? (s.ipv4Only ? undefined : v6);
      if (name !== undefined) weigh(s, name);
    }
    for (const d of domainsOf(e)) for (const s of p.names) weigh(s, d);
    if (trace.length === 0) return undefined;
    const listed = sum >= c.threshold ? c.action : undefined;
    const trusted = c.allowlist_threshold < 0 && sum <= c.allowlist_threshold;
    trace.push(`dnsbl sum ${sum}${listed ? `: at or above dnsbl.threshold ${c.threshold}, ${c.action}` : ''}${trusted ? `: at or below dnsbl.allowlist_threshold ${c.allowlist_threshold}, trusted` : ''}`);
    return { source: 'dnsbl', points: -sum * c.points, listed, trusted, rule: `dnsbl ${[...new Set(hits)].join(',') || 'none'}`, trace };
  }

  /** Each zone's cached answer about the client address. */
  describe(client: string): { zone: string; answer: string; expires_in_s?: number }[] {
    const v4 = reversed(client, false);
    const v6 = v4 === undefined ? reversed(client, true) : undefined;
    return this.#sites().ipZones.map(({ zone, ipv4Only }) => {
      const q = v4 ?? (ipv4Only ? undefined : v6);
      if (q === undefined) return { zone, answer: 'not asked (IPv4-only list)' };
      if (this.#refusing.has(zone)) return { zone, answer: 'left out: it refuses our resolver' };
      const a = this.resolver.cached(`${q}.${zone}`);
      if (a === undefined) return { zone, answer: 'not cached' };
      const expires_in_s = Math.round(this.resolver.remaining(`${q}.${zone}`) / 1000);
      return { zone, answer: a.kind === 'listed' ? a.addresses.join(' ') : 'not listed', expires_in_s };
    });
  }

  /** Clears the timers of zones being asked again. */
  close(): void {
    for (const t of this.#refusing.values()) this.#clock.clear(t);
    this.#refusing.clear();
    this.resolver.cancel();
  }

  /** The zone a query name belongs to (the longest configured zone it ends with). */
  #zoneOf(name: string): string {
    const p = this.#sites();
    let best = '';
    for (const z of [...p.ipZones.map((x) => x.zone), ...p.nameZones]) if (name.endsWith(`.${z}`) && z.length > best.length) best = z;
    return best || name;
  }

  #refused(zone: string, addresses: readonly string[]): void {
    if (this.#refusing.has(zone)) return;
    this.#log().warn({ zone, answer: addresses.join(' ') }, `DNS list ${zone} refuses our resolver (answer in 127.255.255.0/24): zone left out, asked again every ${RECHECK_MS / 60_000} minutes`);
    const timer = this.#clock.setInterval(() => { void this.#recheck(zone); }, RECHECK_MS).unref();
    this.#refusing.set(zone, timer);
  }

  async #recheck(zone: string): Promise<void> {
    const { answer } = await this.resolver.query(`2.0.0.127.${zone}`);
    if (!this.#refusing.has(zone)) return;
    if (answer.kind === 'failed' || (answer.kind === 'listed' && answer.addresses.some(isRefusal))) return;
    this.#clock.clear(this.#refusing.get(zone));
    this.#refusing.delete(zone);
    this.#log().info({ zone }, `DNS list ${zone} answers our resolver again: zone back in use`);
  }

  #sites(): Parsed {
    const c = this.#config().dnsbl;
    if (this.#parsed?.from === c) return this.#parsed;
    const parse = (entries: readonly SiteEntry[]): Site[] => entries.map(siteOf).filter((s): s is Site => typeof s !== 'string');
    const ip = parse(c.sites as readonly SiteEntry[]);
    const names = parse(c.rhsbl_sites as readonly SiteEntry[]);
    const ipZones = new Map<string, boolean>();
    // A zone is asked about IPv6 clients unless every site naming it is IPv4-only.
    for (const s of ip) ipZones.set(s.zone, (ipZones.get(s.zone) ?? true) && s.ipv4Only);
    this.#parsed = {
      from: c, ip, names,
      ipZones: [...ipZones].map(([zone, ipv4Only]) => ({ zone, ipv4Only })),
      nameZones: [...new Set(names.map((s) => s.zone))],
    };
    return this.#parsed;
  }
}

/** The client's address as a DNS list asks for it (IPv4: reversed octets; IPv6: reversed nibbles), or undefined when it is not of that family. */
function reversed(client: string, v6: boolean): string | undefined {
  if (!ipaddr.isValid(client)) return undefined;
  const a = ipaddr.process(client);
  if (a.kind() === 'ipv4') return v6 ? undefined : a.toByteArray().reverse().join('.');
  if (!v6) return undefined;
  const nibbles: string[] = [];
  for (const b of a.toByteArray()) nibbles.push((b >> 4).toString(16), (b & 15).toString(16));
  return nibbles.reverse().join('.');
}

const DOMAIN = /^(?=.{1,200}$)[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)+$/;

/** The HELO name and the sender domain, when they are domain names (each once). */
function domainsOf(e: StageEvent): string[] {
  const out: string[] = [];
  const helo = e.helo.toLowerCase().replace(/\.$/, '');
  if (DOMAIN.test(helo) && !ipaddr.isValid(helo)) out.push(helo);
  const at = e.sender.lastIndexOf('@');
  const domain = at >= 0 ? e.sender.slice(at + 1).toLowerCase().replace(/\.$/, '') : '';
  if (domain !== helo && DOMAIN.test(domain)) out.push(domain);
  return out;
}
