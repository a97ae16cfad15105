import { execFile } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { parseAgentConfig } from '../../agent/config.ts';
import { parseRmConfig } from '../../mapping-server/config.ts';
import { REPO } from '../helpers/agents.ts';
import { requireRoot } from '../helpers/netns.ts';

/**
 * The install command (scripts/install.sh) and the systemd units (packaging/systemd/). PID 1 here is
 * not systemd, so the units are checked with `systemd-analyze verify` (which needs ExecStart's
 * binary to exist: the test points it at this checkout's) and what they rely on is tested in
 * service.test.ts. The install runs for real under a DESTDIR: npm pack, npm ci --omit=dev with the
 * native addon compiled on this host (~2 minutes, most of it better-sqlite3), symlinks, modes.
 */
const run = promisify(execFile);
const UNITS = ['realmnet-agent.service', 'realmnet-rm.service'];

describe('systemd units', () => {
  it('pass systemd-analyze verify without a warning', async () => {
    requireRoot(['systemd-analyze']);
    const dir = mkdtempSync(join(tmpdir(), 'realmnet-units-'));
    try {
      for (const u of UNITS) {
        const text = readFileSync(join(REPO, 'packaging', 'systemd', u), 'utf8');
        expect(text).toContain('ExecStart=/usr/local/bin/realmnet ');
        writeFileSync(join(dir, u), text.replace('/usr/local/bin/realmnet', join(REPO, 'bin', 'realmnet.js')));
      }
      const r = await run('systemd-analyze', ['verify', ...UNITS.map((u) => join(dir, u))], { cwd: dir }).catch((e: { stdout: string; stderr: string; code: number }) => e);
      expect(`${r.stdout}${r.stderr}`).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ask for what the issue names: notify, watchdog, restart, the agent capped to NET_ADMIN and NET_RAW, the state directory writable', () => {
    const agent = readFileSync(join(REPO, 'packaging', 'systemd', 'realmnet-agent.service'), 'utf8');
    const rm = readFileSync(join(REPO, 'packaging', 'systemd', 'realmnet-rm.service'), 'utf8');
    for (const u of [agent, rm]) {
      for (const line of ['Type=notify', 'Restart=on-failure', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'StateDirectory=realmnet', 'ExecReload=/bin/kill -HUP $MAINPID']) expect(u).toContain(`\n${line}\n`);
      expect(u).toMatch(/\nWatchdogSec=\d+s\n/);
    }
    expect(agent).toContain('\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n');
    expect(agent).toContain('\nDeviceAllow=/dev/net/tun rw\n');
    expect(rm).toContain('\nCapabilityBoundingSet=\n');
  });
});

describe('scripts/install.sh under a DESTDIR', () => {
  let root = '';
  let started = 0;
  let out = '';

  beforeAll(async () => {
    requireRoot(['npm', 'g++', 'make', 'python3', 'tar']);
    root = mkdtempSync(join(tmpdir(), 'realmnet-install-'));
    started = Date.now();
    const r = await run('bash', [join(REPO, 'scripts', 'install.sh')], { env: { ...process.env, DESTDIR: root }, maxBuffer: 64 << 20, timeout: 600_000 });
    out = r.stdout + r.stderr;
  }, 600_000);

  afterAll(() => {
    if (root !== '') rmSync(root, { recursive: true, force: true });
  });

  it('puts realmnet on PATH through a relative symlink to the current release', async () => {
    const bin = join(root, 'usr', 'local', 'bin', 'realmnet');
    expect(lstatSync(bin).isSymbolicLink()).toBe(true);
    expect(readlinkSync(bin)).toBe('../../../opt/realmnet/current/bin/realmnet.js');
    expect(readlinkSync(join(root, 'opt', 'realmnet', 'current'))).toMatch(/^releases\/0\.\d+\.\d+-\d{8}T\d{6}Z$/);
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect((await run(bin, ['--version'])).stdout.trim()).toBe(pkg.version);
    expect((await run(bin, ['agent', '--help'])).stdout).toContain('SIGHUP');
    expect(out).toContain(`realmnet ${pkg.version} installed`);
  });

  it('built the native addon on this host, and installed no dev dependency', () => {
    const current = join(root, 'opt', 'realmnet', 'current');
    for (const addon of ['realmnet_tun', 'realmnet_udp', 'realmnet_notify', 'realmnet_aead']) {
      expect(statSync(join(current, 'build', 'Release', `${addon}.node`)).mtimeMs).toBeGreaterThanOrEqual(started - 1000);
    }
    expect(() => statSync(join(current, 'node_modules', 'vitest'))).toThrow();
    expect(statSync(join(current, 'node_modules', 'prom-client')).isDirectory()).toBe(true);
  });

  it('config and state directories 0700, templates 0600 and valid once filled in, units in place', () => {
    for (const d of ['etc/realmnet', 'var/lib/realmnet']) expect(statSync(join(root, d)).mode & 0o777).toBe(0o700);
    for (const f of ['agent.yaml.example', 'rm.yaml.example']) expect(statSync(join(root, 'etc/realmnet', f)).mode & 0o777).toBe(0o600);
    const rm = parseRmConfig(parse(readFileSync(join(root, 'etc/realmnet/rm.yaml.example'), 'utf8')));
    expect(rm.key).toBe('/var/lib/realmnet/rm.key');
    expect(rm.store.path).toBe('/var/lib/realmnet/rm.db');
    const raw = parse(readFileSync(join(root, 'etc/realmnet/agent.yaml.example'), 'utf8')) as { rm: { servers: { publicKey: string }[] } };
    // Unedited, the placeholder key is refused with one line; filled in, the template is a valid config.
    expect(() => parseAgentConfig(raw)).toThrow(/rm\.servers\.0\.publicKey|rm\.servers\[0\]\.publicKey/);
    raw.rm.servers[0].publicKey = Buffer.alloc(32, 7).toString('base64');
    const agent = parseAgentConfig(raw);
    expect(agent.identity?.key).toBe('/var/lib/realmnet/host.key');
    expect(agent.identity?.state).toBe('/var/lib/realmnet/host.state');
    for (const u of UNITS) expect(readFileSync(join(root, 'etc/systemd/system', u), 'utf8')).toBe(readFileSync(join(REPO, 'packaging/systemd', u), 'utf8'));
  });

  it('refuses bad arguments with one line', async () => {
    const r = await run('bash', [join(REPO, 'scripts', 'install.sh'), '--from', join(root, 'nope.tgz')], { env: { ...process.env, DESTDIR: root } }).catch((e: { stderr: string; code: number }) => e);
    expect(r.stderr.trim()).toMatch(/^install: --from .*nope\.tgz: no such file$/);
  });
});
