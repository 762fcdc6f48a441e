// endpoint.ts - listen endpoints as Postfix and milter admins write them.
//
//   inet:HOST:PORT        IPv4 address or host name, e.g. inet:127.0.0.1:10040
//   inet6:[ADDR]:PORT     IPv6 address, e.g. inet6:[::1]:10040
//   unix:PATH             Unix socket; relative paths are taken from state_dir
//
// Pure parsing; listeners open them. Port 0 asks the kernel for a free port.

import { isIP } from 'node:net';

export type Endpoint =
  | { readonly kind: 'inet'; readonly host: string; readonly port: number; readonly text: string }
  | { readonly kind: 'unix'; readonly path: string; readonly text: string };

/** The endpoint, or a message saying what is wrong with the text. */
export function parseEndpoint(text: string): Endpoint | string {
  const colon = text.indexOf(':');
  const scheme = colon < 0 ? '' : text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (scheme === 'unix' || scheme === 'local') {
    if (rest === '' || rest.includes('\0')) return `"${text}": unix: needs a socket path`;
    return { kind: 'unix', path: rest, text };
  }
  if (scheme === 'inet' || scheme === 'inet6') {
    const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(rest);
    if (!m) return `"${text}": expected ${scheme}:${scheme === 'inet6' ? '[ADDR]' : 'HOST'}:PORT`;
    const host = (m[1] ?? m[2]) as string;
    const port = Number(m[3]);
    if (port > 65535) return `"${text}": port ${port} is above 65535`;
    if (scheme === 'inet6' && isIP(host) !== 6) return `"${text}": inet6 needs an IPv6 address in brackets`;
    if (m[1] !== undefined && isIP(host) !== 6) return `"${text}": brackets are for IPv6 addresses`;
    return { kind: 'inet', host, port, text };
  }
  const hint = /^(?:\[[^\]]+\]|[^:[\]]+):\d{1,5}$/.test(text) ? ` (did you mean "${text.startsWith('[') ? 'inet6' : 'inet'}:${text}"?)` : '';
  return `"${text}": expected inet:HOST:PORT, inet6:[ADDR]:PORT or unix:PATH${hint}`;
}

/** How to name the endpoint in messages once it is bound (the real port for port 0). */
export function describeBound(ep: Endpoint, address: string | { address: string; port: number } | null): string {
  if (ep.kind === 'unix' || address === null || typeof address === 'string') return ep.text;
  const host = isIP(address.address) === 6 ? `inet6:[${address.address}]` : `inet:${address.address}`;
  return `${host}:${address.port}`;
}
