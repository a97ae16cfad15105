import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyPrefs, compareSeq, decodeBinding, nextSeq, signBinding, verifyBinding, type Locator } from '../../shared/binding.ts';
import { parsePrefix, deriveHostId } from '../../shared/ids.ts';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { decodeKeyFile, loadKeyPair, saveKeyPair } from '../../shared/keyfile.ts';
import { isRealmnetError } from '../../shared/errors.ts';

const prefix = parsePrefix('fd00:1::/32');
const locators: Locator[] = [
  { address: '192.0.2.10', port: 4341, uplink: 'ispa', priority: 1, weight: 60, state: 'up' },
  { address: '2001:db8:0:0::7', port: 4341, uplink: 'ispb', priority: 2, weight: 40, state: 'down' },
];

describe('keys', () => {
  it('saves with mode 0600 and loads back the same key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rn-keys-'));
    const f = join(dir, 'host.key');
    const k = generateKeyPair();
    saveKeyPair(f, k);
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(Buffer.from(loadKeyPair(f).publicKey)).toEqual(Buffer.from(k.publicKey));
    expect(() => saveKeyPair(f, k)).toThrow(/already exists/);
  });

  it('gives KEY_INVALID with a clear message for bad files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rn-keys-'));
    const f = join(dir, 'bad.key');
    const cases: [string, RegExp][] = [
      ['not json', /not JSON/],
      ['{"kind":"other"}', /"kind" must be/],
      ['{"kind":"realmnet-ed25519","version":2}', /unsupported version 2/],
      ['{"kind":"realmnet-ed25519","version":1,"publicKey":"AA==","privateKey":"AA=="}', /must be 32 bytes in base64/],
    ];
    for (const [text, re] of cases) {
      writeFileSync(f, text, { mode: 0o600 });
      let err: unknown;
      try {
        loadKeyPair(f);
      } catch (e) {
        err = e;
      }
      expect(isRealmnetError(err) && err.code).toBe('KEY_INVALID');
      expect((err as Error).message).toMatch(re);
    }
    // A public key that does not belong to the private key.
    const k1 = generateKeyPair();
    const k2 = generateKeyPair();
    saveKeyPair(join(dir, 'k1.key'), k1);
    const doc = JSON.parse(readFileSync(join(dir, 'k1.key'), 'utf8')) as Record<string, string>;
    doc.publicKey = Buffer.from(k2.publicKey).toString('base64');
    expect(() => decodeKeyFile(JSON.stringify(doc))).toThrow(/does not belong/);
    expect(() => loadKeyPair(join(dir, 'missing.key'))).toThrow(/no such file/);
  });
});

describe('bindings', () => {
  it('round-trips through the signed wire form and verifies', () => {
    const k = generateKeyPair();
    const b = signBinding(k, { prefix, locators, seq: 7, ttl: 300 });
    expect(b.hostId.equals(deriveHostId(prefix, k.publicKey))).toBe(true);
    expect(Object.isFrozen(b)).toBe(true);
    expect(Object.isFrozen(b.locators)).toBe(true);
    const d = decodeBinding(b.bytes);
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.binding.locators).toEqual([locators[0], { ...locators[1], address: '2001:db8::7' }]);
    expect(d.binding.seq).toBe(7);
    expect(d.binding.ttl).toBe(300);
    expect(verifyBinding(d.binding)).toEqual({ ok: true });
  });

  it('carries large sequence numbers (wall-clock milliseconds) exactly', () => {
    const k = generateKeyPair();
    const seq = nextSeq(0, 1_764_000_000_123);
    const b = signBinding(k, { prefix, locators, seq, ttl: 60 });
    const d = decodeBinding(b.bytes);
    expect(d.ok && d.binding.seq).toBe(1_764_000_000_123);
    expect(nextSeq(seq, seq - 5)).toBe(seq + 1);
  });

  it('rejects a changed byte anywhere (signature), a key swap (ID mismatch) and long prefixes', () => {
    const k = generateKeyPair();
    const b = signBinding(k, { prefix, locators, seq: 1, ttl: 60 });
    for (const at of [4, 30, 56, 62, 70, b.bytes.length - 1]) {
      const bad = Uint8Array.from(b.bytes);
      bad[at] ^= 0x01;
      const d = decodeBinding(bad);
      if (d.ok) expect(verifyBinding(d.binding).ok).toBe(false);
    }
    // Signed correctly by another key, but claiming this ID: the ID is not the hash of that key.
    const other = generateKeyPair();
    const theirs = signBinding(other, { prefix, locators, seq: 1, ttl: 60 });
    const spliced = Uint8Array.from(theirs.bytes);
    spliced.set(b.hostId.toBytes(), 4);
    const d = decodeBinding(spliced);
    expect(d.ok && verifyBinding(d.binding)).toEqual({ ok: false, reason: 'idMismatch' });
  });

  it('decodes garbage into reasons, never throws', () => {
    expect(decodeBinding(new Uint8Array(10))).toEqual({ ok: false, reason: 'tooShort' });
    expect(decodeBinding(new Uint8Array(200))).toEqual({ ok: false, reason: 'badMagic' });
    const k = generateKeyPair();
    const b = signBinding(k, { prefix, locators, seq: 1, ttl: 60 });
    for (let i = 0; i < 2000; i++) {
      const m = Uint8Array.from(b.bytes);
      m[Math.floor(Math.random() * m.length)] = Math.floor(Math.random() * 256);
      expect(() => decodeBinding(m.subarray(0, Math.floor(Math.random() * m.length) + 1))).not.toThrow();
    }
  });

  it('refuses invalid input when signing (BINDING_INVALID)', () => {
    const k = generateKeyPair();
    const bad: Locator = { ...locators[0], address: '10.0.0.300' };
    expect(() => signBinding(k, { prefix, locators: [bad], seq: 1, ttl: 60 })).toThrow(/"10.0.0.300" is not an IPv4 or IPv6 address/);
    expect(() => signBinding(k, { prefix, locators, seq: -1, ttl: 60 })).toThrow(/seq/);
    expect(() => signBinding(k, { prefix, locators: [{ ...locators[0], uplink: 'bad name' }], seq: 1, ttl: 60 })).toThrow(/uplink/);
  });

  it('follows the sequence rules: newer replaces, same is a refresh, lower is stale, equal-but-different conflicts', () => {
    const k = generateKeyPair();
    const b1 = signBinding(k, { prefix, locators, seq: 1, ttl: 60 });
    const b2 = signBinding(k, { prefix, locators, seq: 2, ttl: 60 });
    const b2x = signBinding(k, { prefix, locators: locators.slice(0, 1), seq: 2, ttl: 60 });
    expect(compareSeq(undefined, b1)).toBe('newer');
    expect(compareSeq(b1, b2)).toBe('newer');
    expect(compareSeq(b2, b2)).toBe('same');
    expect(compareSeq(b2, b1)).toBe('stale');
    expect(compareSeq(b2, b2x)).toBe('conflict');
  });

  it('applies realm preferences to locators without touching the binding', () => {
    const out = applyPrefs(locators, [{ index: 0, priority: 200, weight: 5, up: true }]);
    expect(out[0]).toMatchObject({ priority: 200, weight: 5, state: 'up' });
    expect(locators[0].priority).toBe(1);
    // A preference cannot bring a locator the host marked down back up.
    expect(applyPrefs(locators, [{ index: 1, priority: 2, weight: 40, up: true }])[1].state).toBe('down');
  });
});
