// heuristics.ts - what a session's HELO and reverse DNS say about the client.
//
// A bare IP address as HELO, a HELO that is not a fully qualified name, a
// HELO that claims one of our own names or addresses, and a client with no
// reverse DNS each cost points (weights.*). They count for the session's
// decisions; they are facts about this session, not stored.

import { isIP } from 'node:net';

export interface HeuristicWeights {
  readonly bare_ip_helo: number;
  readonly non_fqdn_helo: number;
  readonly helo_is_us: number;
  readonly no_reverse_dns: number;
}

export interface Finding {
  readonly name: keyof HeuristicWeights;
  readonly points: number;
}

export function heuristics(helo: string, clientName: string, ourNames: readonly string[], ourAddresses: readonly string[], w: HeuristicWeights): Finding[] {
  const out: Finding[] = [];
  const h = helo.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
  if (h !== '') {
    if (ourNames.some((n) => n.toLowerCase() === h) || ourAddresses.includes(h)) out.push({ name: 'helo_is_us', points: w.helo_is_us });
    else if (isIP(h.replace(/^ipv6:/, ''))) out.push({ name: 'bare_ip_helo', points: w.bare_ip_helo });
    else if (!/^[a-z0-9-]+(\.[a-z0-9-]+)+$/.test(h)) out.push({ name: 'non_fqdn_helo', points: w.non_fqdn_helo });
  }
  if (clientName === 'unknown' || clientName === '') out.push({ name: 'no_reverse_dns', points: w.no_reverse_dns });
  return out;
}
