import { encode } from '../shared/wire/codec.ts';
import { MAX_DATAGRAM, type ControlMessage } from '../shared/wire/messages.ts';
import type { RmCounters } from './counters.ts';
import { writePush } from './fastpath.ts';
import type { ControlSocket, PendingPush, Session } from './sessions.ts';

/**
 * Everything the Realm Manager sends goes through here, so that each datagram is counted once:
 * tx.datagrams when the socket queued it, tx.errors when the socket threw or an answer written by
 * hand did not fit (fastpath.ts writers return 0 then).
 *
 * Session messages are sent to the session's socket, address and port, which dispatch updates only
 * from datagrams whose MAC verified.
 */
export class Outbox {
  /**
   * One answer at a time is built here (by fastpath.ts writers) and copied into the socket's send
   * queue at once (ControlSocket.send copies), so the hot path allocates nothing. Valid only until
   * the next write.
   */
  readonly out = Buffer.allocUnsafe(MAX_DATAGRAM);

  constructor(private readonly c: RmCounters) {}

  sendOn(socket: ControlSocket, buf: Uint8Array, port: number, address: string, length = buf.length): void {
    try {
      socket.send(buf, port, address, length);
      this.c.tx++;
    } catch {
      this.c.txErrors++;
    }
  }

  /** Sends out[0, n) to s; n = 0 is a writer's "did not fit". */
  sendWritten(s: Session, n: number): void {
    if (n === 0) this.c.txErrors++;
    else this.sendOn(s.socket, this.out, s.port, s.address, n);
  }

  /** An authenticated answer through the general encoder (msgpackr). */
  reply(s: Session, msg: ControlMessage): void {
    s.txSeq++;
    this.sendOn(s.socket, encode(msg, { sid: s.sid, seq: s.txSeq, key: s.keys.s2c }), s.port, s.address);
  }

  /** PushQueue's send: written by hand into the reused buffer, no msgpackr, no Buffer per follower. */
  push(s: Session, p: PendingPush): void {
    // REVOKE is rare (an operator's act): the general encoder is fine for it.
    if (p.revoke) return this.reply(s, { type: 'revoke', pushId: p.pushId, hostId: p.binding });
    // GROUP-PUSH (slice 2) is rare too: a presence change of a user's or a data ID's host.
    if (p.present !== null) return this.reply(s, { type: 'groupPush', pushId: p.pushId, binding: p.binding, present: p.present, ttl: p.ttl });
    // Another realm's host (docs/hierarchy.md): the endorsement rides along, through the general encoder.
    if (p.endorsement !== null) return this.reply(s, { type: 'push', pushId: p.pushId, binding: p.binding, ttl: p.ttl, prefs: p.prefs, cert: p.cert, endorsement: p.endorsement });
    s.txSeq++;
    this.sendWritten(s, writePush(this.out, s.sid, s.txSeq, s.keys.s2c, p.pushId, p.binding, p.ttl, p.prefs, p.cert));
  }
}
