import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
    expect(err).toMatch(/does not verify|not hold a valid/);
  });

  it('keeps the file when publishing fails, and says how to publish later', async () => {
    const { key, binding } = tmp();
    const code = await cli('user', 'create', '--prefix', 'fd00:2:1::/48', '--key', key, '--binding', binding, '--socket', `@realmnet-test-none-${process.pid}`);
    expect(code).toBe(1);
    expect(existsSync(binding)).toBe(true);
    expect(err).toMatch(/saved .* but not published/);
    expect(err).toMatch(/realmnet user push/);
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
  });
});
