// Mutations of real captures for fuzzing: bit flips, byte changes, inserts,
// deletions, truncations, splices and length-field tweaks, from a seeded PRNG
// so every failure can be replayed.
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 1;
  }
  next(): number {
    // xorshift32
    let x = this.#s;
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    this.#s = x;
    return x / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

export function mutate(input: Buffer, rng: Rng, pool: readonly Buffer[]): Buffer {
  const b = Buffer.from(input);
  switch (rng.int(8)) {
    case 0: { // flip bits
      for (let i = 0, n = 1 + rng.int(4); i < n && b.length; i++) b[rng.int(b.length)]! ^= 1 << rng.int(8);
      return b;
    }
    case 1: { // set bytes to interesting values
      const vals = [0, 0x0a, 0x3d, 0xff, 0x7f, 0x80, 0x20, 0x00];
      for (let i = 0, n = 1 + rng.int(3); i < n && b.length; i++) b[rng.int(b.length)] = vals[rng.int(vals.length)]!;
      return b;
    }
    case 2: { // insert random bytes
      const at = rng.int(b.length + 1);
      const ins = Buffer.alloc(1 + rng.int(16));
      for (let i = 0; i < ins.length; i++) ins[i] = rng.int(256);
      return Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
    }
    case 3: { // delete a range
      const at = rng.int(b.length + 1);
      return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(16))]);
    }
    case 4: // truncate
      return b.subarray(0, rng.int(b.length + 1));
    case 5: { // splice with another capture
      const o = pool[rng.int(pool.length)]!;
      return Buffer.concat([b.subarray(0, rng.int(b.length + 1)), o.subarray(rng.int(o.length + 1))]);
    }
    case 6: { // tweak a 4-byte big-endian length somewhere
      if (b.length < 4) return b;
      const at = rng.int(b.length - 3);
      const v = [0, 1, 2, 0x7fffffff, 0xffffffff, 65536, 65537, b.readUInt32BE(at) + 1][rng.int(8)]!;
      b.writeUInt32BE(v >>> 0, at);
      return b;
    }
    default: { // random bytes
      const r = Buffer.alloc(1 + rng.int(64));
      for (let i = 0; i < r.length; i++) r[i] = rng.int(256);
      return r;
    }
  }
}
