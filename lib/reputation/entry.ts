// entry.ts - the fields of one reputation entry, defined once.
//
// The local store keeps an entry as FIELDS doubles in this order (store.ts),
// the snapshot writes them in this order (snapshot.ts), and the fleet store
// keeps them as a hash under these names (fleet/: the reader turns a hash
// back into values, the writer's script is generated from COUNTERS). A
// field added here reaches all of them.

/**
 * What an entry counts: delivered, abandoned (not held), abandoned under a
 * hold, rate or concurrency exceeded, greylist passes, and the content
 * scanner's verdicts (spam, ham). New counters go at the end: a snapshot of
 * an older version is read with them at 0 (snapshot.ts).
 */
export const COUNTERS = ['ok', 'ab', 'abh', 'rate', 'grey', 'spam', 'ham'] as const;
export type Counter = (typeof COUNTERS)[number];

/** Every field in slab order: the score as of `at`, when it was last written, first seen, then the counters. */
export const ENTRY_FIELDS = ['s', 'at', 'first', ...COUNTERS] as const;
export type Field = (typeof ENTRY_FIELDS)[number];

/** Values per entry. */
export const FIELDS = ENTRY_FIELDS.length;
/** Where the score, its time and the first-seen time are among an entry's values. */
export const S = 0;
export const AT = 1;
export const FIRST = 2;
/** Where each counter is among an entry's values. */
export const COUNTER_AT: Readonly<Record<Counter, number>> = Object.fromEntries(COUNTERS.map((c, i) => [c, FIRST + 1 + i])) as Record<Counter, number>;

/** An entry as an object (for explain, show and tests): one number per field. */
export type Entry = { [K in Field]: number };

/** The entry's values, in slab order, from a stored hash (fields absent or unreadable count 0; a missing first-seen is `at`). */
export function valuesOf(h: Readonly<Record<string, string>>): number[] {
  const v = ENTRY_FIELDS.map((f) => Number(h[f] ?? 0) || 0);
  if (v[FIRST] === 0) v[FIRST] = v[AT]!;
  return v;
}
