import { createSocket, type Socket } from 'node:dgram';
import { systemClock, type Clock } from '../../shared/clock.ts';
import { RealmnetError } from '../../shared/errors.ts';
import { silentLogger, type Logger } from '../../shared/log.ts';
import { deriveHostId, type HostId, type Prefix } from '../../shared/ids.ts';
import type { KeyPair } from '../../shared/crypto/ed25519.ts';
import type { Binding } from '../../shared/binding.ts';
import { decodeBody, decodeHeader } from '../../shared/wire/codec.ts';
import { GroupStatus, MAX_IDS_PER_MESSAGE, RegisterStatus, RejectCode, type ControlMessage, type GroupPush, type GroupReply, type LookupReply, type Push, type RegisterReply, type Revoke, type Welcome } from '../../shared/wire/messages.ts';
import { HostId as HostIdClass } from '../../shared/ids.ts';
import type { JoinToken } from '../../shared/membership.ts';
import type { AnswerRefusal, AnswerVerifier, BindingAnswer, GroupAnswer, LookupResult } from './answers.ts';
import { DEFAULT_RETRANSMIT, RequestTable, type RetransmitPolicy } from './requests.ts';
import { RmSession } from './session.ts';
import { RealmTrust } from './trust.ts';


/**
 * The agent's Realm Manager client: register, lookup, subscribe/push over the control protocol
 * (docs/control-protocol.md), on a node:dgram socket (control traffic is light; the data plane has
 * its own sockets).
 *
 * 1. start() binds the socket and runs the session set-up (HELLO/WELCOME, session.ts); requests
 *    made before the session exists wait for it.
 * 2. Every request has an ID and is retransmitted with exponential backoff until answered or out of
 *    attempts (requests.ts); at most maxOutstanding are in flight (more are refused at once).
 * 3. Every answer is authenticated (session MAC, replay window), and every binding in it is
 *    verified (signature, ID = hash of key, sequence number not older than one seen; answers.ts).
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
 * 6. Membership (docs/security.md): WELCOME carries this host's certificate (trust.ts keeps it); two
 *    thirds into its life the client asks for a fresh one (RENEW), retrying until it has one. A
 *    REJECT of the HELLO as "not a member" or "bad token" is logged once (what the operator should
 *    do) and the HELLO is retried with backoff: the operator may admit the host later. A REVOKE of
 *    a peer is acknowledged and handed to onRevoke listeners (the resolver forgets the peer).
 */
export interface RmAddress {
  readonly address: string;
  readonly port: number;
  /**
   * The RM's Ed25519 public key (32 bytes). When given, a WELCOME signed by any other key is refused;
   * without it, only the realm keys the host pinned are accepted (never the first key that answers).
   */
  readonly publicKey?: Uint8Array;
}

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
  /**
   * The host's realm trust (pinned realm keys, join token, its certificate), shared by the clients of
   * all its uplinks. Default: one of its own, pinning the rm[].publicKey keys and join's realm key.
   */
  readonly trust?: RealmTrust;
  /** A join token (when no trust is given): its proof goes in HELLO until the host holds a certificate. */
  readonly join?: JoinToken;
  /** Called with the ID of every peer the RM revoked (and until when, Unix seconds, it is refused). */
  readonly onRevoke?: (hostId: HostId, untilS: number) => void;
  /** Called with every verified pushed binding. More can be added with onPush(). */
  readonly onPush?: (answer: BindingAnswer) => void;
  /** For jitter; tests pass a fixed one. */
  readonly random?: () => number;
}

export type RegisterStatusName = keyof typeof RegisterStatus;

export type GroupStatusName = keyof typeof GroupStatus | 'unknownStatus';
export interface GroupResult {
  readonly status: GroupStatusName;
  readonly seq: number;
  readonly expiresIn?: number;
}

function groupStatusName(n: number): GroupStatusName {
  return (Object.keys(GroupStatus) as (keyof typeof GroupStatus)[]).find((k) => GroupStatus[k] === n) ?? 'unknownStatus';
}

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
  /** Adds a revocation listener (a peer the RM revoked); returns a function that removes it. */
  onRevoke(cb: (hostId: HostId, untilS: number) => void): () => void;
  /** Asks the RM for a fresh membership certificate now; resolves with whether one came. */
  renew(): Promise<boolean>;
  /** Slice 2: hands an owner-signed user/data binding to the RM. */
  publish(binding: Uint8Array): Promise<GroupResult>;
  /** Slice 2: this host consents to serve id (kept and refreshed unless keep is false). */
  serve(id: HostId, binding: Uint8Array | null, opts?: { keep?: boolean }): Promise<GroupResult>;
  unserve(id: HostId): void;
  /** Adds a listener for pushed user/data bindings and presence (the RCA); returns its remover. */
  onGroupPush(cb: (answer: GroupAnswer) => void): () => void;
  readonly trust: RealmTrust;
  /** Whether a request now would be kept (not refused as busy): check before starting one. */
  hasRoom(): boolean;
  counters(): Record<string, number>;
}

// ---- the client -----------------------------------------------------------------------------------

const COUNTER_NAMES = [
  'tx.datagrams',
  'tx.errors',
  'rx.datagrams',
  'rx.drop.wrongSource',
  'rx.drop.header',
  'rx.drop.badSession',
  'rx.drop.badMac',
  'rx.drop.replay',
  'rx.drop.malformed',
  'rx.drop.unexpected',
  'rx.drop.badWelcome',
  /** Decoded WELCOMEs that were not refused (a late one included: answers.late). */
  'rx.handled.welcome',
  /** REJECTs naming the current session (they start a new HELLO). */
  'rx.handled.reject',
  /** Authenticated answers to requests (late ones included). */
  'rx.handled.answer',
  /** Authenticated pushes (acknowledged; then verified: push.delivered or binding.*). */
  'rx.handled.push',
  /** COOKIEs for the HELLO in flight: the HELLO went again at once with the cookie. */
  'rx.handled.cookie',
  /** Authenticated CHALLENGEs (the RM saw us at a new address): echoed at once. */
  'rx.handled.challenge',
  /** Authenticated REVOKEs (acknowledged; revoke.delivered). */
  'rx.handled.revoke',
  /** REJECTs of our HELLO: not a member (hello.notMember) or a bad/used token (hello.badToken). */
  'rx.handled.helloRejected',
  'requests.sent',
  'requests.retransmitted',
  'requests.timedOut',
  'requests.refusedBusy',
  'answers.late',
  'binding.forged',
  'binding.mismatch',
  'binding.stale',
  /** A binding served without a certificate, with one that did not verify or name its ID and key, for
   *  another prefix length, with another key than the one pinned for the ID, or of a revoked ID. */
  'binding.noCert',
  'binding.badCert',
  'binding.prefixLen',
  'binding.keyChanged',
  'binding.revoked',
  /** Slice 2: verified GROUP-REPLYs (user/data IDs). */
  'group.answers',
  /** Another realm's key endorsed by our RM with a foreign binding (docs/hierarchy.md); refused: not signed by a pinned key, or expired. */
  'endorse.accepted',
  'endorse.refused',
  'revoke.delivered',
  'hello.notMember',
  'hello.badToken',
  'cert.renewed',
  'cert.renewFailed',
  /** RENEW-REPLY with nil: this host is no longer a member. */
  'cert.revoked',
  'push.received',
  'push.delivered',
  /** Verified pushes for IDs this host does not follow: dropped. */
  'push.notFollowed',
  'sessions.established',
  'sessions.lost',
  'rm.failovers',
] as const;
type CounterName = (typeof COUNTER_NAMES)[number];

export function createRmClient(opts: RmClientOptions): RmClient {
  return new Client(opts);
}

class Client implements RmClient {
  readonly hostId: HostId;
  private readonly c = Object.fromEntries(COUNTER_NAMES.map((k) => [k, 0])) as Record<CounterName, number>;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly policy: RetransmitPolicy;
  private readonly random: () => number;
  private readonly session: RmSession;
  private readonly requests: RequestTable;
  private readonly answers: AnswerVerifier;
  readonly trust: RealmTrust;
  private readonly pushListeners = new Set<(a: BindingAnswer) => void>();
  private readonly revokeListeners = new Set<(id: HostId, untilS: number) => void>();
  private readonly groupPushListeners = new Set<(a: GroupAnswer) => void>();
  /** Slice 2: the user/data IDs this host consents to serve (refreshed with its registration). */
  private readonly served = new Map<string, { id: HostId; binding: Uint8Array | null }>();
  private renewTimer: NodeJS.Timeout | null = null;
  private renewing = false;
  /** REJECTs of our HELLO seen (the first, and every 20th, is logged). */
  private helloRejects = 0;
  /** Bindings kept registered, by idKey of the host ID. */
  private readonly kept = new Map<string, Binding>();
  /** Followed IDs by idKey; the IDs themselves go back on the wire when the client re-subscribes. */
  private readonly followed = new Map<string, HostId>();
  private readonly ownSocket: boolean;
  private socket: Socket | null;
  private rmIndex = 0;
  /** The last cookie each RM (by index in opts.rm) gave us: a new HELLO carries it, saving a round trip. */
  private readonly cookies = new Map<number, Uint8Array>();
  private timer: NodeJS.Timeout | null = null;
  private refreshTimer: NodeJS.Timeout | null = null;
  private refreshS = 60;
  private stopped = false;
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private readonly onMessageBound = (buf: Buffer, rinfo: { address: string; port: number }): void => this.onMessage(buf, rinfo);

  constructor(private readonly opts: RmClientOptions) {
    if (opts.rm.length === 0) throw new RealmnetError('CONFIG_INVALID', 'RM client: no Realm Manager address given', 'list at least one RM');
    this.clock = opts.clock ?? systemClock;
    this.log = (opts.log ?? silentLogger).child({ module: 'rm-client' });
    this.policy = { ...DEFAULT_RETRANSMIT, ...opts.retransmit };
    this.random = opts.random ?? Math.random;
    this.hostId = deriveHostId(opts.prefix, opts.key.publicKey);
    this.trust =
      opts.trust ??
      new RealmTrust({ realmKeys: opts.rm.flatMap((r) => (r.publicKey === undefined ? [] : [r.publicKey])), join: opts.join ?? null, maxTrackedIds: opts.maxTrackedIds });
    if (this.trust.realmKeys.length === 0) {
      throw new RealmnetError('CONFIG_INVALID', 'RM client: no realm key pinned', 'give the RM public key (rm.servers[].publicKey, from `realmnet rm key --config rm.yaml`) or a join token (rm.join)');
    }
    this.session = new RmSession(opts.key, this.hostId.toBytes(), opts.prefix.length, this.policy, this.random, this.trust);
    this.requests = new RequestTable(this.policy, opts.maxOutstanding ?? 1024, {
      clock: this.clock,
      random: this.random,
      transmit: (body) => {
        const bytes = this.session.seal(body);
        if (bytes === null) return false;
        this.send(bytes);
        return true;
      },
      onSent: (re) => void this.c[re ? 'requests.retransmitted' : 'requests.sent']++,
      onTimeout: () => void this.c['requests.timedOut']++,
    });
    this.answers = this.trust.answers;
    if (opts.onPush) this.pushListeners.add(opts.onPush);
    if (opts.onRevoke) this.revokeListeners.add(opts.onRevoke);
    this.socket = opts.socket ?? null;
    this.ownSocket = opts.socket === undefined;
  }

  async start(): Promise<void> {
    const socket = this.socket ?? (await this.openSocket());
    this.socket = socket;
    // A send error (e.g. ICMP unreachable reported later) must not crash the agent.
    socket.on('error', () => void this.c['tx.errors']++);
    socket.on('message', this.onMessageBound);
    this.beginHandshake();
    await this.ready();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    if (this.refreshTimer !== null) clearInterval(this.refreshTimer);
    if (this.renewTimer !== null) clearTimeout(this.renewTimer);
    this.timer = this.refreshTimer = this.renewTimer = null;
    this.requests.failAll(stoppedError());
    for (const w of this.readyWaiters) w.reject(stoppedError());
    this.readyWaiters = [];
    const socket = this.socket;
    if (socket !== null) {
      socket.off('message', this.onMessageBound);
      if (this.ownSocket) await new Promise<void>((r) => socket.close(() => r()));
    }
  }

  async register(binding: Binding, o: { keep?: boolean } = {}): Promise<RegisterResult> {
    if (!binding.hostId.equals(this.hostId)) {
      throw new RealmnetError('BINDING_INVALID', `binding is for ${binding.hostId.toString()}, not this host (${this.hostId.toString()})`);
    }
    const r = await this.sendRegister(binding);
    if (r.status === RegisterStatus.ok) {
      if (o.keep !== false) {
        const cur = this.kept.get(this.hostId.key);
        if (cur === undefined || cur.seq <= binding.seq) this.kept.set(this.hostId.key, binding);
        this.refreshS = Math.max(1, r.refresh);
        this.scheduleRefresh();
      }
      return { ok: true, seq: r.seq, expiresIn: r.expiresIn, refresh: r.refresh };
    }
    const name = (Object.keys(RegisterStatus) as RegisterStatusName[]).find((k) => RegisterStatus[k] === r.status);
    return { ok: false, status: name === undefined || name === 'ok' ? 'unknown' : name, seq: r.seq };
  }

  async lookup(id: HostId): Promise<LookupResult> {
    await this.ready();
    const r = await this.request((reqId) => ({ type: 'lookup', reqId, hostId: id.toBytes() }), ['lookupReply', 'groupReply'] as const);
    if (r.type === 'groupReply') return this.groupAnswer(id, r);
    if (!Buffer.from(r.hostId).equals(Buffer.from(id.toBytes()))) {
      this.c['binding.mismatch']++;
      throw new RealmnetError('BINDING_INVALID', `the RM answered a lookup of ${id.toString()} for another ID`);
    }
    if (r.binding === null) return Object.freeze({ kind: 'negative', hostId: id, ttl: r.ttl });
    if (r.endorsement) this.endorse(r.endorsement);
    const a = this.verified(this.answers.check(r.binding, id, r.ttl, r.prefs, r.cert));
    if (a === null) throw new RealmnetError('BINDING_INVALID', `the RM served an invalid binding for ${id.toString()} (forged, mismatched, stale, revoked or without a valid certificate)`);
    return a;
  }

  async publish(binding: Uint8Array): Promise<GroupResult> {
    await this.ready();
    const r = await this.request((reqId) => ({ type: 'publish', reqId, binding }), 'publishReply');
    return { status: groupStatusName(r.status), seq: r.seq };
  }

  async serve(id: HostId, binding: Uint8Array | null, o: { keep?: boolean } = {}): Promise<GroupResult> {
    if (o.keep !== false) {
      this.served.set(id.key, { id, binding });
      this.scheduleRefresh();
    }
    await this.ready();
    const r = await this.request((reqId) => ({ type: 'serve', reqId, id: id.toBytes(), binding }), 'serveReply');
    return { status: groupStatusName(r.status), seq: 0, expiresIn: r.expiresIn };
  }

  unserve(id: HostId): void {
    this.served.delete(id.key);
  }

  onGroupPush(cb: (answer: GroupAnswer) => void): () => void {
    this.groupPushListeners.add(cb);
    return () => this.groupPushListeners.delete(cb);
  }

  async subscribe(ids: readonly HostId[]): Promise<number> {
    for (const id of ids) this.followed.set(id.key, id);
    this.scheduleRefresh();
    return this.subscribeIds(ids);
  }

  async unsubscribe(ids: readonly HostId[]): Promise<void> {
    for (const id of ids) this.followed.delete(id.key);
    await this.ready();
    for (let i = 0; i < ids.length; i += MAX_IDS_PER_MESSAGE) {
      const chunk = ids.slice(i, i + MAX_IDS_PER_MESSAGE).map((id) => id.toBytes());
      await this.request((reqId) => ({ type: 'unsubscribe', reqId, hostIds: chunk }), 'unsubscribeReply');
    }
  }

  onPush(cb: (answer: BindingAnswer) => void): () => void {
    this.pushListeners.add(cb);
    return () => this.pushListeners.delete(cb);
  }

  onRevoke(cb: (hostId: HostId, untilS: number) => void): () => void {
    this.revokeListeners.add(cb);
    return () => this.revokeListeners.delete(cb);
  }

  async renew(): Promise<boolean> {
    await this.ready();
    const r = await this.request((reqId) => ({ type: 'renew', reqId }), 'renewReply');
    if (r.cert === null) {
      this.c['cert.revoked']++;
      this.log.warn({ hostId: this.hostId.toString() }, 'the RM says this host is no longer a member of the realm (revoked): ask the operator to admit it again (`realmnet rm admit`)');
      return false;
    }
    const why = this.trust.offer(r.cert, this.hostId, this.opts.key.publicKey);
    if (why !== null) {
      this.c['cert.renewFailed']++;
      this.log.warn({ why }, 'the RM renewed our membership certificate with one that does not verify');
      return false;
    }
    this.c['cert.renewed']++;
    return true;
  }

  hasRoom(): boolean {
    return !this.stopped && this.requests.hasRoom();
  }

  counters(): Record<string, number> {
    return { ...this.c, 'requests.inFlight': this.requests.size, 'subscriptions.followed': this.followed.size, 'bindings.kept': this.kept.size };
  }

  // ---- session set-up ----

  private rm(): RmAddress {
    return this.opts.rm[this.rmIndex % this.opts.rm.length];
  }

  private async openSocket(): Promise<Socket> {
    const socket = createSocket({ type: this.rm().address.includes(':') ? 'udp6' : 'udp4' });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    return socket;
  }

  private send(buf: Uint8Array): void {
    if (this.socket === null) return;
    const r = this.rm();
    try {
      this.socket.send(buf, r.port, r.address);
      this.c['tx.datagrams']++;
    } catch {
      this.c['tx.errors']++;
    }
  }

  private beginHandshake(): void {
    const cookie = this.cookies.get(this.rmIndex % this.opts.rm.length) ?? null;
    this.send(this.session.begin(this.requests.takeId(), this.clock.now(), cookie));
    this.arm();
  }

  private onWelcome(m: Welcome): void {
    const outcome = this.session.welcome(m, this.rm().publicKey);
    if (outcome === 'refused') return void this.c['rx.drop.badWelcome']++;
    this.c['rx.handled.welcome']++;
    if (outcome === 'late') return void this.c['answers.late']++;
    this.c['sessions.established']++;
    this.helloRejects = 0;
    this.log.debug({ sid: m.sid, rm: `${this.rm().address}:${this.rm().port}` }, 'session established');
    this.scheduleRenew();
    for (const w of this.readyWaiters) w.resolve();
    this.readyWaiters = [];
    // Everything in flight goes out again under the new session.
    this.requests.resendAll();
  }

  private loseSession(why: string): void {
    if (!this.session.lose()) return;
    this.log.debug({ why }, 'session lost; setting up a new one');
    this.c['sessions.lost']++;
    this.requests.markUnsent();
    this.beginHandshake();
    // After the new session: the RM may have lost subscriptions (restart); send them and the kept
    // bindings again.
    void this.ready().then(
      () => this.resync(),
      () => {},
    );
  }

  private resync(): void {
    if (this.followed.size > 0) void this.subscribeIds([...this.followed.values()]).catch(() => {});
    for (const b of this.kept.values()) void this.sendRegister(b).catch(() => {});
    // Consents lapse like registrations: refreshed with them.
    for (const v of this.served.values()) void this.serve(v.id, v.binding, { keep: false }).catch(() => {});
  }

  private ready(): Promise<void> {
    if (this.session.isEstablished) return Promise.resolve();
    if (this.stopped) return Promise.reject(stoppedError());
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  // ---- requests ----

  private request<T extends ControlMessage['type']>(make: (reqId: number) => ControlMessage, answerType: T | readonly T[]): Promise<Extract<ControlMessage, { type: T }>> {
    if (this.stopped) return Promise.reject(stoppedError());
    if (!this.requests.hasRoom()) this.c['requests.refusedBusy']++;
    const p = this.requests.start(make, answerType);
    this.arm();
    return p;
  }

  /** One timer drives every retransmission; it runs only while something waits. */
  private arm(): void {
    if (this.timer !== null || this.stopped) return;
    this.timer = setInterval(() => this.tick(), Math.max(10, Math.floor(this.policy.initialMs / 4)));
  }

  private tick(): void {
    const now = this.clock.now();
    const hello = this.session.helloDue(now);
    if (hello.bytes !== undefined) this.send(hello.bytes);
    else if (hello.decision === 'fail') {
      // This RM does not answer: try the next one (all of them, round robin, forever while needed).
      if (this.opts.rm.length > 1) this.c['rm.failovers']++;
      this.rmIndex++;
      this.log.warn({ rm: `${this.rm().address}:${this.rm().port}` }, 'Realm Manager not answering; trying the next one');
      this.beginHandshake();
      this.requests.failUnsent();
    }
    this.requests.tick(now);
    if (this.requests.size === 0 && !this.session.isHandshaking && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  // ---- receive ----

  private onMessage(buf: Buffer, rinfo: { address: string; port: number }): void {
    this.c['rx.datagrams']++;
    const r = this.rm();
    if (rinfo.port !== r.port || !sameAddress(rinfo.address, r.address)) return void this.c['rx.drop.wrongSource']++;
    const h = decodeHeader(buf);
    if (!h.ok) return void this.c['rx.drop.header']++;
    if (h.msg.sid === 0) return this.onUnauthenticated(h.msg, buf);
    const opened = this.session.open(h.msg.sid, h.msg.seq, buf);
    if (opened !== 'ok') return void this.c[`rx.drop.${opened}`]++;
    const b = decodeBody(h.msg, buf);
    if (!b.ok) return void this.c['rx.drop.malformed']++;
    const m = b.msg;
    if (m.type === 'push') return this.onPushMsg(m);
    if (m.type === 'groupPush') return this.onGroupPushMsg(m);
    if (m.type === 'challenge') {
      // Return routability: the echo leaves from this socket, i.e. from the address the RM saw; the
      // RM then moves the session here, and the next retransmission of what is in flight is answered.
      const reply = this.session.seal({ type: 'challengeReply', token: m.token });
      if (reply === null) return void this.c['rx.drop.unexpected']++;
      this.c['rx.handled.challenge']++;
      return this.send(reply);
    }
    if (m.type === 'revoke') return this.onRevokeMsg(m);
    if (m.type === 'hello' || m.type === 'welcome' || m.type === 'reject' || m.type === 'pushAck' || !('reqId' in m)) return void this.c['rx.drop.unexpected']++;
    this.c['rx.handled.answer']++;
    if (!this.requests.settle(m.reqId, m)) this.c['answers.late']++;
  }

  /** Session 0: only a WELCOME, a COOKIE for our HELLO, or a REJECT that names our session. */
  private onUnauthenticated(h: Parameters<typeof decodeBody>[0], buf: Buffer): void {
    const b = decodeBody(h, buf);
    if (!b.ok) return void this.c['rx.drop.malformed']++;
    if (b.msg.type === 'welcome') return this.onWelcome(b.msg);
    if (b.msg.type === 'cookie') {
      // Unauthenticated, and only ever used as the RM asks: in a HELLO to that RM.
      const hello = this.session.cookie(b.msg, this.clock.now());
      if (hello === null) return void this.c['rx.drop.unexpected']++;
      this.c['rx.handled.cookie']++;
      this.cookies.set(this.rmIndex % this.opts.rm.length, Uint8Array.from(b.msg.cookie));
      return this.send(hello);
    }
    if (b.msg.type === 'reject') {
      // Unauthenticated: acted on only if it names our current session, and only by re-handshaking.
      if (b.msg.code === RejectCode.sessionUnknown && this.session.sid !== null && b.msg.sid === this.session.sid) {
        this.c['rx.handled.reject']++;
        this.loseSession('RM does not know the session');
      } else if ((b.msg.code === RejectCode.notMember || b.msg.code === RejectCode.badToken) && b.msg.reqId === this.session.helloReqId) {
        this.onHelloRejected(b.msg.code);
      } else this.c['rx.drop.unexpected']++;
      return;
    }
    this.c['rx.drop.unexpected']++;
  }

  /**
   * Unauthenticated, so only a hint: it changes nothing but the log. The HELLO goes on being
   * retransmitted (and begun again) with backoff, so the host joins once the operator admits it.
   */
  private onHelloRejected(code: number): void {
    this.c['rx.handled.helloRejected']++;
    const member = code === RejectCode.notMember;
    this.c[member ? 'hello.notMember' : 'hello.badToken']++;
    if (this.helloRejects++ % 20 !== 0) return;
    const rm = `${this.rm().address}:${this.rm().port}`;
    const id = this.hostId.toString();
    if (member) {
      this.log.warn(
        { rm, hostId: id },
        this.trust.join === null
          ? `the RM refuses this host: not a member of the realm. Ask the operator for a join token (\`realmnet rm invite\`, then rm.join) or to admit this key (\`realmnet rm admit --public-key ${Buffer.from(this.opts.key.publicKey).toString('base64')}\`); retrying`
          : 'the RM refuses this host: not a member of the realm (revoked?); ask the operator to admit it again; retrying',
      );
    } else {
      this.log.warn({ rm, hostId: id }, 'the RM refuses the join token (expired, already used, or for another realm or prefix): ask the operator for a new one (`realmnet rm invite`) and put it in rm.join; retrying');
    }
  }

  private onRevokeMsg(m: Revoke): void {
    this.c['rx.handled.revoke']++;
    const ack = this.session.seal({ type: 'pushAck', pushId: m.pushId });
    if (ack !== null) this.send(ack);
    const id = HostIdClass.fromBytes(m.hostId);
    const until = this.answers.revoke(id);
    this.c['revoke.delivered']++;
    this.log.info({ hostId: id.toString() }, 'the RM revoked a peer: forgetting its binding');
    for (const l of this.revokeListeners) {
      try {
        l(id, until);
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'revoke listener threw');
      }
    }
  }

  /** Two thirds into the certificate's life: RENEW, retried every 30 s until a fresh one came. */
  private scheduleRenew(): void {
    if (this.stopped || this.renewTimer !== null) return;
    const at = this.trust.renewAt();
    if (at === null) return;
    const delay = Math.max(0, Math.min(at - this.trust.wallClock(), 2 ** 31 - 1));
    this.renewTimer = setTimeout(() => {
      this.renewTimer = null;
      if (this.stopped) return;
      // Another uplink's client may have renewed it meanwhile (the trust is shared).
      if ((this.trust.renewAt() ?? 0) > this.trust.wallClock()) return this.scheduleRenew();
      if (this.renewing) return;
      this.renewing = true;
      this.renew()
        .catch(() => {
          this.c['cert.renewFailed']++;
          return false;
        })
        .then((ok) => {
          this.renewing = false;
          if (ok) return this.scheduleRenew();
          if (this.stopped) return;
          this.renewTimer = setTimeout(() => {
            this.renewTimer = null;
            this.scheduleRenew();
          }, RENEW_RETRY_MS);
          this.renewTimer.unref();
        }, () => undefined);
    }, delay);
    this.renewTimer.unref();
  }

  /** Another realm's key for its prefix, as our RM vouches for it (checked against the pinned realm keys). */
  private endorse(bytes: Uint8Array): void {
    this.c[this.trust.endorse(bytes) === null ? 'endorse.accepted' : 'endorse.refused']++;
  }

  private onPushMsg(m: Push): void {
    this.c['rx.handled.push']++;
    this.c['push.received']++;
    // Acknowledge even what we then refuse: the RM should stop retransmitting either way.
    const ack = this.session.seal({ type: 'pushAck', pushId: m.pushId });
    if (ack === null) return;
    this.send(ack);
    if (m.endorsement) this.endorse(m.endorsement);
    const a = this.verified(this.answers.check(m.binding, null, m.ttl, m.prefs, m.cert));
    if (a === null) return;
    if (!this.followed.has(a.hostId.key)) return void this.c['push.notFollowed']++;
    this.c['push.delivered']++;
    for (const l of this.pushListeners) {
      try {
        l(a);
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'push listener threw');
      }
    }
  }

  /** GROUP-REPLY: the owner's binding checked, then each inline host binding like a lookup answer. */
  private groupAnswer(id: HostId, r: GroupReply): LookupResult {
    if (!Buffer.from(r.id).equals(Buffer.from(id.toBytes()))) {
      this.c['binding.mismatch']++;
      throw new RealmnetError('BINDING_INVALID', `the RM answered a lookup of ${id.toString()} for another ID`);
    }
    if (r.binding === null) return Object.freeze({ kind: 'negative', hostId: id, ttl: r.ttl });
    const g = this.answers.checkGroup(r.binding, id, r.present, r.ttl);
    if (typeof g === 'string') {
      this.c[`binding.${g}`]++;
      throw new RealmnetError('BINDING_INVALID', `the RM served an invalid user/data binding for ${id.toString()} (${g})`);
    }
    const hosts: BindingAnswer[] = [];
    for (const h of r.hosts) {
      const a = this.verified(this.answers.check(h.binding, null, h.ttl, h.prefs, h.cert));
      // Only hosts the owner lists: the RM cannot slip another host in.
      if (a !== null && g.group.hosts.some((x) => x.hostId.equals(a.hostId))) hosts.push(a);
    }
    this.c['group.answers']++;
    return Object.freeze({ ...g, hosts: Object.freeze(hosts) });
  }

  private onGroupPushMsg(m: GroupPush): void {
    this.c['rx.handled.push']++;
    this.c['push.received']++;
    const ack = this.session.seal({ type: 'pushAck', pushId: m.pushId });
    if (ack === null) return;
    this.send(ack);
    const g = this.answers.checkGroup(m.binding, null, m.present, m.ttl);
    if (typeof g === 'string') return void this.c[`binding.${g}`]++;
    if (!this.followed.has(g.hostId.key)) return void this.c['push.notFollowed']++;
    this.c['push.delivered']++;
    const a: GroupAnswer = Object.freeze({ ...g, hosts: [] });
    for (const l of this.groupPushListeners) {
      try {
        l(a);
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'group push listener threw');
      }
    }
  }

  private verified(r: BindingAnswer | AnswerRefusal): BindingAnswer | null {
    if (typeof r !== 'string') return r;
    this.c[`binding.${r}`]++;
    return null;
  }

  // ---- operations ----

  private async sendRegister(binding: Binding): Promise<RegisterReply> {
    await this.ready();
    return this.request((reqId) => ({ type: 'register', reqId, binding: binding.bytes }), 'registerReply');
  }

  private async subscribeIds(ids: readonly HostId[]): Promise<number> {
    await this.ready();
    let accepted = 0;
    for (let i = 0; i < ids.length; i += MAX_IDS_PER_MESSAGE) {
      const chunk = ids.slice(i, i + MAX_IDS_PER_MESSAGE).map((id) => id.toBytes());
      const r = await this.request((reqId) => ({ type: 'subscribe', reqId, hostIds: chunk }), 'subscribeReply');
      accepted += r.accepted;
    }
    return accepted;
  }

  private scheduleRefresh(): void {
    if (this.refreshTimer !== null || this.stopped) return;
    this.refreshTimer = setInterval(() => {
      if (this.session.isEstablished) this.resync();
    }, this.refreshS * 1000);
    this.refreshTimer.unref();
  }
}

/** A failed renewal is tried again this often (the held certificate still has a third of its life). */
const RENEW_RETRY_MS = 30_000;

function stoppedError(): RealmnetError {
  return new RealmnetError('RM_CLIENT_STOPPED', 'the RM client was stopped', '', { userFacing: false });
}

/** 127.0.0.1 and ::ffff:127.0.0.1 are the same sender. */
function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  const strip = (s: string) => (s.startsWith('::ffff:') ? s.slice(7) : s);
  return strip(a) === strip(b);
}
