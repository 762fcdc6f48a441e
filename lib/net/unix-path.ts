// unix-path.ts - making a Unix socket's path ready to listen on.
//
// libuv reports a missing directory as "address in use" and a path over 107
// bytes is cut silently; a socket left by a process that died must go, but a
// live one (another sluiced) or a path that is not a socket must not be
// touched. Each problem is a CONFIG_LISTEN error naming the endpoint.

import net from 'node:net';
import { lstat, unlink, stat, access, constants } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ConfigError } from '../shield/errors.js';

/**
 * Checks the socket's directory (libuv reports a missing one as "address in
 * use") and removes a stale socket left by a process that died.
 */
export async function prepareUnixPath(path: string, text: string): Promise<void> {
  // sun_path holds 108 bytes with its NUL; a longer path is silently cut.
  if (Buffer.byteLength(path) > 107) throw new ConfigError('CONFIG_LISTEN', `${text}: socket path is ${Buffer.byteLength(path)} bytes; at most 107 fit`);
  const dir = dirname(path);
  try {
    if (!(await stat(dir)).isDirectory()) throw new ConfigError('CONFIG_LISTEN', `${text}: ${dir} is not a directory`);
    await access(dir, constants.W_OK);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'ENOTDIR' ? 'is not a directory' : code === 'EACCES' ? 'is not writable' : (err as Error).message;
    throw new ConfigError('CONFIG_LISTEN', `${text}: directory ${dir} ${why}`);
  }
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ConfigError('CONFIG_LISTEN', `${text}: ${(err as Error).message}`);
  }
  if (!st.isSocket()) throw new ConfigError('CONFIG_LISTEN', `${text}: ${path} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => { probe.destroy(); resolve(true); });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new ConfigError('CONFIG_LISTEN', `${text}: another process is listening on ${path}`);
  await unlink(path);
}

export function explainListen(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'EADDRINUSE': return 'address already in use';
    case 'EACCES': return 'permission denied';
    case 'EADDRNOTAVAIL': return 'address not available on this host';
    case 'ENOENT': return 'directory does not exist';
    case 'ENOTFOUND': return 'host name not found';
    default: return err.message;
  }
}
