// Loads test/fixtures/vectors (real Postfix 3.7.11 captures; where and how they
// were captured: test/fixtures/vectors/README.md) for tests and benchmarks.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Inside the repository: a clone anywhere has them. */
export const VECTORS = path.resolve(here, '..', 'fixtures', 'vectors');

export function vectorsPresent(): boolean {
  return existsSync(VECTORS);
}

export interface PolicyVector {
  scenario: string;
  attrs: Record<string, string>;
  raw: string;
}

export function policyVectors(): PolicyVector[] {
  const dir = path.join(VECTORS, 'policy');
  const out: PolicyVector[] = [];
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort()) {
    for (const line of readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      if (!line.trim()) continue;
      const rec = JSON.parse(line) as { event: string; scenario: string; attrs?: Record<string, string>; raw?: string };
      if (rec.event === 'request' && rec.attrs && rec.raw !== undefined) out.push({ scenario: rec.scenario, attrs: rec.attrs, raw: rec.raw });
    }
  }
  return out;
}

export interface MilterVector {
  scenario: string;
  conn: number;
  dir: 'in' | 'out';
  cmd: string;
  len?: number;
  fields: Record<string, unknown>;
  hex: string;
}

/** Every frame captured, in order; body frames whose hex was cut are marked `cut`. */
export function milterVectors(): (MilterVector & { cut: boolean })[] {
  const dir = path.join(VECTORS, 'milter');
  const out: (MilterVector & { cut: boolean })[] = [];
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort()) {
    for (const line of readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      if (!line.trim()) continue;
      const rec = JSON.parse(line) as MilterVector & { event?: string };
      if (!rec.dir || !rec.hex) continue;
      const cut = rec.len !== undefined && rec.hex.length !== (rec.len + 4) * 2;
      out.push({ ...rec, cut });
    }
  }
  return out;
}
