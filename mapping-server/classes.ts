import { CustomerClass, type CustomerClassValue } from '../shared/wire/messages.ts';
import type { ClassName, Policy } from './policy.ts';

/**
 * Customer classes (docs/hierarchy.md): how the hierarchy keeps a host's binding, by how often the
 * host re-homes. The operator may set a class per host or prefix (policy.classes); every other host's
 * class is learned from the changes the RM itself commits, which is the step beyond LISP-CONS, NERD,
 * DNS and Auspice: none of them chooses per class, and none learns it.
 *
 * A change is a committed registration with a new sequence number (an uplink went down or up, an
 * address changed, the agent restarted). Refreshes are not changes.
 */

export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;

export interface LearnParams {
  /** Two changes this close together make a host mobile (a failover and its return). */
  readonly mobileGapMs: number;
  /** ... if the later of them is at most this old: a host that stopped failing over falls back. */
  readonly mobileMemoryMs: number;
  /** No change for this long (and observed that long) makes a host static. */
  readonly staticAfterMs: number;
}

export const DEFAULT_LEARN: LearnParams = Object.freeze({ mobileGapMs: HOUR_MS, mobileMemoryMs: DAY_MS, staticAfterMs: 7 * DAY_MS });

/** Change times remembered per host: enough to see a burst, small enough for a million hosts. */
export const HISTORY = 4;

/**
 * The learned class. changes: the host's most recent change times (ms, ascending, at most HISTORY);
 * since: when the RM started observing it; fallback: the class of a host not yet observed long
 * enough to tell. Pure: the clock is an argument.
 */
export function learnClass(changes: readonly number[], since: number, now: number, fallback: ClassName, p: LearnParams = DEFAULT_LEARN): ClassName {
  for (let i = changes.length - 1; i > 0; i--) {
    if (now - changes[i] > p.mobileMemoryMs) break;
    if (changes[i] - changes[i - 1] <= p.mobileGapMs) return 'mobile';
  }
  const last = changes.length === 0 ? since : changes[changes.length - 1];
  if (now - last >= p.staticAfterMs && now - since >= p.staticAfterMs) return 'static';
  // Changed within the static horizon, or observed too briefly: a daily renumbering at most.
  return changes.length > 0 ? 'nomadic' : fallback;
}

export function classValue(c: ClassName): CustomerClassValue {
  return CustomerClass[c];
}

export function className(v: number): ClassName | 'none' {
  return v === CustomerClass.static ? 'static' : v === CustomerClass.nomadic ? 'nomadic' : v === CustomerClass.mobile ? 'mobile' : 'none';
}

/**
 * Each host's recent changes, and its class: the operator's if set, else learned. In memory: after
 * a restart every host is learned again from scratch (the fallback class meanwhile), which costs
 * at most some pushes or some staleness for a day, never correctness.
 */
export class ClassBook {
  private readonly history = new Map<string, number[]>();
  private readonly since: number;

  constructor(
    private readonly policy: Policy,
    private readonly learn: boolean,
    private readonly fallback: ClassName,
    now: number,
    private readonly maxHosts = 1_000_000,
    private readonly params: LearnParams = DEFAULT_LEARN,
  ) {
    this.since = now;
  }

  /** A committed registration with a new sequence number for key. */
  changed(key: string, now: number): void {
    let h = this.history.get(key);
    if (h === undefined) {
      if (this.history.size >= this.maxHosts) {
        const oldest = this.history.keys().next();
        if (!oldest.done) this.history.delete(oldest.value);
      }
      h = [];
      this.history.set(key, h);
    }
    h.push(now);
    if (h.length > HISTORY) h.shift();
  }

  forget(key: string): void {
    this.history.delete(key);
  }

  classOf(raw: Uint8Array, key: string, now: number): ClassName {
    const set = this.policy.classFor(raw, key);
    if (set !== null) return set;
    if (!this.learn) return this.fallback;
    return learnClass(this.history.get(key) ?? [], this.since, now, this.fallback, this.params);
  }

  /** How many hosts are in each class now (status): learned ones only for hosts with a history. */
  census(now: number, keys: Iterable<string>): Record<ClassName, number> {
    const out: Record<ClassName, number> = { static: 0, nomadic: 0, mobile: 0 };
    for (const k of keys) out[this.classOf(Buffer.from(k, 'latin1'), k, now)]++;
    return out;
  }
}
