import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { saveKeyPair } from '../../shared/keyfile.ts';
import { requireRoot, uniquePrefix, execIn, spawnIn, type NsProcess } from '../helpers/netns.ts';
import { REPO } from '../helpers/agents.ts';
import { readableCopy, type ReadableCopy } from '../helpers/readable-copy.ts';

/** The CLI as a user meets it: help, and one clear line for every mistake. */
const CLI = join(REPO, 'bin', 'realmnet.js');
const NS = `${uniquePrefix('cli')}host`;
let dir: string;

/** `from`: run that copy of the CLI instead of the checkout's (for another user, who may not read the checkout). */
function run(args: string[], opts: { ns?: string; asUser?: string; from?: ReadableCopy } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let cmd = process.execPath;
  let argv = [opts.from?.cli ?? CLI, ...args];
  if (opts.asUser) [cmd, argv] = ['runuser', ['-u', opts.asUser, '--', process.execPath, ...argv]];
  if (opts.ns) [cmd, argv] = ['ip', ['netns', 'exec', opts.ns, cmd, ...argv]];
  return new Promise((resolve) => {
    execFile(cmd, argv, { cwd: opts.from?.root ?? REPO, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function config(name: string, patch: Record<string, unknown> = {}): Promise<string> {
  const file = join(dir, name);
  await writeFile(
    file,
    stringify({
      hostId: 'fd00:1::a',
      // Encryption is on by default: the host's key (static mode: no prefix, the hostId is the host's).
      identity: { key: join(dir, 'host.key') },
      realm: { prefixes: ['fd00::/8'] },
      tun: { name: 'rncli0' },
      uplinks: [{ name: 'a', locator: '192.0.2.1' }],
      log: { level: 'error' },
      ...patch,
    }),
  );
  return file;
}

beforeAll(async () => {
  requireRoot(['ip', 'runuser']);
  dir = await mkdtemp(join(tmpdir(), 'realmnet-cli-'));
  await chmod(dir, 0o755);
  saveKeyPair(join(dir, 'host.key'), generateKeyPair());
  await new Promise<void>((resolve, reject) =>
    execFile('ip', ['netns', 'add', NS], (e) => (e ? reject(e) : resolve())),
  );
  await execIn(NS, 'ip', ['link', 'set', 'lo', 'up']);
  await execIn(NS, 'ip', ['link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1']);
  await execIn(NS, 'ip', ['link', 'set', 'd1', 'up']);
  await execIn(NS, 'ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'd0', 'nodad']);
  await execIn(NS, 'ip', ['link', 'set', 'd0', 'up']);
});

afterAll(async () => {
  await new Promise<void>((resolve) => execFile('ip', ['netns', 'del', NS], () => resolve()));
  if (dir) await rm(dir, { recursive: true, force: true });
});

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(stderr).not.toMatch(/\bat .*\.ts:\d+/); // no stack
  return lines[0];
}

describe('realmnet CLI', () => {
  it('prints help that names the commands', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/agent \[options\]/);
    expect(r.stdout).toMatch(/status \[options\]/);
    const a = await run(['agent', '--help']);
    expect(a.stdout).toContain('--config <file>');
    expect(a.stdout).toContain('source-policy routing');
  });

  it('exits 2 on a usage error', async () => {
    const r = await run(['agnet']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown command 'agnet'");
  });

  it('reports a bad config value in one line naming the key', async () => {
    const r = await run(['agent', '--config', await config('bad.yaml', { uplinks: [{ name: 'a', locator: '10.0.0.300' }] })]);
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toBe('realmnet: config error: uplinks[0].locator: "10.0.0.300" is not an IPv4 or IPv6 address (e.g. 192.0.2.1 or 2001:db8::1)');
  });

  it('reports a missing config file in one line', async () => {
    const r = await run(['agent', '--config', join(dir, 'nope.yaml')]);
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toMatch(/cannot read .*nope.yaml: no such file/);
  });

  it('refuses to run as an ordinary user, in one line', async () => {
    // nobody runs a world-readable copy of the CLI: the checkout may be readable by root alone.
    const copy = await readableCopy();
    try {
      const r = await run(['agent', '--config', await config('ok.yaml')], { asUser: 'nobody', from: copy });
      expect(r.code).toBe(1);
      expect(oneLine(r.stderr)).toMatch(/must run as root/);
    } finally {
      await copy.remove();
    }
  });

  it('reports a port in use in one line and leaves no TUN device behind', async () => {
    let holder: NsProcess | null = null;
    try {
      holder = spawnIn(NS, process.execPath, ['-e', "require('dgram').createSocket('udp4').bind(4341,'192.0.2.1',()=>console.log('bound'))"]);
      for (let i = 0; i < 100 && !holder.stdoutTail().includes('bound'); i++) await new Promise((r) => setTimeout(r, 50));
      const r = await run(['agent', '--config', await config('ok.yaml')], { ns: NS });
      expect(r.code).toBe(1);
      expect(oneLine(r.stderr)).toMatch(/4341.*192\.0\.2\.1|192\.0\.2\.1.*4341/);
      expect(r.stderr).toMatch(/another process listens/);
      const link = await execIn(NS, 'ip', ['link', 'show', 'rncli0'], { allowFail: true });
      expect(link.code).not.toBe(0);
    } finally {
      await holder?.stop();
    }
  });

  it('reports a locator that is not an address of this host', async () => {
    const r = await run(['agent', '--config', await config('na.yaml', { uplinks: [{ name: 'a', locator: '192.0.2.99' }] })], { ns: NS });
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toMatch(/192\.0\.2\.99/);
  });

  it('says plainly when no agent is running', async () => {
    const r = await run(['status'], { ns: NS });
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toMatch(/cannot reach the agent/);
  });
});
