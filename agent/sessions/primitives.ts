import { createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, type KeyObject } from 'node:crypto';

/**
 * The handshake's cryptographic primitives, all from node:crypto (OpenSSL): X25519, SHA-256,
 * HKDF-SHA256 and ChaCha20-Poly1305, plus XChaCha20-Poly1305 built from OpenSSL's ChaCha20 for the
 * cookie reply. Only the Ed25519 → X25519 conversion comes from @noble/curves (noise.ts), because
 * node:crypto has none.
 *
 * Measured on the 2-core box (Node 20, OpenSSL 3.0): X25519 key generation 42 µs, one DH 36 µs,
 * importing a raw public key 8 µs as JWK against 83 µs as SPKI DER (OpenSSL 3's DER decoder is the
 * slow part, as shared/crypto/ed25519.ts found for Ed25519), exporting one 0.9 µs as JWK against
 * 70 µs as DER. So raw keys cross into and out of OpenSSL as JWK, not through the DER prefixes.
 */

export const KEY_LEN = 32;
export const TAG_LEN = 16;
export const HASH_LEN = 32;
export const XNONCE_LEN = 24;

/** A raw 32-byte X25519 public key as an OpenSSL key object, or null when OpenSSL refuses it. */
export function x25519Public(raw: Uint8Array): KeyObject | null {
  if (raw.length !== KEY_LEN) return null;
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: b64u(raw) }, format: 'jwk' });
  } catch {
    return null;
  }
}

/**
 * A raw X25519 private key (with its public half, which OpenSSL's JWK import wants) as a key object.
 * The caller wipes `priv` afterwards: OpenSSL keeps its own copy, which it clears when the key object
 * is freed.
 */
export function x25519Private(priv: Uint8Array, pub: Uint8Array): KeyObject {
  return createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', x: b64u(pub), d: b64u(priv) }, format: 'jwk' });
}

/**
 * A fresh ephemeral key pair. The private half never enters the JS heap (it is generated inside
 * OpenSSL and used only through the key object), so there is no JS copy to wipe: dropping the
 * reference lets OpenSSL free it, and OpenSSL clears X25519 private keys when it frees them.
 */
export function generateEphemeral(): { priv: KeyObject; pub: Uint8Array } {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const x = publicKey.export({ format: 'jwk' }).x ?? '';
  return { priv: privateKey, pub: new Uint8Array(Buffer.from(x, 'base64url')) };
}

/**
 * X25519(priv, pub) into a fresh 32-byte array, or null when the result is all zero (pub is of small
 * order: RFC 7748 section 6.1 and the Noise spec section 12.1 say to reject it, or the "shared"
 * secret would be known to anyone) or OpenSSL refuses the pair.
 */
export function dh(priv: KeyObject, pub: KeyObject): Uint8Array | null {
  let out: Buffer;
  try {
    out = diffieHellman({ privateKey: priv, publicKey: pub });
  } catch {
    return null; // OpenSSL itself refuses an all-zero X25519 output
  }
  let acc = 0;
  for (let i = 0; i < out.length; i++) acc |= out[i];
  if (acc === 0) return null;
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** SHA-256(a ‖ b). */
export function hash2(a: Uint8Array, b: Uint8Array): Uint8Array {
  const d = createHash('sha256').update(a).update(b).digest();
  return new Uint8Array(d.buffer, d.byteOffset, HASH_LEN);
}

/**
 * Noise's HKDF(ck, ikm) with two outputs (spec section 4.3): temp = HMAC(ck, ikm), o1 = HMAC(temp,
 * 0x01), o2 = HMAC(temp, o1 ‖ 0x02). That is exactly RFC 5869 HKDF-SHA256 with salt = ck, an empty
 * info and 64 bytes of output, so one hkdfSync call does it. Returns [o1, o2] over one 64-byte array.
 */
export function hkdf2(ck: Uint8Array, ikm: Uint8Array): [Uint8Array, Uint8Array] {
  const okm = new Uint8Array(hkdfSync('sha256', ikm, ck, EMPTY, 64));
  return [okm.subarray(0, 32), okm.subarray(32, 64)];
}

/**
 * ChaCha20-Poly1305 (RFC 8439) with the Noise nonce: 4 zero bytes, then the 64-bit counter n little
 * endian (spec section 12.3). The handshake only ever uses n = 0 (each key encrypts once), but the
 * encoding is the spec's so the keys could carry more. Writes ciphertext ‖ tag at out[outOff].
 */
export function seal(key: Uint8Array, n: number, ad: Uint8Array, plain: Uint8Array, out: Uint8Array, outOff: number): void {
  const c = createCipheriv('chacha20-poly1305', key, noiseNonce(n), { authTagLength: TAG_LEN });
  c.setAAD(ad, { plaintextLength: plain.length });
  const body = c.update(plain);
  c.final();
  out.set(body, outOff);
  out.set(c.getAuthTag(), outOff + plain.length);
}

/**
 * Opens ciphertext ‖ tag = data[off, off+len) into a fresh array, or null when the tag is wrong.
 * Never throws on bad input.
 */
export function open(key: Uint8Array, n: number, ad: Uint8Array, data: Uint8Array, off: number, len: number): Uint8Array | null {
  if (len < TAG_LEN) return null;
  try {
    const d = createDecipheriv('chacha20-poly1305', key, noiseNonce(n), { authTagLength: TAG_LEN });
    d.setAAD(ad, { plaintextLength: len - TAG_LEN });
    d.setAuthTag(data.subarray(off + len - TAG_LEN, off + len));
    const body = d.update(data.subarray(off, off + len - TAG_LEN));
    d.final();
    return new Uint8Array(body.buffer, body.byteOffset, body.length);
  } catch {
    return null;
  }
}

function noiseNonce(n: number): Buffer {
  const iv = Buffer.alloc(12);
  iv.writeUInt32LE(n >>> 0, 4);
  iv.writeUInt32LE(Math.floor(n / 0x1_0000_0000), 8);
  return iv;
}

// ---- XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03) -------------------------------------------

const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
const ZERO_BLOCK = Buffer.alloc(64);

/**
 * HChaCha20(key, n16) from OpenSSL's ChaCha20 stream cipher, which takes a 16-byte IV that fills
 * state words 12..15 (the 32-bit block counter and the 96-bit nonce, all little endian): with IV =
 * n16 the initial state is exactly HChaCha20's. A keystream block is rounds(state) + state, and
 * HChaCha20 is rounds(state) words 0..3 and 12..15, so subtracting the known words (the constants
 * and n16) from the first keystream block gives it. Checked against the draft's section 2.2.1 vector
 * in the tests.
 */
export function hchacha20(key: Uint8Array, n16: Uint8Array): Uint8Array {
  const c = createCipheriv('chacha20', key, n16.subarray(0, 16));
  const ks = c.update(ZERO_BLOCK);
  const out = new Uint8Array(32);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < 4; i++) {
    dv.setUint32(4 * i, (ks.readUInt32LE(4 * i) - SIGMA[i]) >>> 0, true);
    const nw = n16[4 * i] | (n16[4 * i + 1] << 8) | (n16[4 * i + 2] << 16) | (n16[4 * i + 3] << 24);
    dv.setUint32(16 + 4 * i, (ks.readUInt32LE(48 + 4 * i) - nw) >>> 0, true);
  }
  ks.fill(0);
  return out;
}

/** XChaCha20-Poly1305 seal: subkey = HChaCha20(key, nonce[0,16)), then RFC 8439 with 0⁴ ‖ nonce[16,24). */
export function xseal(key: Uint8Array, nonce24: Uint8Array, ad: Uint8Array, plain: Uint8Array, out: Uint8Array, outOff: number): void {
  const sub = hchacha20(key, nonce24.subarray(0, 16));
  const iv = Buffer.alloc(12);
  iv.set(nonce24.subarray(16, 24), 4);
  const c = createCipheriv('chacha20-poly1305', sub, iv, { authTagLength: TAG_LEN });
  c.setAAD(ad, { plaintextLength: plain.length });
  const body = c.update(plain);
  c.final();
  out.set(body, outOff);
  out.set(c.getAuthTag(), outOff + plain.length);
  sub.fill(0);
}

/** XChaCha20-Poly1305 open of data[off, off+len) (ciphertext ‖ tag), or null. Never throws on bad input. */
export function xopen(key: Uint8Array, nonce24: Uint8Array, ad: Uint8Array, data: Uint8Array, off: number, len: number): Uint8Array | null {
  if (len < TAG_LEN || nonce24.length !== XNONCE_LEN) return null;
  const sub = hchacha20(key, nonce24.subarray(0, 16));
  const iv = Buffer.alloc(12);
  iv.set(nonce24.subarray(16, 24), 4);
  try {
    const d = createDecipheriv('chacha20-poly1305', sub, iv, { authTagLength: TAG_LEN });
    d.setAAD(ad, { plaintextLength: len - TAG_LEN });
    d.setAuthTag(data.subarray(off + len - TAG_LEN, off + len));
    const body = d.update(data.subarray(off, off + len - TAG_LEN));
    d.final();
    return new Uint8Array(body.buffer, body.byteOffset, body.length);
  } catch {
    return null;
  } finally {
    sub.fill(0);
  }
}

const EMPTY = new Uint8Array(0);

function b64u(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('base64url');
}
