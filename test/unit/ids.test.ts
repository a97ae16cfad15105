import { describe, expect, it } from 'vitest';
import { HostId, MAX_ID_PREFIX_LEN, deriveHostId, parseHostId, parsePrefix, verifyHostId } from '../../shared/ids.ts';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { isRealmnetError } from '../../shared/errors.ts';

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return isRealmnetError(e) ? e.code : 'not a RealmnetError';
  }
  return undefined;
}

describe('host IDs', () => {
  it('parses and prints the canonical IPv6 form', () => {
    const id = parseHostId('FD00:0001:0000::000A');
    expect(id.toString()).toBe('fd00:1::a');
    expect(id.hex).toBe('fd00000100000000000000000000000a');
    expect(HostId.fromHex(id.hex).equals(id)).toBe(true);
    expect(HostId.fromBytes(id.toBytes()).toString()).toBe('fd00:1::a');
    expect(Object.isFrozen(id)).toBe(true);
  });

  it('refuses bad IDs with ID_INVALID and a clear message', () => {
    expect(code(() => parseHostId('fd00::zz'))).toBe('ID_INVALID');
    expect(code(() => parseHostId('192.0.2.1'))).toBe('ID_INVALID');
    expect(code(() => parseHostId('fd00::/8'))).toBe('ID_INVALID');
    expect(code(() => parseHostId('fe80::1%eth0'))).toBe('ID_INVALID');
    expect(() => parseHostId('fd00::zz')).toThrow(/"fd00::zz" is not a host ID/);
  });

  it('copies bytes out, so an ID cannot be changed from outside', () => {
    const id = parseHostId('fd00:1::a');
    const b = id.toBytes();
    b[15] = 0xff;
    expect(id.toString()).toBe('fd00:1::a');
  });
});

describe('prefixes', () => {
  it('parses, contains and covers (nested realms)', () => {
    const realm = parsePrefix('fd00:1::/32');
    const sub = parsePrefix('fd00:1:2::/48');
    expect(realm.toString()).toBe('fd00:1::/32');
    expect(realm.covers(sub)).toBe(true);
    expect(sub.covers(realm)).toBe(false);
    expect(realm.contains(parseHostId('fd00:1:ffff::1'))).toBe(true);
    expect(realm.contains(parseHostId('fd00:2::1'))).toBe(false);
    expect(parsePrefix('fd00::/9').contains(parseHostId('fd7f::1'))).toBe(true);
    expect(parsePrefix('fd00::/9').contains(parseHostId('fd80::1'))).toBe(false);
  });

  it('refuses host bits, bad lengths and non-prefixes with PREFIX_INVALID', () => {
    expect(code(() => parsePrefix('fd00:1::5/32'))).toBe('PREFIX_INVALID');
    expect(code(() => parsePrefix('fd00::/129'))).toBe('PREFIX_INVALID');
    expect(code(() => parsePrefix('fd00::'))).toBe('PREFIX_INVALID');
    expect(code(() => parsePrefix('10.0.0.0/8'))).toBe('PREFIX_INVALID');
  });
});

describe('self-certifying IDs', () => {
  const prefix = parsePrefix('fd00:1::/32');

  it('derives the ID from prefix + hash of the key, and verifies it', () => {
    const k = generateKeyPair();
    const id = deriveHostId(prefix, k.publicKey);
    expect(prefix.contains(id)).toBe(true);
    expect(deriveHostId(prefix, k.publicKey).equals(id)).toBe(true);
    expect(verifyHostId(id, 32, k.publicKey)).toBe(true);
    expect(verifyHostId(id, 32, generateKeyPair().publicKey)).toBe(false);
    // The prefix length is part of the hash input: claiming another length fails.
    expect(verifyHostId(id, 48, k.publicKey)).toBe(false);
  });

  it('gives the same key unrelated IDs in different realms', () => {
    const k = generateKeyPair();
    const a = deriveHostId(parsePrefix('fd00:1::/32'), k.publicKey);
    const b = deriveHostId(parsePrefix('fd00:2::/32'), k.publicKey);
    expect(a.hex.slice(8)).not.toBe(b.hex.slice(8));
  });

  it(`refuses prefixes longer than /${MAX_ID_PREFIX_LEN} (too few hash bits to be self-certifying)`, () => {
    const k = generateKeyPair();
    expect(code(() => deriveHostId(parsePrefix('fd00:1:2:3:4::/80'), k.publicKey))).toBe('PREFIX_INVALID');
    const id = deriveHostId(parsePrefix('fd00:1:2:3::/64'), k.publicKey);
    expect(verifyHostId(id, 64, k.publicKey)).toBe(true);
    expect(verifyHostId(id, 120, k.publicKey)).toBe(false);
  });

  it('handles prefixes that do not end on a byte boundary', () => {
    const k = generateKeyPair();
    const p = parsePrefix('fd00:1:8000::/33');
    const id = deriveHostId(p, k.publicKey);
    expect(p.contains(id)).toBe(true);
    expect(verifyHostId(id, 33, k.publicKey)).toBe(true);
  });
});
