import { afterEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { ConfigError } from '../../shared/errors.ts';
import { signGroup, type GroupBinding } from '../../shared/group.ts';
import { encodeKeyFile } from '../../shared/keyfile.ts';
import { signBinding } from '../../shared/binding.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { formatGroupFile, readGroupFile, writeGroupFile } from '../../shared/groupfile.ts';

/** The on-disk form of user and data bindings (shared/groupfile.ts). */
let dir = '';
afterEach(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
  dir = '';
});

function tmp(): string {
  dir = mkdtempSync(join(tmpdir(), 'rn-groupfile-'));
  return dir;
}

const hostPrefix = parsePrefix('fd00:1::/32');
const key = generateKeyPair();
const h1 = deriveHostId(hostPrefix, generateKeyPair().publicKey);
const h2 = deriveHostId(hostPrefix, generateKeyPair().publicKey);
const user = signGroup(key, { kind: 'user', prefix: parsePrefix('fd00:2:1::/48'), hosts: [{ hostId: h1, priority: 1, weight: 2 }, { hostId: h2, priority: 3, weight: 4 }], seq: 42, ttl: 300 });
const data = signGroup(key, { kind: 'data', prefix: parsePrefix('fd00:2:2::/48'), name: 'site/file.bin', hosts: [], seq: 7, ttl: 60 });

function base64Line(text: string): string {
  const lines = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  expect(lines).toHaveLength(1);
  return lines[0];
}

/** What readGroupFile throws for `path`, checked to be one ConfigError line naming the file. */
function refusal(path: string): string {
  try {
    readGroupFile(path);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    const line = (e as ConfigError).oneLine();
    expect(line).not.toContain('\n');
    expect(line).toContain(path);
    return line;
  }
  throw new Error(`${path} was accepted`);
}

function same(a: GroupBinding, b: GroupBinding): void {
  expect(Buffer.from(a.bytes).equals(Buffer.from(b.bytes))).toBe(true);
}

describe('formatGroupFile', () => {
  it('is comments for people, then exactly one line of base64 of the signed bytes', () => {
    const text = formatGroupFile(user);
    expect(Buffer.from(base64Line(text), 'base64').equals(Buffer.from(user.bytes))).toBe(true);
    expect(text).toMatch(/^# realmnet user binding/);
    expect(text).toMatch(/never by hand/);
    expect(text).toContain(`# id: ${user.id.toString()}`);
    expect(text).toContain('seq: 42');
    expect(text).toContain(`# host: ${h1.toString()}  priority 1  weight 2`);
    expect(text).toContain(`# host: ${h2.toString()}  priority 3  weight 4`);
    expect(text).toContain('serve:');
    const d = formatGroupFile(data);
    expect(d).toContain('name: site/file.bin');
    expect(d).toContain('# hosts: none yet');
    expect(d).toMatch(/realmnet data \.\.\./);
  });
});

describe('writeGroupFile and readGroupFile', () => {
  it('round-trip user and data bindings, mode 0644, leaving no temporary file', () => {
    const d = tmp();
    const u = join(d, 'a.user');
    const f = join(d, 'f.data');
    writeGroupFile(u, user);
    writeGroupFile(f, data);
    same(readGroupFile(u), user);
    const back = readGroupFile(f);
    same(back, data);
    expect(back.name).toBe('site/file.bin');
    expect(statSync(u).mode & 0o777).toBe(0o644);
    expect(readdirSync(d).sort()).toEqual(['a.user', 'f.data']);
  });

  it('replaces an existing file whole', () => {
    const u = join(tmp(), 'a.user');
    writeGroupFile(u, data);
    writeGroupFile(u, user);
    same(readGroupFile(u), user);
  });

  it('ignores comment lines, blank lines and CRLF line ends', () => {
    const u = join(tmp(), 'a.user');
    const line = base64Line(formatGroupFile(user));
    writeFileSync(u, `# edited comment: anything goes here\r\n\r\n  ${line}  \r\n# trailing\r\n`);
    same(readGroupFile(u), user);
  });

  it('refuses a missing file, a directory, and a file that is not a binding, in one line each', () => {
    const d = tmp();
    expect(refusal(join(d, 'nope.user'))).toMatch(/not found.*realmnet user create/);
    mkdirSync(join(d, 'sub'));
    expect(refusal(join(d, 'sub'))).toMatch(/is a directory/);
    const keyFile = join(d, 'owner.key');
    writeFileSync(keyFile, encodeKeyFile(key));
    expect(refusal(keyFile)).toMatch(/not a realmnet user or data binding/);
    const empty = join(d, 'empty.user');
    writeFileSync(empty, '# only comments\n');
    expect(refusal(empty)).toMatch(/not a realmnet user or data binding/);
    const two = join(d, 'two.user');
    const line = base64Line(formatGroupFile(user));
    writeFileSync(two, `${line}\n${line}\n`);
    expect(refusal(two)).toMatch(/not a realmnet user or data binding/);
    const host = join(d, 'host.user');
    const hb = signBinding(key, { prefix: hostPrefix, locators: [{ address: '192.0.2.1', port: 4343, uplink: 'ispa', priority: 1, weight: 1, state: 'up' }], seq: 1, ttl: 60 });
    writeFileSync(host, Buffer.from(hb.bytes).toString('base64') + '\n');
    expect(refusal(host)).toMatch(/not a user or data binding \(a host binding.*\(badMagic\)/);
  });

  it('refuses a truncated binding', () => {
    const u = join(tmp(), 'a.user');
    writeFileSync(u, Buffer.from(user.bytes.subarray(0, user.bytes.length - 10)).toString('base64') + '\n');
    expect(refusal(u)).toMatch(/truncated .*\(tooShort\)/);
  });

  it('refuses a binding edited by hand: a changed weight breaks the signature, a changed ID the self-certification', () => {
    const u = join(tmp(), 'a.user');
    writeGroupFile(u, user);
    const text = readFileSync(u, 'utf8');
    const line = base64Line(text);
    // The last host's weight (just before the 64-byte signature): the kind of edit a person would make.
    const b = Buffer.from(line, 'base64');
    b[b.length - 65] = 9;
    writeFileSync(u, text.replace(line, b.toString('base64')));
    expect(refusal(u)).toMatch(/owner's signature does not verify \(badSignature\).*never by hand/);
    // A changed ID no longer belongs to the key.
    const c = Buffer.from(user.bytes);
    c[20] ^= 1;
    writeFileSync(u, text.replace(line, c.toString('base64')));
    expect(refusal(u)).toMatch(/does not belong to the owner's key \(idMismatch\)/);
  });

  it('says why it cannot write, in one line, and leaves nothing behind', () => {
    const d = tmp();
    expect(() => writeGroupFile(join(d, 'missing-dir', 'a.user'), user)).toThrow(ConfigError);
    expect(() => writeGroupFile(join(d, 'missing-dir', 'a.user'), user)).toThrow(/cannot write the binding file .*ENOENT/);
    expect(readdirSync(d)).toEqual([]);
  });
});
