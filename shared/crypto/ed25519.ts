import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as cryptoSign,
  verify as cryptoVerify,
  type KeyObject,
} from 'node:crypto';
import { RealmnetError } from '../errors.ts';

/**
 * Ed25519 key pairs (node:crypto): the host and RM identity keys that sign bindings, HELLO and
 * WELCOME. Keys cross the wire and files as raw bytes (32-byte public key, 32-byte seed); the on-disk
 * form is shared/keyfile.ts.
 */
export interface KeyPair {
  /** 32 raw bytes. */
  readonly publicKey: Uint8Array;
  readonly privateKey: KeyObject;
}

// DER prefix of an Ed25519 PKCS#8 PrivateKeyInfo (RFC 8410): 16 bytes, then the 32-byte seed.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return Object.freeze({ publicKey: rawPublicKey(publicKey), privateKey });
}

/** Builds a key pair from the 32-byte seed (the raw private key). */
export function keyPairFromSeed(seed: Uint8Array): KeyPair {
  if (seed.length !== 32) throw keyError(`an Ed25519 private key is 32 bytes, got ${seed.length}`);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  } catch (e) {
    throw keyError('not an Ed25519 private key', { cause: e });
  }
  return Object.freeze({ publicKey: rawPublicKey(createPublicKey(privateKey)), privateKey });
}

export function privateSeed(kp: KeyPair): Uint8Array {
  const der = kp.privateKey.export({ format: 'der', type: 'pkcs8' });
  return Uint8Array.from(der.subarray(der.length - 32));
}

export function signBytes(kp: KeyPair, data: Uint8Array): Uint8Array {
  return cryptoSign(null, data, kp.privateKey);
}

/** Never throws: a malformed key or signature is simply false. */
export function verifyBytes(publicKey: Uint8Array | KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  try {
    const key = publicKey instanceof Uint8Array ? publicKeyObject(publicKey) : publicKey;
    return cryptoVerify(null, data, key, signature);
  } catch {
    return false;
  }
}

/** A KeyObject for 32 raw public-key bytes. Throws KEY_INVALID. */
export function publicKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw keyError(`an Ed25519 public key is 32 bytes, got ${raw.length}`);
  try {
    // JWK, not DER: OpenSSL 3's DER decoder costs ~190 µs a key here, the JWK import ~25 µs.
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' });
  } catch (e) {
    throw keyError('not an Ed25519 public key', { cause: e });
  }
}

function rawPublicKey(k: KeyObject): Uint8Array {
  const jwk = k.export({ format: 'jwk' });
  return new Uint8Array(Buffer.from(jwk.x ?? '', 'base64url'));
}

function keyError(message: string, opts: { hint?: string; cause?: unknown } = {}): RealmnetError {
  return new RealmnetError('KEY_INVALID', message, opts.hint ?? 'create a key file with `realmnet keygen --out FILE`', {
    cause: opts.cause,
  });
}
