// load.ts - read a YAML file, merge it over the defaults, validate, freeze.
//
// Every problem is reported at once, each with file, line and key, so that
// `sluiced --check-config` and a refused SIGHUP reload tell the admin all
// there is to fix in one go. Nothing here exits or logs: the caller decides
// (fatal at start, keep the running config on reload). The result is a new
// deep-frozen object each time; it is passed in, never kept in a global.

import { DEFAULTS, type RawConfig } from './defaults.js';
import { schema, type Config } from './schema.js';
import { ConfigError } from '../shield/errors.js';
import { deepFreeze, parseYaml, readText, type ConfigProblem } from './yaml.js';

export { deepFreeze, type ConfigProblem } from './yaml.js';

export type LoadResult =
  | { readonly ok: true; readonly config: Config; readonly raw: RawConfig; readonly file: string }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[]; readonly file: string };

export const BUILTIN = '(built-in defaults)';

/** "file:line: key: message", the one line an admin reads. */
export function formatProblem(p: ConfigProblem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}`;
  return p.key ? `${where}: ${p.key}: ${p.message}` : `${where}: ${p.message}`;
}

/** The first `max` problem lines, and one saying how many more there are (`more(n)`, where to read them). */
export function firstFew(lines: readonly string[], more: (n: number) => string, max = 5): string[] {
  return lines.length > max ? [...lines.slice(0, max), more(lines.length - max)] : [...lines];
}

/** Loads the file, or the built-in defaults when no file is given. */
export async function loadConfig(file?: string): Promise<LoadResult> {
  if (file === undefined) return fromText('', BUILTIN);
  const r = await readText(file);
  return 'problem' in r ? { ok: false, file, problems: [r.problem] } : fromText(r.text, file);
}

/** Parses YAML text as the config file `file`. */
export function fromText(text: string, file: string): LoadResult {
  const r = parseYaml(text, file, schema, DEFAULTS);
  if (!r.ok) return { ok: false, file, problems: r.problems };
  return { ok: true, file, raw: r.raw as RawConfig, config: r.value };
}

/**
 * Keys read once, at start: the sockets, the state directory and log
 * destination, the breaker, and sizes fixed when their tables are made
 * (reputation.ttl and half_life are the store's own). A reload cannot
 * change them.
 */
export const START_ONLY = [
  'state_dir', 'log.format', 'log.file', 'limits.max_write_buffer', 'shield.breaker_limit', 'shield.breaker_window',
  'policy.listen', 'policy.socket_mode', 'policy.dedupe_entries', 'milter.listen', 'milter.socket_mode',
  'reputation.max_entries', 'reputation.ttl', 'reputation.half_life',
  'rates.max_entries', 'greylist.max_entries', 'control.socket', 'control.socket_mode', 'metrics.listen',
  'fleet.url', 'fleet.password_file', 'fleet.sentinels', 'fleet.master_name', 'fleet.cluster', 'fleet.prefix',
  'feedback.channel', 'feedback.url', 'feedback.remember_entries',
] as const;

/**
 * A reloaded config with the running value of every start-only key, so that
 * what the daemon reports is what it runs; `kept` names the keys whose new
 * value waits for the next start.
 */
export function keepStartOnly(running: Config, next: Config): { config: Config; kept: string[] } {
  const at = (c: unknown, key: string): unknown => key.split('.').reduce((o, k) => (o as Record<string, unknown>)[k], c);
  const kept = START_ONLY.filter((key) => JSON.stringify(at(running, key)) !== JSON.stringify(at(next, key)));
  if (kept.length === 0) return { config: next, kept };
  const config = structuredClone(next) as unknown as Record<string, Record<string, unknown>>;
  for (const key of kept) {
    const [section, name] = key.split('.') as [string, string | undefined];
    if (name === undefined) (config as Record<string, unknown>)[section] = at(running, key);
    else config[section]![name] = at(running, key);
  }
  return { config: deepFreeze(config as unknown as Config), kept };
}

/** Problems from loading, as one ConfigError whose message has every line. */
export function configFailure(result: Extract<LoadResult, { ok: false }>): ConfigError {
  const symbol = result.problems[0]?.symbol ?? 'CONFIG_INVALID';
  return new ConfigError(symbol, result.problems.map(formatProblem).join('\n'));
}

/** The config with log.level overridden (sluiced --log-level), kept across reloads. */
export function withLogLevel(config: Config, level: string | undefined): Config {
  if (level === undefined) return config;
  return Object.freeze({ ...config, log: Object.freeze({ ...config.log, level: level as Config['log']['level'] }) });
}
