// sites.ts - DNS list sites written as Postfix's postscreen_dnsbl_sites.
//
// One site is zone[=filter][*weight]:
//   zen.spamhaus.org                      any answer, weight 1
//   zen.spamhaus.org*3                    any answer, weight 3
//   b.barracudacentral.org=127.0.0.[2..11]*2
//   list.dnswl.org=127.0.[0..255].[1..3]*-2   (a negative weight: an allowlist)
// A filter has four dot-separated fields, each a number or a bracketed list
// of numbers and number..number ranges separated by ";" or "," (postconf(5),
// postscreen_dnsbl_sites; Postfix 2.8 added the ranges). The same zone may
// be named several times with different filters: each site that matches an
// answer adds its weight. Pure: the config schema parses every site with it
// once, and the loaded config holds the typed Site (dns/match.ts matches
// answers against it).

export interface Site {
  /** The zone queried, lowercase, without a trailing dot. */
  readonly zone: string;
  /** The filter as written ("" for any answer). */
  readonly filter: string;
  readonly weight: number;
  /** Queried for IPv4 clients only (a zone with no IPv6 data). */
  readonly ipv4Only: boolean;
  /** Per octet of an answer, the values it accepts; undefined: any answer. */
  readonly octets: readonly (readonly [number, number][])[] | undefined;
}

const ZONE = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)+$/;

/** The site, or a message saying what is wrong with the text. */
export function parseSite(text: string, ipv4Only = false): Site | string {
  const m = /^([^=*]+)(?:=([^*]+))?(?:\*(-?\d+))?$/.exec(text.trim());
  if (!m) return `"${text}" is not zone[=filter][*weight], e.g. zen.spamhaus.org=127.0.0.[2..11]*3`;
  const zone = m[1]!.toLowerCase().replace(/\.$/, '');
  if (!ZONE.test(zone)) return `"${text}": "${m[1]}" is not a DNS zone name`;
  const weight = m[3] === undefined ? 1 : Number(m[3]);
  if (!Number.isSafeInteger(weight)) return `"${text}": the weight is not a whole number`;
  const filter = m[2] ?? '';
  if (filter === '') return { zone, filter, weight, ipv4Only, octets: undefined };
  const octets = parseFilter(filter);
  if (typeof octets === 'string') return `"${text}": ${octets}`;
  return { zone, filter, weight, ipv4Only, octets };
}

function parseFilter(filter: string): [number, number][][] | string {
  const field = String.raw`(\d{1,3}|\[[^\]]*\])`;
  const fields = new RegExp(`^${field}\\.${field}\\.${field}\\.${field}$`).exec(filter)?.slice(1);
  if (fields === undefined) return `the filter "${filter}" does not have four fields (d.d.d.d)`;
  const out: [number, number][][] = [];
  for (const f of fields) {
    const list = /^\[(.+)\]$/.exec(f)?.[1];
    const parts = list === undefined ? [f] : list.split(/[;,]/);
    const ranges: [number, number][] = [];
    for (const p of parts) {
      const r = /^(\d{1,3})(?:\.\.(\d{1,3}))?$/.exec(p.trim());
      if (!r || (list === undefined && r[2] !== undefined)) return `"${f}" in the filter is not a number or [n;n..m]`;
      const lo = Number(r[1]);
      const hi = r[2] === undefined ? lo : Number(r[2]);
      if (hi > 255 || lo > hi) return `"${p}" in the filter is not within 0..255, low to high`;
      ranges.push([lo, hi]);
    }
    out.push(ranges);
  }
  return out;
}

/** A site entry as a config file writes it: postscreen text, or the text with ipv4_only. */
export type SiteEntry = string | { readonly site: string; readonly ipv4_only: boolean };

export function siteOf(entry: SiteEntry): Site | string {
  return typeof entry === 'string' ? parseSite(entry) : parseSite(entry.site, entry.ipv4_only);
}
