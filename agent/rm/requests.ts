import type { Clock } from '../../shared/clock.ts';
import { RealmnetError } from '../../shared/errors.ts';
import type { ControlMessage } from '../../shared/wire/messages.ts';

/**
 * The RM client's requests in flight: IDs, retransmission with backoff, and the bound on how many.
 *
 * 1. start() takes a request ID, keeps the request and transmits it at once when a session exists;
 *    more than `max` in flight are refused (RM_CLIENT_BUSY) before anything is kept.
 * 2. tick(now) (one timer for all of them, run by the client) resends what decideRequest says and
 *    fails what is out of attempts (TIMEOUT).
 * 3. An answer settles its request by ID; an answer to an ID no longer kept is late (the caller counts).
 * The body is kept, not the bytes: each transmission is encoded again under the session of the moment
 * (fresh sequence number and MAC), so a request survives a new session.
 */
export interface RetransmitPolicy {
  /** First wait for an answer, ms. */
  readonly initialMs: number;
  /** Cap on the wait between attempts, ms. */
  readonly maxMs: number;
  /** Transmissions before giving up (the first included). */
  readonly attempts: number;
}

export const DEFAULT_RETRANSMIT: RetransmitPolicy = Object.freeze({ initialMs: 250, maxMs: 4_000, attempts: 6 });

/** Pure: the wait after transmission n (1-based): initial × 2^(n-1), capped, with ±25% jitter. */
export function retransmitDelay(attempt: number, p: RetransmitPolicy, random01 = 0.5): number {
  const base = Math.min(p.maxMs, p.initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.75 + 0.5 * random01));
}

export type RequestDecision = 'wait' | 'resend' | 'fail';

/** Pure: what to do with a request in flight at time now. */
export function decideRequest(r: { attempts: number; nextAt: number }, now: number, p: RetransmitPolicy): RequestDecision {
  if (now < r.nextAt) return 'wait';
  return r.attempts >= p.attempts ? 'fail' : 'resend';
}

export interface PendingRequest {
  readonly reqId: number;
  readonly body: ControlMessage;
  attempts: number;
  nextAt: number;
  /** Sent at least once under the current session. */
  sent: boolean;
  readonly settle: (m: ControlMessage | Error) => void;
}

export interface RequestTableDeps {
  readonly clock: Clock;
  readonly random: () => number;
  /** Encodes and sends the body under the current session; false when there is none (nothing sent). */
  readonly transmit: (body: ControlMessage) => boolean;
  readonly onSent: (retransmission: boolean) => void;
  readonly onTimeout: () => void;
}

export class RequestTable {
  private readonly pending = new Map<number, PendingRequest>();
  private nextReqId = 1;

  constructor(
    private readonly policy: RetransmitPolicy,
    private readonly max: number,
    private readonly deps: RequestTableDeps,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /** A fresh request ID (the HELLO takes one too). */
  takeId(): number {
    const id = this.nextReqId;
    this.nextReqId = this.nextReqId >= 0xffffffff ? 1 : this.nextReqId + 1;
    return id;
  }

  /** Whether one more request may be kept. */
  hasRoom(): boolean {
    return this.pending.size < this.max;
  }

  /** Keeps a request and transmits it if a session exists; resolves with the answer of type `answerType`. */
  start<T extends ControlMessage['type']>(make: (reqId: number) => ControlMessage, answerType: T | readonly T[]): Promise<Extract<ControlMessage, { type: T }>> {
    const types: readonly string[] = typeof answerType === 'string' ? [answerType] : answerType;
    if (!this.hasRoom()) return Promise.reject(busyError(this.max));
    return new Promise((resolve, reject) => {
      const reqId = this.takeId();
      const p: PendingRequest = {
        reqId,
        body: make(reqId),
        attempts: 0,
        nextAt: 0,
        sent: false,
        settle: (m) => {
          this.pending.delete(reqId);
          if (m instanceof Error) reject(m);
          else if (!types.includes(m.type)) reject(new RealmnetError('INTERNAL', `expected ${types.join(' or ')}, got ${m.type}`));
          else resolve(m as Extract<ControlMessage, { type: T }>);
        },
      };
      this.pending.set(reqId, p);
      this.send(p, this.deps.clock.now(), false);
    });
  }

  /** The answer for reqId; false when nothing waits for it (late). */
  settle(reqId: number, m: ControlMessage): boolean {
    const p = this.pending.get(reqId);
    if (p === undefined) return false;
    p.settle(m);
    return true;
  }

  /** A new session: everything in flight goes out again under it. */
  resendAll(): void {
    const now = this.deps.clock.now();
    for (const p of this.pending.values()) this.send(p, now, false);
  }

  /** The session is gone: nothing counts as sent under the next one yet. */
  markUnsent(): void {
    for (const p of this.pending.values()) p.sent = false;
  }

  /** Retransmissions and timeouts due at now. */
  tick(now: number): void {
    for (const p of this.pending.values()) {
      if (!p.sent) continue;
      const d = decideRequest(p, now, this.policy);
      if (d === 'resend') this.send(p, now, true);
      else if (d === 'fail') {
        this.deps.onTimeout();
        p.settle(new RealmnetError('TIMEOUT', `no answer from the Realm Manager after ${p.attempts} attempts`, 'is the RM running and reachable on UDP 4342?'));
      }
    }
  }

  /** Requests that never got a session for as long as their own attempts would have taken fail. */
  failUnsent(): void {
    for (const p of this.pending.values()) {
      if (p.sent) continue;
      p.attempts++;
      if (p.attempts >= this.policy.attempts) {
        this.deps.onTimeout();
        p.settle(new RealmnetError('TIMEOUT', 'no Realm Manager answered the session set-up', 'is the RM running and reachable on UDP 4342?'));
      }
    }
  }

  failAll(e: Error): void {
    for (const p of [...this.pending.values()]) p.settle(e);
  }

  private send(p: PendingRequest, now: number, retransmission: boolean): void {
    if (!this.deps.transmit(p.body)) return;
    p.attempts++;
    p.sent = true;
    p.nextAt = now + retransmitDelay(p.attempts, this.policy, this.deps.random());
    this.deps.onSent(retransmission);
  }
}

export function busyError(max: number): RealmnetError {
  return new RealmnetError('RM_CLIENT_BUSY', `more than ${max} requests to the Realm Manager in flight`, 'slow down or raise maxOutstanding');
}
