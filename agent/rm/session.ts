import { verifyBytes, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { deriveSessionKeys, signedHello, welcomeSignedBytes, type Ephemeral, type SessionKeys } from '../../shared/wire/handshake.ts';
import { ReplayWindow } from '../../shared/wire/replay.ts';
import { checkMac, encode } from '../../shared/wire/codec.ts';
import type { ControlMessage, Cookie, Hello, Welcome } from '../../shared/wire/messages.ts';
import { HostId } from '../../shared/ids.ts';
import { decideRequest, retransmitDelay, type RequestDecision, type RetransmitPolicy } from './requests.ts';
import type { RealmTrust } from './trust.ts';

/**
 * The RM client's session with one Realm Manager (docs/control-protocol.md, "Sessions").
 *
 * 1. begin() builds a signed HELLO with a fresh ephemeral key (and the RM's cookie, if the client
 *    kept one); helloDue() says when to send it again and when this RM has not answered for as long
 *    as a request would wait (then the client moves on). While the host holds no valid membership
 *    certificate, the HELLO carries the join token's proof. The RM answers a HELLO without a valid
 *    cookie with COOKIE (docs/security.md, decision 4): cookie() builds a fresh HELLO carrying it, to
 *    send at once; that is the protocol's extra round trip, not a retransmission, so the attempts
 *    start again.
 * 2. welcome() checks the RM's answer: the key pinned for this RM (or, without one, one of the realm
 *    keys this host pinned: never the first key that answers), the RM's signature over both
 *    ephemerals and our nonce, the membership certificate it carries (trust.ts), and derives the
 *    session keys. Anything else is refused.
 * 3. seal() encodes a message under the session (next sequence number, MAC); open() checks an
 *    incoming one (session ID, MAC, replay window) before its body is decoded.
 * 4. lose() forgets the session (the RM no longer knows it); the client then begins again.
 */
interface Established {
  readonly sid: number;
  readonly keys: SessionKeys;
  readonly rx: ReplayWindow;
  txSeq: number;
}

interface Handshake {
  readonly hello: Hello;
  readonly eph: Ephemeral;
  attempts: number;
  nextAt: number;
  /** COOKIEs acted on since begin(). */
  readonly cookieRounds: number;
}

/**
 * COOKIEs acted on per begin(): one is the protocol; a second covers the RM's secret rotating between
 * the two. More means the cookie cannot work (a NAT changing our port per datagram, or someone
 * spoofing COOKIEs): the HELLO is then retransmitted as usual and the client moves on after its
 * attempts, instead of answering COOKIEs in a loop.
 */
export const MAX_COOKIE_ROUNDS = 2;

export type WelcomeOutcome = 'established' | 'late' | 'refused';
export type OpenOutcome = 'ok' | 'badSession' | 'badMac' | 'replay';

export class RmSession {
  private established: Established | null = null;
  private handshake: Handshake | null = null;

  private readonly id: HostId;

  constructor(
    private readonly key: KeyPair,
    private readonly hostId: Uint8Array,
    private readonly prefixLen: number,
    private readonly policy: RetransmitPolicy,
    private readonly random: () => number,
    private readonly trust: RealmTrust,
  ) {
    this.id = HostId.fromBytes(hostId);
  }

  /** The request ID of the HELLO in flight (a REJECT of it names it); null when none. */
  get helloReqId(): number | null {
    return this.handshake?.hello.reqId ?? null;
  }

  get sid(): number | null {
    return this.established?.sid ?? null;
  }

  get isEstablished(): boolean {
    return this.established !== null;
  }

  get isHandshaking(): boolean {
    return this.handshake !== null;
  }

  /** A new HELLO (the session, if any, is dropped), with cookie if one is known; returns its bytes to send. */
  begin(reqId: number, now: number, cookie: Uint8Array | null = null): Uint8Array {
    return this.startHandshake(reqId, now, cookie, 0);
  }

  /**
   * A COOKIE from the RM. For the HELLO in flight (same reqId), with a cookie it did not carry yet:
   * the bytes of a fresh HELLO carrying it, to send at once. Otherwise null (late, or one round too
   * many: see MAX_COOKIE_ROUNDS).
   */
  cookie(m: Cookie, now: number): Uint8Array | null {
    const hs = this.handshake;
    if (hs === null || m.reqId !== hs.hello.reqId || hs.cookieRounds >= MAX_COOKIE_ROUNDS) return null;
    if (hs.hello.cookie !== null && Buffer.from(hs.hello.cookie).equals(m.cookie)) return null;
    return this.startHandshake(hs.hello.reqId, now, m.cookie, hs.cookieRounds + 1);
  }

  private startHandshake(reqId: number, now: number, cookie: Uint8Array | null, cookieRounds: number): Uint8Array {
    const join = this.trust.joinFor();
    const { hello, eph } = signedHello(this.key, this.hostId, this.prefixLen, reqId, { join, cookie });
    this.handshake = { hello, eph, attempts: 1, nextAt: now + retransmitDelay(1, this.policy, this.random()), cookieRounds };
    return encode(hello, null);
  }

  /** What to do with the HELLO in flight at now; 'resend' also returns the bytes. */
  helloDue(now: number): { decision: RequestDecision; bytes?: Uint8Array } {
    const hs = this.handshake;
    if (hs === null) return { decision: 'wait' };
    const d = decideRequest(hs, now, this.policy);
    if (d !== 'resend') return { decision: d };
    hs.attempts++;
    hs.nextAt = now + retransmitDelay(hs.attempts, this.policy, this.random());
    return { decision: d, bytes: encode(hs.hello, null) };
  }

  /** A decoded WELCOME; pinned: the key configured for this RM (else any of the realm keys). */
  welcome(m: Welcome, pinned: Uint8Array | undefined): WelcomeOutcome {
    const hs = this.handshake;
    if (hs === null || m.reqId !== hs.hello.reqId) return 'late';
    const rmKey = Buffer.from(m.rmPublicKey);
    if (pinned !== undefined ? !rmKey.equals(Buffer.from(pinned)) : !this.trust.realmKeys.some((k) => rmKey.equals(Buffer.from(k)))) return 'refused';
    const signed = welcomeSignedBytes(m.sid, m.ephemeral, this.hostId, hs.eph.publicKey, hs.hello.nonce);
    if (!verifyBytes(m.rmPublicKey, signed, m.signature)) return 'refused';
    // The RM vouches for our membership with its own key; a certificate from another is no answer.
    if (m.cert === null || !rmKey.equals(Buffer.from(m.cert.subarray(85, 117)))) return 'refused';
    if (this.trust.offer(m.cert, this.id, this.key.publicKey) !== null) return 'refused';
    const keys = deriveSessionKeys(hs.eph, m.ephemeral, {
      sid: m.sid,
      clientHostId: this.hostId,
      clientEphemeral: hs.eph.publicKey,
      rmEphemeral: m.ephemeral,
      nonce: hs.hello.nonce,
    });
    if (keys === null) return 'refused';
    this.handshake = null;
    this.established = { sid: m.sid, keys, rx: new ReplayWindow(), txSeq: 0 };
    return 'established';
  }

  /** Forgets the session; false if there was none. */
  lose(): boolean {
    if (this.established === null) return false;
    this.established = null;
    return true;
  }

  /** msg encoded under the session, or null without one. */
  seal(msg: ControlMessage): Uint8Array | null {
    const s = this.established;
    if (s === null) return null;
    s.txSeq++;
    return encode(msg, { sid: s.sid, seq: s.txSeq, key: s.keys.c2s });
  }

  /** Checks an authenticated datagram's session, MAC and sequence number (in that order). */
  open(sid: number, seq: number, buf: Uint8Array): OpenOutcome {
    const s = this.established;
    if (s === null || sid !== s.sid) return 'badSession';
    if (!checkMac(buf, s.keys.s2c)) return 'badMac';
    if (!s.rx.check(seq)) return 'replay';
    return 'ok';
  }
}
