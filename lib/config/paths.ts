// paths.ts - files and directories a config names, checked as the daemon
// will use them, so that --check-config and a reload refuse what a start
// would refuse: a password file it cannot read, a state directory it cannot
// write (or create). Each check says what is wrong, or undefined.

import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';

function why(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'ENOTDIR' ? 'a part of the path is not a directory' : (err as Error).message;
}

/** A file this process can read. */
export function unreadableFile(file: string): string | undefined {
  try {
    if (!statSync(file).isFile()) return `${file} is not a file`;
    accessSync(file, constants.R_OK);
    return undefined;
  } catch (err) {
    return `cannot read ${file}: ${why(err)}`;
  }
}

/** A directory this process can write, or create (its nearest existing parent is a writable directory). */
export function unwritableDir(dir: string): string | undefined {
  const full = path.resolve(dir);
  for (let d = full; ; d = path.dirname(d)) {
    try {
      if (!statSync(d).isDirectory()) return `cannot use ${full}: ${d} is not a directory`;
      accessSync(d, constants.W_OK);
      return undefined;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && path.dirname(d) !== d) continue;
      return `cannot ${d === full ? 'write to' : 'create'} ${full}: ${why(err)}`;
    }
  }
}
