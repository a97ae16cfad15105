import { HostId, verifyHostId, MAX_ID_PREFIX_LEN } from '../shared/ids.ts';
import { signBytes, verifyBytes, type KeyPair } from '../shared/crypto/ed25519.ts';
import { createEphemeral, deriveSessionKeys, helloSignedBytes, randomSid, welcomeSignedBytes, type SessionKeys } from '../shared/wire/handshake.ts';
import { ReplayWindow } from '../shared/wire/replay.ts';
import type { Hello, LocatorPref, Welcome } from '../shared/wire/messages.ts';
import type { AskerView, Policy } from './policy.ts';
import { fullBucket, prefixKey, type Bucket } from './ratelimit.ts';

/**
 * Sessions: the RM side of the authenticated set-up (shared/wire/handshake.ts has the scheme).
 *
 * A session is created by a valid HELLO and ends after sessions.idleS without a valid message. The
 * table is bounded (sessions.max): when full, HELLOs are refused with "busy" until idle sessions
 * expire. A retransmitted HELLO (same nonce) gets the same WELCOME again (answers are idempotent).
 *
 * Quotas (docs/security.md, decision 5): at most sessions.perPrefix sessions from one source /24 or
 * /64 (beyond: busy), and at most sessions.perId per host ID — beyond, the ID's least valuable
 * session is evicted (pickEvictee) rather than the HELLO refused: a HELLO captured and replayed
 * after the 30 s nonce memory makes a session whose keys the replayer cannot compute, and refusing
 * the real host then would lock it out.
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
  /** A GROUP-PUSH (slice 2): binding is the user/data binding, this its hosts' presence flags; null for host pushes. */
  readonly present: Uint8Array | null;
  /** A host of another realm (docs/hierarchy.md): this RM's endorsement of its realm key, sent along. */
  readonly endorsement: Uint8Array | null;
  attempts: number;
  nextAt: number;
}

/** A return-routability check in flight: the address a session's valid message came from anew. */
export interface PathChallenge {
  /** CHALLENGE_LEN random bytes, echoed in CHALLENGE-REPLY. */
  readonly token: Uint8Array;
  readonly socket: ControlSocket;
  readonly address: string;
  readonly port: number;
  /** Clock ms of the last CHALLENGE sent (re-sent at most every CHALLENGE_RESEND_MS). */
  sentAt: number;
}

export class Session {
  readonly rx = new ReplayWindow();
  txSeq = 0;
  /** Every authenticated message is charged here (rateLimit.perSessionPerS), REGISTER also to reg. */
  readonly bucket: Bucket = fullBucket();
  readonly regBucket: Bucket = fullBucket();
  /** Whether a message under the session's keys ever arrived (a replayed HELLO's session never has one). */
  proven = false;
  /** The outstanding return-routability check, if any (one per session). */
  challenge: PathChallenge | null = null;
  /** prefixKey(address), kept by SessionTable for the per-prefix quota. */
  prefix = '';
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
    /** What this host may learn; replaced when a reload changes the policy. */
    public view: AskerView,
    /** Where answers and pushes go: the validated address, moved only by SessionTable.move(). */
    public socket: ControlSocket,
    public address: string,
    public port: number,
    public lastSeen: number,
  ) {}
}

export type HelloOutcome =
  | { kind: 'welcome'; session: Session; welcome: Welcome; fresh: boolean }
  | { kind: 'invalid'; reason: 'idMismatch' | 'badSignature' | 'prefixTooLong' | 'notMember' }
  | { kind: 'busy'; reason: 'full' | 'prefix' };

export interface SessionQuotas {
  /** Sessions per host ID; beyond, the ID's least valuable session is evicted. */
  readonly perId: number;
  /** Sessions per source prefix (/24, /64); beyond, HELLO is refused as busy. */
  readonly perPrefix: number;
}

const NO_QUOTAS: SessionQuotas = { perId: Infinity, perPrefix: Infinity };

/**
 * Pure: which of one ID's sessions to end for a new one. First those that never carried a message
 * (a replayed HELLO's, or one the host abandoned mid-set-up), then the least recently seen.
 */
export function pickEvictee<S extends { readonly proven: boolean; readonly lastSeen: number }>(sessions: Iterable<S>): S | undefined {
  let best: S | undefined;
  for (const s of sessions) {
    if (best === undefined || (best.proven && !s.proven) || (best.proven === s.proven && s.lastSeen < best.lastSeen)) best = s;
  }
  return best;
}

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
  /** Sessions by host ID (idKey) and session counts by source prefix: the quotas. */
  private readonly byId = new Map<string, Set<Session>>();
  private readonly byPrefix = new Map<string, number>();

  constructor(
    private readonly rmKey: KeyPair,
    private readonly policy: Policy,
    private readonly max: number,
    private readonly idleMs: number,
    private readonly quotas: SessionQuotas = NO_QUOTAS,
    /** Called for a session ended by eviction (to drop its subscriptions and pushes). */
    private readonly onEvict: (s: Session) => void = () => {},
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  /** A reload changed the policy: every live session sees by the new one from now on. */
  refreshViews(): void {
    for (const s of this.sessions.values()) s.view = this.policy.viewFor(s.hostId);
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

  /** Whether a new session from this address's source prefix is over the per-prefix quota. */
  prefixFull(address: string): boolean {
    return (this.byPrefix.get(prefixKey(address)) ?? 0) >= this.quotas.perPrefix;
  }

  /**
   * Verifies a HELLO (unless the caller did: preverified) and creates (or finds again) its session.
   * Costs ~1 ms of crypto when fresh. cert: the host's membership certificate for the WELCOME,
   * asked for only once the HELLO verified.
   */
  hello(h: Hello, socket: ControlSocket, address: string, port: number, now: number, cert: (hostId: HostId) => Uint8Array | null, preverified = false): HelloOutcome {
    const again = this.repeat(h);
    if (again !== null) return again;
    // Cheap refusals before the signature check.
    if (this.prefixFull(address)) return { kind: 'busy', reason: 'prefix' };
    if (!preverified) {
      const bad = verifyHello(h);
      if (bad !== null) return { kind: 'invalid', reason: bad };
    }
    const hostId = HostId.fromBytes(h.hostId);
    const same = this.byId.get(hostId.key);
    if (same !== undefined && same.size >= this.quotas.perId) {
      const old = pickEvictee(same);
      if (old !== undefined) {
        this.end(old);
        this.onEvict(old);
      }
    }
    if (this.sessions.size >= this.max) return { kind: 'busy', reason: 'full' };
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
    this.add(session);
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
    const mine = this.byId.get(hostKey);
    if (mine === undefined) return 0;
    let ended = 0;
    for (const s of [...mine]) {
      this.end(s);
      onEnd(s);
      ended++;
    }
    for (const [k, r] of this.recent) if (!this.sessions.has(r.sid)) this.recent.delete(k);
    return ended;
  }

  /** Ends sessions idle for longer than idleMs; calls onEnd for each (to drop its subscriptions). */
  sweep(now: number, onEnd: (s: Session) => void): number {
    let ended = 0;
    for (const s of this.sessions.values()) {
      if (now - s.lastSeen > this.idleMs) {
        this.end(s);
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

  /** The host ID's live sessions (for tests and counters). */
  sessionsOf(idKey: string): number {
    return this.byId.get(idKey)?.size ?? 0;
  }

  /**
   * Moves s to a new validated address (after its CHALLENGE-REPLY came from there). The per-prefix
   * count follows the session; a move is never refused (the quota bounds set-ups, and the session
   * proved both its keys and the address).
   */
  move(s: Session, socket: ControlSocket, address: string, port: number): void {
    const prefix = prefixKey(address);
    if (prefix !== s.prefix) {
      this.uncount(s.prefix);
      s.prefix = prefix;
      this.byPrefix.set(prefix, (this.byPrefix.get(prefix) ?? 0) + 1);
    }
    s.socket = socket;
    s.address = address;
    s.port = port;
    s.challenge = null;
  }

  clear(): void {
    this.sessions.clear();
    this.recent.clear();
    this.byId.clear();
    this.byPrefix.clear();
  }

  private add(s: Session): void {
    this.sessions.set(s.sid, s);
    let set = this.byId.get(s.hostId.key);
    if (set === undefined) {
      set = new Set();
      this.byId.set(s.hostId.key, set);
    }
    set.add(s);
    s.prefix = prefixKey(s.address);
    this.byPrefix.set(s.prefix, (this.byPrefix.get(s.prefix) ?? 0) + 1);
  }

  private end(s: Session): void {
    if (!this.sessions.delete(s.sid)) return;
    const set = this.byId.get(s.hostId.key);
    set?.delete(s);
    if (set?.size === 0) this.byId.delete(s.hostId.key);
    this.uncount(s.prefix);
  }

  private uncount(prefix: string): void {
    const n = (this.byPrefix.get(prefix) ?? 0) - 1;
    if (n <= 0) this.byPrefix.delete(prefix);
    else this.byPrefix.set(prefix, n);
  }
}
