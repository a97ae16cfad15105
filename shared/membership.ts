import { randomBytes } from 'node:crypto';
import { blake2s, macKey, mac, MAC_LEN, type MacKey } from './crypto/blake2s.ts';
import { privateSeed, signBytes, verifyBytes, type KeyPair } from './crypto/ed25519.ts';
import { RealmnetError } from './errors.ts';
import { HostId, MAX_ID_PREFIX_LEN, Prefix } from './ids.ts';

/**
 * Realm membership (docs/security.md): the certificate a realm's RM issues to a host it admitted,
 * and the one-time join token an operator hands to a new host.
 *
 * Both are fixed-layout byte strings, so that what is signed or MACed is exactly what travels and
 * nothing is parsed before it is checked. Verifying never throws: it returns why it failed, which
 * callers count.
 */

// ---- membership certificate ---------------------------------------------------------------------

export const CERT_MAGIC = Buffer.from('RNC1', 'latin1');
export const CERT_LEN = 197;
const CERT_SIGNED_LEN = CERT_LEN - 64;
const CERT_DOMAIN = Buffer.from('realmnet/cert/v1', 'latin1');
/** Clock skew tolerated before notBefore, seconds. */
export const CERT_SKEW_S = 300;
const ZERO_KEY = new Uint8Array(32);

export interface Certificate {
  readonly hostId: HostId;
  readonly prefixLen: number;
  /** The host's Ed25519 public key (32 bytes). */
  readonly publicKey: Uint8Array;
  /** The key this ID had before an operator's re-admission; null when none. */
  readonly previousKey: Uint8Array | null;
  /** The Ed25519 public key of the realm that signed (the RM's key). */
  readonly realmKey: Uint8Array;
  readonly serial: number;
  /** Unix seconds. */
  readonly notBefore: number;
  readonly notAfter: number;
  /** The whole certificate, CERT_LEN bytes. */
  readonly bytes: Uint8Array;
}

export interface CertInput {
  readonly hostId: HostId;
  readonly prefixLen: number;
  readonly publicKey: Uint8Array;
  readonly previousKey?: Uint8Array | null;
  readonly serial: number;
  readonly notBefore: number;
  readonly notAfter: number;
}

/** Signs a certificate with the realm key (the RM's key pair). */
export function issueCertificate(realm: KeyPair, c: CertInput): Certificate {
  if (c.publicKey.length !== 32) throw new RealmnetError('KEY_INVALID', `an Ed25519 public key is 32 bytes, got ${c.publicKey.length}`);
  if (!Number.isSafeInteger(c.serial) || c.serial < 0) throw new RangeError(`certificate serial ${c.serial} is not in 0..2^53-1`);
  const out = Buffer.alloc(CERT_LEN);
  CERT_MAGIC.copy(out, 0);
  c.hostId.copyTo(out, 4);
  out[20] = c.prefixLen;
  out.set(c.publicKey, 21);
  out.set(c.previousKey ?? ZERO_KEY, 53);
  out.set(realm.publicKey, 85);
  out.writeUInt32BE(Math.floor(c.serial / 0x1_0000_0000), 117);
  out.writeUInt32BE(c.serial >>> 0, 121);
  out.writeUInt32BE(c.notBefore >>> 0, 125);
  out.writeUInt32BE(c.notAfter >>> 0, 129);
  out.set(signBytes(realm, Buffer.concat([CERT_DOMAIN, out.subarray(0, CERT_SIGNED_LEN)])), CERT_SIGNED_LEN);
  const d = decodeCertificate(out);
  if (!d.ok) throw new RealmnetError('INTERNAL', `issued a certificate that does not decode: ${d.reason}`);
  return d.cert;
}

export type CertDecodeReason = 'certLength' | 'certMagic' | 'certField';

/** Structure only (no signature check). */
export function decodeCertificate(bytes: Uint8Array): { ok: true; cert: Certificate } | { ok: false; reason: CertDecodeReason } {
  if (bytes.length !== CERT_LEN) return { ok: false, reason: 'certLength' };
  const b = Buffer.from(Uint8Array.from(bytes));
  if (!b.subarray(0, 4).equals(CERT_MAGIC)) return { ok: false, reason: 'certMagic' };
  const prefixLen = b[20];
  const serial = b.readUInt32BE(117) * 0x1_0000_0000 + b.readUInt32BE(121);
  if (prefixLen > MAX_ID_PREFIX_LEN || !Number.isSafeInteger(serial)) return { ok: false, reason: 'certField' };
  const prev = b.subarray(53, 85);
  return {
    ok: true,
    cert: Object.freeze({
      hostId: HostId.fromBytes(b.subarray(4, 20)),
      prefixLen,
      publicKey: b.subarray(21, 53),
      previousKey: prev.equals(ZERO_KEY) ? null : prev,
      realmKey: b.subarray(85, 117),
      serial,
      notBefore: b.readUInt32BE(125),
      notAfter: b.readUInt32BE(129),
      bytes: b,
    }),
  };
}

export type CertRefusal = CertDecodeReason | 'certUntrusted' | 'certSignature' | 'certExpired' | 'certNotYetValid';

/**
 * A certificate valid at nowS (Unix seconds) from one of the realm keys the verifier pinned. Checks
 * the cheap things (structure, trusted key, validity period) before the signature.
 */
export function verifyCertificate(
  bytes: Uint8Array,
  trustedRealmKeys: readonly Uint8Array[],
  nowS: number,
): { ok: true; cert: Certificate } | { ok: false; reason: CertRefusal } {
  const d = decodeCertificate(bytes);
  if (!d.ok) return d;
  const c = d.cert;
  if (!trustedRealmKeys.some((k) => Buffer.from(k).equals(Buffer.from(c.realmKey)))) return { ok: false, reason: 'certUntrusted' };
  if (nowS >= c.notAfter) return { ok: false, reason: 'certExpired' };
  if (nowS + CERT_SKEW_S < c.notBefore) return { ok: false, reason: 'certNotYetValid' };
  const signed = Buffer.concat([CERT_DOMAIN, c.bytes.subarray(0, CERT_SIGNED_LEN)]);
  if (!verifyBytes(c.realmKey, signed, c.bytes.subarray(CERT_SIGNED_LEN))) return { ok: false, reason: 'certSignature' };
  return { ok: true, cert: c };
}

/** True when cert speaks of this ID and this key (the binding's). */
export function certMatches(cert: Certificate, hostId: HostId, publicKey: Uint8Array): boolean {
  return cert.hostId.equals(hostId) && Buffer.from(cert.publicKey).equals(Buffer.from(publicKey));
}

// ---- join token ---------------------------------------------------------------------------------

export const TOKEN_PREFIX = 'rnj1.';
export const TOKEN_LEN = 85;
const TOKEN_SIGNED_LEN = 69;
const INVITE_DOMAIN = Buffer.from('realmnet/invite/v1', 'latin1');
const INVITE_KEY_DOMAIN = Buffer.from('realmnet/invite-key/v1', 'latin1');

export interface JoinToken {
  readonly realmKey: Uint8Array;
  /** The prefix the host derives its ID under. */
  readonly prefix: Prefix;
  /** 16 random bytes. */
  readonly inviteId: Uint8Array;
  /** Unix seconds. */
  readonly expiresAt: number;
  /** Known to the RM (recomputed from its key) and to the token's holder; never sent. */
  readonly secret: Uint8Array;
}

/** The key only the RM (and its key file's reader) holds, from which every invite's secret comes. */
export function inviteKey(rm: KeyPair): MacKey {
  return macKey(blake2s(INVITE_KEY_DOMAIN, 32, privateSeed(rm)));
}

function tokenHead(realmKey: Uint8Array, prefix: Prefix, inviteId: Uint8Array, expiresAt: number): Buffer {
  const head = Buffer.alloc(TOKEN_SIGNED_LEN);
  head.set(realmKey, 0);
  head.set(prefix.toBytes(), 32);
  head[48] = prefix.length;
  head.set(inviteId, 49);
  head.writeUInt32BE(expiresAt >>> 0, 65);
  return head;
}

/** The secret of an invite: what the RM recomputes to check a join. */
export function inviteSecret(k: MacKey, realmKey: Uint8Array, prefix: Prefix, inviteId: Uint8Array, expiresAt: number): Uint8Array {
  const msg = Buffer.concat([INVITE_DOMAIN, tokenHead(realmKey, prefix, inviteId, expiresAt)]);
  const out = new Uint8Array(MAC_LEN);
  mac(k, msg, 0, msg.length, out, 0);
  return out;
}

/** A new one-time token for prefix (the realm's or a sub-realm's), valid until expiresAt. */
export function mintToken(rm: KeyPair, prefix: Prefix, expiresAt: number, inviteId: Uint8Array = new Uint8Array(randomBytes(16))): JoinToken {
  const secret = inviteSecret(inviteKey(rm), rm.publicKey, prefix, inviteId, expiresAt);
  return Object.freeze({ realmKey: rm.publicKey, prefix, inviteId, expiresAt, secret });
}

export function formatToken(t: JoinToken): string {
  const b = Buffer.concat([tokenHead(t.realmKey, t.prefix, t.inviteId, t.expiresAt), t.secret]);
  return TOKEN_PREFIX + b.toString('base64url');
}

/** Parses `rnj1.…`; throws a user-facing CONFIG_INVALID error naming what is wrong. */
export function parseToken(text: string): JoinToken {
  const bad = (why: string): RealmnetError =>
    new RealmnetError('CONFIG_INVALID', `join token: ${why}`, 'copy the whole token `realmnet rm invite` printed (it starts with rnj1.)');
  const s = text.trim();
  if (!s.startsWith(TOKEN_PREFIX)) throw bad('does not start with rnj1.');
  const body = s.slice(TOKEN_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(body)) throw bad('has characters that are not base64url');
  const b = Buffer.from(body, 'base64url');
  if (b.length !== TOKEN_LEN) throw bad(`is ${b.length} bytes, expected ${TOKEN_LEN} (truncated?)`);
  const len = b[48];
  if (len > MAX_ID_PREFIX_LEN) throw bad(`prefix length /${len} is longer than /${MAX_ID_PREFIX_LEN}`);
  const prefix = Prefix.of(b.subarray(32, 48), len);
  if (!Buffer.from(prefix.toBytes()).equals(b.subarray(32, 48))) throw bad('prefix has bits set after its length');
  return Object.freeze({
    realmKey: Uint8Array.from(b.subarray(0, 32)),
    prefix,
    inviteId: Uint8Array.from(b.subarray(49, 65)),
    expiresAt: b.readUInt32BE(65),
    secret: Uint8Array.from(b.subarray(69, 85)),
  });
}

/** The join proof a HELLO carries: keyed with the secret, over the HELLO's signed bytes. */
export function joinProof(secret: Uint8Array, helloSigned: Uint8Array): Uint8Array {
  const out = new Uint8Array(MAC_LEN);
  mac(macKey(secret), helloSigned, 0, helloSigned.length, out, 0);
  return out;
}

/** Constant-time comparison of two MAC-sized byte strings. */
export function sameTag(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}
