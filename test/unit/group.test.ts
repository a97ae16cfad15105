import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { decodeGroup, deriveDataId, deriveUserId, signGroup, verifyGroup, MAX_GROUP_HOSTS } from '../../shared/group.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';

/** Slice 2: user and data IDs and their owner-signed bindings (shared/group.ts). */
const userPrefix = parsePrefix('fd00:2:1::/48');
const dataPrefix = parsePrefix('fd00:2:2::/48');
const hostPrefix = parsePrefix('fd00:1::/32');
const host = () => deriveHostId(hostPrefix, generateKeyPair().publicKey);

describe('user and data IDs', () => {
  it('are derived from the key (and name) under their prefix, distinct from host IDs of the same key', () => {
    const k = generateKeyPair();
    const u = deriveUserId(userPrefix, k.publicKey);
    expect(userPrefix.contains(u)).toBe(true);
    expect(deriveUserId(userPrefix, k.publicKey).equals(u)).toBe(true);
    // The same key and prefix as a host ID gives another ID (a distinct hash tag).
    expect(deriveHostId(userPrefix, k.publicKey).equals(u)).toBe(false);
    const d1 = deriveDataId(dataPrefix, k.publicKey, 'a/file');
    const d2 = deriveDataId(dataPrefix, k.publicKey, 'b/file');
    expect(dataPrefix.contains(d1)).toBe(true);
    expect(d1.equals(d2)).toBe(false);
    expect(() => deriveDataId(dataPrefix, k.publicKey, 'bad name with spaces')).toThrow(/data name/);
  });
});

describe('group bindings', () => {
  it('round-trip and verify; any flipped byte is refused', () => {
    const k = generateKeyPair();
    const hosts = [host(), host()];
    const g = signGroup(k, { kind: 'data', prefix: dataPrefix, name: 'site/file.bin', hosts: hosts.map((hostId, i) => ({ hostId, priority: 1, weight: i + 1 })), seq: 7, ttl: 60 });
    expect(g.id.equals(deriveDataId(dataPrefix, k.publicKey, 'site/file.bin'))).toBe(true);
    const d = decodeGroup(g.bytes);
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.group.hosts.map((h) => h.hostId.toString())).toEqual(hosts.map((h) => h.toString()));
    expect(d.group.hosts[1].weight).toBe(2);
    expect(verifyGroup(d.group)).toEqual({ ok: true });
    for (let i = 0; i < g.bytes.length; i++) {
      const b = Uint8Array.from(g.bytes);
      b[i] ^= 0x01;
      const x = decodeGroup(b);
      if (x.ok) expect(verifyGroup(x.group).ok).toBe(false);
    }
  });

  it('is refused when signed by a stranger for someone else’s ID', () => {
    const alice = generateKeyPair();
    const mallory = generateKeyPair();
    const real = signGroup(alice, { kind: 'user', prefix: userPrefix, hosts: [{ hostId: host(), priority: 1, weight: 1 }], seq: 1, ttl: 60 });
    const forged = signGroup(mallory, { kind: 'user', prefix: userPrefix, hosts: [{ hostId: host(), priority: 1, weight: 1 }], seq: 2, ttl: 60 });
    // Mallory's binding is valid only for Mallory's own user ID; put alice's ID in it and it fails.
    const b = Uint8Array.from(forged.bytes);
    real.id.copyTo(b, 5);
    const d = decodeGroup(b);
    expect(d.ok).toBe(true);
    if (d.ok) expect(verifyGroup(d.group)).toEqual({ ok: false, reason: 'idMismatch' });
  });

  it('refuses bad input with clear errors and malformed bytes without throwing', () => {
    const k = generateKeyPair();
    const h = host();
    expect(() => signGroup(k, { kind: 'user', prefix: userPrefix, hosts: [{ hostId: h, priority: 1, weight: 1 }, { hostId: h, priority: 2, weight: 1 }], seq: 1, ttl: 60 })).toThrow(/listed twice/);
    const many = Array.from({ length: MAX_GROUP_HOSTS + 1 }, () => ({ hostId: host(), priority: 1, weight: 1 }));
    expect(() => signGroup(k, { kind: 'user', prefix: userPrefix, hosts: many, seq: 1, ttl: 60 })).toThrow(/at most/);
    expect(() => signGroup(k, { kind: 'user', prefix: userPrefix, hosts: [{ hostId: h, priority: 256, weight: 1 }], seq: 1, ttl: 60 })).toThrow(/priority/);
    const g = signGroup(k, { kind: 'user', prefix: userPrefix, hosts: [{ hostId: h, priority: 1, weight: 1 }], seq: 1, ttl: 60 });
    for (let n = 0; n < g.bytes.length; n++) expect(decodeGroup(g.bytes.subarray(0, n)).ok).toBe(false);
    expect(decodeGroup(Buffer.concat([g.bytes, Buffer.of(0)])).ok).toBe(false);
    expect(decodeGroup(new Uint8Array(10_000)).ok).toBe(false);
  });
});
