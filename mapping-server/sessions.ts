import { HostId, verifyHostId, MAX_ID_PREFIX_LEN } from '../shared/ids.ts';
import { signBytes, verifyBytes, type KeyPair } from '../shared/crypto/ed25519.ts';
import { createEphemeral, deriveSessionKeys, helloSignedBytes, randomSid, welcomeSignedBytes, type SessionKeys } from '../shared/wire/handshake.ts';
import { ReplayWindow } from '../shared/wire/replay.ts';
import type { Hello, LocatorPref, Welcome } from '../shared/wire/messages.ts';
import type { AskerView, Policy } from './policy.ts';

/**
 * Sessions: the RM side of the authenticated set-up (shared/wire/handshake.ts has the scheme).
 *
 * A session is created by a valid HELLO and ends after sessions.idleS without a valid message. The
 * table is bounded (sessions.max): when full, HELLOs are refused with "busy" until idle sessions
 * expire. A retransmitted HELLO (same nonce) gets the same WELCOME again (answers are idempotent).
 */
export interface ControlSocket {
  readonly local: { readonly address: string; readonly port: number };
  /** Queues buf[0, length) for address:port; the bytes are copied at once, so buf may be reused. */
  send(buf: Uint8Array, port: number, address: string, length?: number): void;
  /** Datagrams longer than a control datagram, dropped before they reached the RM (the batched
   *  socket's slots are MAX_DATAGRAM long); the RM counts them as rx.drop.tooLong. */
  oversize?(): number;
  close(): Promise<void>;
}

export interface PendingPush {
  readonly key: string;
  readonly pushId: number;
  readonly binding: Uint8Array;
  readonly ttl: number;
  readonly prefs: readonly LocatorPref[];
  /** The binding's host's membership certificate (empty for a REVOKE). */
  readonly cert: Uint8Array;
  /** A REVOKE of the ID (binding empty) rather than a PUSH. */
  readonly revoke: boolean;
  attempts: number;
  nextAt: number;
}

export class Session {
  readonly rx = new ReplayWindow();
  txSeq = 0;
  /** IDs this session follows (latin1 keys). */
  readonly subs = new Set<string>();
  /** Unacknowledged pushes by push ID, and the push ID pending per followed ID. */
  readonly pushes = new Map<number, PendingPush>();
  readonly pushByKey = new Map<string, number>();
  nextPushId = 1;

  constructor(
    readonly sid: number,
    readonly hostId: HostId,
    readonly keys: SessionKeys,
    readonly view: AskerView,
    /** Where answers and pushes go: updated only from messages whose MAC verified. */
    public socket: ControlSocket,
    public address: string,
    public port: number,
    public lastSeen: number,
  ) {}
}

export type HelloOutcome =
  | { kind: 'welcome'; session: Session; welcome: Welcome; fresh: boolean }
  | { kind: 'invalid'; reason: 'idMismatch' | 'badSignature' | 'prefixTooLong' | 'notMember' }
  | { kind: 'busy' };

/** The HELLO's own claims: its ID is the hash of its key, its signature verifies. Null when valid. */
export function verifyHello(h: Hello): 'idMismatch' | 'badSignature' | 'prefixTooLong' | null {
  if (h.prefixLen > MAX_ID_PREFIX_LEN) return 'prefixTooLong';
  if (!verifyHostId(HostId.fromBytes(h.hostId), h.prefixLen, h.publicKey)) return 'idMismatch';
  if (!verifyBytes(h.publicKey, helloSignedBytes(h.hostId, h.prefixLen, h.publicKey, h.ephemeral, h.nonce), h.signature)) return 'badSignature';
  return null;
}

interface RecentHello {
  readonly sid: number;
  readonly welcome: Welcome;
  readonly at: number;
}

export class SessionTable {
  private readonly sessions = new Map<number, Session>();
  /** nonce (hex) → the answer already given, for retransmitted HELLOs. */
  private readonly recent = new Map<string, RecentHello>();
  private static readonly RECENT_MS = 30_000;

  constructor(
    private readonly rmKey: KeyPair,
    private readonly policy: Policy,
    private readonly max: number,
    private readonly idleMs: number,
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  get(sid: number): Session | undefined {
    return this.sessions.get(sid);
  }

  /** The WELCOME already given to this exact HELLO (a retransmission), if any. */
  repeat(h: Hello): HelloOutcome | null {
    const again = this.recent.get(Buffer.from(h.nonce).toString('hex'));
    if (again === undefined) return null;
    const s = this.sessions.get(again.sid);
    // Only the exact same HELLO gets the old answer (a different one with a reused nonce is checked anew).
    if (s === undefined || !Buffer.from(s.hostId.toBytes()).equals(Buffer.from(h.hostId))) return null;
    return { kind: 'welcome', session: s, welcome: { ...again.welcome, reqId: h.reqId }, fresh: false };
  }

  /**
   * Verifies a HELLO (unless the caller did: preverified) and creates (or finds again) its session.
   * Costs ~1 ms of crypto when fresh. cert: the host's membership certificate for the WELCOME,
   * asked for only once the HELLO verified.
   */
  hello(h: Hello, socket: ControlSocket, address: string, port: number, now: number, cert: (hostId: HostId) => Uint8Array | null, preverified = false): HelloOutcome {
    const again = this.repeat(h);
    if (again !== null) return again;
    if (!preverified) {
      const bad = verifyHello(h);
      if (bad !== null) return { kind: 'invalid', reason: bad };
    }
    const hostId = HostId.fromBytes(h.hostId);
    if (this.sessions.size >= this.max) return { kind: 'busy' };
    const certBytes = cert(hostId);
    if (certBytes === null) return { kind: 'invalid', reason: 'notMember' };
    let sid = randomSid();
    while (this.sessions.has(sid)) sid = randomSid();
    const eph = createEphemeral();
    const keys = deriveSessionKeys(eph, h.ephemeral, {
      sid,
      clientHostId: h.hostId,
      clientEphemeral: h.ephemeral,
      rmEphemeral: eph.publicKey,
      nonce: h.nonce,
    });
    if (keys === null) return { kind: 'invalid', reason: 'badSignature' };
    const session = new Session(sid, hostId, keys, this.policy.viewFor(hostId), socket, address, port, now);
    this.sessions.set(sid, session);
    const welcome: Welcome = {
      type: 'welcome',
      reqId: h.reqId,
      sid,
      rmPublicKey: this.rmKey.publicKey,
      ephemeral: eph.publicKey,
      signature: signBytes(this.rmKey, welcomeSignedBytes(sid, eph.publicKey, h.hostId, h.ephemeral, h.nonce)),
      cert: certBytes,
    };
    if (this.recent.size < this.max) this.recent.set(Buffer.from(h.nonce).toString('hex'), { sid, welcome, at: now });
    return { kind: 'welcome', session, welcome, fresh: true };
  }

  /** Ends every session of this host (it was revoked); onEnd for each, as sweep() does. */
  endHost(hostKey: string, onEnd: (s: Session) => void): number {
    let ended = 0;
    for (const [sid, s] of this.sessions) {
      if (s.hostId.key !== hostKey) continue;
      this.sessions.delete(sid);
      onEnd(s);
      ended++;
    }
    for (const [k, r] of this.recent) if (!this.sessions.has(r.sid)) this.recent.delete(k);
    return ended;
  }

  /** Ends sessions idle for longer than idleMs; calls onEnd for each (to drop its subscriptions). */
  sweep(now: number, onEnd: (s: Session) => void): number {
    let ended = 0;
    for (const [sid, s] of this.sessions) {
      if (now - s.lastSeen > this.idleMs) {
        this.sessions.delete(sid);
        onEnd(s);
        ended++;
      }
    }
    for (const [k, r] of this.recent) if (now - r.at > SessionTable.RECENT_MS) this.recent.delete(k);
    return ended;
  }

  all(): IterableIterator<Session> {
    return this.sessions.values();
  }

  clear(): void {
    this.sessions.clear();
    this.recent.clear();
  }
}
