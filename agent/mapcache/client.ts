import { createSocket, type Socket } from 'node:dgram';
import { systemClock, type Clock } from '../../shared/clock.ts';
import { RealmnetError } from '../../shared/errors.ts';
import { silentLogger, type Logger } from '../../shared/log.ts';
import { HostId, deriveHostId, type Prefix } from '../../shared/ids.ts';
import { verifyBytes, type KeyPair } from '../../shared/keys.ts';
import { applyPrefs, decodeBinding, verifyBinding, type Binding, type Locator } from '../../shared/binding.ts';
import {
  ReplayWindow,
  deriveSessionKeys,
  signedHello,
  welcomeSignedBytes,
  type Ephemeral,
  type SessionKeys,
} from '../../shared/wire/auth.ts';
import { checkMac, decodeBody, decodeHeader, encode } from '../../shared/wire/codec.ts';
import {
  MAX_IDS_PER_MESSAGE,
  RegisterStatus,
  RejectCode,
  type ControlMessage,
  type Hello,
  type LocatorPref,
  type LookupReply,
  type Push,
  type RegisterReply,
} from '../../shared/wire/messages.ts';

/**
 * The agent's Realm Manager client: register, lookup, subscribe/push over the control protocol
 * (docs/control-protocol.md), on a node:dgram socket (control traffic is light; the data plane has
 * its own sockets).
 *
 * 1. start() binds the socket and runs the session set-up (HELLO/WELCOME); requests made before the
 *    session exists wait for it.
 * 2. Every request has an ID and is retransmitted with exponential backoff (decideRequest) until
 *    answered or out of attempts; at most maxOutstanding are in flight (more are refused at once).
 * 3. Every answer is authenticated (session MAC, replay window), and every binding in it is
 *    verified (signature, ID = hash of key, sequence number not older than one seen) before use.
 *    Forged, mismatched or stale bindings are counted and never returned.
 *    Every datagram received ends in exactly one counter: rx.datagrams = Σ rx.drop.* + Σ rx.handled.*
 *    (test/integration/agent-fuzz.test.ts checks it). What a handled message then leads to is
 *    counted on top (binding.*, push.*, answers.late, sessions.*).
 * 4. If the RM forgets the session (it restarted), the client runs a new HELLO, re-sends what is in
 *    flight, re-subscribes and re-registers its kept bindings. A silent RM makes the client move to
 *    the next RM in the list.
 * 5. Registered bindings are re-sent every `refresh` seconds (the RM says how often) until stop(), so
 *    the registration never expires; a newer register() replaces the kept binding. Followed IDs are
 *    re-subscribed on the same beat, which also keeps the session alive.
 */
export interface RmAddress {
  readonly address: string;
  readonly port: number;
  /** The RM's Ed25519 public key (32 bytes). When given, a WELCOME signed by any other key is refused. */
  readonly publicKey?: Uint8Array;
}

export interface RetransmitPolicy {
  /** First wait for an answer, ms. */
  readonly initialMs: number;
  /** Cap on the wait between attempts, ms. */
  readonly maxMs: number;
  /** Transmissions before giving up (the first included). */
  readonly attempts: number;
}

export const DEFAULT_RETRANSMIT: RetransmitPolicy = Object.freeze({ initialMs: 250, maxMs: 4_000, attempts: 6 });

export interface RmClientOptions {
  readonly rm: readonly RmAddress[];
  /** This host's key pair: it proves the host ID to the RM and signs bindings. */
  readonly key: KeyPair;
  /** The realm (or sub-realm) prefix this host's ID is derived under. */
  readonly prefix: Prefix;
  readonly clock?: Clock;
  readonly log?: Logger;
  /** A bound dgram socket to use (e.g. bound to one uplink's address); default: a new one on an ephemeral port. */
  readonly socket?: Socket;
  readonly retransmit?: Partial<RetransmitPolicy>;
  /** Requests in flight at once; more are refused with RM_CLIENT_BUSY. Default 1024. */
  readonly maxOutstanding?: number;
  /** IDs whose last sequence number is remembered (to reject older bindings later). Default 65536. */
  readonly maxTrackedIds?: number;
  /** Called with every verified pushed binding. More can be added with onPush(). */
  readonly onPush?: (answer: BindingAnswer) => void;
  /** For jitter; tests pass a fixed one. */
  readonly random?: () => number;
}

/** A verified binding as served by the RM, with the realm's policy applied to its locators. */
export interface BindingAnswer {
  readonly kind: 'binding';
  readonly hostId: HostId;
  readonly binding: Binding;
  /** binding.locators with the realm's uplink preferences applied: use these. */
  readonly locators: readonly Locator[];
  /** Seconds the answer may be cached. */
  readonly ttl: number;
}

/** Unknown ID, expired, or not visible to this host (indistinguishable by design). */
export interface NegativeAnswer {
  readonly kind: 'negative';
  readonly hostId: HostId;
  readonly ttl: number;
}

export type LookupResult = BindingAnswer | NegativeAnswer;

export type RegisterStatusName = keyof typeof RegisterStatus;

export type RegisterResult =
  | { readonly ok: true; readonly seq: number; readonly expiresIn: number; readonly refresh: number }
  | { readonly ok: false; readonly status: Exclude<RegisterStatusName, 'ok'> | 'unknown'; readonly seq: number };

export interface RmClient {
  /** This host's ID (derived from key and prefix). */
  readonly hostId: HostId;
  start(): Promise<void>;
  /** Stops refreshing, fails what is in flight, closes the socket if the client opened it. */
  stop(): Promise<void>;
  /**
   * Registers a binding of this host (signed with its key) and, when keep is true (default), keeps
   * refreshing it until stop() or a newer register(). Resolves when the RM has stored it durably.
   */
  register(binding: Binding, opts?: { keep?: boolean }): Promise<RegisterResult>;
  lookup(hostId: HostId): Promise<LookupResult>;
  /** Follows IDs: the RM pushes their new bindings (onPush). Resolves with how many the RM accepted. */
  subscribe(hostIds: readonly HostId[]): Promise<number>;
  unsubscribe(hostIds: readonly HostId[]): Promise<void>;
  /** Adds a push listener; returns a function that removes it. */
  onPush(cb: (answer: BindingAnswer) => void): () => void;
  counters(): Record<string, number>;
}

// ---- pure decisions -------------------------------------------------------------------------------

/** Pure: the wait after transmission n (1-based): initial × 2^(n-1), capped, with ±25% jitter. */
export function retransmitDelay(attempt: number, p: RetransmitPolicy, random01 = 0.5): number {
  const base = Math.min(p.maxMs, p.initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.75 + 0.5 * random01));
}

export type RequestDecision = 'wait' | 'resend' | 'fail';

/** Pure: what to do with a request in flight at time now. */
export function decideRequest(r: { attempts: number; nextAt: number }, now: number, p: RetransmitPolicy): RequestDecision {
  if (now < r.nextAt) return 'wait';
  return r.attempts >= p.attempts ? 'fail' : 'resend';
}

// ---- the client -----------------------------------------------------------------------------------

type Body = ControlMessage;
interface Pending {
  readonly reqId: number;
  /** Built again for each transmission (fresh sequence number and MAC). */
  readonly body: Body;
  attempts: number;
  nextAt: number;
  /** Sent at least once under the current session. */
  sent: boolean;
  readonly settle: (m: ControlMessage | Error) => void;
}

interface ClientSession {
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
}

export function createRmClient(opts: RmClientOptions): RmClient {
  if (opts.rm.length === 0) throw new RealmnetError('CONFIG_INVALID', 'RM client: no Realm Manager address given', 'list at least one RM');
  const clock = opts.clock ?? systemClock;
  const log = (opts.log ?? silentLogger).child({ module: 'rm-client' });
  const policy: RetransmitPolicy = { ...DEFAULT_RETRANSMIT, ...opts.retransmit };
  const maxOutstanding = opts.maxOutstanding ?? 1024;
  const maxTracked = opts.maxTrackedIds ?? 65_536;
  const random = opts.random ?? Math.random;
  const hostId = deriveHostId(opts.prefix, opts.key.publicKey);
  const hostIdBytes = hostId.toBytes();
  const pushListeners = new Set<(a: BindingAnswer) => void>();
  if (opts.onPush) pushListeners.add(opts.onPush);

  const c = {
    'tx.datagrams': 0,
    'tx.errors': 0,
    'rx.datagrams': 0,
    'rx.drop.wrongSource': 0,
    'rx.drop.header': 0,
    'rx.drop.badSession': 0,
    'rx.drop.badMac': 0,
    'rx.drop.replay': 0,
    'rx.drop.malformed': 0,
    'rx.drop.unexpected': 0,
    'rx.drop.badWelcome': 0,
    /** Decoded WELCOMEs that were not refused (a late one included: answers.late). */
    'rx.handled.welcome': 0,
    /** REJECTs naming the current session (they start a new HELLO). */
    'rx.handled.reject': 0,
    /** Authenticated answers to requests (late ones included). */
    'rx.handled.answer': 0,
    /** Authenticated pushes (acknowledged; then verified: push.delivered or binding.*). */
    'rx.handled.push': 0,
    'requests.sent': 0,
    'requests.retransmitted': 0,
    'requests.timedOut': 0,
    'requests.refusedBusy': 0,
    'answers.late': 0,
    'binding.forged': 0,
    'binding.mismatch': 0,
    'binding.stale': 0,
    'push.received': 0,
    'push.delivered': 0,
    /** Verified pushes for IDs this host does not follow: dropped. */
    'push.notFollowed': 0,
    'sessions.established': 0,
    'sessions.lost': 0,
    'rm.failovers': 0,
  };

  let socket: Socket | null = opts.socket ?? null;
  const ownSocket = opts.socket === undefined;
  let rmIndex = 0;
  let session: ClientSession | null = null;
  let handshake: Handshake | null = null;
  const pending = new Map<number, Pending>();
  let nextReqId = 1;
  let timer: NodeJS.Timeout | null = null;
  let refreshTimer: NodeJS.Timeout | null = null;
  let refreshS = 60;
  let stopped = false;
  let readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** Highest sequence number seen per ID (hex) and the bytes that carried it (verified). */
  const seen = new Map<string, { seq: number; bytes: Uint8Array }>();
  /** Bindings kept registered, by host ID hex. */
  const kept = new Map<string, Binding>();
  const followed = new Set<string>();

  const rm = (): RmAddress => opts.rm[rmIndex % opts.rm.length];

  function send(buf: Uint8Array): void {
    if (socket === null) return;
    const r = rm();
    try {
      socket.send(buf, r.port, r.address);
      c['tx.datagrams']++;
    } catch {
      c['tx.errors']++;
    }
  }

  // ---- session set-up ----

  function beginHandshake(): void {
    const { hello, eph } = signedHello(opts.key, hostIdBytes, opts.prefix.length, takeReqId());
    handshake = { hello, eph, attempts: 1, nextAt: clock.now() + retransmitDelay(1, policy, random()) };
    send(encode(hello, null));
    arm();
  }

  function onWelcome(m: Extract<ControlMessage, { type: 'welcome' }>): void {
    const hs = handshake;
    if (hs === null || m.reqId !== hs.hello.reqId) {
      c['rx.handled.welcome']++;
      c['answers.late']++;
      return;
    }
    const pinned = rm().publicKey;
    if (pinned !== undefined && !Buffer.from(pinned).equals(Buffer.from(m.rmPublicKey))) {
      c['rx.drop.badWelcome']++;
      return;
    }
    const signed = welcomeSignedBytes(m.sid, m.ephemeral, hostIdBytes, hs.eph.publicKey, hs.hello.nonce);
    if (!verifyBytes(m.rmPublicKey, signed, m.signature)) {
      c['rx.drop.badWelcome']++;
      return;
    }
    const keys = deriveSessionKeys(hs.eph, m.ephemeral, {
      sid: m.sid,
      clientHostId: hostIdBytes,
      clientEphemeral: hs.eph.publicKey,
      rmEphemeral: m.ephemeral,
      nonce: hs.hello.nonce,
    });
    if (keys === null) {
      c['rx.drop.badWelcome']++;
      return;
    }
    c['rx.handled.welcome']++;
    handshake = null;
    session = { sid: m.sid, keys, rx: new ReplayWindow(), txSeq: 0 };
    c['sessions.established']++;
    log.debug({ sid: m.sid, rm: `${rm().address}:${rm().port}` }, 'session established');
    for (const w of readyWaiters) w.resolve();
    readyWaiters = [];
    // Everything in flight goes out again under the new session.
    const now = clock.now();
    for (const p of pending.values()) transmit(p, now, false);
  }

  function loseSession(why: string): void {
    if (session === null) return;
    log.debug({ why }, 'session lost; setting up a new one');
    session = null;
    c['sessions.lost']++;
    for (const p of pending.values()) p.sent = false;
    beginHandshake();
    // After the new session: the RM may have lost subscriptions (restart); send them and the kept
    // bindings again.
    void ready().then(resync, () => {});
  }

  function resync(): void {
    if (followed.size > 0) void subscribeKeys([...followed]).catch(() => {});
    for (const b of kept.values()) void sendRegister(b).catch(() => {});
  }

  function ready(): Promise<void> {
    if (session !== null) return Promise.resolve();
    if (stopped) return Promise.reject(stoppedError());
    return new Promise((resolve, reject) => readyWaiters.push({ resolve, reject }));
  }

  // ---- requests ----

  function takeReqId(): number {
    const id = nextReqId;
    nextReqId = nextReqId >= 0xffffffff ? 1 : nextReqId + 1;
    return id;
  }

  function request<T extends ControlMessage['type']>(make: (reqId: number) => Body, answerType: T): Promise<Extract<ControlMessage, { type: T }>> {
    if (stopped) return Promise.reject(stoppedError());
    if (pending.size >= maxOutstanding) {
      c['requests.refusedBusy']++;
      return Promise.reject(
        new RealmnetError('RM_CLIENT_BUSY', `more than ${maxOutstanding} requests to the Realm Manager in flight`, 'slow down or raise maxOutstanding'),
      );
    }
    return new Promise((resolve, reject) => {
      const reqId = takeReqId();
      const p: Pending = {
        reqId,
        body: make(reqId),
        attempts: 0,
        nextAt: 0,
        sent: false,
        settle: (m) => {
          pending.delete(reqId);
          if (m instanceof Error) reject(m);
          else if (m.type !== answerType) reject(new RealmnetError('INTERNAL', `expected ${answerType}, got ${m.type}`));
          else resolve(m as Extract<ControlMessage, { type: T }>);
        },
      };
      pending.set(reqId, p);
      if (session !== null) transmit(p, clock.now(), false);
      arm();
    });
  }

  function transmit(p: Pending, now: number, retransmission: boolean): void {
    if (session === null) return;
    p.attempts++;
    p.sent = true;
    p.nextAt = now + retransmitDelay(p.attempts, policy, random());
    session.txSeq++;
    if (retransmission) c['requests.retransmitted']++;
    else c['requests.sent']++;
    send(encode(p.body, { sid: session.sid, seq: session.txSeq, key: session.keys.c2s }));
  }

  /** One timer drives every retransmission; it runs only while something waits. */
  function arm(): void {
    if (timer !== null || stopped) return;
    timer = setInterval(tick, Math.max(10, Math.floor(policy.initialMs / 4)));
  }

  function tick(): void {
    const now = clock.now();
    if (handshake !== null) {
      const d = decideRequest(handshake, now, policy);
      if (d === 'resend') {
        handshake.attempts++;
        handshake.nextAt = now + retransmitDelay(handshake.attempts, policy, random());
        send(encode(handshake.hello, null));
      } else if (d === 'fail') {
        // This RM does not answer: try the next one (all of them, round robin, forever while needed).
        if (opts.rm.length > 1) c['rm.failovers']++;
        rmIndex++;
        log.warn({ rm: `${rm().address}:${rm().port}` }, 'Realm Manager not answering; trying the next one');
        beginHandshake();
        failWaitingForSession(now);
      }
    }
    for (const p of pending.values()) {
      if (!p.sent) continue;
      const d = decideRequest(p, now, policy);
      if (d === 'resend') transmit(p, now, true);
      else if (d === 'fail') {
        c['requests.timedOut']++;
        p.settle(new RealmnetError('TIMEOUT', `no answer from the Realm Manager after ${p.attempts} attempts`, 'is the RM running and reachable on UDP 4342?'));
      }
    }
    if (pending.size === 0 && handshake === null && timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  }

  /** Requests that never got a session for as long as their own attempts would have taken fail. */
  function failWaitingForSession(now: number): void {
    for (const p of pending.values()) {
      if (p.sent) continue;
      p.attempts++;
      if (p.attempts >= policy.attempts) {
        c['requests.timedOut']++;
        p.settle(new RealmnetError('TIMEOUT', 'no Realm Manager answered the session set-up', 'is the RM running and reachable on UDP 4342?'));
      }
    }
    void now;
  }

  // ---- receive ----

  function onMessage(buf: Buffer, rinfo: { address: string; port: number }): void {
    c['rx.datagrams']++;
    const r = rm();
    if (rinfo.port !== r.port || !sameAddress(rinfo.address, r.address)) {
      c['rx.drop.wrongSource']++;
      return;
    }
    const h = decodeHeader(buf);
    if (!h.ok) {
      c['rx.drop.header']++;
      return;
    }
    if (h.msg.sid === 0) {
      const b = decodeBody(h.msg, buf);
      if (!b.ok) {
        c['rx.drop.malformed']++;
        return;
      }
      if (b.msg.type === 'welcome') return onWelcome(b.msg);
      if (b.msg.type === 'reject') {
        // Unauthenticated: acted on only if it names our current session, and only by re-handshaking.
        if (b.msg.code === RejectCode.sessionUnknown && session !== null && b.msg.sid === session.sid) {
          c['rx.handled.reject']++;
          loseSession('RM does not know the session');
        } else c['rx.drop.unexpected']++;
        return;
      }
      c['rx.drop.unexpected']++;
      return;
    }
    if (session === null || h.msg.sid !== session.sid) {
      c['rx.drop.badSession']++;
      return;
    }
    if (!checkMac(buf, session.keys.s2c)) {
      c['rx.drop.badMac']++;
      return;
    }
    if (!session.rx.check(h.msg.seq)) {
      c['rx.drop.replay']++;
      return;
    }
    const b = decodeBody(h.msg, buf);
    if (!b.ok) {
      c['rx.drop.malformed']++;
      return;
    }
    const m = b.msg;
    if (m.type === 'push') return onPushMsg(m);
    if (m.type === 'hello' || m.type === 'welcome' || m.type === 'reject' || m.type === 'pushAck' || !('reqId' in m)) {
      c['rx.drop.unexpected']++;
      return;
    }
    c['rx.handled.answer']++;
    const p = pending.get(m.reqId);
    if (p === undefined) {
      c['answers.late']++;
      return;
    }
    p.settle(m);
  }

  function onPushMsg(m: Push): void {
    c['rx.handled.push']++;
    c['push.received']++;
    if (session === null) return;
    // Acknowledge even what we then refuse: the RM should stop retransmitting either way.
    session.txSeq++;
    send(encode({ type: 'pushAck', pushId: m.pushId }, { sid: session.sid, seq: session.txSeq, key: session.keys.c2s }));
    const a = verifiedAnswer(m.binding, null, m.ttl, m.prefs);
    if (a === null) return;
    if (!followed.has(a.hostId.hex)) {
      c['push.notFollowed']++;
      return;
    }
    c['push.delivered']++;
    for (const l of pushListeners) {
      try {
        l(a);
      } catch (e) {
        log.error({ err: (e as Error).message }, 'push listener threw');
      }
    }
  }

  /**
   * Decodes and verifies a served binding: structure, ID = hash(key), signature, the expected ID,
   * and a sequence number not below one already seen. Null (counted) when any check fails.
   */
  function verifiedAnswer(bytes: Uint8Array, expect: HostId | null, ttl: number, prefs: readonly LocatorPref[]): BindingAnswer | null {
    const d = decodeBinding(bytes);
    if (!d.ok) {
      c['binding.forged']++;
      return null;
    }
    const b = d.binding;
    if (expect !== null && !b.hostId.equals(expect)) {
      c['binding.mismatch']++;
      return null;
    }
    const prev = seen.get(b.hostId.hex);
    if (prev !== undefined && b.seq < prev.seq) {
      c['binding.stale']++;
      return null;
    }
    const same = prev !== undefined && prev.seq === b.seq && Buffer.from(prev.bytes).equals(Buffer.from(b.bytes));
    if (!same) {
      if (prev !== undefined && prev.seq === b.seq) {
        // Same sequence number, other content: one of the two is not what the host signed.
        c['binding.stale']++;
        return null;
      }
      if (!verifyBinding(b).ok) {
        c['binding.forged']++;
        return null;
      }
      if (seen.size >= maxTracked && prev === undefined) {
        const oldest = seen.keys().next();
        if (!oldest.done) seen.delete(oldest.value);
      }
      seen.set(b.hostId.hex, { seq: b.seq, bytes: b.bytes });
    }
    return Object.freeze({ kind: 'binding', hostId: b.hostId, binding: b, locators: applyPrefs(b.locators, prefs), ttl });
  }

  // ---- operations ----

  async function sendRegister(binding: Binding): Promise<RegisterReply> {
    await ready();
    return request((reqId) => ({ type: 'register', reqId, binding: binding.bytes }), 'registerReply');
  }

  async function subscribeKeys(hexes: readonly string[]): Promise<number> {
    await ready();
    let accepted = 0;
    for (let i = 0; i < hexes.length; i += MAX_IDS_PER_MESSAGE) {
      const ids = hexes.slice(i, i + MAX_IDS_PER_MESSAGE).map((h) => Buffer.from(h, 'hex'));
      const r = await request((reqId) => ({ type: 'subscribe', reqId, hostIds: ids }), 'subscribeReply');
      accepted += r.accepted;
    }
    return accepted;
  }

  function scheduleRefresh(): void {
    if (refreshTimer !== null || stopped) return;
    refreshTimer = setInterval(() => {
      if (session === null) return;
      resync();
    }, refreshS * 1000);
    refreshTimer.unref();
  }

  return {
    hostId,

    async start() {
      if (socket === null) {
        const family = rm().address.includes(':') ? 'udp6' : 'udp4';
        socket = createSocket({ type: family });
        await new Promise<void>((resolve, reject) => {
          (socket as Socket).once('error', reject);
          (socket as Socket).bind(0, () => {
            (socket as Socket).off('error', reject);
            resolve();
          });
        });
      }
      // A send error (e.g. ICMP unreachable reported later) must not crash the agent.
      socket.on('error', () => {
        c['tx.errors']++;
      });
      socket.on('message', onMessage);
      beginHandshake();
      await ready();
    },

    async stop() {
      stopped = true;
      if (timer !== null) clearInterval(timer);
      if (refreshTimer !== null) clearInterval(refreshTimer);
      timer = refreshTimer = null;
      for (const p of [...pending.values()]) p.settle(stoppedError());
      for (const w of readyWaiters) w.reject(stoppedError());
      readyWaiters = [];
      if (socket !== null) {
        socket.off('message', onMessage);
        if (ownSocket) await new Promise<void>((r) => (socket as Socket).close(() => r()));
      }
    },

    async register(binding, o = {}) {
      if (!binding.hostId.equals(hostId)) {
        throw new RealmnetError('BINDING_INVALID', `binding is for ${binding.hostId.toString()}, not this host (${hostId.toString()})`);
      }
      const r = await sendRegister(binding);
      if (r.status === RegisterStatus.ok) {
        if (o.keep !== false) {
          const cur = kept.get(hostId.hex);
          if (cur === undefined || cur.seq <= binding.seq) kept.set(hostId.hex, binding);
          refreshS = Math.max(1, r.refresh);
          scheduleRefresh();
        }
        return { ok: true, seq: r.seq, expiresIn: r.expiresIn, refresh: r.refresh };
      }
      const name = (Object.keys(RegisterStatus) as RegisterStatusName[]).find((k) => RegisterStatus[k] === r.status);
      return { ok: false, status: name === undefined || name === 'ok' ? 'unknown' : name, seq: r.seq };
    },

    async lookup(id) {
      await ready();
      const r: LookupReply = await request((reqId) => ({ type: 'lookup', reqId, hostId: id.toBytes() }), 'lookupReply');
      if (!Buffer.from(r.hostId).equals(Buffer.from(id.toBytes()))) {
        c['binding.mismatch']++;
        throw new RealmnetError('BINDING_INVALID', `the RM answered a lookup of ${id.toString()} for another ID`);
      }
      if (r.binding === null) return Object.freeze({ kind: 'negative', hostId: id, ttl: r.ttl });
      const a = verifiedAnswer(r.binding, id, r.ttl, r.prefs);
      if (a === null) throw new RealmnetError('BINDING_INVALID', `the RM served an invalid binding for ${id.toString()} (forged, mismatched or stale)`);
      return a;
    },

    async subscribe(ids) {
      const hexes = ids.map((i) => i.hex);
      for (const h of hexes) followed.add(h);
      scheduleRefresh();
      return subscribeKeys(hexes);
    },

    async unsubscribe(ids) {
      const hexes = ids.map((i) => i.hex);
      for (const h of hexes) followed.delete(h);
      await ready();
      for (let i = 0; i < hexes.length; i += MAX_IDS_PER_MESSAGE) {
        const chunk = hexes.slice(i, i + MAX_IDS_PER_MESSAGE).map((h) => Buffer.from(h, 'hex'));
        await request((reqId) => ({ type: 'unsubscribe', reqId, hostIds: chunk }), 'unsubscribeReply');
      }
    },

    onPush(cb) {
      pushListeners.add(cb);
      return () => pushListeners.delete(cb);
    },

    counters() {
      return { ...c, 'requests.inFlight': pending.size, 'subscriptions.followed': followed.size, 'bindings.kept': kept.size };
    },
  };
}

function stoppedError(): RealmnetError {
  return new RealmnetError('RM_CLIENT_STOPPED', 'the RM client was stopped', '', { userFacing: false });
}

/** 127.0.0.1 and ::ffff:127.0.0.1 are the same sender. */
function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  const strip = (s: string) => (s.startsWith('::ffff:') ? s.slice(7) : s);
  return strip(a) === strip(b);
}
