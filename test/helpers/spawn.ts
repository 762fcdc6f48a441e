// Spawns bin/sluiced (or a fixture) as a child and reads its JSON log lines from stdout.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SLUICED = path.join(ROOT, 'bin', 'sluiced');

export interface Child {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  lines: () => Record<string, unknown>[];
  waitFor: (pred: (l: Record<string, unknown>) => boolean, ms?: number) => Promise<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

/** The environment an admin's shell would give: without tap's loader hooks. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'NODE_OPTIONS' || k.startsWith('TAP') || k.startsWith('_TAPJS') || k === 'NODE_V8_COVERAGE') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/**
 * Runs node (or `command`) with `args`. `group`: in a process group of its
 * own, as a shell starts a command, and killed as a group at teardown.
 */
export function run(t: Test, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; node?: string[]; command?: string; group?: boolean } = {}): Child {
  const proc = spawn(opts.command ?? process.execPath, [...(opts.node ?? []), ...args], { cwd: opts.cwd ?? ROOT, env: cleanEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'], detached: opts.group ?? false });
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  t.teardown(() => {
    if (opts.group) {
      try { process.kill(-proc.pid!, 'SIGKILL'); } catch { /* gone */ }
    } else if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const lines = (): Record<string, unknown>[] => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  return {
    proc, exited, lines,
    stdout: () => out,
    stderr: () => err,
    waitFor: async (pred, ms = 10_000) => {
      const end = Date.now() + ms;
      for (;;) {
        const hit = lines().find(pred);
        if (hit) return hit;
        if (Date.now() > end || proc.exitCode !== null) throw new Error(`no matching log line; stdout:\n${out}\nstderr:\n${err}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

export function sluiced(t: Test, args: string[], env?: NodeJS.ProcessEnv): Child {
  return run(t, [SLUICED, ...args], { env });
}

/** A short temp dir (Unix socket paths must stay under 108 bytes); removed after the test. */
export function shortDir(t: Test): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'sl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
