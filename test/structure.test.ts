// The shape of lib/, read from the code: each folder is a layer, imports
// run only downward (the order is README's "layers:" line, in "How it is
// built"), no file is over 400 lines, the stage order is written once, and
// the lookup seam keeps no table of sessions.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const LIB = path.join(ROOT, 'lib');

/** Every .ts file under lib/, as [folder, file name, text]. */
const files: [string, string, string][] = readdirSync(LIB, { withFileTypes: true }).filter((d) => d.isDirectory())
  .flatMap((d) => readdirSync(path.join(LIB, d.name)).filter((f) => f.endsWith('.ts')).map((f): [string, string, string] => [d.name, f, readFileSync(path.join(LIB, d.name, f), 'utf8')]));

/** The layers, lowest first, each a list of folders, from README. */
function layers(): string[][] {
  const line = readFileSync(path.join(ROOT, 'README.md'), 'utf8').split('\n').find((l) => l.startsWith('layers: '));
  if (line === undefined) throw new Error('README.md has no "layers:" line');
  return line.slice('layers: '.length).split('|').map((g) => g.trim().split(/\s+/));
}

t.test('imports run only from a layer to one below it', async (t) => {
  const order = layers();
  const level = new Map(order.flatMap((g, i) => g.map((f): [string, number] => [f, i])));
  const folders = new Set(files.map(([d]) => d));
  for (const d of folders) t.ok(level.has(d), `lib/${d}/ has a layer in README's layers: line`);
  const wrong: string[] = [];
  for (const [dir, file, text] of files) {
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'\.\.\/([a-z-]+)\//g)) {
      const to = m[1]!;
      if (to === dir) continue;
      const a = level.get(dir);
      const b = level.get(to);
      if (a === undefined || b === undefined || b >= a) wrong.push(`lib/${dir}/${file} imports lib/${to}/ (${b === a ? 'same layer' : 'a layer above'})`);
    }
  }
  t.same(wrong, [], 'no import runs up or sideways');
  const config = files.filter(([d]) => d === 'config').flatMap(([, f, text]) => [...text.matchAll(/from '\.\.\/([a-z-]+)\//g)].map((m) => `${f} -> ${m[1]}`));
  t.ok(config.every((i) => /-> (shield|util|log)$/.test(i)), `lib/config imports only what is below it: ${config.join(', ') || 'nothing'}`);
});

t.test('no lib file is over 400 lines', async (t) => {
  const long = files.map(([d, f, text]) => [`lib/${d}/${f}`, text.split('\n').length] as const).filter(([, n]) => n > 400);
  t.same(long, [], 'a file past ~400 lines is two files');
});

t.test('the stage order is written once', async (t) => {
  const lists = files.flatMap(([d, f, text]) => [...text.matchAll(/\[\s*'connect',\s*'helo'/g)].map(() => `lib/${d}/${f}`));
  t.same(lists, ['lib/engine/types.ts'], 'only engine/types.ts spells out the stages in order');
});

t.test('the lookup seam keeps no table of sessions', async (t) => {
  const text = files.find(([d, f]) => d === 'enrich' && f === 'enricher.ts')![2];
  t.notMatch(text, /YoungMap|Map<string,\s*Want>/, 'the Enricher keeps no per-session map (a session\'s lookups live on the engine\'s context)');
  t.match(text, /#inflight: Map<string, Flight>\[\]/, 'it keeps the fetches under way, by key');
});
