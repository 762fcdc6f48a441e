// version.ts - sluice's version, as package.json gives it.
//
// package.json sits two levels above dist/cli/ in a clone and in an
// installed package alike (npm always packs it), so the version is written
// in one place only.

import { readFileSync } from 'node:fs';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
