import { HostId, idKey } from '../../shared/ids.ts';
import { certMatches, verifyCertificate } from '../../shared/membership.ts';
import type { PeerIdentity } from './noise.ts';

/**
 * Ready-made admission predicates for Handshaker's `admit`. The handshake proves only that the
 * initiator holds the Ed25519 key it sent; these decide whether that key may speak for the claimed
 * host ID in this realm. Both check the ID against the key, which the handshake itself does not.
 */

/**
 * A realm member: a certificate from one of the pinned realm keys (or, for another realm's host, that
 * realm's key as this host's RM endorsed it for the ID's prefix), valid at nowS() (Unix seconds),
 * naming exactly this ID and key (docs/security.md decision 2). Costs one Ed25519 verification
 * (~50 µs), which is why it runs last, after the handshake authenticated.
 */
export function admitMembers(keysFor: (id: Uint8Array) => readonly Uint8Array[], nowS: () => number): (p: PeerIdentity) => boolean {
  return (p) => {
    if (p.cert === null) return false;
    const v = verifyCertificate(p.cert, keysFor(p.id), nowS());
    return v.ok && certMatches(v.cert, HostId.fromBytes(p.id), p.edPublic);
  };
}

/** Static-config peers: host ID → Ed25519 public key, as configured. */
export function admitConfigured(peers: ReadonlyMap<string, Uint8Array>): (p: PeerIdentity) => boolean {
  return (p) => {
    const key = peers.get(idKey(p.id));
    return key !== undefined && Buffer.from(key).equals(Buffer.from(p.edPublic));
  };
}

/** Either rule: members of the realm, or the configured peers. */
export function admitEither(...rules: ((p: PeerIdentity) => boolean)[]): (p: PeerIdentity) => boolean {
  return (p) => rules.some((r) => r(p));
}
