import { randomBytes } from 'node:crypto';
import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import { macKey } from '../shared/crypto/blake2s.ts';
import { CHALLENGE_LEN, checkMac, decodeBody, decodeHeader, encode } from '../shared/wire/codec.ts';
import { MsgType, RM_TO_RM_TYPES, RejectCode, type ControlMessage, type Header } from '../shared/wire/messages.ts';
import { RM_QUERY_MIN } from '../shared/wire/codec.ts';
import type { RmConfig } from './config.ts';
import { CookieJar } from './cookies.ts';
import type { Outcome, RmCounters } from './counters.ts';
import { parseLookup, parsedReqId } from './fastpath.ts';
import type { Handlers } from './handlers.ts';
import { takeToken, type Bucket, type RateLimiter } from './ratelimit.ts';
import type { ControlSocket, Session, SessionTable } from './sessions.ts';
import type { Outbox } from './tx.ts';
import type { OnDatagram, OnFault } from './udp.ts';

/**
 * The Realm Manager's one entry: every datagram comes in through onDatagram() and ends in exactly
 * one Outcome, counted in one place (counters.ts):
 *   1. fixed header: size, version, type, sid   → drop tooShort / tooLong / badVersion / badType / badSession
 *   2. sid 0 (sessionless): only HELLO, charged to its source prefix's bucket; without a valid
 *      cookie it is answered COOKIE (no state, no public-key work; global reply budget); with one
 *      it takes a token of the global HELLO budget and goes to the handler
 *                                               → drop unexpected / rateLimited / malformed, handled hello
 *   3. sid ≠ 0: the session (unknown: REJECT, charged to the source prefix and the global reply
 *      budget), its MAC, its replay window, then the session's own bucket (REGISTER: its second one)
 *                                               → drop badSession / rateLimited / badMac / replay
 *   4. return routability: from an address other than the session's validated one, nothing is
 *      handled; a CHALLENGE (smaller than the message) goes there, and only its echo moves the session
 *                                               → drop unvalidated, handled challengeReply
 *   5. msgpack body, field by field             → drop malformed
 *      (a LOOKUP in canonical form is parsed and answered by hand instead: fastpath.ts)
 *   6. handler (handlers.ts)                    → handled.<type>
 *   any step throwing (a bug, the store failing a read)
 *                                               → drop internalError, and on with the next datagram
 * so rx.datagrams = Σ rx.drop.* + Σ rx.handled.* at all times (the fuzz test checks it).
 *
 * Nothing goes to an unvalidated address that is larger than what came from it (docs/security.md,
 * decision 4): COOKIE (≤ 36 bytes) answers a HELLO (≥ 187), REJECT (≤ 20) a session message
 * (≥ 29), CHALLENGE (47) only a message at least as long.
 *
 * Why the session's bucket is charged after the MAC and replay checks, not at the sid lookup: the
 * sid is in clear on the wire, so charging before the MAC would let anyone who saw it (or guesses
 * it) spend the session's budget and starve the real agent with forged datagrams. After the MAC only
 * the key holder can spend it. A forged flood then costs one BLAKE2s per datagram (~1 µs), which is
 * the floor for telling it apart anyway.
 *
 * buf is borrowed from the socket: valid only during the call (the slow path decodes a copy).
 */
export interface DispatchParts {
  readonly config: RmConfig;
  readonly clock: Clock;
  readonly log: Logger;
  readonly counters: RmCounters;
  readonly limiter: RateLimiter;
  readonly sessions: SessionTable;
  readonly handlers: Handlers;
  readonly tx: Outbox;
  /** The realm hierarchy's RM ↔ RM messages; null when this RM is in no hierarchy. */
  readonly hierarchy: { onMessage(m: ControlMessage, socket: ControlSocket, address: string, port: number): void } | null;
}

/** Bytes of a CHALLENGE datagram: messages shorter than this from a new address draw none. */
export const CHALLENGE_WIRE_LEN = encode({ type: 'challenge', token: new Uint8Array(CHALLENGE_LEN) }, { sid: 1, seq: 1, key: macKey(new Uint8Array(32)) }).length;
/** One CHALLENGE per session at most this often (the client answers at once; 200 ms covers a slow RTT). */
export const CHALLENGE_RESEND_MS = 200;

export class Dispatch {
  private readonly c: RmCounters;
  private readonly hellosPerS: number;
  /** HELLOs with a valid cookie share one budget: each fresh one costs ~1 ms of crypto (sessions.ts). */
  private readonly helloBucket: Bucket;
  /** COOKIEs and REJECTs to unvalidated addresses share one budget (rateLimit.repliesPerS). */
  private readonly repliesPerS: number;
  private readonly replyBucket: Bucket;
  private readonly cookies: CookieJar;
  private readonly sessionPerS: number;
  private readonly sessionBurst: number;
  private readonly regPerS: number;
  private readonly regBurst: number;
  /** Faults caught so far (both kinds), and the count at which the next one is logged. */
  private faults = 0;
  private nextFaultLog = 1;

  constructor(private readonly p: DispatchParts) {
    this.c = p.counters;
    const now = p.clock.now();
    this.hellosPerS = p.config.sessions.hellosPerS;
    this.helloBucket = { tokens: this.hellosPerS, at: now };
    const rl = p.config.rateLimit;
    this.repliesPerS = rl.repliesPerS;
    this.replyBucket = { tokens: rl.repliesPerS, at: now };
    this.sessionPerS = rl.perSessionPerS;
    this.sessionBurst = rl.sessionBurst;
    this.regPerS = p.config.registration.perSessionPerS;
    this.regBurst = p.config.registration.burst;
    this.cookies = new CookieJar(now);
  }

  /**
   * The sockets' callback (an arrow property: handed over once, unbound). It never throws: the
   * socket calls it from the native addon's batch callback, where an exception is fatal to the
   * process (udp.ts), and would lose the rest of the batch too.
   */
  readonly onDatagram: OnDatagram = (buf, address, port, socket) => {
    this.c.rx++;
    let end: Outcome;
    try {
      end = this.route(buf, address, port, socket);
    } catch (e) {
      // Counted before the log line: should the logger throw too, udp.ts catches that, and the sum holds.
      this.c.ends.internalError++;
      this.logFault(e, 'handling a datagram failed; dropped it (rx.drop.internalError)', address);
      return;
    }
    this.c.ends[end]++;
  };

  /**
   * What the sockets caught at their edge. onDatagram catches its own faults, so for the RM this is
   * a failed batch send: its answers are lost, as when the kernel refuses them.
   */
  readonly onSocketFault: OnFault = (e) => {
    this.c.txErrors++;
    this.logFault(e, 'socket fault; its pending answers are lost (tx.errors)', undefined);
  };

  /**
   * Logged on the 1st, 2nd, 4th, 8th, … fault: a fault that every datagram hits (a store gone bad)
   * must not turn 100k datagrams/s into as many stack traces, and the counters say how many.
   */
  private logFault(e: unknown, msg: string, address: string | undefined): void {
    this.faults++;
    if (this.faults < this.nextFaultLog) return;
    this.nextFaultLog *= 2;
    this.p.log.error({ err: e, address, faults: this.faults }, msg);
  }

  // Step 1.
  private route(buf: Buffer, address: string, port: number, socket: ControlSocket): Outcome {
    const now = this.p.clock.now();
    const h = decodeHeader(buf);
    if (!h.ok) return h.reason;
    if (h.msg.sid === 0) return this.sessionless(h.msg, buf, address, port, socket, now);
    return this.inSession(h.msg, buf, address, port, socket, now);
  }

  // Step 2: a HELLO, another RM's message, or nothing.
  private sessionless(h: Header, buf: Buffer, address: string, port: number, socket: ControlSocket, now: number): Outcome {
    const c = this.c;
    if (RM_TO_RM_TYPES.has(h.type)) return this.fromRm(h, buf, address, port, socket, now);
    if (h.type !== MsgType.hello) return 'unexpected';
    if (!this.p.limiter.allow(address, now)) {
      c.ratelimit.prefix++;
      return 'rateLimited';
    }
    const b = decodeBody(h, buf);
    if (!b.ok) return b.reason;
    const m = b.msg;
    if (m.type !== 'hello') return 'unexpected';
    if (m.cookie === null || !this.cookies.check(m.cookie, address, port, now)) {
      if (m.cookie !== null) c.cookie.stale++;
      if (!this.reply(now)) return 'rateLimited';
      c.cookie.sent++;
      this.p.tx.sendOn(socket, this.cookies.answer(m.reqId, address, port, now), port, address);
      return 'hello';
    }
    c.cookie.accepted++;
    if (!takeToken(this.helloBucket, now, this.hellosPerS, this.hellosPerS)) {
      c.ratelimit.hello++;
      return 'rateLimited';
    }
    this.p.handlers.hello(m, socket, address, port, now);
    return 'hello';
  }

  /**
   * Another RM (the hierarchy, docs/hierarchy.md): charged to its source prefix like a HELLO. A query
   * shorter than RM_QUERY_MIN is dropped unread (every answer is smaller than a padded query, so
   * a spoofed one cannot amplify); signatures are the federation's to check.
   */
  private fromRm(h: Header, buf: Buffer, address: string, port: number, socket: ControlSocket, now: number): Outcome {
    const fed = this.p.hierarchy;
    if (fed === null) return 'unexpected';
    if (h.type === MsgType.rmQuery && buf.length < RM_QUERY_MIN) return 'tooShort';
    if (!this.p.limiter.allow(address, now)) {
      this.c.ratelimit.prefix++;
      return 'rateLimited';
    }
    const b = decodeBody(h, Buffer.from(buf));
    if (!b.ok) return b.reason;
    const m = b.msg;
    if (m.type !== 'rmQuery' && m.type !== 'rmAnswer' && m.type !== 'rmPush' && m.type !== 'rmPushAck') return 'unexpected';
    fed.onMessage(m, socket, address, port);
    return m.type;
  }

  /** Takes a token of the global budget for answers to unvalidated addresses (COOKIE, REJECT). */
  private reply(now: number): boolean {
    if (takeToken(this.replyBucket, now, this.repliesPerS, this.repliesPerS)) return true;
    this.c.ratelimit.replies++;
    return false;
  }

  // Steps 3 to 6 in a session.
  private inSession(h: Header, buf: Buffer, address: string, port: number, socket: ControlSocket, now: number): Outcome {
    const { handlers } = this.p;
    const c = this.c;
    const s = this.p.sessions.get(h.sid);
    if (s === undefined) {
      if (!this.p.limiter.allow(address, now)) {
        c.ratelimit.prefix++;
        return 'rateLimited';
      }
      // Smaller than any session message, so it cannot amplify a spoofed flood.
      if (this.reply(now)) {
        c.reject.sessionUnknown++;
        this.p.tx.sendOn(socket, encode({ type: 'reject', reqId: 0, code: RejectCode.sessionUnknown, sid: h.sid }, null), port, address);
      }
      return 'badSession';
    }
    if (!checkMac(buf, s.keys.c2s)) return 'badMac';
    if (!s.rx.check(h.seq)) return 'replay';
    // Authenticated: only the key holder gets here (a captured datagram fails the replay check once
    // the original arrived), so this keeps the session alive and spends its budget.
    s.proven = true;
    s.lastSeen = now;
    if (!takeToken(s.bucket, now, this.sessionPerS, this.sessionBurst)) {
      c.ratelimit.session++;
      return 'rateLimited';
    }
    if (socket !== s.socket || port !== s.port || address !== s.address) return this.unvalidated(s, h, buf, address, port, socket, now);
    if (h.type === MsgType.lookup) {
      const idOff = parseLookup(buf, buf.length);
      if (idOff >= 0) {
        handlers.fastLookup(s, parsedReqId(), buf, idOff);
        return 'lookup';
      }
    }
    // Each "newer" REGISTER may cost an Ed25519 verify: a session gets a few per second.
    if ((h.type === MsgType.register || h.type === MsgType.publish || h.type === MsgType.serve) && !takeToken(s.regBucket, now, this.regPerS, this.regBurst)) {
      c.ratelimit.register++;
      return 'rateLimited';
    }
    // Decoded fields may be views into buf, which the socket reuses: the slow path works on a copy.
    const b = decodeBody(h, Buffer.from(buf));
    if (!b.ok) return b.reason;
    const m = b.msg;
    switch (m.type) {
      case 'lookup':
        handlers.lookup(s, m);
        return 'lookup';
      case 'register':
        handlers.register(s, m, now);
        return 'register';
      case 'subscribe':
        handlers.subscribe(s, m);
        return 'subscribe';
      case 'unsubscribe':
        handlers.unsubscribe(s, m);
        return 'unsubscribe';
      case 'pushAck':
        handlers.pushAck(s, m.pushId);
        return 'pushAck';
      case 'challengeReply':
        // From the validated address already: nothing to move (a late echo).
        return 'challengeReply';
      case 'renew':
        handlers.renew(s, m);
        return 'renew';
      case 'publish':
        handlers.publish(s, m);
        return 'publish';
      case 'serve':
        handlers.serve(s, m, now);
        return 'serve';
      default:
        return 'unexpected';
    }
  }

  /**
   * Step 4: a valid message from an address the session has not validated (NAT rebinding, a new
   * uplink, or a captured datagram sent with a victim's source). Only the echo of the outstanding
   * CHALLENGE, from the challenged address itself, moves the session; anything else is dropped, and
   * if it is at least as long as a CHALLENGE it draws one there.
   */
  private unvalidated(s: Session, h: Header, buf: Buffer, address: string, port: number, socket: ControlSocket, now: number): Outcome {
    const c = this.c;
    if (h.type === MsgType.challengeReply) {
      const ch = s.challenge;
      if (ch !== null && ch.socket === socket && ch.port === port && ch.address === address) {
        // The token is compared at once, so a view into the borrowed buf is fine here.
        const b = decodeBody(h, buf);
        if (b.ok && b.msg.type === 'challengeReply' && Buffer.from(ch.token).equals(b.msg.token)) {
          this.p.sessions.move(s, socket, address, port);
          c.challenge.moved++;
          return 'challengeReply';
        }
      }
      c.challenge.badReply++;
      return 'unvalidated';
    }
    if (buf.length < CHALLENGE_WIRE_LEN) {
      c.challenge.tooShort++;
      return 'unvalidated';
    }
    let ch = s.challenge;
    if (ch !== null && now - ch.sentAt < CHALLENGE_RESEND_MS) {
      c.challenge.held++;
      return 'unvalidated';
    }
    if (ch === null || ch.socket !== socket || ch.port !== port || ch.address !== address) {
      // A new address gets a new token: an echo counts only from where its token was sent.
      ch = { token: new Uint8Array(randomBytes(CHALLENGE_LEN)), socket, address, port, sentAt: now };
      s.challenge = ch;
    } else ch.sentAt = now;
    s.txSeq++;
    this.p.tx.sendOn(socket, encode({ type: 'challenge', token: ch.token }, { sid: s.sid, seq: s.txSeq, key: s.keys.s2c }), port, address);
    c.challenge.sent++;
    return 'unvalidated';
  }
}
