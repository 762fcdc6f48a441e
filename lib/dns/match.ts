// match.ts - what a DNS list's answer says, against a site's filter.
//
// The sites are parsed once, by the config schema (config/sites.ts); here an
// answer (an IPv4 address in 127.0.0.0/8) is matched against one. Pure.

import type { Site } from '../config/sites.js';

/** True when an answer (an IPv4 address such as 127.0.0.2) passes the site's filter. */
export function matches(site: Site, answer: string): boolean {
  if (site.octets === undefined) return true;
  const parts = answer.split('.');
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) {
    const n = Number(parts[i]);
    if (!site.octets[i]!.some(([lo, hi]) => n >= lo && n <= hi)) return false;
  }
  return true;
}

/** An answer in 127.255.255.0/24: the list refuses this resolver (Spamhaus's "query refused" codes), it says nothing of the client. */
export function isRefusal(answer: string): boolean {
  return answer.startsWith('127.255.255.');
}
