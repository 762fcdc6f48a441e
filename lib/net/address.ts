// address.ts - one canonical text form for client addresses, for both protocols.
//
// IPv4 as given; IPv6 lower-case, an IPv4-mapped IPv6 address as its IPv4
// form; anything else (Postfix's "unknown", a Unix socket) as "unknown".
// Pure; the policy request and the milter CONNECT both use it, so the same
// client gets the same reputation key whichever way it came.

import { isIP } from 'node:net';

export function canonicalAddress(addr: string): string {
  const v = isIP(addr);
  if (v === 4) return addr;
  if (v === 6) {
    const lower = addr.toLowerCase();
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
    return mapped && mapped[1] !== undefined ? mapped[1] : lower;
  }
  return 'unknown';
}
