// dnsbl.ts - DNS lists as a first-contact lookup (a Provider of lib/enrich).
//
// At a client's first event every zone of dnsbl.sites is asked about its
// address (reversed octets; IPv6 as 32 reversed nibbles, unless the site is
// IPv4-only), and every zone of dnsbl.rhsbl_sites about its HELO name and
// sender domain once they are known. One lookup is one address or one name
// asked of all its zones at once; its answers are kept together under it
// until the first of them expires (lru-cache's ttl on the injected clock),
// so a known client costs one cache read. The sites come parsed from the
// config (config/sites.ts). Each site whose filter matches an
// answer adds its weight to one sum, as postscreen adds them: at or above
// dnsbl.threshold the client is listed (dnsbl.action), at or below a
// negative dnsbl.allowlist_threshold it is trusted, and each unit moves the
// decision's score by dnsbl.points. A failed lookup counts as not listed
// (fail open) and is counted per zone; a zone that starts failing is said
// in one warning (with why: timeout, servfail, refused), and one line when
// it answers again. An answer in 127.255.255.0/24 means
// the list refuses our resolver: the zone is left out, with one warning,
// and asked about its test point (127.0.0.2, RFC 5782) every 5 minutes
// until it answers again, with one line per change.
//
// Config keys: dnsbl.*, dns.* (resolver.ts).

import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Config } from '../config/schema.js';
import type { Enrichment, StageEvent } from '../engine/types.js';
import type { Provider } from '../enrich/enricher.js';
import type { Logger } from '../log/logger.js';
import type { Clock, Timer } from '../util/clock.js';
import type { LRUCache } from 'lru-cache';
import { boundedLru } from '../util/lru.js';
import { ListResolver, type Answer } from './resolver.js';
import type { Site } from '../config/sites.js';
import { isRefusal, matches } from './match.js';

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
  /** Sites asked about the address, each with the index of its zone in ipZones. */
  readonly ip: readonly (readonly [Site, number])[];
  /** Sites asked about names, each with the index of its zone in nameZones. */
  readonly names: readonly (readonly [Site, number])[];
  readonly ipZones: readonly { readonly zone: string; readonly ipv4Only: boolean }[];
  readonly nameZones: readonly string[];
}

/** One address's or name's answers, by zone index; undefined: not asked (IPv4-only, or the zone refuses us). */
export interface Looked {
  /** The sites' zones they were asked under (a reload with other sites does not use them). */
  readonly parsed: Parsed;
  readonly answers: readonly (Answer | undefined)[];
  /** When the first of them expires (the cache's ttl); 0 when one failed (not kept). */
  readonly expires: number;
}

/** A judgement under way: the sum of weights, how many sites were weighed, which zones hit, and explain's lines. */
interface Tally {
  sum: number;
  weighed: number;
  readonly hits: string[];
  trace: string[] | undefined;
}

export class DnsLists implements Provider<Looked> {
  readonly name = 'dnsbl';
  readonly #resolver: ListResolver;
  readonly #config: () => DnsblConfig;
  readonly #clock: Clock;
  readonly #log: () => Logger;
  readonly #report: DnsReport;
  #parsed: Parsed | undefined;
  /** Answers kept per address or name (made with the first lookup, sized by dns.cache_entries). */
  #kept: LRUCache<string, Looked> | undefined;
  /** dns.cache_entries when #kept was made (a reload that changes it starts a new one). */
  #keptSize = 0;
  /** Zones that refuse our resolver, with the timer that asks them again. */
  readonly #refusing = new Map<string, Timer>();
  /** Zones whose last answer failed, with why (said once when it starts and once when it ends). */
  readonly #failing = new Map<string, string>();
  readonly #tally: Tally = { sum: 0, weighed: 0, hits: [], trace: undefined };

  constructor(config: () => DnsblConfig, clock: Clock, log: () => Logger, report: DnsReport) {
    this.#config = config;
    this.#clock = clock;
    this.#log = log;
    this.#report = report;
    this.#resolver = new ListResolver(() => config().dns, clock);
  }

  active(): boolean {
    const d = this.#config().dnsbl;
    return d.sites.length > 0 || d.rhsbl_sites.length > 0;
  }

  budget(): number {
    return this.#config().dns.timeout;
  }

  /** Addresses and names whose answers are kept now. */
  get cached(): number {
    return this.#kept?.size ?? 0;
  }

  /** Zones left out because they refuse our resolver. */
  get refusing(): string[] {
    return [...this.#refusing.keys()];
  }

  /** Keys: the client address itself, and each domain name (never an address) for the RHSBLs. */
  wants(e: StageEvent, add: (key: string) => void): void {
    const p = this.#sites();
    if (p.ipZones.length > 0 && isIP(e.client) !== 0) add(e.client);
    if (p.nameZones.length > 0) for (const d of domainsOf(e)) add(d);
  }

  known(key: string): Looked | undefined {
    const k = this.#kept?.get(key);
    if (k === undefined || k.parsed !== this.#sites()) return undefined;
    const zones = isIP(key) !== 0 ? k.parsed.ipZones : undefined;
    for (let i = 0; i < k.answers.length; i++) if (k.answers[i] !== undefined) this.#report.cacheHit(zones ? zones[i]!.zone : k.parsed.nameZones[i]!);
    return k;
  }

  /** Asks every zone about the address or name at once. */
  async fetch(key: string): Promise<Looked> {
    const p = this.#sites();
    const address = isIP(key) !== 0;
    const v4 = address ? reversed(key, false) : undefined;
    const v6 = address && v4 === undefined ? reversed(key, true) : undefined;
    const zones = address ? p.ipZones : p.nameZones.map((zone) => ({ zone, ipv4Only: false }));
    const answers = await Promise.all(zones.map(async ({ zone, ipv4Only }) => {
      const q = address ? v4 ?? (ipv4Only ? undefined : v6) : key;
      if (q === undefined || this.#refusing.has(zone)) return undefined;
      return this.#ask(`${q}.${zone}`, zone);
    }));
    const now = this.#clock.now();
    let expires = Infinity;
    for (const a of answers) {
      if (a?.kind === 'failed') expires = 0;
      else if (a !== undefined) expires = Math.min(expires, now + (a.kind === 'listed' ? a.ttl : this.#config().dns.min_ttl));
    }
    const looked: Looked = { parsed: p, answers, expires: expires === Infinity ? now + this.#config().dns.min_ttl : expires };
    // Sized for a flood that most days never comes: grown as it fills. Each
    // answer goes when the first of its zones' TTLs runs out (lru-cache's ttl).
    const size = this.#config().dns.cache_entries;
    if (this.#kept === undefined || this.#keptSize !== size) {
      this.#kept = boundedLru(size, { now: this.#clock.now });
      this.#keptSize = size;
    }
    if (looked.expires > now) this.#kept.set(key, looked, { ttl: looked.expires - now });
    return looked;
  }

  judge(e: StageEvent, answers: ReadonlyMap<string, Looked>, explain: boolean): Enrichment | undefined {
    const p = this.#sites();
    const c = this.#config().dnsbl;
    // One tally, reused: a judgement is made per new client.
    const t = this.#tally;
    t.sum = 0;
    t.weighed = 0;
    t.hits.length = 0;
    t.trace = explain ? [] : undefined;
    if (p.ip.length > 0 && isIP(e.client) !== 0) this.#weigh(t, p, p.ip, answers.get(e.client), explain ? reversed(e.client, false) ?? reversed(e.client, true)! : '');
    if (p.names.length > 0) for (const d of domainsOf(e)) this.#weigh(t, p, p.names, answers.get(d), d);
    if (t.weighed === 0) return undefined;
    const sum = t.sum;
    const listed = sum >= c.threshold ? c.action : undefined;
    const trusted = c.allowlist_threshold < 0 && sum <= c.allowlist_threshold;
    if (sum === 0 && !explain && listed === undefined && !trusted) return NOT_LISTED;
    t.trace?.push(`dnsbl sum ${sum}${listed ? `: at or above dnsbl.threshold ${c.threshold}, ${c.action}` : ''}${trusted ? `: at or below dnsbl.allowlist_threshold ${c.allowlist_threshold}, trusted` : ''}`);
    return { source: 'dnsbl', points: -sum * c.points, listed, trusted, rule: t.hits.length ? `dnsbl ${[...new Set(t.hits)].join(',')}` : 'dnsbl', trace: t.trace ?? [] };
  }

  /** Adds what the sites make of one address's or name's answers to the tally (and, for explain, a line each). */
  #weigh(t: Tally, p: Parsed, sites: Parsed['ip'], looked: Looked | undefined, name: string): void {
    const trace = t.trace;
    for (const [site, i] of sites) {
      const a = looked?.parsed === p ? looked.answers[i] : undefined;
      if (a === undefined && looked !== undefined) {
        // Not asked: an IPv4-only list and an IPv6 client, or a zone that refuses us.
        if (trace && this.#refusing.has(site.zone)) trace.push(`${site.zone} for ${name}: zone left out (it refuses our resolver)`);
        continue;
      }
      t.weighed++;
      const hit = a?.kind === 'listed' ? a.addresses.find((x) => !isRefusal(x) && matches(site, x)) : undefined;
      if (hit !== undefined) {
        t.sum += site.weight;
        t.hits.push(site.zone);
      }
      if (!trace) continue;
      const what = `${site.zone}${site.filter ? `=${site.filter}` : ''}*${site.weight} for ${name}`;
      if (hit !== undefined) trace.push(`${what}: answered ${hit}, weight ${site.weight}`);
      else if (a === undefined) trace.push(`${what}: timed out (no answer within dns.timeout ${this.#config().dns.timeout} ms), counted as not listed`);
      else if (a.kind === 'listed') trace.push(`${what}: answered ${a.addresses.join(' ')}, no match`);
      else trace.push(`${what}: ${a.kind === 'clean' ? 'not listed' : `${a.why}, counted as not listed`}`);
    }
  }

  /** Each zone's cached answer about the client address. */
  describe(client: string): { zone: string; answer: string; expires_in_s?: number }[] {
    const k = this.#kept?.get(client);
    const fresh = k !== undefined && k.parsed === this.#sites();
    return this.#sites().ipZones.map(({ zone, ipv4Only }, i) => {
      if (ipv4Only && isIP(client) === 6) return { zone, answer: 'not asked (IPv4-only list)' };
      if (this.#refusing.has(zone)) return { zone, answer: 'left out: it refuses our resolver' };
      const a = fresh ? k.answers[i] : undefined;
      if (a === undefined || a.kind === 'failed') return { zone, answer: 'not cached' };
      return { zone, answer: a.kind === 'listed' ? a.addresses.join(' ') : 'not listed', expires_in_s: Math.round((k!.expires - this.#clock.now()) / 1000) };
    });
  }

  /** Clears the timers of zones being asked again. */
  close(): void {
    for (const t of this.#refusing.values()) this.#clock.clear(t);
    this.#refusing.clear();
    this.#resolver.cancel();
  }

  /** One query name of one zone, asked and counted; a zone that starts or stops failing is said once. */
  async #ask(name: string, zone: string): Promise<Answer> {
    const { answer, ms } = await this.#resolver.query(name);
    const refusal = answer.kind === 'listed' && answer.addresses.some(isRefusal) ? answer.addresses : undefined;
    this.#report.queried(zone, answer.kind === 'failed' ? answer.why : refusal ? 'refused' : answer.kind, ms / 1000);
    if (answer.kind === 'failed') {
      if (!this.#failing.has(zone)) {
        this.#failing.set(zone, answer.why);
        this.#log().warn({ zone, why: answer.why }, `DNS list ${zone} fails (${answer.why === 'timeout' ? `no answer within dns.timeout ${this.#config().dns.timeout} ms` : answer.why}): its lookups count as not listed until it answers again`);
      }
    } else if (this.#failing.delete(zone)) {
      this.#log().info({ zone }, `DNS list ${zone} answers again`);
    }
    if (refusal) {
      this.#refused(zone, refusal);
      return { kind: 'clean' };
    }
    return answer;
  }

  #refused(zone: string, addresses: readonly string[]): void {
    if (this.#refusing.has(zone)) return;
    this.#log().warn({ zone, answer: addresses.join(' ') }, `DNS list ${zone} refuses our resolver (answer in 127.255.255.0/24): zone left out, asked again every ${RECHECK_MS / 60_000} minutes`);
    const timer = this.#clock.setInterval(() => { void this.#recheck(zone); }, RECHECK_MS).unref();
    this.#refusing.set(zone, timer);
  }

  async #recheck(zone: string): Promise<void> {
    const { answer } = await this.#resolver.query(`2.0.0.127.${zone}`);
    if (!this.#refusing.has(zone)) return;
    if (answer.kind === 'failed' || (answer.kind === 'listed' && answer.addresses.some(isRefusal))) return;
    this.#clock.clear(this.#refusing.get(zone));
    this.#refusing.delete(zone);
    this.#log().info({ zone }, `DNS list ${zone} answers our resolver again: zone back in use`);
  }

  #sites(): Parsed {
    const c = this.#config().dnsbl;
    if (this.#parsed?.from === c) return this.#parsed;
    const ip: readonly Site[] = c.sites;
    const names: readonly Site[] = c.rhsbl_sites;
    // A zone is asked about IPv6 clients unless every site naming it is IPv4-only.
    const v4only = new Map<string, boolean>();
    for (const s of ip) v4only.set(s.zone, (v4only.get(s.zone) ?? true) && s.ipv4Only);
    const ipZones = [...v4only].map(([zone, ipv4Only]) => ({ zone, ipv4Only }));
    const nameZones = [...new Set(names.map((s) => s.zone))];
    this.#parsed = {
      from: c, ipZones, nameZones,
      ip: ip.map((s) => [s, ipZones.findIndex((z) => z.zone === s.zone)] as const),
      names: names.map((s) => [s, nameZones.indexOf(s.zone)] as const),
    };
    // Answers kept under the old sites are not used under the new ones (each knows its `parsed`).
    return this.#parsed;
  }
}

/** What most clients get: no list named them (one object for all). */
const NOT_LISTED: Enrichment = Object.freeze({ source: 'dnsbl', points: 0, listed: undefined, trusted: false, rule: 'dnsbl', trace: Object.freeze([]) as readonly string[] });

/** The client's address as a DNS list asks for it (IPv4: reversed octets; IPv6: reversed nibbles), or undefined when it is not of that family. */
function reversed(client: string, v6: boolean): string | undefined {
  const quad = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(client);
  if (quad) return v6 ? undefined : `${quad[4]}.${quad[3]}.${quad[2]}.${quad[1]}`;
  if (isIP(client) === 0) return undefined;
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
  if (DOMAIN.test(helo) && isIP(helo) === 0) out.push(helo);
  const at = e.sender.lastIndexOf('@');
  const domain = at >= 0 ? e.sender.slice(at + 1).toLowerCase().replace(/\.$/, '') : '';
  if (domain !== helo && DOMAIN.test(domain)) out.push(domain);
  return out;
}
