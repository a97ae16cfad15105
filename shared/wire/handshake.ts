import { createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { macKey, type MacKey } from '../crypto/blake2s.ts';
import { signBytes, type KeyPair } from '../crypto/ed25519.ts';
import type { Hello } from './messages.ts';
import { joinProof } from '../membership.ts';

/**
 * The control-session handshake (docs/control-protocol.md, "Authentication"):
 *
 * 1. Session set-up. The client sends HELLO = its host ID, prefix length, Ed25519 public key, an
 *    X25519 ephemeral public key and a nonce, signed with its host key. The RM checks that the ID is
 *    the hash of the key (so the session proves the asker's host ID, and with it its realm), checks
 *    the signature, and answers WELCOME = a session ID and its own X25519 ephemeral, signed with the
 *    RM key. Both sides derive two 32-byte keys (client→RM, RM→client) with HKDF-SHA256 from the
 *    X25519 shared secret. A replayed HELLO gets a WELCOME whose key the replayer cannot derive.
 * 2. Every later message carries the session ID, a per-direction sequence number and a 16-byte
 *    keyed-BLAKE2s MAC over the whole datagram (shared/crypto/blake2s.ts, checked in codec.ts). The
 *    receiver checks the MAC, then a sliding replay window over the sequence numbers
 *    (shared/wire/replay.ts), as IPsec's ESP does.
 */

export interface Ephemeral {
  /** 32 raw bytes. */
  readonly publicKey: Uint8Array;
  readonly privateKey: KeyObject;
}

export function createEphemeral(): Ephemeral {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const jwk = publicKey.export({ format: 'jwk' });
  return Object.freeze({ publicKey: new Uint8Array(Buffer.from(jwk.x ?? '', 'base64url')), privateKey });
}

export interface SessionKeys {
  /** MAC key for client → RM messages. */
  readonly c2s: MacKey;
  /** MAC key for RM → client messages. */
  readonly s2c: MacKey;
}

/**
 * Both sides call this with their own ephemeral private key and the peer's public share. Returns
 * null when the peer's share is not a valid X25519 key (or the shared secret is all zero).
 */
export function deriveSessionKeys(
  own: Ephemeral,
  peerEphemeral: Uint8Array,
  ctx: { sid: number; clientHostId: Uint8Array; clientEphemeral: Uint8Array; rmEphemeral: Uint8Array; nonce: Uint8Array },
): SessionKeys | null {
  if (peerEphemeral.length !== 32) return null;
  let secret: Buffer;
  try {
    const peer = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(peerEphemeral).toString('base64url') }, format: 'jwk' });
    secret = diffieHellman({ privateKey: own.privateKey, publicKey: peer });
  } catch {
    return null;
  }
  // RFC 7748 section 6.1: reject the all-zero output of small-order points.
  if (secret.every((b) => b === 0)) return null;
  const sid = Buffer.alloc(4);
  sid.writeUInt32BE(ctx.sid >>> 0);
  const info = Buffer.concat([Buffer.from('realmnet/session/v1'), sid, ctx.clientHostId, ctx.clientEphemeral, ctx.rmEphemeral]);
  const okm = new Uint8Array(hkdfSync('sha256', secret, ctx.nonce, info, 64));
  return Object.freeze({ c2s: macKey(okm.subarray(0, 32)), s2c: macKey(okm.subarray(32, 64)) });
}

/** The bytes a client signs in HELLO (domain-separated from bindings and WELCOME). */
export function helloSignedBytes(hostId: Uint8Array, prefixLen: number, publicKey: Uint8Array, ephemeral: Uint8Array, nonce: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from('realmnet/hello/v1'), hostId, Uint8Array.of(prefixLen), publicKey, ephemeral, nonce]);
}

/**
 * A client's HELLO for the host whose 16-byte ID is `hostId` (prefix length `prefixLen`), signed
 * with its key, and the ephemeral whose private half the client keeps to derive the session keys.
 * joinSecret: the join token's secret while the host is not yet a member (the HELLO then carries
 * the proof, shared/membership.ts); cookie: the RM's cookie for this source address, once it sent one.
 */
export function signedHello(
  key: KeyPair,
  hostId: Uint8Array,
  prefixLen: number,
  reqId: number,
  opts: { join?: { inviteId: Uint8Array; expiresAt: number; secret: Uint8Array } | null; cookie?: Uint8Array | null } = {},
): { hello: Hello; eph: Ephemeral } {
  const eph = createEphemeral();
  const nonce = randomNonce();
  const signed = helloSignedBytes(hostId, prefixLen, key.publicKey, eph.publicKey, nonce);
  const signature = signBytes(key, signed);
  const j = opts.join ?? null;
  const join = j === null ? null : { inviteId: j.inviteId, expiresAt: j.expiresAt, proof: joinProof(j.secret, signed) };
  return { eph, hello: { type: 'hello', reqId, hostId, prefixLen, publicKey: key.publicKey, ephemeral: eph.publicKey, nonce, signature, join, cookie: opts.cookie ?? null } };
}

/** The bytes the RM signs in WELCOME: they tie its share and the session ID to the client's HELLO. */
export function welcomeSignedBytes(
  sid: number,
  rmEphemeral: Uint8Array,
  clientHostId: Uint8Array,
  clientEphemeral: Uint8Array,
  nonce: Uint8Array,
): Uint8Array {
  const s = Buffer.alloc(4);
  s.writeUInt32BE(sid >>> 0);
  return Buffer.concat([Buffer.from('realmnet/welcome/v1'), s, rmEphemeral, clientHostId, clientEphemeral, nonce]);
}

export function randomNonce(): Uint8Array {
  return new Uint8Array(randomBytes(16));
}

/** A random non-zero u32 session ID. */
export function randomSid(): number {
  for (;;) {
    const v = randomBytes(4).readUInt32BE(0);
    if (v !== 0) return v;
  }
}
