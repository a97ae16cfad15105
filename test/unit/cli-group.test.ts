import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { main } from '../../cli/main.ts';
import { loadKeyPair } from '../../shared/keyfile.ts';
import { deriveDataId, deriveUserId } from '../../shared/group.ts';
import { parsePrefix } from '../../shared/ids.ts';
import { readGroupFile } from '../../shared/groupfile.ts';

/** `realmnet user ...` / `realmnet data ...` in-process, on temporary files (no agent: --no-publish). */
let dir = '';
let out = '';
let err = '';
afterEach(() => {
  vi.restoreAllMocks();
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
  dir = '';
});

async function cli(...args: string[]): Promise<number> {
  out = '';
  err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((err += String(s)), true));
  try {
    return await main(['node', 'realmnet', ...args]);
  } finally {
    vi.restoreAllMocks();
  }
}

function tmp(): { key: string; binding: string } {
  dir = mkdtempSync(join(tmpdir(), 'rn-cli-group-'));
  return { key: join(dir, 'owner.key'), binding: join(dir, 'b.user') };
}

describe('realmnet user', () => {
  it('create prints the user ID of the (new, mode 0600) key; add-host and remove-host re-sign with growing seq', async () => {
    const { key, binding } = tmp();
    expect(await cli('user', 'create', '--prefix', 'fd00:2:1::/48', '--key', key, '--binding', binding, '--no-publish')).toBe(0);
    const id = out.trim();
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(id).toBe(deriveUserId(parsePrefix('fd00:2:1::/48'), loadKeyPair(key).publicKey).toString());
    const s0 = readGroupFile(binding).seq;
    expect(await cli('user', 'add-host', '--key', key, '--binding', binding, '--host', 'fd00:1::5', '--priority', '2', '--no-publish')).toBe(0);
    expect(await cli('user', 'add-host', '--key', key, '--binding', binding, '--host', 'fd00:1::6', '--no-publish')).toBe(0);
    let g = readGroupFile(binding);
    expect(g.seq).toBeGreaterThan(s0);
    expect(g.hosts.map((h) => [h.hostId.toString(), h.priority])).toEqual([['fd00:1::5', 2], ['fd00:1::6', 1]]);
    const s1 = g.seq;
    expect(await cli('user', 'remove-host', '--key', key, '--binding', binding, '--host', 'fd00:1::5', '--no-publish')).toBe(0);
    g = readGroupFile(binding);
    expect(g.seq).toBeGreaterThan(s1);
    expect(g.hosts.map((h) => h.hostId.toString())).toEqual(['fd00:1::6']);
    expect(g.id.toString()).toBe(id);
  });

  it('refuses bad input in one line, and another key than the owner’s', async () => {
    const { key, binding } = tmp();
    expect(await cli('user', 'create', '--prefix', 'fd00:2:1::/96', '--key', key, '--binding', binding, '--no-publish')).toBe(2);
    expect(err).toMatch(/longer than \/64/);
    expect(await cli('user', 'create', '--prefix', 'fd00:2:1::/48', '--key', key, '--binding', binding, '--no-publish')).toBe(0);
    expect(await cli('user', 'create', '--prefix', 'fd00:2:1::/48', '--key', key, '--binding', binding, '--no-publish')).toBe(2);
    expect(err).toMatch(/--force/);
    expect(await cli('user', 'add-host', '--key', key, '--binding', binding, '--host', 'not-an-id', '--no-publish')).toBe(2);
    expect(err).toMatch(/not a host ID/);
    expect(await cli('user', 'add-host', '--key', key, '--binding', binding, '--host', 'fd00:1::5', '--priority', '256', '--no-publish')).toBe(2);
    expect(await cli('user', 'remove-host', '--key', key, '--binding', binding, '--host', 'fd00:1::7', '--no-publish')).toBe(2);
    expect(err).toMatch(/not listed/);
    const other = join(dir, 'other.key');
    expect(await cli('data', 'publish', '--prefix', 'fd00:2:2::/48', '--key', other, '--name', 'x', '--binding', join(dir, 'x.data'), '--no-publish')).toBe(0);
    expect(await cli('user', 'add-host', '--key', other, '--binding', binding, '--host', 'fd00:1::5', '--no-publish')).toBe(2);
    expect(err).toMatch(/another key/);
  });

  it('refuses a binding file changed by hand', async () => {
    const { key, binding } = tmp();
    expect(await cli('user', 'create', '--prefix', 'fd00:2:1::/48', '--key', key, '--binding', binding, '--no-publish')).toBe(0);
    const text = readFileSync(binding, 'utf8');
    const line = text.split('\n').find((l) => l !== '' && !l.startsWith('#')) ?? '';
    const b = Buffer.from(line, 'base64');
    b[60] ^= 1;
    writeFileSync(binding, text.replace(line, b.toString('base64')));
    expect(await cli('user', 'show', '--binding', binding)).toBe(1);
    expect(err).toMatch(/signature does not verify.*never by hand/);
    expect(err.trim().split('\n')).toHaveLength(1);
  });

  it('keeps the file when publishing fails, and says how to publish later', async () => {
    const { key, binding } = tmp();
    const socket = `@realmnet-test-nonexistent-${randomBytes(6).toString('hex')}`;
    const code = await cli('user', 'create', '--prefix', 'fd00:2:1::/48', '--key', key, '--binding', binding, '--socket', socket);
    expect(code).toBe(1);
    expect(existsSync(binding)).toBe(true);
    expect(readGroupFile(binding).id.toString()).toBe(out.trim());
    expect(err).toMatch(/saved .* but not published/);
    expect(err).toMatch(/realmnet user push --binding/);
    // push alone: the same error, the file untouched.
    const before = readFileSync(binding, 'utf8');
    expect(await cli('user', 'push', '--binding', binding, '--socket', socket)).toBe(1);
    expect(err).toMatch(/saved .* but not published/);
    expect(readFileSync(binding, 'utf8')).toBe(before);
  });

  it('add-host of a listed host changes its priority and weight in place', async () => {
    const { key, binding } = tmp();
    expect(await cli('user', 'create', '--prefix', 'fd00:2:1::/48', '--key', key, '--binding', binding, '--no-publish')).toBe(0);
    expect(err).toMatch(/created the owner key/);
    for (const h of ['fd00:1::5', 'fd00:1::6']) expect(await cli('user', 'add-host', '--key', key, '--binding', binding, '--host', h, '--no-publish')).toBe(0);
    expect(await cli('user', 'add-host', '--key', key, '--binding', binding, '--host', 'fd00:1::5', '--priority', '7', '--weight', '9', '--no-publish')).toBe(0);
    expect(readGroupFile(binding).hosts.map((h) => [h.hostId.toString(), h.priority, h.weight])).toEqual([['fd00:1::5', 7, 9], ['fd00:1::6', 1, 1]]);
    expect(await cli('user', 'show', '--binding', binding, '--json')).toBe(0);
    const doc = JSON.parse(out) as { kind: string; id: string; prefix: string; hosts: { hostId: string; priority: number }[] };
    expect(doc.kind).toBe('user');
    expect(doc.prefix).toBe('fd00:2:1::/48');
    expect(doc.hosts[0]).toEqual({ hostId: 'fd00:1::5', priority: 7, weight: 9 });
    expect(await cli('user', 'show', '--binding', binding)).toBe(0);
    expect(out).toMatch(/host: +fd00:1::5 +priority 7 +weight 9/);
  });

  it('a bad option leaves no key file behind, and every refusal is one line', async () => {
    const { key, binding } = tmp();
    const refused = async (pattern: RegExp, ...args: string[]): Promise<void> => {
      expect(await cli(...args)).toBe(2);
      expect(err).toMatch(pattern);
      expect(err.trim().split('\n')).toHaveLength(1);
    };
    await refused(/--prefix .*no prefix length/, 'user', 'create', '--prefix', 'fd00:2:1::', '--key', key, '--binding', binding, '--no-publish');
    await refused(/--prefix .*bits set after/, 'user', 'create', '--prefix', 'fd00:2:1::1/48', '--key', key, '--binding', binding, '--no-publish');
    await refused(/--ttl/, 'user', 'create', '--prefix', 'fd00:2:1::/48', '--ttl', '0', '--key', key, '--binding', binding, '--no-publish');
    await refused(/--name: data name/, 'data', 'publish', '--prefix', 'fd00:2:2::/48', '--name', 'has spaces', '--key', key, '--binding', binding, '--no-publish');
    expect(existsSync(key)).toBe(false);
    expect(existsSync(binding)).toBe(false);
    expect(await cli('user', 'add-host', '--key', key, '--binding', binding, '--host', 'fd00:1::5', '--no-publish')).toBe(1);
    expect(err).toMatch(/cannot read key file .*no such file/);
  });
});

describe('realmnet data', () => {
  it('publish prints the data ID of key and name', async () => {
    const { key } = tmp();
    const binding = join(dir, 'f.data');
    expect(await cli('data', 'publish', '--prefix', 'fd00:2:2::/48', '--key', key, '--name', 'site/file.bin', '--binding', binding, '--no-publish')).toBe(0);
    expect(out.trim()).toBe(deriveDataId(parsePrefix('fd00:2:2::/48'), loadKeyPair(key).publicKey, 'site/file.bin').toString());
    expect(await cli('data', 'add-replica', '--key', key, '--binding', binding, '--host', 'fd00:1::9', '--weight', '3', '--no-publish')).toBe(0);
    expect(readGroupFile(binding).hosts.map((h) => [h.hostId.toString(), h.priority, h.weight])).toEqual([['fd00:1::9', 1, 3]]);
    expect(await cli('data', 'add-replica', '--key', key, '--binding', binding, '--host', 'fd00:1::a', '--priority', '2', '--no-publish')).toBe(2);
    expect(await cli('user', 'add-host', '--key', key, '--binding', binding, '--host', 'fd00:1::a', '--no-publish')).toBe(2);
    expect(err).toMatch(/is a data binding/);
    const s0 = readGroupFile(binding).seq;
    expect(await cli('data', 'remove-replica', '--key', key, '--binding', binding, '--host', 'fd00:1::9', '--no-publish')).toBe(0);
    const g = readGroupFile(binding);
    expect(g.hosts).toEqual([]);
    expect(g.seq).toBeGreaterThan(s0);
    expect(g.name).toBe('site/file.bin');
  });
});
