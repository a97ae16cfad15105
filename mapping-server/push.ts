import type { Clock } from '../shared/clock.ts';
import type { LocatorPref } from '../shared/wire/messages.ts';
import type { PendingPush, Session } from './sessions.ts';

/**
 * Subscriptions and push delivery.
 *
 * 1. A session follows IDs (subscribe); when a newer binding for one of them is committed, the RM
 *    pushes it to every follower the realm policy lets see it (others follow silently: the subscribe
 *    answer is the same, so it reveals nothing).
 * 2. A push is retransmitted with exponential backoff until acknowledged or maxAttempts is reached.
 *    Only the newest binding per (session, ID) is kept pending: a newer one replaces it.
 * 3. Everything is bounded, per holder first so that nobody fills a pool others need (docs/security.md,
 *    decision 5): follows per session and per host ID (summed over its sessions) and in total;
 *    pending pushes per session (a session over its cap loses its own oldest pending push, never
 *    another session's) and in total. Overflow is counted.
 */
const NO_CERT = new Uint8Array(0);

export type PushDecision = 'wait' | 'send' | 'giveUp';

/** Pure: what to do with a pending push at time now. */
export function decidePush(p: { attempts: number; nextAt: number }, now: number, maxAttempts: number): PushDecision {
  if (now < p.nextAt) return 'wait';
  return p.attempts >= maxAttempts ? 'giveUp' : 'send';
}

/** Pure: the wait after attempt n (1-based): base, 2×, 4×, … capped at 16× base. */
export function pushBackoffMs(attempts: number, baseMs: number): number {
  return baseMs * 2 ** Math.min(Math.max(attempts - 1, 0), 4);
}

export type SubscribeOutcome = 'added' | 'already' | 'sessionFull' | 'idFull' | 'tableFull';

export class Subscriptions {
  private readonly byKey = new Map<string, Set<Session>>();
  /** Follows per follower host ID (its key), summed over its sessions. */
  private readonly perIdCount = new Map<string, number>();
  private count = 0;

  constructor(
    private readonly perSession: number,
    private readonly max: number,
    private readonly perId: number = Infinity,
  ) {}

  get total(): number {
    return this.count;
  }

  add(s: Session, key: string): SubscribeOutcome {
    if (s.subs.has(key)) return 'already';
    if (s.subs.size >= this.perSession) return 'sessionFull';
    const byId = this.perIdCount.get(s.hostId.key) ?? 0;
    if (byId >= this.perId) return 'idFull';
    if (this.count >= this.max) return 'tableFull';
    this.perIdCount.set(s.hostId.key, byId + 1);
    let set = this.byKey.get(key);
    if (set === undefined) {
      set = new Set();
      this.byKey.set(key, set);
    }
    set.add(s);
    s.subs.add(key);
    this.count++;
    return 'added';
  }

  remove(s: Session, key: string): void {
    if (!s.subs.delete(key)) return;
    this.count--;
    const byId = (this.perIdCount.get(s.hostId.key) ?? 1) - 1;
    if (byId <= 0) this.perIdCount.delete(s.hostId.key);
    else this.perIdCount.set(s.hostId.key, byId);
    const set = this.byKey.get(key);
    if (set === undefined) return;
    set.delete(s);
    if (set.size === 0) this.byKey.delete(key);
  }

  dropSession(s: Session): void {
    for (const key of [...s.subs]) this.remove(s, key);
  }

  followers(key: string): ReadonlySet<Session> | undefined {
    return this.byKey.get(key);
  }
}

export interface PushCounters {
  sent: number;
  retransmitted: number;
  acked: number;
  gaveUp: number;
  replaced: number;
  /** A session over push.perSession: its own oldest pending push was dropped for the new one. */
  sessionFull: number;
  overflow: number;
}

export class PushQueue {
  private readonly active = new Set<Session>();
  private count = 0;
  readonly counters: PushCounters = { sent: 0, retransmitted: 0, acked: 0, gaveUp: 0, replaced: 0, sessionFull: 0, overflow: 0 };

  constructor(
    private readonly maxPending: number,
    private readonly retransmitMs: number,
    private readonly maxAttempts: number,
    private readonly send: (s: Session, p: PendingPush) => void,
    private readonly perSession: number = Infinity,
  ) {}

  get pending(): number {
    return this.count;
  }

  /** Queues and sends at once. False when the queue is full (counted). cert: the host's certificate. */
  push(s: Session, key: string, binding: Uint8Array, ttl: number, prefs: readonly LocatorPref[], now: number, cert: Uint8Array, endorsement: Uint8Array | null = null): boolean {
    return this.enqueue(s, key, { binding, ttl, prefs, cert, revoke: false, present: null, endorsement }, now);
  }

  /** A GROUP-PUSH (slice 2: the RCA): a user/data binding and its hosts' presence, to a follower of its ID. */
  pushGroup(s: Session, key: string, binding: Uint8Array, present: Uint8Array, ttl: number, now: number): boolean {
    return this.enqueue(s, key, { binding, ttl, prefs: [], cert: NO_CERT, revoke: false, present, endorsement: null }, now);
  }

  /**
   * A REVOKE of the ID key (whose 16 bytes are hostId) to a follower: the same push ID space and
   * retransmission, and it replaces a binding push for that ID still pending.
   */
  revoke(s: Session, key: string, hostId: Uint8Array, now: number): boolean {
    return this.enqueue(s, key, { binding: hostId, ttl: 0, prefs: [], cert: NO_CERT, revoke: true, present: null, endorsement: null }, now);
  }

  /**
   * Queues and sends at once. False when the queue is full (counted). A session at its own cap
   * makes room by dropping its oldest pending push (Map order is insertion order, and a replaced
   * push is re-inserted): the newest binding matters most to a follower, and a session that does
   * not acknowledge can only crowd out itself.
   */
  private enqueue(s: Session, key: string, what: Pick<PendingPush, 'binding' | 'ttl' | 'prefs' | 'cert' | 'revoke' | 'present' | 'endorsement'>, now: number): boolean {
    const old = s.pushByKey.get(key);
    if (old !== undefined) {
      s.pushes.delete(old);
      this.count--;
      this.counters.replaced++;
    } else if (s.pushes.size >= this.perSession) {
      const oldest = s.pushes.values().next();
      if (!oldest.done) this.remove(s, oldest.value);
      this.counters.sessionFull++;
    } else if (this.count >= this.maxPending) {
      this.counters.overflow++;
      return false;
    }
    const pushId = s.nextPushId;
    s.nextPushId = s.nextPushId >= 0xffffffff ? 1 : s.nextPushId + 1;
    const p: PendingPush = { key, pushId, ...what, attempts: 1, nextAt: now + pushBackoffMs(1, this.retransmitMs) };
    s.pushes.set(pushId, p);
    s.pushByKey.set(key, pushId);
    this.count++;
    this.active.add(s);
    this.counters.sent++;
    this.send(s, p);
    return true;
  }

  /** True if pushId was pending for s. */
  ack(s: Session, pushId: number): boolean {
    const p = s.pushes.get(pushId);
    if (p === undefined) return false;
    this.remove(s, p);
    this.counters.acked++;
    return true;
  }

  /** Retransmits what is due; gives up on what has used its attempts. */
  tick(now: number): void {
    for (const s of this.active) {
      for (const p of s.pushes.values()) {
        const d = decidePush(p, now, this.maxAttempts);
        if (d === 'wait') continue;
        if (d === 'giveUp') {
          this.remove(s, p);
          this.counters.gaveUp++;
          continue;
        }
        p.attempts++;
        p.nextAt = now + pushBackoffMs(p.attempts, this.retransmitMs);
        this.counters.retransmitted++;
        this.send(s, p);
      }
    }
  }

  dropSession(s: Session): void {
    this.count -= s.pushes.size;
    s.pushes.clear();
    s.pushByKey.clear();
    this.active.delete(s);
  }

  private remove(s: Session, p: PendingPush): void {
    s.pushes.delete(p.pushId);
    if (s.pushByKey.get(p.key) === p.pushId) s.pushByKey.delete(p.key);
    this.count--;
    if (s.pushes.size === 0) this.active.delete(s);
  }
}

/**
 * Drives PushQueue.tick() while pushes are pending: one interval, armed by a send and cleared when
 * the queue is empty again, so an idle RM runs no push timer. Armed only between start() and stop():
 * the commits that stop() flushes may still push, and must not leave a timer behind.
 */
export class PushTicker {
  private timer: NodeJS.Timeout | null = null;
  private enabled = false;

  constructor(
    private readonly queue: PushQueue,
    private readonly clock: Clock,
    private readonly periodMs: number,
  ) {}

  start(): void {
    this.enabled = true;
  }

  arm(): void {
    if (this.timer !== null || !this.enabled) return;
    this.timer = setInterval(() => {
      this.queue.tick(this.clock.now());
      if (this.queue.pending === 0) this.clear();
    }, this.periodMs);
  }

  stop(): void {
    this.enabled = false;
    this.clear();
  }

  private clear(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
