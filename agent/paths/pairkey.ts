import { edwardsToMontgomeryPriv, edwardsToMontgomeryPub, x25519 } from '@noble/curves/ed25519';
import { blake2s, macKey, type MacKey } from '../../shared/crypto/blake2s.ts';

/**
 * The key two agents MAC their peer messages with, derived with no handshake from what each already
 * has: its own Ed25519 key and the other's public key from a verified binding (which is bound to the
 * host ID, so the key is bound to both IDs). Ed25519 keys map to X25519 keys (RFC 7748 section 4.1,
 * the birational map; @noble/curves does the conversion, node:crypto has none), static-static X25519
 * gives a shared secret, and keyed BLAKE2s over a label and both IDs (lower first) gives the MAC key.
 *
 * Static-static means no forward secrecy: acceptable for a MAC over probes and already-signed
 * bindings, which carry nothing secret. Each derivation costs ~2 ms, so callers cache per peer.
 */
const LABEL = Buffer.from('realmnet peer mac v1', 'latin1');

export function pairKey(mySeed: Uint8Array, myId: Uint8Array, peerPublicKey: Uint8Array, peerId: Uint8Array): MacKey | null {
  let shared: Uint8Array;
  try {
    shared = x25519.getSharedSecret(edwardsToMontgomeryPriv(mySeed), edwardsToMontgomeryPub(peerPublicKey));
  } catch {
    return null; // not a point on the curve: a binding can only carry such a key if forged
  }
  if (shared.every((b) => b === 0)) return null;
  const [lo, hi] = Buffer.compare(myId, peerId) <= 0 ? [myId, peerId] : [peerId, myId];
  const material = new Uint8Array(LABEL.length + 32);
  material.set(LABEL, 0);
  material.set(lo, LABEL.length);
  material.set(hi, LABEL.length + 16);
  return macKey(blake2s(material, 32, shared));
}
