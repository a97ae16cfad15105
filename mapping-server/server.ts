import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import { compareSeq, decodeBinding, verifyBinding } from '../shared/binding.ts';
import type { KeyPair } from '../shared/keys.ts';
import { checkMac, decodeBody, decodeHeader, encode } from '../shared/wire/codec.ts';
import {
  DROP_REASONS,
  MAX_DATAGRAM,
  MsgType,
  RegisterStatus,
  RejectCode,
  type ControlMessage,
  type DropReason,
  type Hello,
  type Lookup,
  type LookupReply,
  type Register,
  type RegisterReply,
  type Subscribe,
  type Unsubscribe,
} from '../shared/wire/messages.ts';
import type { RmConfig } from './config.ts';
import { parseLookup, parsedReqId, writeLookupReply, writePush } from './fastpath.ts';
import { createPolicy, type Policy } from './policy.ts';
import { PushQueue, Subscriptions } from './push.ts';
import { RateLimiter, takeToken, type Bucket } from './ratelimit.ts';
import { Realm } from './realm.ts';
import { Session, SessionTable, type ControlSocket, type PendingPush } from './sessions.ts';
import { BindingStore, StoredBinding } from './store/bindings.ts';
import { openControlSocket, type OnDatagram } from './udp.ts';

/**
 * The Realm Manager's control plane: register, lookup, subscribe/push, expiry.
 *
 * Every datagram enters through onDatagram():
 *   1. rate limit per source address            → drop rateLimited
 *   2. fixed header: size, version, type, sid   → drop tooShort / tooLong / badVersion / badType / badSession
 *   3. sid 0: only HELLO (global HELLO budget); else the session, its MAC, its replay window
 *                                               → drop unexpected / rateLimited / badSession / badMac / replay
 *   4. msgpack body, field by field             → drop malformed
 *      (a LOOKUP in canonical form is parsed and answered by hand instead: fastpath.ts)
 *   5. handler                                  → handled.<type>
 * so rx.datagrams = Σ rx.drop.* + Σ rx.handled.* at all times (the fuzz test checks it).
 *
 * Lookups never touch SQLite. Registrations are acknowledged after their group commit; pushes go
 * out after it too, so a subscriber never hears of a binding a crash could lose.
 */
export interface RmDeps {
  readonly clock: Clock;
  readonly log: Logger;
  /** The RM's own key: it signs session set-ups. */
  readonly key: KeyPair;
  /** Default: a SQLite store at config.store.path. Tests pass one on ':memory:'. */
  readonly store?: BindingStore;
  /** Default: the batched native socket (udp.ts). */
  readonly openSocket?: OpenSocket;
}

export type { OnDatagram };
/** buf is borrowed: valid only during the onDatagram call (the RM copies what it keeps). */
export type OpenSocket = (address: string, port: number, onDatagram: OnDatagram) => Promise<ControlSocket>;

export interface MappingServer {
  start(): Promise<void>;
  /** Closes sockets, clears timers, commits and closes the store. */
  stop(): Promise<void>;
  /** A snapshot of every counter. */
  counters(): Record<string, number>;
  /** Bound addresses (useful with port 0). */
  addresses(): readonly { address: string; port: number }[];
  readonly realm: Realm;
  /** Live bindings held. */
  bindingCount(): number;
}

const HANDLED = ['hello', 'lookup', 'register', 'subscribe', 'unsubscribe', 'pushAck'] as const;
type HandledType = (typeof HANDLED)[number];

function newCounters() {
  return {
    rx: 0,
    drop: Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>,
    handled: Object.fromEntries(HANDLED.map((t) => [t, 0])) as Record<HandledType, number>,
    tx: 0,
    txErrors: 0,
    hello: { welcome: 0, retransmit: 0, invalid: 0, busy: 0 },
    lookup: { positive: 0, negative: 0, denied: 0 },
    register: { ok: 0, refresh: 0, stale: 0, conflict: 0, forged: 0, notInRealm: 0, notOwner: 0, malformed: 0, unavailable: 0 },
    subscribe: { added: 0, sessionFull: 0, tableFull: 0 },
    reject: { sessionUnknown: 0 },
    sessions: { created: 0, expired: 0 },
    bindingsExpired: 0,
  };
}

export function createMappingServer(config: RmConfig, deps: RmDeps): MappingServer {
  const { clock, key } = deps;
  const log = deps.log.child({ module: 'rm' });
  const realm = Realm.fromConfig(config);
  const policy: Policy = createPolicy(config.policy, realm);
  const c = newCounters();
  const expiryMs = config.registration.expiryS * 1000;
  const openSocket = deps.openSocket ?? openUdpSocket;

  let store: BindingStore | null = deps.store ?? null;
  const sessions = new SessionTable(key, policy, config.sessions.max, config.sessions.idleS * 1000);
  const subs = new Subscriptions(config.subscriptions.perSession, config.subscriptions.total);
  const pushes = new PushQueue(config.push.maxPending, config.push.retransmitMs, config.push.maxAttempts, sendPush);
  const limiter = new RateLimiter(config.rateLimit.perSourcePerS, config.rateLimit.burst, config.rateLimit.maxSources, clock.now());
  const helloBucket: Bucket = { tokens: config.sessions.hellosPerS, at: clock.now() };
  const sockets: ControlSocket[] = [];
  let sweepTimer: NodeJS.Timeout | null = null;
  let pushTimer: NodeJS.Timeout | null = null;
  let sweepIter: IterableIterator<[string, StoredBinding]> | null = null;
  let running = false;
  // One answer at a time is built here and copied into the socket's send queue.
  const out = Buffer.allocUnsafe(MAX_DATAGRAM);
  const idScratch = new Uint8Array(16);
  const maxTtlS = config.lookup.maxTtlS;

  function describe(bytes: Uint8Array): { ttl: number; prefs: StoredBinding['prefs'] } | null {
    const d = decodeBinding(bytes);
    if (!d.ok || !realm.accepts(d.binding.hostId, d.binding.prefixLen)) return null;
    return { ttl: d.binding.ttl, prefs: policy.prefsFor(d.binding.locators) };
  }

  // ---- sending ----------------------------------------------------------------------------------

  function sendOn(socket: ControlSocket, buf: Uint8Array, port: number, address: string, length = buf.length): void {
    try {
      socket.send(buf, port, address, length);
      c.tx++;
    } catch {
      c.txErrors++;
    }
  }

  function reply(s: Session, msg: ControlMessage): void {
    s.txSeq++;
    sendOn(s.socket, encode(msg, { sid: s.sid, seq: s.txSeq, key: s.keys.s2c }), s.port, s.address);
  }

  function sendPush(s: Session, p: PendingPush): void {
    // Written by hand into the one reused buffer (fastpath.ts): no msgpackr, no Buffer per follower.
    s.txSeq++;
    const n = writePush(out, s.sid, s.txSeq, s.keys.s2c, p.pushId, p.binding, p.ttl, p.prefs);
    if (n === 0) c.txErrors++;
    else sendOn(s.socket, out, s.port, s.address, n);
    if (pushTimer === null && running) {
      pushTimer = setInterval(() => {
        pushes.tick(clock.now());
        if (pushes.pending === 0 && pushTimer !== null) {
          clearInterval(pushTimer);
          pushTimer = null;
        }
      }, Math.max(5, Math.floor(config.push.retransmitMs / 2)));
    }
  }

  // ---- the one entry ------------------------------------------------------------------------------

  function drop(reason: DropReason): void {
    c.drop[reason]++;
  }

  const onDatagram: OnDatagram = (buf, address, port, socket) => {
    c.rx++;
    const now = clock.now();
    if (!limiter.allow(address, now)) return drop('rateLimited');
    const h = decodeHeader(buf);
    if (!h.ok) return drop(h.reason);
    const { type, sid, seq } = h.msg;
    if (sid === 0) {
      if (type !== MsgType.hello) return drop('unexpected');
      if (!takeToken(helloBucket, now, config.sessions.hellosPerS, config.sessions.hellosPerS)) return drop('rateLimited');
      const b = decodeBody(h.msg, buf);
      if (!b.ok) return drop(b.reason);
      c.handled.hello++;
      onHello(b.msg as Hello, socket, address, port, now);
      return;
    }
    const s = sessions.get(sid);
    if (s === undefined) {
      drop('badSession');
      // Smaller than any session message, so it cannot amplify a spoofed flood.
      c.reject.sessionUnknown++;
      sendOn(socket, encode({ type: 'reject', reqId: 0, code: RejectCode.sessionUnknown, sid }, null), port, address);
      return;
    }
    if (!checkMac(buf, s.keys.c2s)) return drop('badMac');
    if (!s.rx.check(seq)) return drop('replay');
    if (type === MsgType.lookup) {
      const idOff = parseLookup(buf, buf.length);
      if (idOff >= 0) {
        s.lastSeen = now;
        s.socket = socket;
        s.address = address;
        s.port = port;
        c.handled.lookup++;
        return fastLookup(s, parsedReqId(), buf, idOff);
      }
    }
    // Decoded fields may be views into buf, which the socket reuses: the slow path works on a copy.
    const b = decodeBody(h.msg, Buffer.from(buf));
    if (!b.ok) return drop(b.reason);
    // Authenticated: this is where the session's answers and pushes go from now on.
    s.lastSeen = now;
    s.socket = socket;
    s.address = address;
    s.port = port;
    const m = b.msg;
    switch (m.type) {
      case 'lookup':
        c.handled.lookup++;
        return onLookup(s, m);
      case 'register':
        c.handled.register++;
        return onRegister(s, m, now);
      case 'subscribe':
        c.handled.subscribe++;
        return onSubscribe(s, m);
      case 'unsubscribe':
        c.handled.unsubscribe++;
        return onUnsubscribe(s, m);
      case 'pushAck':
        c.handled.pushAck++;
        pushes.ack(s, m.pushId);
        return;
      default:
        return drop('unexpected');
    }
  };

  // ---- handlers -----------------------------------------------------------------------------------

  function onHello(m: Hello, socket: ControlSocket, address: string, port: number, now: number): void {
    const r = sessions.hello(m, socket, address, port, now);
    if (r.kind === 'invalid') {
      c.hello.invalid++;
      log.debug({ reason: r.reason, address }, 'hello rejected');
      return;
    }
    if (r.kind === 'busy') {
      c.hello.busy++;
      sendOn(socket, encode({ type: 'reject', reqId: m.reqId, code: RejectCode.busy, sid: 0 }, null), port, address);
      return;
    }
    if (r.fresh) {
      c.hello.welcome++;
      c.sessions.created++;
    } else c.hello.retransmit++;
    r.session.lastSeen = now;
    sendOn(socket, encode(r.welcome, null), port, address);
  }

  /** onLookup for the canonical LOOKUP, without decoding into objects: the same answers. */
  function fastLookup(s: Session, reqId: number, buf: Buffer, idOff: number): void {
    const k = buf.toString('latin1', idOff, idOff + 16);
    const rec = (store as BindingStore).get(k);
    for (let i = 0; i < 16; i++) idScratch[i] = buf[idOff + i];
    s.txSeq++;
    let n: number;
    if (rec !== undefined && s.view.mayLearn(idScratch, k)) {
      c.lookup.positive++;
      n = writeLookupReply(out, s.sid, s.txSeq, s.keys.s2c, reqId, buf, idOff, Math.min(rec.ttl, maxTtlS), rec.bytes, rec.prefs);
    } else {
      // Location privacy: a denied asker gets exactly the answer for an unknown ID.
      if (rec !== undefined) c.lookup.denied++;
      else c.lookup.negative++;
      n = writeLookupReply(out, s.sid, s.txSeq, s.keys.s2c, reqId, buf, idOff, config.lookup.negativeTtlS, null, NO_PREFS);
    }
    if (n === 0) c.txErrors++;
    else sendOn(s.socket, out, s.port, s.address, n);
  }

  function onLookup(s: Session, m: Lookup): void {
    const k = keyOf(m.hostId);
    const rec = (store as BindingStore).get(k);
    let ans: LookupReply;
    if (rec !== undefined && s.view.mayLearn(m.hostId, k)) {
      c.lookup.positive++;
      ans = { type: 'lookupReply', reqId: m.reqId, hostId: m.hostId, ttl: Math.min(rec.ttl, config.lookup.maxTtlS), binding: rec.bytes, prefs: rec.prefs };
    } else {
      // Location privacy: a denied asker gets exactly the answer for an unknown ID.
      if (rec !== undefined) c.lookup.denied++;
      else c.lookup.negative++;
      ans = { type: 'lookupReply', reqId: m.reqId, hostId: m.hostId, ttl: config.lookup.negativeTtlS, binding: null, prefs: NO_PREFS };
    }
    reply(s, ans);
  }

  function onRegister(s: Session, m: Register, now: number): void {
    const st = store as BindingStore;
    const answer = (hostId: Uint8Array, seq: number, status: number, expiresIn: number): void => {
      const r: RegisterReply = { type: 'registerReply', reqId: m.reqId, hostId, seq, status, expiresIn, refresh: config.registration.refreshS };
      reply(s, r);
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
    if (!realm.accepts(b.hostId, b.prefixLen)) {
      c.register.notInRealm++;
      return answer(idBytes, 0, RegisterStatus.notInRealm, 0);
    }
    const k = keyOf(idBytes);
    const held = st.held(k);
    const order = compareSeq(held, b);
    if (order === 'stale' || order === 'conflict') {
      c.register[order]++;
      const live = st.get(k);
      return answer(idBytes, held?.seq ?? 0, RegisterStatus.stale, live ? Math.max(0, Math.round((live.expiresAt - now) / 1000)) : 0);
    }
    const expiresAt = now + expiryMs;
    const done = (isRefresh: boolean) => (err: Error | null) => {
      if (err !== null) {
        c.register.unavailable++;
        return answer(idBytes, held?.seq ?? 0, RegisterStatus.unavailable, 0);
      }
      c.register[isRefresh ? 'refresh' : 'ok']++;
      answer(idBytes, b.seq, RegisterStatus.ok, config.registration.expiryS);
      if (!isRefresh) notifyFollowers(k, idBytes);
    };
    if (order === 'same') {
      // The same bytes as held: verified when first stored, so no signature check again.
      if (st.get(k) !== undefined) return st.refresh(k, expiresAt, done(true));
      const desc = describe(b.bytes);
      if (desc === null) return answer(idBytes, 0, RegisterStatus.notInRealm, 0);
      return st.put(k, new StoredBinding(b.bytes, b.seq, expiresAt, desc.ttl, desc.prefs), done(false));
    }
    const v = verifyBinding(b);
    if (!v.ok) {
      c.register.forged++;
      log.debug({ hostId: b.hostId.toString(), reason: v.reason }, 'forged binding rejected');
      return answer(idBytes, held?.seq ?? 0, RegisterStatus.forged, 0);
    }
    st.put(k, new StoredBinding(b.bytes, b.seq, expiresAt, b.ttl, policy.prefsFor(b.locators)), done(false));
  }

  function notifyFollowers(k: string, idBytes: Uint8Array): void {
    const followers = subs.followers(k);
    const rec = (store as BindingStore).get(k);
    if (followers === undefined || rec === undefined) return;
    const now = clock.now();
    const ttl = Math.min(rec.ttl, config.lookup.maxTtlS);
    for (const f of followers) if (f.view.mayLearn(idBytes, k)) pushes.push(f, k, rec.bytes, ttl, rec.prefs, now);
  }

  function onSubscribe(s: Session, m: Subscribe): void {
    let accepted = 0;
    for (const id of m.hostIds) {
      const r = subs.add(s, keyOf(id));
      if (r === 'added') c.subscribe.added++;
      else if (r !== 'already') {
        c.subscribe[r]++;
        continue;
      }
      accepted++;
    }
    reply(s, { type: 'subscribeReply', reqId: m.reqId, accepted });
  }

  function onUnsubscribe(s: Session, m: Unsubscribe): void {
    for (const id of m.hostIds) subs.remove(s, keyOf(id));
    reply(s, { type: 'unsubscribeReply', reqId: m.reqId });
  }

  // ---- sweep ----------------------------------------------------------------------------------------

  /** Expires registrations incrementally (sweep.batch per tick), sessions and idle rate buckets. */
  function sweep(): void {
    const now = clock.now();
    const st = store as BindingStore;
    if (sweepIter === null) sweepIter = st.entries();
    for (let i = 0; i < config.sweep.batch; i++) {
      const n = sweepIter.next();
      if (n.done) {
        sweepIter = null;
        break;
      }
      const [k, rec] = n.value;
      if (isExpired(rec, now)) {
        st.expire(k);
        c.bindingsExpired++;
      }
    }
    c.sessions.expired += sessions.sweep(now, (s) => {
      subs.dropSession(s);
      pushes.dropSession(s);
    });
    limiter.prune(now);
  }

  return {
    realm,
    async start() {
      if (store === null) {
        store = new BindingStore({
          path: config.store.path,
          synchronous: config.store.synchronous,
          batchWindowMs: config.store.batchWindowMs,
          batchMax: config.store.batchMax,
          clock,
          log,
          describe,
        });
        const n = store.load();
        log.info({ bindings: n, path: config.store.path }, 'binding store loaded');
      }
      try {
        for (const l of config.listen) {
          const address = typeof l === 'string' ? l : l.address;
          const port = typeof l === 'string' ? config.port : l.port;
          sockets.push(await openSocket(address, port, onDatagram));
        }
      } catch (e) {
        for (const s of sockets.splice(0)) await s.close();
        throw e;
      }
      running = true;
      sweepTimer = setInterval(sweep, config.sweep.intervalMs);
      log.info({ realm: realm.name, prefix: realm.prefix.toString(), listen: sockets.map((s) => `${s.local.address}:${s.local.port}`) }, 'Realm Manager started');
    },
    async stop() {
      running = false;
      if (sweepTimer !== null) clearInterval(sweepTimer);
      if (pushTimer !== null) clearInterval(pushTimer);
      sweepTimer = pushTimer = null;
      for (const s of sockets.splice(0)) await s.close();
      store?.close();
      sessions.clear();
      log.info('Realm Manager stopped');
    },
    counters() {
      // Oversize datagrams never reach onDatagram (the socket drops them), but they were received.
      let oversize = 0;
      for (const s of sockets) oversize += s.oversize?.() ?? 0;
      const out: Record<string, number> = { 'rx.datagrams': c.rx + oversize, 'tx.datagrams': c.tx, 'tx.errors': c.txErrors };
      for (const [k, v] of Object.entries(c.drop)) out[`rx.drop.${k}`] = v;
      out['rx.drop.tooLong'] += oversize;
      for (const [k, v] of Object.entries(c.handled)) out[`rx.handled.${k}`] = v;
      for (const group of ['hello', 'lookup', 'register', 'subscribe', 'reject', 'sessions'] as const) {
        for (const [k, v] of Object.entries(c[group])) out[`${group}.${k}`] = v;
      }
      for (const [k, v] of Object.entries(pushes.counters)) out[`push.${k}`] = v;
      out['push.pending'] = pushes.pending;
      out['bindings.live'] = store?.size ?? 0;
      out['bindings.expired'] = c.bindingsExpired;
      out['sessions.live'] = sessions.size;
      out['subscriptions.live'] = subs.total;
      out['ratelimit.sources'] = limiter.size;
      out['ratelimit.overflow'] = limiter.overflowHits;
      if (store) for (const [k, v] of Object.entries(store.counters)) out[`store.${k}`] = v;
      return out;
    },
    addresses() {
      return sockets.map((s) => s.local);
    },
    bindingCount() {
      return store?.size ?? 0;
    },
  };
}

/** Pure: is the registration past its expiry at now? */
export function isExpired(rec: { expiresAt: number }, now: number): boolean {
  return rec.expiresAt <= now;
}

const NO_PREFS: readonly never[] = Object.freeze([]);

/** The map key of a 16-byte ID: its bytes as a latin1 string (16 characters, cheap to hash). */
export function keyOf(id: Uint8Array): string {
  return (Buffer.isBuffer(id) ? id : Buffer.from(id.buffer, id.byteOffset, id.length)).toString('latin1', 0, 16);
}

/** One batched native socket per listen address (udp.ts; IPv6 sockets are IPv6-only so 0.0.0.0 and :: coexist). */
export const openUdpSocket: OpenSocket = async (address, port, onDatagram) => openControlSocket(address, port, onDatagram);
