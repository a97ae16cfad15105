import { chmodSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { RealmnetError } from './errors.ts';
import { keyPairFromSeed, privateSeed, type KeyPair } from './crypto/ed25519.ts';

/**
 * Key files: a small JSON document, file mode 0600:
 *   { "kind": "realmnet-ed25519", "version": 1, "publicKey": "<base64, 32 bytes>", "privateKey": "<base64, 32-byte seed>" }
 * JSON rather than PEM so that the public key, which operators copy into configs, is readable as is.
 */
const KEY_KIND = 'realmnet-ed25519';

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

function keyError(message: string, opts: { hint?: string; cause?: unknown } = {}): RealmnetError {
  return new RealmnetError('KEY_INVALID', message, opts.hint ?? 'create a key file with `realmnet keygen --out FILE`', {
    cause: opts.cause,
  });
}
