import { createHash } from 'node:crypto';
import type { HostId, Prefix } from '../../shared/ids.ts';
import { verifyDelegation, type DelegationRefusal } from '../../shared/delegation.ts';
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

/** Other realms' keys held at most (an agent talks to hosts of a few realms, not thousands). */
const MAX_FOREIGN = 1024;

export class RealmTrust {
  readonly realmKeys: readonly Uint8Array[];
  readonly join: JoinToken | null;
  readonly answers: AnswerVerifier;
  readonly wallClock: () => number;
  private current: Certificate | null = null;
  private since: number | null;
  private readonly listeners = new Set<(c: Certificate) => void>();
  /**
   * Other realms' keys, each for its prefix only, as this host's own RM endorsed them (a delegation
   * signed by a pinned realm key, docs/hierarchy.md): key hex + prefix → the endorsement. Bounded.
   */
  private readonly foreign = new Map<string, { prefix: Prefix; key: Uint8Array; notAfter: number }>();
  /** Endorsements already verified (their bytes) → notAfter. */
  private readonly endorsed = new Map<string, number>();

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
    this.answers = new AnswerVerifier(o.maxTrackedIds ?? 65_536, { keysFor: (id) => this.keysFor(id), wallClock: this.wallClock });
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

  /**
   * An endorsement that came with a binding of another realm's host: kept when a pinned realm key
   * signed it and it is valid now. Returns why it was refused, null when kept.
   */
  endorse(bytes: Uint8Array): DelegationRefusal | null {
    const nowS = this.nowS();
    // The same endorsement comes with every answer of that realm: verified once.
    const seen = this.endorsed.get(Buffer.from(bytes).toString('latin1'));
    if (seen !== undefined && nowS < seen) return null;
    let last: DelegationRefusal = 'delegationIssuer';
    for (const k of this.realmKeys) {
      const v = verifyDelegation(bytes, k, nowS);
      if (!v.ok) {
        if (v.reason !== 'delegationIssuer') last = v.reason;
        continue;
      }
      const d = v.delegation;
      const id = `${Buffer.from(d.subjectKey).toString('hex')} ${d.prefix.toString()}`;
      if (!this.foreign.has(id) && this.foreign.size >= MAX_FOREIGN) this.pruneForeign(nowS);
      if (!this.foreign.has(id) && this.foreign.size >= MAX_FOREIGN) {
        const oldest = this.foreign.keys().next();
        if (!oldest.done) this.foreign.delete(oldest.value);
      }
      const held = this.foreign.get(id);
      if (held === undefined || held.notAfter < d.notAfter) this.foreign.set(id, { prefix: d.prefix, key: Uint8Array.from(d.subjectKey), notAfter: d.notAfter });
      if (this.endorsed.size >= MAX_FOREIGN) this.endorsed.clear();
      this.endorsed.set(Buffer.from(bytes).toString('latin1'), d.notAfter);
      return null;
    }
    return last;
  }

  /**
   * The realm keys whose certificates are accepted for id: the pinned ones, and each endorsed key of
   * another realm whose prefix holds id (a foreign key never vouches outside its own prefix).
   */
  keysFor(id: HostId | Uint8Array): readonly Uint8Array[] {
    if (this.foreign.size === 0) return this.realmKeys;
    const nowS = this.nowS();
    const out = this.realmKeys.slice();
    for (const f of this.foreign.values()) if (nowS < f.notAfter && f.prefix.contains(id)) out.push(f.key);
    return out;
  }

  /** Other realms' keys held now (for status). */
  foreignRealms(): { prefix: string; key: string; notAfter: number }[] {
    const nowS = this.nowS();
    this.pruneForeign(nowS);
    return [...this.foreign.values()].map((f) => ({ prefix: f.prefix.toString(), key: createHash('sha256').update(f.key).digest('hex').slice(0, 16), notAfter: f.notAfter }));
  }

  private pruneForeign(nowS: number): void {
    for (const [k, f] of this.foreign) if (f.notAfter <= nowS) this.foreign.delete(k);
  }

  /** Short, for status: the first 8 bytes of SHA-256 of each realm key, hex. */
  fingerprints(): string[] {
    return this.realmKeys.map((k) => createHash('sha256').update(k).digest('hex').slice(0, 16));
  }
}
