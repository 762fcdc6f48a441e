// Starts an in-process Daemon on port 0 with its own state dir and JSON log file.
import { writeFileSync, readFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { Daemon } from '../../dist/cli/daemon.js';
import type { Rule } from '../../dist/engine/types.js';
import type { Clock, ManualClock } from '../../dist/util/clock.js';

export interface Harness {
  daemon: Daemon;
  dir: string;
  logFile: string;
  configFile: string;
  /** Parsed JSON log lines so far. */
  logs(): Record<string, unknown>[];
}

/** `rule`: decides in front of the engine (ScriptedRule); `clock`: the daemon's time (a ManualClock). */
export async function startDaemon(t: Test, yaml = '', rule?: Rule, clock?: Clock): Promise<Harness> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const logFile = path.join(dir, 'sluiced.log');
  const configFile = path.join(dir, 'sluice.yaml');
  const base = `state_dir: ${dir}\nlog:\n  file: ${logFile}\n  format: json\n  level: debug\n`;
  // Port 0 for every listener the test does not set itself: no fixed ports.
  const listeners = (yaml.includes('policy:') ? '' : 'policy:\n  listen: ["inet:127.0.0.1:0"]\n') + (yaml.includes('milter:') ? '' : 'milter:\n  listen: ["inet:127.0.0.1:0"]\n') + (yaml.includes('metrics:') ? '' : 'metrics:\n  listen: "inet:127.0.0.1:0"\n');
  writeFileSync(configFile, base + listeners + yaml);
  const daemon = await Daemon.start({ configFile, rules: rule ? [rule] : [], clock, isTTY: false });
  t.teardown(() => daemon.stop());
  return {
    daemon, dir, logFile, configFile,
    logs: () => {
      daemon.log.flush();
      if (!existsSync(logFile)) return [];
      return readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    },
  };
}

/** A promise's outcome, readable while it is still pending (for holds on a ManualClock). */
export function track<T>(p: Promise<T>): { done: boolean; value: T | undefined } {
  const s: { done: boolean; value: T | undefined } = { done: false, value: undefined };
  void p.then((v) => { s.done = true; s.value = v; });
  return s;
}

/** Lets sockets and the event loop run: an answer that is due arrives within this (not a timing bound). */
export function settle(ms = 30): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A reply held on a ManualClock: not there 1 ms before `ms`, there at `ms`
 * (the clock is advanced here). Resolves with the reply.
 */
export async function heldFor<T>(t: Test, clock: ManualClock, reply: Promise<T>, ms: number, what = 'the reply'): Promise<T | undefined> {
  const r = track(reply);
  clock.advance(ms - 1);
  await settle();
  t.notOk(r.done, `${what}: still held 1 ms before ${ms} ms`);
  clock.advance(1);
  t.ok(await until(() => r.done), `${what}: answered at ${ms} ms`);
  return r.value;
}

/** Waits for a condition that becomes true asynchronously (log writes); no fixed sleeps. */
export async function until(cond: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return cond();
}
