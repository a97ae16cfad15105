import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import { compareSeq, decodeBinding, verifyBinding } from '../shared/binding.ts';
import { encode } from '../shared/wire/codec.ts';
import {
  RegisterStatus,
  RejectCode,
  type Hello,
  type LocatorPref,
  type Lookup,
  type LookupReply,
  type Register,
  type RegisterReply,
  type Subscribe,
  type Unsubscribe,
} from '../shared/wire/messages.ts';
import type { RmConfig } from './config.ts';
import type { RmCounters } from './counters.ts';
import { writeLookupReply } from './fastpath.ts';
import type { Policy } from './policy.ts';
import type { PushQueue, Subscriptions } from './push.ts';
import type { Realm } from './realm.ts';
import type { ControlSocket, Session, SessionTable } from './sessions.ts';
import { StoredBinding, type BindingStore } from './store/bindings.ts';
import { idKey } from '../shared/ids.ts';
import type { Outbox } from './tx.ts';

/**
 * What the Realm Manager does with each message that passed dispatch (authenticated, decoded):
 * HELLO, LOOKUP (and its hand-written fast path), REGISTER, SUBSCRIBE/UNSUBSCRIBE, PUSH-ACK, and the
 * pushes a committed registration sends to followers. Each outcome is counted in its group (hello.*,
 * lookup.*, register.*, subscribe.*); dispatch has already counted the message as handled.
 *
 * Lookups read only the store's in-memory map. Registrations are acknowledged after their group
 * commit, and pushes go out after it too, so a subscriber never hears of a binding a crash could lose.
 */
export interface HandlerParts {
  readonly config: RmConfig;
  readonly clock: Clock;
  readonly log: Logger;
  readonly realm: Realm;
  readonly policy: Policy;
  readonly store: BindingStore;
  readonly sessions: SessionTable;
  readonly subs: Subscriptions;
  readonly pushes: PushQueue;
  readonly counters: RmCounters;
  readonly tx: Outbox;
}

const NO_PREFS: readonly never[] = Object.freeze([]);

/** A stored binding's ttl and the realm policy's prefs for its locators; null when the realm refuses it. */
export function describeBinding(realm: Realm, policy: Policy, bytes: Uint8Array): { ttl: number; prefs: readonly LocatorPref[] } | null {
  const d = decodeBinding(bytes);
  if (!d.ok || !realm.accepts(d.binding.hostId, d.binding.prefixLen)) return null;
  return { ttl: d.binding.ttl, prefs: policy.prefsFor(d.binding.locators) };
}

export class Handlers {
  private readonly c: RmCounters;
  private readonly store: BindingStore;
  private readonly tx: Outbox;
  private readonly maxTtlS: number;
  private readonly negativeTtlS: number;
  private readonly idScratch = new Uint8Array(16);

  constructor(private readonly p: HandlerParts) {
    this.c = p.counters;
    this.store = p.store;
    this.tx = p.tx;
    this.maxTtlS = p.config.lookup.maxTtlS;
    this.negativeTtlS = p.config.lookup.negativeTtlS;
  }

  hello(m: Hello, socket: ControlSocket, address: string, port: number, now: number): void {
    const { c, tx } = this;
    const r = this.p.sessions.hello(m, socket, address, port, now);
    if (r.kind === 'invalid') {
      c.hello.invalid++;
      this.p.log.debug({ reason: r.reason, address }, 'hello rejected');
      return;
    }
    if (r.kind === 'busy') {
      c.hello.busy++;
      if (r.reason === 'prefix') c.hello.prefixFull++;
      tx.sendOn(socket, encode({ type: 'reject', reqId: m.reqId, code: RejectCode.busy, sid: 0 }, null), port, address);
      return;
    }
    if (r.fresh) {
      c.hello.welcome++;
      c.sessions.created++;
    } else c.hello.retransmit++;
    r.session.lastSeen = now;
    tx.sendOn(socket, encode(r.welcome, null), port, address);
  }

  /**
   * Hot path: lookup() for the canonical LOOKUP (fastpath.ts parsed it in place; the ID is
   * buf[idOff, idOff + 16)), with the same answers, written without decoding into objects. buf is
   * borrowed from the socket: nothing of it is kept.
   */
  fastLookup(s: Session, reqId: number, buf: Buffer, idOff: number): void {
    const { c, tx, idScratch } = this;
    const k = buf.toString('latin1', idOff, idOff + 16); // idKey(buf, idOff), without a Buffer view per lookup
    const rec = this.store.get(k);
    for (let i = 0; i < 16; i++) idScratch[i] = buf[idOff + i];
    s.txSeq++;
    let n: number;
    if (rec !== undefined && s.view.mayLearn(idScratch, k)) {
      c.lookup.positive++;
      n = writeLookupReply(tx.out, s.sid, s.txSeq, s.keys.s2c, reqId, buf, idOff, Math.min(rec.ttl, this.maxTtlS), rec.bytes, rec.prefs, null);
    } else {
      // Location privacy: a denied asker gets exactly the answer for an unknown ID.
      if (rec !== undefined) c.lookup.denied++;
      else c.lookup.negative++;
      n = writeLookupReply(tx.out, s.sid, s.txSeq, s.keys.s2c, reqId, buf, idOff, this.negativeTtlS, null, NO_PREFS, null);
    }
    tx.sendWritten(s, n);
  }

  lookup(s: Session, m: Lookup): void {
    const c = this.c;
    const k = idKey(m.hostId);
    const rec = this.store.get(k);
    let ans: LookupReply;
    if (rec !== undefined && s.view.mayLearn(m.hostId, k)) {
      c.lookup.positive++;
      ans = { type: 'lookupReply', reqId: m.reqId, hostId: m.hostId, ttl: Math.min(rec.ttl, this.maxTtlS), binding: rec.bytes, prefs: rec.prefs, cert: null };
    } else {
      // Location privacy: a denied asker gets exactly the answer for an unknown ID.
      if (rec !== undefined) c.lookup.denied++;
      else c.lookup.negative++;
      ans = { type: 'lookupReply', reqId: m.reqId, hostId: m.hostId, ttl: this.negativeTtlS, binding: null, prefs: NO_PREFS, cert: null };
    }
    this.tx.reply(s, ans);
  }

  /**
   * Checks a registration (decodes, owner, realm, sequence, signature), stores it and answers after
   * the commit. The signature is checked last: it is the costly step, and a refresh (the same bytes
   * as held, verified when first stored) skips it.
   */
  register(s: Session, m: Register, now: number): void {
    const { c, store, p } = this;
    const { refreshS, expiryS } = p.config.registration;
    const answer = (hostId: Uint8Array, seq: number, status: number, expiresIn: number): void => {
      const r: RegisterReply = { type: 'registerReply', reqId: m.reqId, hostId, seq, status, expiresIn, refresh: refreshS };
      this.tx.reply(s, r);
    };
    const d = decodeBinding(m.binding);
    if (!d.ok) {
      c.register.malformed++;
      return answer(new Uint8Array(16), 0, RegisterStatus.malformed, 0);
    }
    const b = d.binding;
    const idBytes = b.hostId.toBytes();
    if (!b.hostId.equals(s.hostId)) {
      c.register.notOwner++;
      return answer(idBytes, 0, RegisterStatus.notOwner, 0);
    }
    if (!p.realm.accepts(b.hostId, b.prefixLen)) {
      c.register.notInRealm++;
      return answer(idBytes, 0, RegisterStatus.notInRealm, 0);
    }
    const k = idKey(idBytes);
    const held = store.held(k);
    const order = compareSeq(held, b);
    if (order === 'stale' || order === 'conflict') {
      c.register[order]++;
      const live = store.get(k);
      return answer(idBytes, held?.seq ?? 0, RegisterStatus.stale, live ? Math.max(0, Math.round((live.expiresAt - now) / 1000)) : 0);
    }
    const expiresAt = now + expiryS * 1000;
    const done = (isRefresh: boolean) => (err: Error | null) => {
      if (err !== null) {
        c.register.unavailable++;
        return answer(idBytes, held?.seq ?? 0, RegisterStatus.unavailable, 0);
      }
      c.register[isRefresh ? 'refresh' : 'ok']++;
      answer(idBytes, b.seq, RegisterStatus.ok, expiryS);
      if (!isRefresh) this.notifyFollowers(k, idBytes);
    };
    if (order === 'same') {
      // The same bytes as held: verified when first stored, so no signature check again.
      if (store.get(k) !== undefined) return store.refresh(k, expiresAt, done(true));
      const desc = describeBinding(p.realm, p.policy, b.bytes);
      if (desc === null) return answer(idBytes, 0, RegisterStatus.notInRealm, 0);
      return store.put(k, new StoredBinding(b.bytes, b.seq, expiresAt, desc.ttl, desc.prefs), done(false));
    }
    const v = verifyBinding(b);
    if (!v.ok) {
      c.register.forged++;
      p.log.debug({ hostId: b.hostId.toString(), reason: v.reason }, 'forged binding rejected');
      return answer(idBytes, held?.seq ?? 0, RegisterStatus.forged, 0);
    }
    store.put(k, new StoredBinding(b.bytes, b.seq, expiresAt, b.ttl, p.policy.prefsFor(b.locators)), done(false));
  }

  /** After a commit: pushes the binding now held for k to each follower the policy lets see it. */
  notifyFollowers(k: string, idBytes: Uint8Array): void {
    const followers = this.p.subs.followers(k);
    const rec = this.store.get(k);
    if (followers === undefined || rec === undefined) return;
    const now = this.p.clock.now();
    const ttl = Math.min(rec.ttl, this.maxTtlS);
    for (const f of followers) if (f.view.mayLearn(idBytes, k)) this.p.pushes.push(f, k, rec.bytes, ttl, rec.prefs, now);
  }

  /** Answers the same count for IDs the asker may not see: a SUBSCRIBE reveals nothing. */
  subscribe(s: Session, m: Subscribe): void {
    let accepted = 0;
    for (const id of m.hostIds) {
      const r = this.p.subs.add(s, idKey(id));
      if (r === 'added') this.c.subscribe.added++;
      else if (r !== 'already') {
        this.c.subscribe[r]++;
        continue;
      }
      accepted++;
    }
    this.tx.reply(s, { type: 'subscribeReply', reqId: m.reqId, accepted });
  }

  unsubscribe(s: Session, m: Unsubscribe): void {
    for (const id of m.hostIds) this.p.subs.remove(s, idKey(id));
    this.tx.reply(s, { type: 'unsubscribeReply', reqId: m.reqId });
  }

  pushAck(s: Session, pushId: number): void {
    this.p.pushes.ack(s, pushId);
  }
}
