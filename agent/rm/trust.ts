import { createHash } from 'node:crypto';
import type { HostId } from '../../shared/ids.ts';
import { certMatches, verifyCertificate, type Certificate, type CertRefusal, type JoinToken } from '../../shared/membership.ts';
import { AnswerVerifier } from './answers.ts';

/**
 * This host's standing in its realm (docs/security.md, decisions 2 and 3), shared by the RM clients
 * of all its uplinks:
 * - the realm keys it pinned (rm.servers[].publicKey, the join token's, the state file's): WELCOMEs,
 *   and certificates in answers, from any other key are refused;
 * - the join token, used while the host holds no valid certificate;
 * - its own membership certificate, from WELCOME or RENEW, kept in the state file (so a restart
 *   needs no token: a used one would be refused);
 * - the verifier of served bindings, so a key pinned for a peer ID holds whichever uplink's client
 *   heard of it first.
 */
export interface RealmTrustOptions {
  readonly realmKeys: readonly Uint8Array[];
  readonly join?: JoinToken | null;
  /** The certificate the state file held (checked before use: an expired or foreign one is dropped). */
  readonly cert?: Uint8Array | null;
  /** Unix seconds: when this host first got a certificate (state file). */
  readonly memberSince?: number | null;
  readonly wallClock?: () => number;
  /** IDs whose key and sequence number are remembered. Default 65536. */
  readonly maxTrackedIds?: number;
}

export class RealmTrust {
  readonly realmKeys: readonly Uint8Array[];
  readonly join: JoinToken | null;
  readonly answers: AnswerVerifier;
  readonly wallClock: () => number;
  private current: Certificate | null = null;
  private since: number | null;
  private readonly listeners = new Set<(c: Certificate) => void>();

  constructor(o: RealmTrustOptions) {
    const keys: Uint8Array[] = [];
    const add = (k: Uint8Array) => {
      if (!keys.some((x) => Buffer.from(x).equals(Buffer.from(k)))) keys.push(Uint8Array.from(k));
    };
    o.realmKeys.forEach(add);
    if (o.join) add(o.join.realmKey);
    this.realmKeys = Object.freeze(keys);
    this.join = o.join ?? null;
    this.wallClock = o.wallClock ?? Date.now;
    this.since = o.memberSince ?? null;
    this.answers = new AnswerVerifier(o.maxTrackedIds ?? 65_536, { realmKeys: () => this.realmKeys, wallClock: this.wallClock });
    if (o.cert) {
      const v = verifyCertificate(o.cert, this.realmKeys, this.nowS());
      if (v.ok) this.current = v.cert;
    }
  }

  nowS(): number {
    return Math.floor(this.wallClock() / 1000);
  }

  /** The held certificate while valid now; null before the first and after it expired. */
  get cert(): Certificate | null {
    const c = this.current;
    return c !== null && this.nowS() < c.notAfter ? c : null;
  }

  get memberSince(): number | null {
    return this.since;
  }

  /** The join proof goes in HELLO only while there is no valid certificate to show for membership. */
  joinFor(): JoinToken | null {
    return this.cert === null ? this.join : null;
  }

  /**
   * A certificate from WELCOME or RENEW-REPLY: from a pinned realm key, valid now, for this host's ID
   * and key. Kept (and announced) when it is newer than the held one. Returns why it was refused.
   */
  offer(bytes: Uint8Array, hostId: HostId, publicKey: Uint8Array): CertRefusal | 'certMismatch' | null {
    const v = verifyCertificate(bytes, this.realmKeys, this.nowS());
    if (!v.ok) return v.reason;
    if (!certMatches(v.cert, hostId, publicKey)) return 'certMismatch';
    const held = this.current;
    if (held !== null && held.serial >= v.cert.serial && Buffer.from(held.realmKey).equals(Buffer.from(v.cert.realmKey))) return null;
    this.current = v.cert;
    this.since ??= v.cert.notBefore;
    for (const l of this.listeners) l(v.cert);
    return null;
  }

  /** Every new certificate (to persist it). */
  onCert(cb: (c: Certificate) => void): void {
    this.listeners.add(cb);
  }

  /** Wall-clock ms at which the held certificate should be renewed: two thirds into its life. */
  renewAt(): number | null {
    const c = this.current;
    if (c === null) return null;
    return (c.notBefore + ((c.notAfter - c.notBefore) * 2) / 3) * 1000;
  }

  /** Short, for status: the first 8 bytes of SHA-256 of each realm key, hex. */
  fingerprints(): string[] {
    return this.realmKeys.map((k) => createHash('sha256').update(k).digest('hex').slice(0, 16));
  }
}
