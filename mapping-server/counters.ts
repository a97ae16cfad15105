import { DROP_REASONS, type DropReason } from '../shared/wire/messages.ts';
import type { PushQueue } from './push.ts';
import type { RateLimiter } from './ratelimit.ts';
import type { StoreCounters } from './store/bindings.ts';

/**
 * The Realm Manager's counters: one mutable object the parts bump, and its flattening into the
 * dotted names of counters() (docs/control-protocol.md lists them).
 *
 * Every received datagram ends in exactly one Outcome: a drop reason (rx.drop.<reason>) or the type
 * it was handled as (rx.handled.<type>). dispatch.ts returns the outcome and counts it in one place,
 * so rx.datagrams = Σ rx.drop.* + Σ rx.handled.* holds by construction (the fuzz test checks it).
 * What a handled message leads to is counted on top, per group (hello.*, lookup.*, register.*, …).
 */
export const HANDLED = ['hello', 'lookup', 'register', 'subscribe', 'unsubscribe', 'pushAck', 'challengeReply', 'renew', 'publish', 'serve', 'rmQuery', 'rmAnswer', 'rmPush', 'rmPushAck'] as const;
export type HandledType = (typeof HANDLED)[number];

/**
 * The decoder's drop reasons; internalError: handling the datagram threw (a bug, or the store
 * failing a read; dispatch.ts catches it, so one datagram is lost, not the process); unvalidated: a
 * session's valid message from an address the session has not validated (it may draw a CHALLENGE,
 * docs/security.md decision 4, but is not handled).
 */
export type RmDropReason = DropReason | 'internalError' | 'unvalidated';
export const RM_DROP_REASONS: readonly RmDropReason[] = [...DROP_REASONS, 'internalError', 'unvalidated'];

export type Outcome = RmDropReason | HandledType;

export interface RmCounters {
  /** Datagrams that reached dispatch (oversize ones are added from the sockets in counters()). */
  rx: number;
  /** Where each of them ended. */
  readonly ends: Record<Outcome, number>;
  tx: number;
  txErrors: number;
  /**
   * busy: REJECT(busy) sent; prefixFull: of those, for the per-prefix session quota.
   * notMember: no member with this key (or revoked), refused before any signature check; badToken: a
   * join proof that did not check out (expired, used, wrong prefix, wrong proof); joined: a token
   * spent, durably; joinPending: a HELLO retransmitted while its join commits; joinFailed: the
   * commit failed (the client retries).
   */
  readonly hello: {
    welcome: number;
    retransmit: number;
    invalid: number;
    busy: number;
    prefixFull: number;
    notMember: number;
    badToken: number;
    joined: number;
    joinPending: number;
    joinFailed: number;
  };
  /** sent: COOKIEs answered; accepted: HELLOs with a valid one; stale: with a wrong or expired one. */
  readonly cookie: { sent: number; accepted: number; stale: number };
  /** Return routability: CHALLENGEs sent, held back (one per 200 ms), not drawn (message shorter
   *  than a CHALLENGE), replies with a wrong token or from elsewhere, sessions moved. */
  readonly challenge: { sent: number; held: number; tooShort: number; badReply: number; moved: number };
  /** Which budget a rx.drop.rateLimited datagram hit; replies: COOKIE/REJECT not sent (global budget). */
  readonly ratelimit: { session: number; register: number; prefix: number; hello: number; replies: number };
  /** RENEW answered with a certificate, or with nil (no longer a member). */
  readonly renew: { ok: number; refused: number };
  /** Revocations applied, and REVOKEs queued to followers. */
  readonly members: { revoked: number; revokesPushed: number; admitted: number };
  readonly lookup: { positive: number; negative: number; denied: number };
  readonly register: {
    ok: number;
    refresh: number;
    stale: number;
    conflict: number;
    forged: number;
    notInRealm: number;
    notOwner: number;
    malformed: number;
    unavailable: number;
  };
  readonly subscribe: { added: number; sessionFull: number; idFull: number; tableFull: number };
  readonly reject: { sessionUnknown: number };
  readonly sessions: { created: number; expired: number; evicted: number; revoked: number };
  bindingsExpired: number;
}

export function newCounters(): RmCounters {
  const ends = {} as Record<Outcome, number>;
  for (const k of [...RM_DROP_REASONS, ...HANDLED]) ends[k] = 0;
  return {
    rx: 0,
    ends,
    tx: 0,
    txErrors: 0,
    hello: { welcome: 0, retransmit: 0, invalid: 0, busy: 0, prefixFull: 0, notMember: 0, badToken: 0, joined: 0, joinPending: 0, joinFailed: 0 },
    cookie: { sent: 0, accepted: 0, stale: 0 },
    challenge: { sent: 0, held: 0, tooShort: 0, badReply: 0, moved: 0 },
    ratelimit: { session: 0, register: 0, prefix: 0, hello: 0, replies: 0 },
    renew: { ok: 0, refused: 0 },
    members: { revoked: 0, revokesPushed: 0, admitted: 0 },
    lookup: { positive: 0, negative: 0, denied: 0 },
    register: { ok: 0, refresh: 0, stale: 0, conflict: 0, forged: 0, notInRealm: 0, notOwner: 0, malformed: 0, unavailable: 0 },
    subscribe: { added: 0, sessionFull: 0, idFull: 0, tableFull: 0 },
    reject: { sessionUnknown: 0 },
    sessions: { created: 0, expired: 0, evicted: 0, revoked: 0 },
    bindingsExpired: 0,
  };
}

/** The live sizes counters() reads from the parts at the time of the snapshot. */
export interface CounterSources {
  /** Datagrams the sockets dropped for their size before they reached dispatch. */
  readonly oversize: number;
  readonly pushes: Pick<PushQueue, 'counters' | 'pending'>;
  readonly limiter: Pick<RateLimiter, 'size' | 'overflowHits'>;
  readonly sessionsLive: number;
  readonly subscriptionsLive: number;
  /** Members now (admitted, not revoked). */
  readonly membersActive: number;
  /** Absent before start() when the store is opened from the config. */
  readonly store: { readonly size: number; readonly counters: StoreCounters } | undefined;
  /** Slice 2 (groups.ts): counters, and how many user/data IDs are held. */
  readonly groups?: { readonly size: number; readonly counters: Readonly<Record<string, number>> };
  /** The realm hierarchy (hierarchy/federation.ts), already named hierarchy.*; absent when not configured. */
  readonly hierarchy?: Readonly<Record<string, number>>;
}

/** A flat snapshot: `rx.drop.badMac`, `lookup.positive`, `store.commits`, … */
export function flattenCounters(c: RmCounters, src: CounterSources): Record<string, number> {
  const out: Record<string, number> = { 'rx.datagrams': c.rx + src.oversize, 'tx.datagrams': c.tx, 'tx.errors': c.txErrors };
  for (const r of RM_DROP_REASONS) out[`rx.drop.${r}`] = c.ends[r];
  // Oversize datagrams never reached dispatch (the socket drops them), but they were received.
  out['rx.drop.tooLong'] += src.oversize;
  for (const t of HANDLED) out[`rx.handled.${t}`] = c.ends[t];
  for (const group of ['hello', 'cookie', 'challenge', 'ratelimit', 'lookup', 'register', 'subscribe', 'reject', 'sessions', 'renew', 'members'] as const) {
    for (const [k, v] of Object.entries(c[group])) out[`${group}.${k}`] = v;
  }
  for (const [k, v] of Object.entries(src.pushes.counters)) out[`push.${k}`] = v;
  out['push.pending'] = src.pushes.pending;
  out['bindings.live'] = src.store?.size ?? 0;
  out['bindings.expired'] = c.bindingsExpired;
  out['sessions.live'] = src.sessionsLive;
  out['subscriptions.live'] = src.subscriptionsLive;
  out['members.active'] = src.membersActive;
  out['ratelimit.prefixes'] = src.limiter.size;
  out['ratelimit.overflow'] = src.limiter.overflowHits;
  if (src.store) for (const [k, v] of Object.entries(src.store.counters)) out[`store.${k}`] = v;
  out['groups.live'] = src.groups?.size ?? 0;
  for (const [k, v] of Object.entries(src.groups?.counters ?? {})) out[`groups.${k}`] = v;
  Object.assign(out, src.hierarchy ?? {});
  return out;
}
