import { execFile } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { parseAgentConfig } from '../../agent/config.ts';
import { parseRmConfig } from '../../mapping-server/config.ts';
import { REPO } from '../helpers/agents.ts';
import { requireRoot } from '../helpers/netns.ts';

/**
 * The install command (scripts/install.sh) and the systemd units (packaging/systemd/). PID 1 here is
 * not systemd, so the units are checked with `systemd-analyze verify` and `security --offline`
 * (verify needs ExecStart's binary to exist: the test points it at this checkout's), and what they
 * rely on (READY, WATCHDOG, reload, clean stop) is tested in service.test.ts.
 *
 * The install runs for real, twice, under a DESTDIR: npm pack, npm ci --omit=dev compiling
 * better-sqlite3 and our addon on this host, symlinks, modes, templates. Measured on the 2-core CI
 * machine: most of the first install is compiling better-sqlite3's SQLite; the second reuses the
 * first one's dependencies (~20 s). The whole file: ~100 s.
 */
const UNITS = ['realmnet-agent.service', 'realmnet-rm.service'] as const;
const INSTALL = join(REPO, 'scripts', 'install.sh');
const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
const INSTALL_TIMEOUT_MS = 600_000;

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs the installer under `root`; throws with the end of its output if it fails. */
async function install(root: string, args: readonly string[] = []): Promise<{ out: string; seconds: number }> {
  const t0 = Date.now();
  const r = await run('bash', [INSTALL, ...args], { env: { ...process.env, DESTDIR: root }, timeoutMs: INSTALL_TIMEOUT_MS });
  const out = r.stdout + r.stderr;
  if (r.code !== 0) throw new Error(`scripts/install.sh exited ${r.code}:\n${out.slice(-4000)}`);
  return { out, seconds: (Date.now() - t0) / 1000 };
}

/** The units with ExecStart pointing at this checkout's CLI, which exists (verify checks that). */
function unitsForAnalysis(dir: string): string[] {
  return UNITS.map((u) => {
    const text = readFileSync(join(REPO, 'packaging', 'systemd', u), 'utf8');
    expect(text).toContain('\nExecStart=/usr/local/bin/realmnet ');
    writeFileSync(join(dir, u), text.replace('ExecStart=/usr/local/bin/realmnet ', `ExecStart=${join(REPO, 'bin', 'realmnet.js')} `));
    return join(dir, u);
  });
}

const mode = (p: string) => statSync(p).mode & 0o777;

describe('systemd units', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'realmnet-units-'));
  });
  afterAll(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('pass systemd-analyze verify with nothing to say', async () => {
    requireRoot(['systemd-analyze']);
    const r = await run('systemd-analyze', ['verify', ...unitsForAnalysis(dir)], { cwd: dir });
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.code).toBe(0);
  });

  it('keep their systemd-analyze security exposure (agent 4.0, RM 3.6, as the units\' comments say)', async () => {
    requireRoot(['systemd-analyze']);
    const [agent, rm] = unitsForAnalysis(dir);
    // --threshold is ten times the score: the command fails above it.
    for (const [unit, threshold] of [[agent, 40], [rm, 36]] as const) {
      const r = await run('systemd-analyze', ['security', '--offline=yes', `--threshold=${threshold}`, '--no-pager', unit], { cwd: dir });
      expect(r.code, `${unit}:\n${r.stdout.split('\n').filter((l) => l.startsWith('✗') || l.includes('Overall')).join('\n')}`).toBe(0);
    }
  });

  it('ask for what the issue names: notify, watchdog, restart, the agent capped to NET_ADMIN and NET_RAW, the RM to nothing', () => {
    const agent = readFileSync(join(REPO, 'packaging', 'systemd', 'realmnet-agent.service'), 'utf8');
    const rm = readFileSync(join(REPO, 'packaging', 'systemd', 'realmnet-rm.service'), 'utf8');
    for (const u of [agent, rm]) {
      for (const line of [
        'Type=notify',
        'NotifyAccess=main',
        'WatchdogSec=10s',
        'Restart=on-failure',
        'ExecReload=/bin/kill -HUP $MAINPID',
        'NoNewPrivileges=yes',
        'ProtectSystem=strict',
        'StateDirectory=realmnet',
        'StandardError=journal',
        'MemoryDenyWriteExecute=no',
        'WantedBy=multi-user.target',
      ]) {
        expect(u).toContain(`\n${line}\n`);
      }
    }
    expect(agent).toContain('\nExecStart=/usr/local/bin/realmnet agent --config /etc/realmnet/agent.yaml\n');
    expect(agent).toContain('\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n');
    expect(agent).toContain('\nDeviceAllow=/dev/net/tun rw\n');
    expect(agent).toContain('\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n');
    expect(rm).toContain('\nExecStart=/usr/local/bin/realmnet rm --config /etc/realmnet/rm.yaml\n');
    expect(rm).toContain('\nCapabilityBoundingSet=\n');
    expect(rm).toContain('\nPrivateDevices=yes\n');
    expect(rm).toContain('\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n');
  });
});

describe('scripts/install.sh under a DESTDIR', () => {
  let root = '';
  let first = { out: '', seconds: 0 };
  let started = 0;
  const at = (...p: string[]) => join(root, ...p);

  beforeAll(async () => {
    requireRoot(['npm', 'g++', 'make', 'python3', 'tar', 'flock']);
    root = mkdtempSync(join(tmpdir(), 'realmnet-install-'));
    started = Date.now();
    first = await install(root);
  }, INSTALL_TIMEOUT_MS);

  // Runs even when beforeAll or a test failed.
  afterAll(() => {
    if (root !== '') rmSync(root, { recursive: true, force: true });
  });

  it('puts realmnet on PATH through a relative symlink to the current release', async () => {
    const bin = at('usr', 'local', 'bin', 'realmnet');
    expect(lstatSync(bin).isSymbolicLink()).toBe(true);
    expect(readlinkSync(bin)).toBe('../../../opt/realmnet/current/bin/realmnet.js');
    expect(readlinkSync(at('opt', 'realmnet', 'current'))).toMatch(/^releases\/\d+\.\d+\.\d+\S*-\d{8}T\d{6}Z$/);
    const version = await run(bin, ['--version']);
    expect(version.stdout.trim()).toBe(PKG.version);
    const help = await run(bin, ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/agent/);
    expect(help.stdout).toMatch(/keygen/);
    expect(first.out).toContain(`realmnet ${PKG.version} installed`);
    expect(first.out).toContain('realmnet keygen --out /var/lib/realmnet/host.key');
    expect(first.out).toContain('systemctl enable --now realmnet-agent');
  });

  it('compiled the native addon on this host, and installed no dev dependency', () => {
    const current = at('opt', 'realmnet', 'current');
    for (const addon of ['realmnet_tun', 'realmnet_udp', 'realmnet_notify', 'realmnet_aead']) {
      expect(statSync(join(current, 'build', 'Release', `${addon}.node`)).mtimeMs).toBeGreaterThanOrEqual(started - 1000);
    }
    expect(existsSync(join(current, 'node_modules', 'vitest'))).toBe(false);
    expect(existsSync(join(current, 'node_modules', 'typescript'))).toBe(false);
    expect(statSync(join(current, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')).isFile()).toBe(true);
    expect(readFileSync(join(current, 'package-lock.json'), 'utf8')).toBe(readFileSync(join(REPO, 'package-lock.json'), 'utf8'));
    // Nothing half-made is left beside the release.
    expect(readdirSync(at('opt', 'realmnet', 'releases')).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(existsSync(at('opt', 'realmnet', 'current.tmp'))).toBe(false);
  });

  it('config and state directories 0700, templates 0600 and valid once filled in, units in place', () => {
    for (const d of ['etc/realmnet', 'var/lib/realmnet']) expect(mode(at(d)), d).toBe(0o700);
    expect(readdirSync(at('etc/realmnet')).sort()).toEqual(['agent.yaml.example', 'rm.yaml.example']);
    for (const f of readdirSync(at('etc/realmnet'))) expect(mode(at('etc/realmnet', f)), f).toBe(0o600);
    const rm = parseRmConfig(parse(readFileSync(at('etc/realmnet/rm.yaml.example'), 'utf8')));
    expect(rm.key).toBe('/var/lib/realmnet/rm.key');
    expect(rm.store.path).toBe('/var/lib/realmnet/rm.db');
    expect(rm.log.format).toBe('json');
    const raw = parse(readFileSync(at('etc/realmnet/agent.yaml.example'), 'utf8')) as { rm: { servers: { publicKey: string }[] } };
    // Unedited, the placeholder key is refused with one line; filled in, the template is a valid config.
    expect(() => parseAgentConfig(raw)).toThrow(/rm\.servers\.0\.publicKey|rm\.servers\[0\]\.publicKey/);
    raw.rm.servers[0].publicKey = Buffer.alloc(32, 7).toString('base64');
    const agent = parseAgentConfig(raw);
    expect(agent.identity?.key).toBe('/var/lib/realmnet/host.key');
    expect(agent.identity?.state).toBe('/var/lib/realmnet/host.state');
    expect(agent.log.format).toBe('json');
    for (const u of UNITS) {
      expect(readFileSync(at('etc/systemd/system', u), 'utf8')).toBe(readFileSync(join(REPO, 'packaging/systemd', u), 'utf8'));
      expect(mode(at('etc/systemd/system', u))).toBe(0o644);
    }
  });

  it(
    'runs again: a new release becomes current, the config is kept, the three newest releases stay',
    async () => {
      const releases = at('opt', 'realmnet', 'releases');
      const firstRelease = readlinkSync(at('opt', 'realmnet', 'current')).replace('releases/', '');
      // The operator's config, with a mode of their choosing, and an older version's example.
      const config = 'log:\n  level: debug\n';
      writeFileSync(at('etc/realmnet/agent.yaml'), config);
      chmodSync(at('etc/realmnet/agent.yaml'), 0o640);
      writeFileSync(at('etc/realmnet/agent.yaml.example'), '# an older template\n');
      chmodSync(at('etc/realmnet'), 0o755);
      // Two older releases, made now (newest by mtime) but stamped earlier: pruning goes by the stamp,
      // not by mtime or by version order. A partial build of an interrupted run is not a release.
      for (const n of ['0.0.9-20200101T000000Z', '0.10.0-20210101T000000Z', '.0.1.0-20190101T000000Z.partial']) mkdirSync(join(releases, n, 'bin'), { recursive: true });

      const beforeSecond = Date.now();
      const second = await install(root);
      const current = readlinkSync(at('opt', 'realmnet', 'current')).replace('releases/', '');
      // Same lockfile, same Node: the dependencies were reused, realmnet's own addon compiled again.
      expect(second.out).toContain('dependencies unchanged since');
      expect(statSync(at('opt', 'realmnet', 'releases', current, 'build', 'Release', 'realmnet_tun.node')).mtimeMs).toBeGreaterThanOrEqual(beforeSecond - 1000);
      expect(statSync(at('opt', 'realmnet', 'releases', current, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')).isFile()).toBe(true);
      expect(current).not.toBe(firstRelease);
      expect(readdirSync(releases).sort()).toEqual(['0.10.0-20210101T000000Z', firstRelease, current].sort());
      expect((await run(at('usr/local/bin/realmnet'), ['--version'])).stdout.trim()).toBe(PKG.version);
      expect(readFileSync(at('etc/realmnet/agent.yaml'), 'utf8')).toBe(config);
      expect(mode(at('etc/realmnet/agent.yaml'))).toBe(0o640);
      // With agent.yaml in place its template is left alone; rm.yaml's is refreshed.
      expect(readFileSync(at('etc/realmnet/agent.yaml.example'), 'utf8')).toBe('# an older template\n');
      expect(readFileSync(at('etc/realmnet/rm.yaml.example'), 'utf8')).toBe(readFileSync(join(REPO, 'packaging/rm.yaml'), 'utf8'));
      expect(mode(at('etc/realmnet'))).toBe(0o700);
      expect(second.out).toContain('systemctl restart realmnet-agent');
    },
    INSTALL_TIMEOUT_MS,
  );

  it('says what is wrong in one line: an unknown argument, a missing or broken tarball', async () => {
    const env = { ...process.env, DESTDIR: root };
    const unknown = await run('bash', [INSTALL, '--frob'], { env });
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toBe('install: error: unknown argument "--frob" (see --help)\n');
    const missing = await run('bash', [INSTALL, '--from', at('nope.tgz')], { env });
    expect(missing.stderr).toMatch(/^install: error: --from .*nope\.tgz: no such file\n$/);
    writeFileSync(at('broken.tgz'), 'not a tarball');
    const broken = await run('bash', [INSTALL, '--from', at('broken.tgz')], { env });
    expect(broken.code).not.toBe(0);
    expect(broken.stderr).toMatch(/^install: error: .*broken\.tgz is not a tarball made by `npm pack`\n$/);
    const rel = await run('bash', [INSTALL], { env: { ...process.env, DESTDIR: 'relative/root' } });
    expect(rel.stderr).toBe('install: error: DESTDIR must be an absolute path (it is "relative/root")\n');
    const help = await run('bash', [INSTALL, '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--from realmnet-');
    expect(help.stdout).toContain('DESTDIR=');
  });
});
