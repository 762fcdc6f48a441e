// world.ts - the clients a scenario's populations are made of, and the dice.
//
// Addresses are drawn in order from each population's network: per_network
// of them from each /24 (IPv6: each /48, one address in each of its /64s)
// before the next. The /24s are shared by absolute number, so populations
// whose networks overlap interleave in the same /24s and never share an
// address. Reverse names and HELO follow `rdns`: a forward-confirmed name
// (HELO the same), a generic dynamic-pool name (HELO the same), or none
// (HELO a bare address literal). A client is listed on the scenario's DNS
// list with the population's `listed` share. Nothing of a population but
// its parameters reaches a client: names carry no population label.

import ipaddr from 'ipaddr.js';
import { ScenarioError, type Population, type Scenario } from './scenario.js';

/** A seeded generator of numbers in [0, 1): the same seed, the same run. */
export function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
}

/** An exponentially distributed wait with this mean. */
export function exponential(rng: () => number, mean: number): number {
  return -Math.log(1 - rng()) * mean;
}

export interface Client {
  /** The population's index in the scenario. */
  readonly pop: number;
  readonly address: string;
  /** The reverse name as the MTA saw it, or "unknown". */
  readonly name: string;
  readonly helo: string;
  readonly listed: boolean;
}

/** Every population's clients, in the scenario's order; throws when a network is too small for its population. */
export function populate(s: Scenario, rng: () => number): Client[][] {
  /** Addresses taken so far per /24 (IPv4) or /48 (IPv6), by absolute number. */
  const taken = new Map<string, number>();
  return s.populations.map((p, pop) => clientsOf(p, pop, taken, rng));
}

function clientsOf(p: Population, pop: number, taken: Map<string, number>, rng: () => number): Client[] {
  const { v4, base, bits } = p.network;
  const netBits = v4 ? 8n : 80n;
  const room = v4 ? 254 : 65_535;
  const nets = 1n << BigInt((v4 ? 24 : 48) - bits);
  const first = base >> netBits;
  const out: Client[] = [];
  let n = 0n;
  while (out.length < p.clients) {
    if (n >= nets) throw new ScenarioError(`population "${p.name}": ${p.network.text} has no room for ${p.clients} clients at ${p.per_network} per network`);
    const net = first + n;
    const key = `${v4 ? 4 : 6}:${net}`;
    const used = taken.get(key) ?? 0;
    const take = Math.min(p.per_network, p.clients - out.length);
    if (used + take > room) {
      n++;
      continue;
    }
    for (let j = 0; j < take; j++) {
      const host = BigInt(used + j + 1);
      const address = v4 ? format4((net << 8n) | host) : format6((net << 80n) | (host << 64n) | 1n);
      out.push(client(p, pop, address, rng));
    }
    taken.set(key, used + take);
    n++;
  }
  return out;
}

function format4(n: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');
}

function format6(n: bigint): string {
  const parts: number[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) parts.push(Number((n >> s) & 0xffffn));
  return new ipaddr.IPv6(parts).toString();
}

function client(p: Population, pop: number, address: string, rng: () => number): Client {
  const dashed = address.replace(/[.:]+/g, '-').replace(/^-|-$/g, '');
  const listed = p.listed > 0 && rng() < p.listed;
  if (p.rdns === 'none') return { pop, address, name: 'unknown', helo: address.includes(':') ? `[IPv6:${address}]` : `[${address}]`, listed };
  const name = p.rdns === 'generic' ? `host-${dashed}.dsl.example.net` : `mail-${dashed}.example.org`;
  return { pop, address, name, helo: name, listed };
}
