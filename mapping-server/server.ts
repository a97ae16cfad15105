import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import type { KeyPair } from '../shared/crypto/ed25519.ts';
import type { RmConfig } from './config.ts';
import { flattenCounters, newCounters, type RmCounters } from './counters.ts';
import { Dispatch } from './dispatch.ts';
import { Handlers, describeBinding } from './handlers.ts';
import { ReloadablePolicy, createPolicy } from './policy.ts';
import { restartNeeded as keysNeedingRestart, sameConfig } from '../shared/config.ts';
import { PushQueue, PushTicker, Subscriptions } from './push.ts';
import { RateLimiter } from './ratelimit.ts';
import { Realm } from './realm.ts';
import { SessionTable, type ControlSocket } from './sessions.ts';
import { BindingStore } from './store/bindings.ts';
import { Sweep } from './sweep.ts';
import { Admission, publicKeyFromConfig } from './admission.ts';
import { MemberTable, type Member, type MemberChanges } from './store/members.ts';
import { HostId, Prefix } from '../shared/ids.ts';
import { Outbox } from './tx.ts';
import { Federation } from './federation.ts';
import { openUdpSocket, type OnDatagram, type OnFault, type OpenSocket } from './udp.ts';

/**
 * The Realm Manager's composition: createMappingServer() wires the parts, start() opens the store
 * and then the sockets, stop() undoes it in reverse. It owns no protocol logic:
 *
 *   udp.ts (sockets) → dispatch.ts (the one entry, a counter per outcome) → handlers.ts (hello,
 *   lookup, register, subscribe) → store/ (bindings, group commit) and push.ts (followers, pushes)
 *   tx.ts sends and counts every answer; sweep.ts expires; counters.ts names every counter.
 *
 * Parts that counters() reads exist from construction; the store, the handlers that need it and the
 * sockets exist from start() on (the Running state), so nothing is null while datagrams flow.
 */
export interface RmDeps {
  readonly clock: Clock;
  readonly log: Logger;
  /** The RM's own key: it signs session set-ups. */
  readonly key: KeyPair;
  /** Default: a SQLite store at config.store.path, opened by start(). Tests pass one on ':memory:'. */
  readonly store?: BindingStore;
  /** Default: the batched native socket (udp.ts). */
  readonly openSocket?: OpenSocket;
  /** Wall-clock ms for certificates (default Date.now): they are checked on other hosts' clocks. */
  readonly wallClock?: () => number;
}

export type { OnDatagram, OnFault, OpenSocket };

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
  /**
   * Admits a public key under prefix (default: the realm's), durably; resolves with its host ID. The
   * in-process twin of `realmnet rm admit` (which writes the store from another process). A revoked
   * member is admitted again.
   */
  admit(publicKey: Uint8Array, prefix?: Prefix): Promise<HostId>;
  /** Revokes a member durably, with what a CLI revocation leads to; false if it was no member. */
  revoke(id: HostId): Promise<boolean>;
  /** The member record of an ID (after start()), for tests and status. */
  member(id: HostId): Member | undefined;
  /**
   * A config read again (SIGHUP): the policy applies at once (to live sessions too); what else
   * changed needs a restart, is named in the result, and keeps its running value.
   */
  reload(next: RmConfig): RmReloadResult;
}

export interface RmReloadResult {
  readonly policyChanged: boolean;
  /** Top-level keys that changed but take a restart (log.level is the caller's: it owns the logger). */
  readonly restartNeeded: readonly string[];
}

/** Keys a reload applies: the policy here, the log level in main.ts. */
const RM_LIVE_KEYS = new Set(['policy', 'log']);

export function createMappingServer(config: RmConfig, deps: RmDeps): MappingServer {
  return new RealmManager(config, deps);
}

/** The parts every piece is built from; each piece's *Parts interface takes what it needs. */
interface Shared {
  readonly config: RmConfig;
  readonly clock: Clock;
  readonly log: Logger;
  readonly realm: Realm;
  readonly policy: ReloadablePolicy;
  readonly counters: RmCounters;
  readonly sessions: SessionTable;
  readonly subs: Subscriptions;
  readonly pushes: PushQueue;
  readonly limiter: RateLimiter;
  readonly tx: Outbox;
}

/** What exists from start() on. After stop() the (closed) store stays readable for counters(). */
interface Running {
  readonly store: BindingStore;
  readonly admission: Admission;
  readonly handlers: Handlers;
  readonly sweep: Sweep;
  /** Emptied by stop(). */
  readonly sockets: ControlSocket[];
  readonly federation: Federation | null;
}

class RealmManager implements MappingServer {
  readonly realm: Realm;
  private readonly shared: Shared;
  private readonly pushTicker: PushTicker;
  private running: Running | null = null;
  /** The config in effect (a reload replaces its live parts). */
  private config: RmConfig;

  constructor(config: RmConfig, private readonly deps: RmDeps) {
    this.config = config;
    const { clock } = deps;
    const log = deps.log.child({ module: 'rm' });
    const realm = Realm.fromConfig(config);
    const policy = new ReloadablePolicy(createPolicy(config.policy, realm));
    const counters = newCounters();
    const tx = new Outbox(counters);
    const p = config.push;
    const pushes = new PushQueue(
      p.maxPending,
      p.retransmitMs,
      p.maxAttempts,
      (s, pending) => {
        tx.push(s, pending);
        this.pushTicker.arm();
      },
      p.perSession,
    );
    this.pushTicker = new PushTicker(pushes, clock, Math.max(5, Math.floor(p.retransmitMs / 2)));
    const subs = new Subscriptions(config.subscriptions.perSession, config.subscriptions.total, config.subscriptions.perId);
    const { sessions: sc, rateLimit: rl } = config;
    const sessions = new SessionTable(deps.key, policy, sc.max, sc.idleS * 1000, { perId: sc.perId, perPrefix: sc.perPrefix }, (s) => {
      // A session evicted for its ID's quota ends like an idle one (sweep.ts).
      counters.sessions.evicted++;
      subs.dropSession(s);
      pushes.dropSession(s);
    });
    this.realm = realm;
    this.shared = {
      config,
      clock,
      log,
      realm,
      policy,
      counters,
      sessions,
      subs,
      pushes,
      limiter: new RateLimiter(rl.perPrefixPerS, rl.prefixBurst, rl.maxPrefixes, clock.now()),
      tx,
    };
  }

  async start(): Promise<void> {
    const { shared, realm } = this;
    const { config, log } = shared;
    // The store is loaded before the first socket opens: the first lookup already sees every binding.
    const wallClock = this.deps.wallClock ?? Date.now;
    const members = this.deps.store === undefined ? null : new MemberTable(this.deps.store.database);
    members?.load();
    const opened = members === null ? this.openStore() : { store: this.deps.store as BindingStore, members };
    const store = opened.store;
    const admission = new Admission({ realm, rmKey: this.deps.key, members: opened.members, store, certTtlS: config.admission.certTtlS, open: config.admission.open, wallClock });
    try {
      await this.admitConfigKeys(admission);
    } catch (e) {
      if (store !== this.deps.store) store.close();
      throw e;
    }
    if (config.admission.open) log.warn('admission.open: every host whose HELLO verifies is admitted; this realm has no boundary (benchmarks only)');
    const handlers = new Handlers({ ...shared, store, admission, wallClock });
    handlers.groups.load();
    const openSockets: ControlSocket[] = [];
    let federation: Federation | null = null;
    try {
      federation = Federation.configured(config)
        ? new Federation({ ...shared, key: this.deps.key, store, wallClock, sockets: () => openSockets, certOf: (rec, k) => handlers.certOf(rec, k) })
        : null;
    } catch (e) {
      if (store !== this.deps.store) store.close();
      throw e;
    }
    handlers.hierarchy = federation;
    const dispatch = new Dispatch({ ...shared, handlers, hierarchy: federation });
    let sockets: ControlSocket[];
    try {
      sockets = await this.listen(dispatch.onDatagram, dispatch.onSocketFault);
    } catch (e) {
      // A store given through deps is the caller's to close (stop() does); one opened here is ours.
      if (store !== this.deps.store) store.close();
      throw e;
    }
    const sweep = new Sweep(
      { ...shared, store, members: opened.members, onMembers: (ch) => this.applyMemberChanges(ch), groups: handlers.groups, tombstoneAgeMs: (86_400 + config.registration.expiryS) * 1000, wallClock },
      config.sweep.batch,
      config.sweep.intervalMs,
    );
    openSockets.push(...sockets);
    this.running = { store, admission, handlers, sweep, sockets, federation };
    this.pushTicker.start();
    sweep.start();
    federation?.start();
    const listen = sockets.map((s) => `${s.local.address}:${s.local.port}`);
    log.info({ realm: realm.name, prefix: realm.prefix.toString(), listen, members: opened.members.activeCount() }, 'Realm Manager started');
  }

  async stop(): Promise<void> {
    this.pushTicker.stop();
    const r = this.running;
    if (r !== null) {
      r.federation?.stop();
      r.sweep.stop();
      for (const s of r.sockets.splice(0)) await s.close();
    }
    // Commits what is queued; the answers to those registrations meet closed sockets and are not sent.
    (r?.store ?? this.deps.store)?.close();
    this.shared.sessions.clear();
    this.shared.log.info('Realm Manager stopped');
  }

  reload(next: RmConfig): RmReloadResult {
    const running = this.config;
    const restartNeeded = keysNeedingRestart(running, next, RM_LIVE_KEYS);
    const policyChanged = !sameConfig(running.policy, next.policy);
    if (policyChanged) {
      // Built first: a policy the realm cannot take throws here and nothing changes.
      const policy = createPolicy(next.policy, this.realm);
      this.shared.policy.replace(policy);
      this.shared.sessions.refreshViews();
    }
    // The format stays the running logger's until a restart (restartNeeded names it).
    this.config = { ...running, policy: next.policy, log: { ...running.log, level: next.log.level } };
    return { policyChanged, restartNeeded };
  }

  counters(): Record<string, number> {
    const { counters, pushes, limiter, sessions, subs } = this.shared;
    let oversize = 0;
    for (const s of this.running?.sockets ?? []) oversize += s.oversize?.() ?? 0;
    const store = this.running?.store ?? this.deps.store;
    return flattenCounters(counters, { oversize, pushes, limiter, sessionsLive: sessions.size, subscriptionsLive: subs.total, store, membersActive: this.running?.admission.members.activeCount() ?? 0, groups: this.running?.handlers.groups, hierarchy: this.running?.federation?.counters() });
  }

  admit(publicKey: Uint8Array, prefix: Prefix = this.realm.prefix): Promise<HostId> {
    const r = this.running;
    if (r === null) return Promise.reject(new Error('the RM is not running'));
    return new Promise((resolve, reject) =>
      r.admission.admitKey(publicKey, prefix, 'admit', true, (m, err) => {
        if (m === null) return reject(err ?? new Error('not admitted'));
        this.shared.counters.members.admitted++;
        resolve(m.id);
      }),
    );
  }

  revoke(id: HostId): Promise<boolean> {
    const r = this.running;
    if (r === null) return Promise.reject(new Error('the RM is not running'));
    return new Promise((resolve, reject) =>
      r.admission.revoke(id, (m, err) => {
        if (err !== null) return reject(err);
        if (m !== null) r.handlers.revoked(m);
        resolve(m !== null);
      }),
    );
  }

  member(id: HostId): Member | undefined {
    return this.running?.admission.members.get(id.key);
  }

  /** What the CLI changed in the store, applied (the sweep polls for it once a tick). */
  private applyMemberChanges(ch: MemberChanges): void {
    const r = this.running;
    if (r === null) return;
    const { log, counters } = this.shared;
    for (const m of [...ch.added, ...ch.readmitted]) {
      counters.members.admitted++;
      log.info({ hostId: m.id.toString(), via: m.via }, 'member admitted');
    }
    for (const m of ch.revoked) r.handlers.revoked(m);
  }

  /** admission.keys: admitted under the realm prefix before the sockets open (a revoked one stays revoked). */
  private async admitConfigKeys(admission: Admission): Promise<void> {
    const { config, log } = this.shared;
    for (const entry of config.admission.keys) {
      const pk = publicKeyFromConfig(entry);
      await new Promise<void>((resolve, reject) =>
        admission.admitKey(pk, this.realm.prefix, 'config', false, (m, err) => {
          if (m === null) return reject(err ?? new Error('not admitted'));
          if (!m.active) log.warn({ hostId: m.id.toString() }, 'admission.keys lists a revoked member: it stays revoked (`realmnet rm admit` re-admits it)');
          resolve();
        }),
      );
    }
  }

  addresses(): readonly { address: string; port: number }[] {
    return (this.running?.sockets ?? []).map((s) => s.local);
  }

  bindingCount(): number {
    return (this.running?.store ?? this.deps.store)?.size ?? 0;
  }

  private openStore(): { store: BindingStore; members: MemberTable } {
    const { config, clock, log, realm, policy } = this.shared;
    let members: MemberTable | null = null;
    const store = new BindingStore({
      path: config.store.path,
      synchronous: config.store.synchronous,
      batchWindowMs: config.store.batchWindowMs,
      batchMax: config.store.batchMax,
      clock,
      log,
      describe: (bytes) => {
        // Only members' bindings are served: a revoked host's (or an upgraded store's stranger's) is dropped.
        const d = describeBinding(realm, policy, bytes);
        if (d === null || members === null) return null;
        const m = members.getId(bytes.subarray(4, 20));
        // admission.open: a stranger's binding is kept; its member record is made on first use.
        if (m === undefined && config.admission.open) return d;
        return m === undefined || !m.active ? null : { ...d, member: m };
      },
    });
    members = new MemberTable(store.database);
    const nm = members.load();
    const n = store.load();
    log.info({ bindings: n, members: nm, path: config.store.path }, 'store loaded');
    return { store, members };
  }

  /** One socket per listen address; if one fails, those already open are closed again. */
  private async listen(onDatagram: OnDatagram, onFault: OnFault): Promise<ControlSocket[]> {
    const { config } = this.shared;
    const open = this.deps.openSocket ?? openUdpSocket;
    const sockets: ControlSocket[] = [];
    try {
      for (const l of config.listen) {
        const address = typeof l === 'string' ? l : l.address;
        const port = typeof l === 'string' ? config.port : l.port;
        sockets.push(await open(address, port, onDatagram, onFault));
      }
    } catch (e) {
      for (const s of sockets) await s.close();
      throw e;
    }
    return sockets;
  }
}
