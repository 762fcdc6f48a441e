// list-value.ts - what an allow/deny list entry may be, and how it matches.
//
// "192.0.2.0/24" or "192.0.2.7" (IPv4-mapped IPv6 counts as IPv4), a HELO
// name such as "mail.example.net", or "@example.net" for a sender domain and
// its subdomains. Pure; used by the config schema and by engine/lists.ts.

import ipaddr from 'ipaddr.js';

export type Matcher =
  | { readonly type: 'cidr'; readonly range: [ipaddr.IPv4 | ipaddr.IPv6, number] }
  | { readonly type: 'helo'; readonly name: string }
  | { readonly type: 'domain'; readonly name: string };

/** How an entry's text is matched, or a message saying why it is not an entry. */
export function parseListValue(value: string): Matcher | string {
  if (value.startsWith('@')) {
    const name = value.slice(1).toLowerCase();
    return /^[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(name) ? { type: 'domain', name } : `"${value}" is not a sender domain`;
  }
  if (/^[0-9a-f:.]+(\/\d{1,3})?$/i.test(value) && /[.:]/.test(value) && (value.includes(':') || /^\d/.test(value))) {
    try {
      const range = value.includes('/') ? ipaddr.parseCIDR(value) : (() => {
        const a = ipaddr.process(value);
        return [a, a.kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number];
      })();
      const [addr, len] = range;
      const norm = addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()
        ? [(addr as ipaddr.IPv6).toIPv4Address(), Math.max(0, len - 96)] as [ipaddr.IPv4, number] : range;
      return { type: 'cidr', range: norm };
    } catch {
      return `"${value}" is not an address or CIDR`;
    }
  }
  const name = value.toLowerCase().replace(/\.$/, '');
  return /^[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(name) ? { type: 'helo', name } : `"${value}" is not an address, CIDR, HELO name or @domain`;
}

