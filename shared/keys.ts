import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as cryptoSign,
  verify as cryptoVerify,
  type KeyObject,
} from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { RealmnetError } from './errors.ts';

/**
 * Ed25519 key pairs (node:crypto).
 *
 * Key file: a small JSON document, file mode 0600:
 *   { "kind": "realmnet-ed25519", "version": 1, "publicKey": "<base64, 32 bytes>", "privateKey": "<base64, 32-byte seed>" }
 * JSON rather than PEM so that the public key, which operators copy into configs, is readable as is.
 */
export interface KeyPair {
  /** 32 raw bytes. */
  readonly publicKey: Uint8Array;
  readonly privateKey: KeyObject;
}

const KEY_KIND = 'realmnet-ed25519';
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

export function encodeKeyFile(kp: KeyPair): string {
  return (
    JSON.stringify(
      {
        kind: KEY_KIND,
        version: 1,
        publicKey: Buffer.from(kp.publicKey).toString('base64'),
        privateKey: Buffer.from(privateSeed(kp)).toString('base64'),
      },
      null,
      2,
    ) + '\n'
  );
}

/** Writes the key file with mode 0600 (refuses to overwrite unless overwrite is set). */
export function saveKeyPair(file: string, kp: KeyPair, opts: { overwrite?: boolean } = {}): void {
  try {
    writeFileSync(file, encodeKeyFile(kp), { mode: 0o600, flag: opts.overwrite ? 'w' : 'wx' });
    chmodSync(file, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw keyError(`${file} already exists`, { hint: 'choose another --out file or remove the old key first' });
    throw keyError(`cannot write ${file}: ${String(code ?? e)}`, { cause: e });
  }
}

export function loadKeyPair(file: string): KeyPair {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw keyError(`cannot read key file ${file}: ${code === 'ENOENT' ? 'no such file' : String(code ?? e)}`, {
      hint: 'create one with `realmnet keygen --out FILE`',
    });
  }
  try {
    const mode = statSync(file).mode & 0o077;
    if (mode !== 0) process.emitWarning(`key file ${file} is readable by group or others; chmod 600 it`);
  } catch {
    // stat failing right after a successful read is not worth failing for.
  }
  return decodeKeyFile(text, file);
}

export function decodeKeyFile(text: string, file = 'key file'): KeyPair {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw keyError(`${file} is not a realmnet key file (not JSON)`);
  }
  if (typeof doc !== 'object' || doc === null) throw keyError(`${file} is not a realmnet key file`);
  const d = doc as Record<string, unknown>;
  if (d.kind !== KEY_KIND) throw keyError(`${file}: "kind" must be "${KEY_KIND}"`);
  if (d.version !== 1) throw keyError(`${file}: unsupported version ${JSON.stringify(d.version)} (this build reads version 1)`);
  const seed = base64Field(d.privateKey, 'privateKey', file);
  const pub = base64Field(d.publicKey, 'publicKey', file);
  const kp = keyPairFromSeed(seed);
  if (Buffer.compare(Buffer.from(kp.publicKey), Buffer.from(pub)) !== 0) {
    throw keyError(`${file}: publicKey does not belong to privateKey`, { hint: 'the file was edited or mixed up; generate a new key' });
  }
  return kp;
}

function base64Field(v: unknown, name: string, file: string): Uint8Array {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]{43}=$/.test(v)) throw keyError(`${file}: "${name}" must be 32 bytes in base64`);
  return Buffer.from(v, 'base64');
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
