// The package an admin installs: npm pack, then npm install -g of the
// tarball into a temporary prefix without dev dependencies, and the commands,
// man pages and systemd unit from there.
import t from 'tap';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT, cleanEnv, run, shortDir } from './helpers/spawn.js';

const version = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

/** npm as an admin's shell runs it: none of the npm_* settings `npm test` hands its children. */
function npmEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = cleanEnv(extra);
  for (const k of Object.keys(env)) if (k.toLowerCase().startsWith('npm_')) delete env[k];
  return env;
}

function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd ?? ROOT, env: opts.env ?? npmEnv(), timeout: 240_000 });
}

t.test('npm pack, npm install -g without dev dependencies, and the installed commands', async (t) => {
  const dir = shortDir(t);
  // dist/ as pretest built it: a rebuild here would rewrite files other test files are loading.
  const packed = sh('npm', ['pack', '--ignore-scripts', '--pack-destination', dir, '--silent']);
  t.equal(packed.status, 0, `npm pack: ${packed.stderr.trim().split('\n').pop() ?? ''}`);
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  t.equal(tarball, `sluice-${version}.tgz`);
  if (!tarball) return;
  const listing = sh('tar', ['-tzf', path.join(dir, tarball)]).stdout.split('\n');
  for (const f of ['package/bin/sluiced', 'package/bin/sluicectl', 'package/dist/cli/sluiced.js', 'package/man/sluiced.8', 'package/man/sluice.conf.5', 'package/man/sluicectl.8', 'package/man/sluice-scenario.5', 'package/contrib/scenarios/flood.yaml', 'package/contrib/systemd/sluiced.service', 'package/contrib/sluice.yaml', 'package/README.md']) {
    t.ok(listing.includes(f), `the tarball has ${f}`);
  }
  t.notOk(listing.some((f) => f.startsWith('package/test/') || f.startsWith('package/lib/')), 'no tests or TypeScript sources');

  const prefix = path.join(dir, 'prefix');
  const inst = sh('npm', ['install', '-g', '--prefix', prefix, '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline', path.join(dir, tarball)]);
  t.equal(inst.status, 0, `npm install -g: ${inst.stderr.trim().split('\n').pop() ?? ''}`);
  const bin = path.join(prefix, 'bin');
  const installed = path.join(prefix, 'lib', 'node_modules', 'sluice');
  t.notOk(existsSync(path.join(installed, 'node_modules', 'typescript')) || existsSync(path.join(installed, 'node_modules', 'tap')), 'no dev dependencies installed');
  const env = npmEnv({ PATH: `${bin}:${process.env['PATH'] ?? ''}`, MANPATH: path.join(prefix, 'share', 'man'), HOME: dir });

  // On PATH, as an admin types them.
  const v = sh('sluiced', ['--version'], { env, cwd: dir });
  t.equal(v.stdout.trim(), version, 'sluiced --version');
  t.equal(sh('sluicectl', ['--version'], { env, cwd: dir }).stdout.trim(), version, 'sluicectl --version');
  const help = sh('sluiced', ['--help'], { env, cwd: dir });
  t.equal(help.status, 0);
  t.match(help.stdout, /milter/, 'sluiced --help names the milter');
  const ctlHelp = sh('sluicectl', ['--help'], { env, cwd: dir });
  t.equal(ctlHelp.status, 0, 'sluicectl --help');
  t.match(ctlHelp.stdout, /status[\s\S]*explain[\s\S]*deny/);
  const check = sh('sluiced', ['--check-config'], { env, cwd: dir });
  t.equal(check.status, 0, 'sluiced --check-config on the built-in defaults');
  t.match(check.stdout, /configuration OK/);
  const example = sh('sluiced', ['--check-config', '-c', path.join(installed, 'contrib', 'sluice.yaml')], { env, cwd: dir });
  t.equal(example.status, 0, 'the installed contrib/sluice.yaml checks');

  // It runs: every module it loads at start is a production dependency.
  const conf = path.join(dir, 'run.yaml');
  writeFileSync(conf, `state_dir: ${dir}/state\nlog:\n  format: json\npolicy:\n  listen: ["inet:127.0.0.1:0"]\nmilter:\n  listen: ["inet:127.0.0.1:0"]\nmetrics:\n  listen: "inet:127.0.0.1:0"\n`);
  mkdirSync(path.join(dir, 'state'));
  const d = run(t, [path.join(bin, 'sluiced'), '-f', '-c', conf], { cwd: dir, env });
  await d.waitFor((l) => String(l['msg']).startsWith('sluiced ready'));
  d.proc.kill('SIGTERM');
  t.equal((await d.exited).code, 0, 'the installed sluiced starts and drains');

  // Man pages, where npm linked them.
  if (has('man')) {
    for (const page of ['sluiced', 'sluicectl', 'sluice.conf']) {
      const m = sh('man', ['-P', 'cat', page], { env: { ...env, MANWIDTH: '80' }, cwd: dir });
      t.equal(m.status, 0, `man ${page}`);
      t.match(m.stdout, new RegExp(page.toUpperCase().replace('.', '\\.')), `man ${page} shows the page`);
    }
  } else {
    t.comment('man is not installed here: the man pages were not read back');
  }

  // The systemd unit, pointed at this install, verifies with its man pages found.
  if (has('systemd-analyze')) {
    const unit = path.join(dir, 'sluiced.service');
    const shipped = readFileSync(path.join(installed, 'contrib', 'systemd', 'sluiced.service'), 'utf8');
    t.match(shipped, /^ExecStart=sluiced --foreground/m, 'the unit names sluiced without a directory');
    // systemd finds a bare name where npm puts it: /usr/local/bin (Node from nodejs.org), /usr/bin (Debian's npm).
    for (const where of ['usr/local/bin', 'usr/bin', undefined]) {
      const root = mkdtempSync(path.join(tmpdir(), 'sluice-root-'));
      mkdirSync(path.join(root, 'etc', 'systemd', 'system'), { recursive: true });
      writeFileSync(path.join(root, 'etc', 'systemd', 'system', 'sluiced.service'), shipped);
      if (where) {
        mkdirSync(path.join(root, where), { recursive: true });
        writeFileSync(path.join(root, where, 'sluiced'), '#!/bin/sh\n', { mode: 0o755 });
      }
      const v = sh('systemd-analyze', ['verify', `--root=${root}`, '/etc/systemd/system/sluiced.service'], { env, cwd: dir });
      if (where) t.notMatch(v.stderr, /Command sluiced is not executable/, `sluiced in /${where}: found`);
      else t.match(v.stderr, /Command sluiced is not executable/, 'nowhere: systemd says so');
      rmSync(root, { recursive: true, force: true });
    }
    writeFileSync(unit, shipped.replace('ExecStart=sluiced', `ExecStart=${path.join(bin, 'sluiced')}`));
    const verify = sh('systemd-analyze', ['verify', unit], { env, cwd: dir });
    t.equal(verify.status, 0, `systemd-analyze verify: ${verify.stderr.trim() || 'clean'}`);
    const sec = sh('systemd-analyze', ['security', '--offline=true', unit], { env, cwd: dir });
    const exposure = /Overall exposure level for \S+: ([\d.]+)/.exec(sec.stdout + sec.stderr);
    t.ok(exposure && Number(exposure[1]) <= 2, `systemd-analyze security: exposure ${exposure?.[1] ?? '?'} (at most 2.0)`);
  } else {
    t.comment('systemd-analyze is not installed here: the unit was not verified');
  }
});
