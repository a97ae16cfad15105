import { applyPrefs, decodeBinding, verifyBinding, type Binding, type Locator } from '../../shared/binding.ts';
import type { HostId } from '../../shared/ids.ts';
import type { LocatorPref } from '../../shared/wire/messages.ts';

/**
 * What the RM serves, checked before anyone uses it: every binding in a LOOKUP-REPLY or PUSH is
 * decoded and verified (structure, ID = hash of key, signature, the ID asked for) and its sequence
 * number must not be below one already seen for that ID. Forged, mismatched and stale bindings are
 * counted and never returned.
 *
 * The same bytes as the last verified ones are not verified again (a refresh costs no Ed25519 work);
 * the same sequence number with other bytes is refused: one of the two is not what the host signed.
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
}

/** Unknown ID, expired, or not visible to this host (indistinguishable by design). */
export interface NegativeAnswer {
  readonly kind: 'negative';
  readonly hostId: HostId;
  readonly ttl: number;
}

export type LookupResult = BindingAnswer | NegativeAnswer;

export type AnswerRefusal = 'forged' | 'mismatch' | 'stale';

export class AnswerVerifier {
  /** Highest sequence number seen per ID (idKey) and the bytes that carried it (verified). */
  private readonly seen = new Map<string, { seq: number; bytes: Uint8Array }>();

  /** maxTracked: IDs whose last sequence number is remembered (the oldest is forgotten first). */
  constructor(private readonly maxTracked: number) {}

  /** The verified answer, or why it was refused. */
  check(bytes: Uint8Array, expect: HostId | null, ttl: number, prefs: readonly LocatorPref[]): BindingAnswer | AnswerRefusal {
    const d = decodeBinding(bytes);
    if (!d.ok) return 'forged';
    const b = d.binding;
    if (expect !== null && !b.hostId.equals(expect)) return 'mismatch';
    const prev = this.seen.get(b.hostId.key);
    if (prev !== undefined && b.seq < prev.seq) return 'stale';
    const same = prev !== undefined && prev.seq === b.seq && Buffer.from(prev.bytes).equals(Buffer.from(b.bytes));
    if (!same) {
      if (prev !== undefined && prev.seq === b.seq) return 'stale';
      if (!verifyBinding(b).ok) return 'forged';
      if (this.seen.size >= this.maxTracked && prev === undefined) {
        const oldest = this.seen.keys().next();
        if (!oldest.done) this.seen.delete(oldest.value);
      }
      this.seen.set(b.hostId.key, { seq: b.seq, bytes: b.bytes });
    }
    return Object.freeze({ kind: 'binding', hostId: b.hostId, binding: b, locators: applyPrefs(b.locators, prefs), ttl });
  }
}
