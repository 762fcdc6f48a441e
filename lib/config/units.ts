// units.ts - durations ("30s", "5m", "1h", "250ms") and sizes ("64KiB", "1MiB").
//
// Pure parsers used by the config schema. A bare number is taken as
// milliseconds (durations) or bytes (sizes). Anything else is refused with a
// message that says what was expected.

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;
const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

const SIZE = /^(\d+)\s*(B|KiB|MiB|GiB|k|K|KB|M|MB|G|GB)?$/;
const SIZE_BYTES: Record<string, number> = {
  B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3,
  k: 1000, K: 1000, KB: 1000, M: 1000 ** 2, MB: 1000 ** 2, G: 1000 ** 3, GB: 1000 ** 3,
};

/** Milliseconds, or undefined when the text is not a duration. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  const m = DURATION.exec(value.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * (DURATION_MS[m[2] ?? 'ms'] ?? 1));
}

/** Bytes, or undefined when the text is not a size. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined;
  const m = SIZE.exec(value.trim());
  if (!m) return undefined;
  return Number(m[1]) * (SIZE_BYTES[m[2] ?? 'B'] ?? 1);
}

/** "90000" ms -> "90s", for printing effective values back to people. */
export function formatDuration(ms: number): string {
  for (const [unit, n] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= n && ms % n === 0) return `${ms / n}${unit}`;
  }
  return `${ms}ms`;
}
