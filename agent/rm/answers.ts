import { applyPrefs, decodeBinding, verifyBinding, type Binding, type Locator } from '../../shared/binding.ts';
import type { HostId } from '../../shared/ids.ts';
import { certMatches, verifyCertificate } from '../../shared/membership.ts';
import type { LocatorPref } from '../../shared/wire/messages.ts';
import { decodeGroup, verifyGroup, type GroupBinding } from '../../shared/group.ts';

/**
 * What the RM serves, checked before anyone uses it: every binding in a LOOKUP-REPLY or PUSH is
 * decoded and verified (structure, ID = hash of key, signature, the ID asked for) and its sequence
 * number must not be below one already seen for that ID. Then realm trust (docs/security.md,
 * decisions 2 and 3):
 * - it comes with a membership certificate from a realm key this host pinned, valid now, naming the
 *   same ID and key, for the same prefix length as the binding (so the length is the realm's word,
 *   not the host's: a host cannot claim a /120 and shorten its hash);
 * - the ID's key is pinned on first sight: another key for a known ID is refused (keyChanged)
 *   unless its certificate names the pinned key as previousKey (an operator's re-admission);
 * - an ID the RM revoked is refused until the certificate last seen for it would have expired.
 * Refusals are counted by the caller (binding.<reason>) and never returned.
 *
 * The same bytes as the last verified ones (binding and certificate) are not verified again (a
 * refresh costs no Ed25519 work); the same sequence number with other bytes is refused: one of the
 * two is not what the host signed.
 */

/** A verified binding as served by the RM, with the realm's policy applied to its locators. */
export interface BindingAnswer {
  readonly kind: 'binding';
  readonly hostId: HostId;
  readonly binding: Binding;
  /** binding.locators with the realm's uplink preferences applied: use these. */
  readonly locators: readonly Locator[];
  /** Seconds the answer may be cached. */
  readonly ttl: number;
  /**
   * Unix seconds: the end of the host's membership certificate. The binding must not be used after
   * it, whatever its TTL (membership holds while the RM is down, but only until then).
   */
  readonly certNotAfter: number;
}

/** Unknown ID, expired, or not visible to this host (indistinguishable by design). */
export interface NegativeAnswer {
  readonly kind: 'negative';
  readonly hostId: HostId;
  readonly ttl: number;
}

/**
 * Slice 2: the answer for a user or data ID (docs/slice2.md). The owner's binding is verified here
 * (self-certifying ID, signature, sequence); which hosts are present is the RM's word (it saw their
 * consent and registration); the inline host bindings are verified like any other, and only those
 * the owner lists are kept.
 */
export interface GroupAnswer {
  readonly kind: 'group';
  /** The user or data ID. */
  readonly hostId: HostId;
  readonly group: GroupBinding;
  /** One flag per group.hosts entry. */
  readonly present: readonly boolean[];
  /** Verified bindings of present hosts, as many as the RM could fit (more are looked up one by one). */
  readonly hosts: readonly BindingAnswer[];
  readonly ttl: number;
}

export type LookupResult = BindingAnswer | NegativeAnswer | GroupAnswer;

export type AnswerRefusal = 'forged' | 'mismatch' | 'stale' | 'noCert' | 'badCert' | 'keyChanged' | 'prefixLen' | 'revoked';

/** When a revoked ID's last certificate is unknown, it is refused for this long (the default certificate life). */
const REVOKED_DEFAULT_S = 86_400;

interface Seen {
  readonly seq: number;
  readonly bytes: Uint8Array;
  readonly cert: Uint8Array;
  readonly certNotAfter: number;
}

export interface AnswerTrust {
  /**
   * The realm keys whose certificates are accepted for an ID: the ones this host pinned (its RMs'
   * keys), and another realm's key for that realm's prefix once this host's RM endorsed it.
   */
  readonly keysFor: (id: HostId) => readonly Uint8Array[];
  /** Wall-clock ms, for the certificates' validity. */
  readonly wallClock: () => number;
}

export class AnswerVerifier {
  /** Highest sequence number seen per ID (idKey), the bytes that carried it and its certificate (verified). */
  private readonly seen = new Map<string, Seen>();
  /** The key pinned per ID on first sight (idKey → 32 bytes). */
  private readonly pinned = new Map<string, Uint8Array>();
  /** Revoked IDs → Unix seconds until which they are refused. */
  private readonly revoked = new Map<string, number>();
  /** Slice 2: the newest user/data binding seen per ID (verified). */
  private readonly groupSeen = new Map<string, { seq: number; bytes: Uint8Array }>();

  /** maxTracked: IDs whose last sequence number and key are remembered (the oldest is forgotten first). */
  constructor(
    private readonly maxTracked: number,
    private readonly trust: AnswerTrust,
  ) {}

  /** The verified answer, or why it was refused. cert: the certificate served with the binding. */
  check(bytes: Uint8Array, expect: HostId | null, ttl: number, prefs: readonly LocatorPref[], cert: Uint8Array | null): BindingAnswer | AnswerRefusal {
    const d = decodeBinding(bytes);
    if (!d.ok) return 'forged';
    const b = d.binding;
    if (expect !== null && !b.hostId.equals(expect)) return 'mismatch';
    const k = b.hostId.key;
    const nowS = Math.floor(this.trust.wallClock() / 1000);
    if (this.isRevoked(k, nowS)) return 'revoked';
    if (cert === null) return 'noCert';
    const prev = this.seen.get(k);
    if (prev !== undefined && b.seq < prev.seq) return 'stale';
    const same = prev !== undefined && prev.seq === b.seq && sameBytes(prev.bytes, b.bytes) && sameBytes(prev.cert, cert);
    let certNotAfter: number;
    if (same) {
      // Verified before; only time can have made it invalid since.
      if (nowS >= prev.certNotAfter) return 'badCert';
      certNotAfter = prev.certNotAfter;
    } else {
      if (prev !== undefined && prev.seq === b.seq && !sameBytes(prev.bytes, b.bytes)) return 'stale';
      const v = verifyCertificate(cert, this.trust.keysFor(b.hostId), nowS);
      if (!v.ok || !certMatches(v.cert, b.hostId, b.publicKey)) return 'badCert';
      if (v.cert.prefixLen !== b.prefixLen) return 'prefixLen';
      const pin = this.pinned.get(k);
      if (pin !== undefined && !sameBytes(pin, b.publicKey) && (v.cert.previousKey === null || !sameBytes(v.cert.previousKey, pin))) return 'keyChanged';
      if (!verifyBinding(b).ok) return 'forged';
      certNotAfter = v.cert.notAfter;
      this.remember(k, { seq: b.seq, bytes: b.bytes, cert: Uint8Array.from(cert), certNotAfter }, b.publicKey);
    }
    return Object.freeze({ kind: 'binding', hostId: b.hostId, binding: b, locators: applyPrefs(b.locators, prefs), ttl, certNotAfter });
  }

  /**
   * A user or data binding as served (GROUP-REPLY or GROUP-PUSH), without its inline hosts: decoded,
   * the ID asked for (expect), derived from the key that signed it, not older than one seen before.
   */
  checkGroup(bytes: Uint8Array, expect: HostId | null, present: Uint8Array, ttl: number): Omit<GroupAnswer, 'hosts'> | 'forged' | 'mismatch' | 'stale' {
    const d = decodeGroup(bytes);
    if (!d.ok) return 'forged';
    const g = d.group;
    if ((expect !== null && !g.id.equals(expect)) || present.length !== g.hosts.length) return 'mismatch';
    const k = g.id.key;
    const prev = this.groupSeen.get(k);
    if (prev !== undefined && g.seq < prev.seq) return 'stale';
    if (prev === undefined || !sameBytes(prev.bytes, g.bytes)) {
      if (prev !== undefined && prev.seq === g.seq) return 'stale';
      if (!verifyGroup(g).ok) return 'forged';
      if (this.groupSeen.size >= this.maxTracked && !this.groupSeen.has(k)) {
        const oldest = this.groupSeen.keys().next();
        if (!oldest.done) this.groupSeen.delete(oldest.value);
      }
      this.groupSeen.set(k, { seq: g.seq, bytes: g.bytes });
    }
    return Object.freeze({ kind: 'group', hostId: g.id, group: g, present: Array.from(present, (f) => f === 1), ttl });
  }

  /**
   * The RM revoked id: forget its binding, refuse it until the certificate last seen for it would have
   * expired (it can no longer be renewed). Returns that time, Unix seconds.
   */
  revoke(id: HostId): number {
    const nowS = Math.floor(this.trust.wallClock() / 1000);
    const until = this.seen.get(id.key)?.certNotAfter ?? nowS + REVOKED_DEFAULT_S;
    this.seen.delete(id.key);
    if (this.revoked.size >= this.maxTracked) this.pruneRevoked(nowS);
    if (this.revoked.size < this.maxTracked) this.revoked.set(id.key, until);
    return until;
  }

  /** IDs refused now because they were revoked. */
  revokedCount(): number {
    this.pruneRevoked(Math.floor(this.trust.wallClock() / 1000));
    return this.revoked.size;
  }

  private isRevoked(k: string, nowS: number): boolean {
    const until = this.revoked.get(k);
    if (until === undefined) return false;
    if (nowS < until) return true;
    this.revoked.delete(k);
    return false;
  }

  private pruneRevoked(nowS: number): void {
    for (const [k, until] of this.revoked) if (until <= nowS) this.revoked.delete(k);
  }

  private remember(k: string, s: Seen, publicKey: Uint8Array): void {
    if (this.seen.size >= this.maxTracked && !this.seen.has(k)) {
      const oldest = this.seen.keys().next();
      if (!oldest.done) this.seen.delete(oldest.value);
    }
    this.seen.set(k, s);
    if (this.pinned.size >= this.maxTracked && !this.pinned.has(k)) {
      const oldest = this.pinned.keys().next();
      if (!oldest.done) this.pinned.delete(oldest.value);
    }
    this.pinned.set(k, Uint8Array.from(publicKey));
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
