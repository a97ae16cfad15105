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
  type Publish,
  type Serve,
  type Register,
  type RegisterReply,
  type Renew,
  type Subscribe,
  type Unsubscribe,
} from '../shared/wire/messages.ts';
import type { RmConfig } from './config.ts';
import type { RmCounters } from './counters.ts';
import { writeLookupReply } from './fastpath.ts';
import type { Policy } from './policy.ts';
import type { PushQueue, Subscriptions } from './push.ts';
import type { Realm } from './realm.ts';
import type { ControlSocket, HelloOutcome, Session, SessionTable } from './sessions.ts';
import { StoredBinding, type BindingStore } from './store/bindings.ts';
import { HostId, idKey } from '../shared/ids.ts';
import type { Outbox } from './tx.ts';
import type { Admission } from './admission.ts';
import type { Member } from './store/members.ts';
import { verifyHello } from './sessions.ts';
import { GroupTier } from './groups.ts';
import type { HostAnswer } from '../shared/wire/messages.ts';

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
  readonly admission: Admission;
  /** Wall-clock ms (certificates are checked against other hosts' clocks). */
  readonly wallClock: () => number;
}

/** The realm hierarchy as the handlers see it (hierarchy/federation.ts); null when not configured. */
export interface HierarchyHook {
  resolves(id: Uint8Array): boolean;
  lookup(s: Session, reqId: number, id: Uint8Array): void;
  changed(k: string, idBytes: Uint8Array): void;
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
  private readonly admission: Admission;
  /** Slice 2: user and data IDs, and the RCA that keeps their hosts' presence current (groups.ts). */
  readonly groups: GroupTier;
  /** Set by the server once the hierarchy is built (it needs the sockets). */
  hierarchy: HierarchyHook | null = null;

  constructor(private readonly p: HandlerParts) {
    this.admission = p.admission;
    this.groups = new GroupTier({ ...p, hostAnswer: (k) => this.hostAnswer(k) });
    this.c = p.counters;
    this.store = p.store;
    this.tx = p.tx;
    this.maxTtlS = p.config.lookup.maxTtlS;
    this.negativeTtlS = p.config.lookup.negativeTtlS;
  }

  /**
   * HELLO: a retransmission gets the WELCOME already given; then the membership gate (no public-key
   * work: a stranger costs a map lookup, a bad token two BLAKE2s); then the signature; a join is
   * committed before its WELCOME. Refusals are REJECTs smaller than the HELLO.
   */
  hello(m: Hello, socket: ControlSocket, address: string, port: number, now: number): void {
    const { c, admission } = this;
    const again = this.p.sessions.repeat(m);
    if (again !== null) return this.welcome(again, m, socket, address, port, now);
    const g = admission.gate(m);
    switch (g.kind) {
      case 'notMember':
        c.hello.notMember++;
        return this.reject(m, RejectCode.notMember, socket, address, port);
      case 'badToken':
        c.hello.badToken++;
        this.p.log.debug({ why: g.why, address }, 'join refused');
        return this.reject(m, RejectCode.badToken, socket, address, port);
      case 'pending':
        c.hello.joinPending++;
        return;
      case 'member':
      case 'open':
        return this.welcome(this.p.sessions.hello(m, socket, address, port, now, () => this.helloCert(g.kind === 'member' ? g.member : admission.admitOpen(HostId.fromBytes(m.hostId), m.publicKey, m.prefixLen))), m, socket, address, port, now);
      case 'join': {
        // The per-prefix session quota before the signature and the durable commit (as for a
        // member's HELLO in sessions.hello()): a full prefix must not spend the token on a busy REJECT.
        if (this.p.sessions.prefixFull(address)) return this.welcome({ kind: 'busy', reason: 'prefix' }, m, socket, address, port, now);
        const bad = verifyHello(m);
        if (bad !== null) return this.welcome({ kind: 'invalid', reason: bad }, m, socket, address, port, now);
        admission.join(m, g, (member) => {
          if (member === null) {
            c.hello.joinFailed++;
            return;
          }
          c.hello.joined++;
          this.p.log.info({ hostId: member.id.toString(), address }, 'host joined the realm with a token');
          const r = this.p.sessions.hello(m, socket, address, port, this.p.clock.now(), () => this.helloCert(member), true);
          this.welcome(r, m, socket, address, port, now);
        });
        return;
      }
    }
  }

  private helloCert(member: Member): Uint8Array | null {
    return this.admission.certFor(member, this.admission.nowS());
  }

  private reject(m: Hello, code: number, socket: ControlSocket, address: string, port: number): void {
    this.tx.sendOn(socket, encode({ type: 'reject', reqId: m.reqId, code, sid: 0 }, null), port, address);
  }

  private welcome(r: HelloOutcome, m: Hello, socket: ControlSocket, address: string, port: number, now: number): void {
    const { c, tx } = this;
    if (r.kind === 'invalid') {
      c.hello.invalid++;
      this.p.log.debug({ reason: r.reason, address }, 'hello rejected');
      return;
    }
    if (r.kind === 'busy') {
      c.hello.busy++;
      if (r.reason === 'prefix') c.hello.prefixFull++;
      return this.reject(m, RejectCode.busy, socket, address, port);
    }
    if (r.fresh) {
      c.hello.welcome++;
      c.sessions.created++;
    } else c.hello.retransmit++;
    r.session.lastSeen = now;
    tx.sendOn(socket, encode(r.welcome, null), port, address);
  }

  /** RENEW: a fresh certificate for the session's host (nil: no longer a member). */
  renew(s: Session, m: Renew): void {
    const member = this.admission.members.get(s.hostId.key);
    const cert = member === undefined ? null : this.admission.certFor(member, this.admission.nowS());
    this.c.renew[cert === null ? 'refused' : 'ok']++;
    this.tx.reply(s, { type: 'renewReply', reqId: m.reqId, cert });
  }

  /**
   * The operator revoked m (the CLI, noticed by the sweep, or the in-process API): its sessions end,
   * its binding expires (a tombstone), and every follower that may see it is sent a REVOKE.
   */
  revoked(m: Member): void {
    const { p, c } = this;
    const k = m.key;
    c.members.revoked++;
    c.sessions.revoked += p.sessions.endHost(k, (s) => {
      p.subs.dropSession(s);
      p.pushes.dropSession(s);
    });
    if (this.store.get(k) !== undefined) this.store.expire(k);
    this.groups.hostChanged(k);
    const idBytes = m.id.toBytes();
    const now = p.clock.now();
    for (const f of p.subs.followers(k) ?? []) {
      if (!f.view.mayLearn(idBytes, k)) continue;
      if (p.pushes.revoke(f, k, idBytes, now)) c.members.revokesPushed++;
    }
    p.log.info({ hostId: m.id.toString() }, 'member revoked: sessions ended, binding expired, followers told');
  }

  /** The member record behind a stored binding, and the certificate to serve with it now (null: none). */
  certOf(rec: StoredBinding, k: string): Uint8Array | null {
    let m = rec.member ?? this.admission.members.get(k);
    if (m === undefined && this.admission.open) {
      const d = decodeBinding(rec.bytes);
      if (d.ok) m = this.admission.admitOpen(d.binding.hostId, d.binding.publicKey, d.binding.prefixLen);
    }
    return m === undefined ? null : this.admission.certFor(m, Math.floor(this.p.wallClock() / 1000));
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
    // A user or data ID (slice 2): the general encoder, off the host-lookup fast path.
    if (rec === undefined && this.groups.has(k)) return this.groups.lookup(s, reqId, Uint8Array.from(idScratch), k);
    // Another realm's host (or one under a delegated prefix): through the hierarchy's shared cache.
    if (rec === undefined && this.hierarchy?.resolves(idScratch) === true) return this.hierarchy.lookup(s, reqId, idScratch);
    s.txSeq++;
    let n: number;
    // A binding goes out only with its host's certificate (a revoked host's binding is expired anyway).
    const cert = rec !== undefined && s.view.mayLearn(idScratch, k) ? this.certOf(rec, k) : null;
    if (rec !== undefined && cert !== null) {
      c.lookup.positive++;
      n = writeLookupReply(tx.out, s.sid, s.txSeq, s.keys.s2c, reqId, buf, idOff, Math.min(rec.ttl, this.maxTtlS), rec.bytes, rec.prefs, cert);
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
    if (rec === undefined && this.groups.has(k)) return this.groups.lookup(s, m.reqId, m.hostId, k);
    if (rec === undefined && this.hierarchy?.resolves(m.hostId) === true) return this.hierarchy.lookup(s, m.reqId, m.hostId);
    let ans: LookupReply;
    const cert = rec !== undefined && s.view.mayLearn(m.hostId, k) ? this.certOf(rec, k) : null;
    if (rec !== undefined && cert !== null) {
      c.lookup.positive++;
      ans = { type: 'lookupReply', reqId: m.reqId, hostId: m.hostId, ttl: Math.min(rec.ttl, this.maxTtlS), binding: rec.bytes, prefs: rec.prefs, cert };
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
    // The key pinned for the member (its HELLO proved it; a session outlives nothing but revocation).
    const member = this.admission.members.get(k);
    if (member === undefined || !member.active) {
      c.register.notOwner++;
      return answer(idBytes, 0, RegisterStatus.notOwner, 0);
    }
    if (!Buffer.from(member.publicKey).equals(Buffer.from(b.publicKey))) {
      c.register.forged++;
      return answer(idBytes, 0, RegisterStatus.forged, 0);
    }
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
      return store.put(k, new StoredBinding(b.bytes, b.seq, expiresAt, desc.ttl, desc.prefs, member), done(false));
    }
    const v = verifyBinding(b);
    if (!v.ok) {
      c.register.forged++;
      p.log.debug({ hostId: b.hostId.toString(), reason: v.reason }, 'forged binding rejected');
      return answer(idBytes, held?.seq ?? 0, RegisterStatus.forged, 0);
    }
    store.put(k, new StoredBinding(b.bytes, b.seq, expiresAt, b.ttl, p.policy.prefsFor(b.locators), member), done(false));
  }

  /** A host's binding, prefs and certificate as served inline with a user/data answer; null when none. */
  hostAnswer(k: string): HostAnswer | null {
    const rec = this.store.get(k);
    const cert = rec === undefined ? null : this.certOf(rec, k);
    if (rec === undefined || cert === null) return null;
    return { binding: rec.bytes, prefs: rec.prefs, cert, ttl: Math.min(rec.ttl, this.maxTtlS) };
  }

  /** After a commit: pushes the binding now held for k to each follower the policy lets see it. */
  notifyFollowers(k: string, idBytes: Uint8Array): void {
    // The RCA first: a host's new locators may make it present or absent for the user/data IDs listing it.
    this.groups.hostChanged(k);
    this.hierarchy?.changed(k, idBytes);
    const followers = this.p.subs.followers(k);
    const rec = this.store.get(k);
    if (followers === undefined || rec === undefined) return;
    const now = this.p.clock.now();
    const ttl = Math.min(rec.ttl, this.maxTtlS);
    const cert = this.certOf(rec, k);
    if (cert === null) return;
    for (const f of followers) if (f.view.mayLearn(idBytes, k)) this.p.pushes.push(f, k, rec.bytes, ttl, rec.prefs, now, cert);
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

  publish(s: Session, m: Publish): void {
    this.groups.publish(s, m);
  }

  serve(s: Session, m: Serve, now: number): void {
    this.groups.serve(s, m, now);
  }

  pushAck(s: Session, pushId: number): void {
    this.p.pushes.ack(s, pushId);
  }
}
