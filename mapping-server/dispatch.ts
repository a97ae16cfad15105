import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import { checkMac, decodeBody, decodeHeader, encode } from '../shared/wire/codec.ts';
import { MsgType, RejectCode, type Header } from '../shared/wire/messages.ts';
import type { RmConfig } from './config.ts';
import type { Outcome, RmCounters } from './counters.ts';
import { parseLookup, parsedReqId } from './fastpath.ts';
import type { Handlers } from './handlers.ts';
import { takeToken, type Bucket, type RateLimiter } from './ratelimit.ts';
import type { ControlSocket, SessionTable } from './sessions.ts';
import type { Outbox } from './tx.ts';
import type { OnDatagram, OnFault } from './udp.ts';

/**
 * The Realm Manager's one entry: every datagram comes in through onDatagram() and ends in exactly
 * one Outcome, counted in one place (counters.ts):
 *   1. rate limit per source address            → drop rateLimited
 *   2. fixed header: size, version, type, sid   → drop tooShort / tooLong / badVersion / badType / badSession
 *   3. sid 0: only HELLO (global HELLO budget); else the session, its MAC, its replay window
 *                                               → drop unexpected / rateLimited / badSession / badMac / replay
 *   4. msgpack body, field by field             → drop malformed
 *      (a LOOKUP in canonical form is parsed and answered by hand instead: fastpath.ts)
 *   5. handler (handlers.ts)                    → handled.<type>
 *   any step throwing (a bug, the store failing a read)
 *                                               → drop internalError, and on with the next datagram
 * so rx.datagrams = Σ rx.drop.* + Σ rx.handled.* at all times (the fuzz test checks it).
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
}

export class Dispatch {
  private readonly c: RmCounters;
  private readonly hellosPerS: number;
  /** All HELLOs share one budget: each fresh one costs ~1 ms of crypto (sessions.ts). */
  private readonly helloBucket: Bucket;
  /** Faults caught so far (both kinds), and the count at which the next one is logged. */
  private faults = 0;
  private nextFaultLog = 1;

  constructor(private readonly p: DispatchParts) {
    this.c = p.counters;
    this.hellosPerS = p.config.sessions.hellosPerS;
    this.helloBucket = { tokens: this.hellosPerS, at: p.clock.now() };
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

  // Steps 1 and 2.
  private route(buf: Buffer, address: string, port: number, socket: ControlSocket): Outcome {
    const now = this.p.clock.now();
    if (!this.p.limiter.allow(address, now)) return 'rateLimited';
    const h = decodeHeader(buf);
    if (!h.ok) return h.reason;
    if (h.msg.sid === 0) return this.sessionless(h.msg, buf, address, port, socket, now);
    return this.inSession(h.msg, buf, address, port, socket, now);
  }

  // Steps 3 to 5 without a session: a HELLO or nothing.
  private sessionless(h: Header, buf: Buffer, address: string, port: number, socket: ControlSocket, now: number): Outcome {
    if (h.type !== MsgType.hello) return 'unexpected';
    if (!takeToken(this.helloBucket, now, this.hellosPerS, this.hellosPerS)) return 'rateLimited';
    const b = decodeBody(h, buf);
    if (!b.ok) return b.reason;
    if (b.msg.type !== 'hello') return 'unexpected';
    this.p.handlers.hello(b.msg, socket, address, port, now);
    return 'hello';
  }

  // Steps 3 to 5 in a session.
  private inSession(h: Header, buf: Buffer, address: string, port: number, socket: ControlSocket, now: number): Outcome {
    const { handlers } = this.p;
    const s = this.p.sessions.get(h.sid);
    if (s === undefined) {
      // Smaller than any session message, so it cannot amplify a spoofed flood.
      this.c.reject.sessionUnknown++;
      this.p.tx.sendOn(socket, encode({ type: 'reject', reqId: 0, code: RejectCode.sessionUnknown, sid: h.sid }, null), port, address);
      return 'badSession';
    }
    if (!checkMac(buf, s.keys.c2s)) return 'badMac';
    if (!s.rx.check(h.seq)) return 'replay';
    if (h.type === MsgType.lookup) {
      const idOff = parseLookup(buf, buf.length);
      if (idOff >= 0) {
        s.lastSeen = now;
        s.socket = socket;
        s.address = address;
        s.port = port;
        handlers.fastLookup(s, parsedReqId(), buf, idOff);
        return 'lookup';
      }
    }
    // Decoded fields may be views into buf, which the socket reuses: the slow path works on a copy.
    const b = decodeBody(h, Buffer.from(buf));
    if (!b.ok) return b.reason;
    // Authenticated: this is where the session's answers and pushes go from now on.
    s.lastSeen = now;
    s.socket = socket;
    s.address = address;
    s.port = port;
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
      case 'renew':
        handlers.renew(s, m);
        return 'renew';
      default:
        return 'unexpected';
    }
  }
}
