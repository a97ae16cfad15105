import type { Clock } from '../shared/clock.ts';
import type { RmCounters } from './counters.ts';
import type { PushQueue, Subscriptions } from './push.ts';
import type { RateLimiter } from './ratelimit.ts';
import type { SessionTable } from './sessions.ts';
import type { BindingStore, StoredBinding } from './store/bindings.ts';
import type { MemberChanges, MemberTable } from './store/members.ts';

/**
 * Expiry, in one timer (a sweep rather than a timer per entry). Each tick:
 *   1. visits sweep.batch registrations, going on with the scan of the store where the last tick
 *      stopped, and expires those past their time (bindings.expired; the row becomes a tombstone);
 *   2. ends sessions idle for sessions.idleS, with their subscriptions and pending pushes
 *      (sessions.expired);
 *   3. forgets rate-limit buckets that have refilled;
 *   4. asks SQLite whether another process (the operator's CLI) changed the members table (one
 *      pragma) and hands the changes over (admissions, revocations);
 *   5. deletes, in bounded batches, tombstones older than tombstoneAgeMs past their expiry and spent
 *      invites past theirs (store.gc: two index seeks when there is nothing to delete).
 * The incremental scan bounds the work per tick whatever the number of bindings: a million bindings
 * at the default 50,000 per second are all visited every 20 s, well inside the 180 s expiry.
 */

/** Pure: is the registration past its expiry at now? */
export function isExpired(rec: { expiresAt: number }, now: number): boolean {
  return rec.expiresAt <= now;
}

export interface SweepParts {
  readonly clock: Clock;
  readonly store: BindingStore;
  readonly sessions: SessionTable;
  readonly subs: Subscriptions;
  readonly pushes: PushQueue;
  readonly limiter: RateLimiter;
  readonly counters: RmCounters;
  readonly members: MemberTable;
  readonly onMembers: (changes: MemberChanges) => void;
  /** Slice 2 (groups.ts): told of each expired registration (the RCA), and ticked for lapsed consents. */
  readonly groups?: { hostChanged(hostKey: string): void; tick(now: number): void };
  /** A tombstone is deleted this long after its registration expired (docs/security.md: a day + expiryS). */
  readonly tombstoneAgeMs: number;
  readonly wallClock: () => number;
}

export class Sweep {
  private timer: NodeJS.Timeout | null = null;
  /** The scan in progress; null between two full passes. The store allows expire() during it. */
  private scan: IterableIterator<[string, StoredBinding]> | null = null;

  constructor(
    private readonly p: SweepParts,
    private readonly batch: number,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => this.tick(), this.intervalMs);
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  tick(): void {
    const { clock, store, sessions, subs, pushes, limiter, counters } = this.p;
    const now = clock.now();
    this.scan ??= store.entries();
    for (let i = 0; i < this.batch; i++) {
      const n = this.scan.next();
      if (n.done) {
        this.scan = null;
        break;
      }
      const [k, rec] = n.value;
      if (isExpired(rec, now)) {
        store.expire(k);
        counters.bindingsExpired++;
        this.p.groups?.hostChanged(k);
      }
    }
    counters.sessions.expired += sessions.sweep(now, (s) => {
      subs.dropSession(s);
      pushes.dropSession(s);
    });
    limiter.prune(now);
    this.p.groups?.tick(now);
    const changes = this.p.members.poll();
    if (changes !== null) this.p.onMembers(changes);
    store.gc(now - this.p.tombstoneAgeMs, Math.floor(this.p.wallClock() / 1000), this.batch);
  }
}
