// keys.ts - what a reputation is kept for.
//
// A client address and its network: IPv4 /32 and /24, IPv6 /64 and /48 (an
// IPv4-mapped IPv6 address counts as IPv4); the HELO name and the sender's
// domain, lower-cased. Keys are short strings with a kind prefix, so one LRU
// holds them all. Address math is ipaddr.js's.

import ipaddr from 'ipaddr.js';
import { isIP, isIPv4 } from 'node:net';

/** The keys for one client; "" where there is none (no HELO, null sender, no address). */
export interface Keys {
  readonly ip: string;
  readonly net: string;
  readonly helo: string;
  readonly domain: string;
}

/** "ip:192.0.2.7" and "net:192.0.2.0/24", or the /64 and /48 for IPv6. */
export function addressKeys(address: string): { ip: string; net: string } | undefined {
  // The common case, a plain IPv4 address, without parsing it into octets.
  if (isIPv4(address)) return { ip: `ip:${address}`, net: `net:${address.slice(0, address.lastIndexOf('.'))}.0/24` };
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.process(address);
  } catch {
    return undefined;
  }
  if (addr.kind() === 'ipv4') {
    const o = (addr as ipaddr.IPv4).octets;
    return { ip: `ip:${o.join('.')}`, net: `net:${o[0]}.${o[1]}.${o[2]}.0/24` };
  }
  const parts = (addr as ipaddr.IPv6).parts;
  const hex = (n: number): string => parts.slice(0, n).map((p) => p.toString(16)).join(':');
  return { ip: `ip:${hex(4)}::/64`, net: `net:${hex(3)}::/48` };
}

/** Lower-cased, without a trailing dot. */
function name(s: string): string {
  const l = s.toLowerCase();
  return l.endsWith('.') ? l.slice(0, -1) : l;
}

/** `a`: the client's address keys, when the caller has them already. */
export function keysFor(client: string, helo: string, sender: string, a = addressKeys(client)): Keys {
  const at = sender.lastIndexOf('@');
  const domain = at >= 0 ? name(sender.slice(at + 1)) : '';
  const h = name(helo);
  return { ip: a?.ip ?? '', net: a?.net ?? '', helo: h && `helo:${h}`, domain: domain && `dom:${domain}` };
}

/** Parses what an admin types (an address, a CIDR, a HELO name, a domain) into the key to look up. */
export function keyFromText(text: string): string | undefined {
  if (isIP(text) !== 0) return addressKeys(text)?.ip;
  // Digits and dots that are no address (10.0.0.999) are a typo, not a HELO name.
  if (/^[\d.]+$/.test(text)) return undefined;
  if (/^[0-9a-f:.]+\/\d+$/i.test(text)) {
    try {
      const [addr, len] = ipaddr.parseCIDR(text);
      const a = addressKeys(addr.toString());
      if (!a) return undefined;
      return (addr.kind() === 'ipv4' ? len >= 32 : len >= 64) ? a.ip : a.net;
    } catch {
      return undefined;
    }
  }
  if (/^@/.test(text)) return `dom:${text.slice(1).toLowerCase()}`;
  if (/^[a-z0-9-]+(\.[a-z0-9-]+)+\.?$/i.test(text)) return `helo:${text.toLowerCase().replace(/\.$/, '')}`;
  return undefined;
}
