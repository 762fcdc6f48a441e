// yaml.ts - a YAML file checked against a schema, every problem at its line.
//
// The one way sluice reads a YAML file: the config (load.ts) and the
// simulation's scenarios (lib/sim/scenario.ts) both come through here.
// Syntax errors, a key given twice in one mapping (YAML would keep the last
// silently), unknown keys and bad values are all reported at once, each
// with file, line and key; a valid document is deep-frozen. Nothing here
// exits or logs; readText() is the one file read.

import { readFile } from 'node:fs/promises';
import { LineCounter, parseDocument, isMap, isScalar, type Document } from 'yaml';
import type { z } from 'zod';

export interface ConfigProblem {
  readonly file: string;
  /** 1-based; absent when the problem has no place in the file. */
  readonly line?: number;
  readonly key: string;
  readonly message: string;
  readonly symbol: 'CONFIG_UNREADABLE' | 'CONFIG_SYNTAX' | 'CONFIG_INVALID';
}

/** A file's text, or the one problem of not being able to read it. */
export async function readText(file: string): Promise<{ readonly text: string } | { readonly problem: ConfigProblem }> {
  try {
    return { text: await readFile(file, 'utf8') };
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    return { problem: { file, key: '', message: `cannot read: ${reason}`, symbol: 'CONFIG_UNREADABLE' } };
  }
}

export type Parsed<T> =
  | { readonly ok: true; readonly value: T; readonly raw: Record<string, unknown> }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] };

/** Parses `text` (named `file` in problems), merged over `base` when given, and validates it with `schema`. */
export function parseYaml<S extends z.ZodType>(text: string, file: string, schema: S, base?: object): Parsed<z.output<S>> {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const lineOf = (offset: number | undefined): number | undefined =>
    offset === undefined ? undefined : lines.linePos(offset).line;

  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => ({
      file, line: lineOf(e.pos[0]), key: '', message: e.message.split('\n')[0] ?? e.message, symbol: 'CONFIG_SYNTAX' as const,
    }));
    return { ok: false, problems };
  }
  const user: unknown = doc.toJS() ?? {};
  if (!isPlainObject(user)) {
    return { ok: false, problems: [{ file, line: 1, key: '', message: 'the file must be a mapping of keys', symbol: 'CONFIG_INVALID' }] };
  }
  const raw = base === undefined ? user : merge(base, user);
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const problems: ConfigProblem[] = [];
    for (const issue of parsed.error.issues) {
      const path = issue.path.map(String);
      if (issue.code === 'unrecognized_keys') {
        for (const k of issue.keys) {
          problems.push({ file, line: lineOf(keyOffset(doc, path, k)), key: [...path, k].join('.'), message: 'unknown key', symbol: 'CONFIG_INVALID' });
        }
        continue;
      }
      // A problem of two keys (params.otherwise) is said at the other one when the file sets only that one.
      const other = (issue as { params?: { otherwise?: { path: string[]; message: string } } }).params?.otherwise;
      if (other && !doc.hasIn(path.map(indexOrKey)) && doc.hasIn(other.path.map(indexOrKey))) {
        problems.push({ file, line: lineOf(valueOffset(doc, other.path)), key: other.path.join('.'), message: other.message, symbol: 'CONFIG_INVALID' });
        continue;
      }
      problems.push({ file, line: lineOf(valueOffset(doc, path)), key: path.join('.'), message: describe(issue), symbol: 'CONFIG_INVALID' });
    }
    problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    return { ok: false, problems };
  }
  return { ok: true, raw, value: deepFreeze(parsed.data) };
}

/** What a value of each type looks like, for "expected ..." messages. */
const FORMS: Record<string, string> = {
  int: 'a whole number', number: 'a number', string: 'a string', boolean: 'true or false',
  array: 'a list, e.g. [a, b]', object: 'a mapping of keys',
};

/** A problem in the words of the rest of sluice, not the schema library's ("Too big: expected number to be <=1"). */
function describe(issue: { code: string; message: string; expected?: unknown; values?: readonly unknown[]; maximum?: unknown; minimum?: unknown; inclusive?: boolean; origin?: string }): string {
  if (issue.code === 'invalid_type' && typeof issue.expected === 'string') return `expected ${FORMS[issue.expected] ?? issue.expected}`;
  if (issue.code === 'invalid_value' && issue.values) return `expected one of ${issue.values.map(String).join(', ')}`;
  const what = issue.origin === 'string' ? ' characters' : issue.origin === 'array' ? ' items' : '';
  if (issue.code === 'too_big') return `must be ${issue.inclusive === false ? 'below' : 'at most'} ${String(issue.maximum)}${what}`;
  if (issue.code === 'too_small') return `must be ${issue.inclusive === false ? 'above' : 'at least'} ${String(issue.minimum)}${what}`;
  if (issue.code === 'invalid_union') return 'not one of the forms this key takes';
  return issue.message;
}

function valueOffset(doc: Document, path: string[]): number | undefined {
  for (let n = path.length; n > 0; n--) {
    const node = doc.getIn(path.slice(0, n).map(indexOrKey), true) as { range?: [number, number, number] } | undefined;
    if (node && node.range) return node.range[0];
  }
  return undefined;
}

function keyOffset(doc: Document, parent: string[], key: string): number | undefined {
  const map = parent.length === 0 ? doc.contents : doc.getIn(parent.map(indexOrKey), true);
  if (!isMap(map)) return undefined;
  for (const pair of map.items) {
    if (isScalar(pair.key) && String(pair.key.value) === key) return pair.key.range?.[0];
  }
  return undefined;
}

const indexOrKey = (s: string): string | number => (/^\d+$/.test(s) ? Number(s) : s);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** `base` overlaid with the file; unknown keys are kept so the schema can name them. */
function merge(base: object, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = (base as Record<string, unknown>)[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? merge(b, v) : v;
  }
  return out;
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
