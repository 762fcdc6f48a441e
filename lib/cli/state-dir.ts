// state-dir.ts - where sluiced keeps its state (snapshots, default sockets).
//
// state_dir from the config when set; else systemd's $STATE_DIRECTORY; else
// /var/lib/sluice for root and ~/.local/state/sluice for anyone else, so a
// fresh clone runs without root. The directory is created and must be
// writable, or startup fails with CONFIG_STATE_DIR.

import { mkdir, access, constants } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { ConfigError } from '../shield/errors.js';

export function stateDirFor(configured: string, env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? -1): string {
  if (configured !== '') return path.resolve(configured);
  const systemd = env['STATE_DIRECTORY']?.split(':')[0];
  if (systemd) return systemd;
  if (uid === 0) return '/var/lib/sluice';
  const base = env['XDG_STATE_HOME'] || path.join(homedir(), '.local', 'state');
  return path.join(base, 'sluice');
}

export async function ensureStateDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o750 });
    await access(dir, constants.W_OK);
  } catch (err) {
    throw new ConfigError('CONFIG_STATE_DIR', `state directory ${dir}: ${(err as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : (err as Error).message}`);
  }
}
