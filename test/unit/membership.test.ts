import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import {
  CERT_LEN,
  certMatches,
  formatToken,
  inviteKey,
  inviteSecret,
  issueCertificate,
  joinProof,
  mintToken,
  parseToken,
  sameTag,
  verifyCertificate,
} from '../../shared/membership.ts';
import { helloSignedBytes, signedHello } from '../../shared/wire/handshake.ts';
import { decode, encode } from '../../shared/wire/codec.ts';

const realm = generateKeyPair();
const other = generateKeyPair();
const host = generateKeyPair();
const prefix = parsePrefix('fd00:1::/64');
const hostId = deriveHostId(prefix, host.publicKey);
const NOW = 1_800_000_000;

function cert(over: Partial<{ notBefore: number; notAfter: number; previousKey: Uint8Array }> = {}) {
  return issueCertificate(realm, { hostId, prefixLen: 64, publicKey: host.publicKey, serial: 42, notBefore: NOW - 10, notAfter: NOW + 3600, ...over });
}

describe('membership certificate', () => {
  it('verifies against the realm key that issued it, and names the ID and key', () => {
    const c = cert();
    expect(c.bytes.length).toBe(CERT_LEN);
    const v = verifyCertificate(c.bytes, [other.publicKey, realm.publicKey], NOW);
    expect(v.ok).toBe(true);
    if (!v.ok) return;
    expect(certMatches(v.cert, hostId, host.publicKey)).toBe(true);
    expect(certMatches(v.cert, hostId, other.publicKey)).toBe(false);
    expect(v.cert.previousKey).toBeNull();
    expect(v.cert.serial).toBe(42);
  });

  it('refuses an untrusted realm, a flipped bit, an expired or future certificate, a wrong length', () => {
    const c = cert();
    expect(verifyCertificate(c.bytes, [other.publicKey], NOW)).toEqual({ ok: false, reason: 'certUntrusted' });
    for (const at of [4, 21, 60, 120, 130, CERT_LEN - 1]) {
      const bad = Uint8Array.from(c.bytes);
      bad[at] ^= 1;
      const v = verifyCertificate(bad, [realm.publicKey], NOW);
      expect(v.ok).toBe(false);
    }
    expect(verifyCertificate(c.bytes, [realm.publicKey], NOW + 3600)).toEqual({ ok: false, reason: 'certExpired' });
    expect(verifyCertificate(cert({ notBefore: NOW + 1000 }).bytes, [realm.publicKey], NOW)).toEqual({ ok: false, reason: 'certNotYetValid' });
    expect(verifyCertificate(cert({ notBefore: NOW + 100 }).bytes, [realm.publicKey], NOW).ok).toBe(true); // within the skew
    expect(verifyCertificate(c.bytes.subarray(1), [realm.publicKey], NOW)).toEqual({ ok: false, reason: 'certLength' });
  });

  it('carries the previous key of a re-admitted ID', () => {
    const c = cert({ previousKey: other.publicKey });
    const v = verifyCertificate(c.bytes, [realm.publicKey], NOW);
    expect(v.ok && Buffer.from(v.cert.previousKey ?? []).equals(Buffer.from(other.publicKey))).toBe(true);
  });
});

describe('join token', () => {
  it('round-trips through text and only the RM can recompute its secret', () => {
    const t = mintToken(realm, prefix, NOW + 600);
    const text = formatToken(t);
    expect(text.startsWith('rnj1.')).toBe(true);
    const back = parseToken(text);
    expect(back.prefix.toString()).toBe(prefix.toString());
    expect(back.expiresAt).toBe(NOW + 600);
    expect(Buffer.from(back.realmKey).equals(Buffer.from(realm.publicKey))).toBe(true);
    expect(sameTag(inviteSecret(inviteKey(realm), realm.publicKey, prefix, back.inviteId, back.expiresAt), back.secret)).toBe(true);
    expect(sameTag(inviteSecret(inviteKey(other), realm.publicKey, prefix, back.inviteId, back.expiresAt), back.secret)).toBe(false);
    // Changing the expiry (to stretch an invite) changes the secret.
    expect(sameTag(inviteSecret(inviteKey(realm), realm.publicKey, prefix, back.inviteId, back.expiresAt + 1), back.secret)).toBe(false);
  });

  it('refuses malformed text with one line naming the problem', () => {
    expect(() => parseToken('hello')).toThrow(/rnj1/);
    expect(() => parseToken('rnj1.abc')).toThrow(/bytes/);
    expect(() => parseToken('rnj1.a$c')).toThrow(/base64url/);
  });

  it('a HELLO carries a proof of the token, not its secret, and the proof binds the HELLO', () => {
    const t = mintToken(realm, prefix, NOW + 600);
    const { hello } = signedHello(host, hostId.toBytes(), 64, 9, { join: t, cookie: new Uint8Array(16).fill(1) });
    expect(hello.join).not.toBeNull();
    const wire = encode(hello, null);
    expect(Buffer.from(wire).includes(Buffer.from(t.secret))).toBe(false);
    const d = decode(wire, () => undefined);
    expect(d.ok).toBe(true);
    if (!d.ok || d.msg.msg.type !== 'hello' || d.msg.msg.join === null) throw new Error('no join');
    const h = d.msg.msg;
    const signed = helloSignedBytes(h.hostId, h.prefixLen, h.publicKey, h.ephemeral, h.nonce);
    const secret = inviteSecret(inviteKey(realm), realm.publicKey, prefix, h.join!.inviteId, h.join!.expiresAt);
    expect(sameTag(joinProof(secret, signed), h.join!.proof)).toBe(true);
    // The same proof does not fit another HELLO (another nonce).
    const again = signedHello(host, hostId.toBytes(), 64, 10, {});
    const signed2 = helloSignedBytes(again.hello.hostId, 64, again.hello.publicKey, again.hello.ephemeral, again.hello.nonce);
    expect(sameTag(joinProof(secret, signed2), h.join!.proof)).toBe(false);
  });
});
