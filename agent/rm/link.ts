import type { Clock } from '../../shared/clock.ts';
import type { Logger } from '../../shared/log.ts';
import { nextSeq, signBinding, type Binding, type Locator } from '../../shared/binding.ts';
import type { HostId, Prefix } from '../../shared/ids.ts';
import type { KeyPair } from '../../shared/crypto/ed25519.ts';
import type { BindingAnswer, GroupAnswer, LookupResult } from './answers.ts';
import type { GroupResult, RegisterResult, RmClient } from './client.ts';
import type { RealmTrust } from './trust.ts';
import type { ResolverLookup } from './resolver.ts';
import type { UplinkSnapshot } from '../uplinks/table.ts';

/**
 * The agent's link to its Realm Managers: one RM client per uplink, each on a socket bound to that
 * uplink's address (so source-policy routing sends it out through that uplink). The host's binding
 * is registered through every working uplink, so the RM hears of the host as long as any one of them
 * works; lookups and subscriptions use the first working uplink.
 *
 * Registration never blocks the agent: an unreachable RM is retried in the background with backoff
 * (inside the client), and forwarding goes on with what the map-cache holds.
 *
 * A registration counts as done when the first uplink's RM acknowledges it: one working uplink is
 * enough, and an uplink whose path is still broken (a restored link whose policy route is not back
 * yet, a silent blackhole) must not hold the news back for its own ~12 s of retransmissions. A
 * registration the RM refuses as stale (our sequence number is below the one it holds: this host's
 * clock was once ahead, or its state was lost) is signed again above the number the RM reports.
 */

export interface RmLinkDeps {
  readonly key: KeyPair;
  readonly prefix: Prefix;
  readonly hostId: HostId;
  /** One client per uplink index (bound to that uplink's locator). */
  readonly makeClient: (uplink: number) => RmClient;
  /** The uplinks now (the uplink table's snapshot). */
  readonly uplinks: () => UplinkSnapshot;
  /** The last sequence number this host signed (persisted across restarts); 0 when none. */
  readonly lastSeq: number;
  /** Called with every sequence number before a binding carrying it leaves (persist it). */
  readonly onSeq?: (seq: number) => void;
  readonly clock: Clock;
  readonly log: Logger;
}

export interface RmLinkOptions {
  readonly listenPort: number;
  readonly bindingTtlS: number;
}

export interface RmLinkStatus {
  readonly registered: boolean;
  readonly seq: number;
  readonly lastRegisteredAgoS: number | null;
  readonly lastError: string | null;
  readonly clients: readonly { readonly uplink: string; readonly counters: Record<string, number> }[];
}

export class RmLink implements ResolverLookup {
  private readonly clients: RmClient[] = [];
  private binding: Binding | null = null;
  private registeredAt: number | null = null;
  private lastError: string | null = null;
  private readonly pushListeners = new Set<(a: BindingAnswer) => void>();
  private readonly revokeListeners = new Set<(id: HostId, untilS: number) => void>();
  private readonly signedListeners = new Set<(b: Binding) => void>();
  private readonly registeredListeners = new Set<(b: Binding) => void>();
  private readonly groupPushListeners = new Set<(a: GroupAnswer) => void>();
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = 1000;

  private lastSeq: number;

  constructor(
    private readonly opts: RmLinkOptions,
    private readonly deps: RmLinkDeps,
  ) {
    this.lastSeq = deps.lastSeq;
  }

  start(): void {
    this.deps.uplinks().forEach(() => this.openClient());
    void this.register();
  }

  /**
   * A client for uplink i (default: the next index, an uplink a reload added; a retired uplink that
   * came back gets a new client in its old slot). The caller registers afterwards.
   */
  openClient(i = this.clients.length): void {
    const c = this.deps.makeClient(i);
    c.onPush((a) => {
      for (const l of this.pushListeners) l(a);
    });
    c.onRevoke((id, until) => {
      for (const l of this.revokeListeners) l(id, until);
    });
    c.onGroupPush((a) => {
      for (const l of this.groupPushListeners) l(a);
    });
    this.clients[i] = c;
    c.start().catch((e: unknown) => this.noteError(e));
  }

  /**
   * A reload removed uplink i: its client stops (its session with the RM ends); the slot stays, so
   * that client i keeps meaning uplink i. A retired uplink is never up, so nothing goes through it.
   */
  async closeClient(i: number): Promise<void> {
    await this.clients[i]?.stop().catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    await Promise.all(this.clients.map((c) => c.stop().catch(() => undefined)));
  }

  onPush(cb: (a: BindingAnswer) => void): void {
    this.pushListeners.add(cb);
  }

  /** Every peer the RM revoked (each uplink's client may report it: listeners must be idempotent). */
  onRevoke(cb: (id: HostId, untilS: number) => void): void {
    this.revokeListeners.add(cb);
  }

  /** Slice 2: pushed user/data bindings and presence (the RCA), from any uplink's client. */
  onGroupPush(cb: (a: GroupAnswer) => void): void {
    this.groupPushListeners.add(cb);
  }

  /** Slice 2: an owner-signed user/data binding to the RM (through the first working uplink). */
  publish(binding: Uint8Array): Promise<GroupResult> {
    const c = this.primary();
    return c === undefined ? Promise.reject(new Error('RM link not started')) : c.publish(binding);
  }

  /**
   * Slice 2: this host consents to serve id, through every uplink's client (each keeps refreshing it
   * with its registration, so the consent holds while any uplink works). Resolves with the first answer.
   */
  serve(id: HostId, binding: Uint8Array | null): Promise<GroupResult> {
    if (this.clients.length === 0) return Promise.reject(new Error('RM link not started'));
    return Promise.any(this.clients.map((c) => c.serve(id, binding)));
  }

  /** This host's realm trust (shared by the clients): its certificate, realm keys, revoked peers. */
  trust(): RealmTrust | null {
    return this.clients[0]?.trust ?? null;
  }

  /** Every binding the RM acknowledged (durably stored). */
  onRegistered(cb: (b: Binding) => void): void {
    this.registeredListeners.add(cb);
  }

  /** Every newly signed binding of this host, before it is registered (direct updates to peers use it). */
  onSigned(cb: (b: Binding) => void): void {
    this.signedListeners.add(cb);
  }

  /** Signs a new binding (higher sequence number) from the uplinks' current state and registers it everywhere. */
  async register(floorSeq = 0): Promise<void> {
    const uplinks = this.deps.uplinks();
    // A retired uplink (removed by a reload) is no locator of this host any more.
    const locators: Locator[] = uplinks.filter((u) => !u.retired).map((u) => ({
      address: u.locator,
      port: this.opts.listenPort,
      uplink: u.name,
      priority: u.priority,
      weight: u.weight,
      state: u.up ? 'up' : 'down',
    }));
    const seq = nextSeq(Math.max(this.lastSeq, floorSeq));
    this.lastSeq = seq;
    this.deps.onSeq?.(seq);
    const b = signBinding(this.deps.key, { prefix: this.deps.prefix, locators, seq, ttl: this.opts.bindingTtlS });
    this.binding = b;
    for (const l of this.signedListeners) l(b);
    const attempts = this.clients.map((c, i) => (uplinks[i]?.up === true ? c.register(b) : Promise.reject(new Error('uplink down'))));
    const first = await firstOk(attempts);
    if (this.stopped || this.binding !== b) return;
    if (first.ok) {
      this.registeredAt = this.deps.clock.now();
      this.lastError = null;
      this.retryMs = 1000;
      this.deps.log.info({ hostId: this.deps.hostId.toString(), seq: b.seq, locators: locators.map((l) => `${l.uplink}=${l.address}/${l.state}`).join(',') }, 'binding registered');
      for (const l of this.registeredListeners) l(b);
      return;
    }
    this.lastError = first.why.join('; ');
    if (first.staleAbove >= b.seq) {
      // The RM holds a higher number than ours (a clock once ahead, lost state): sign above it now.
      this.deps.log.warn({ hostId: this.deps.hostId.toString(), ours: b.seq, rm: first.staleAbove }, 'the RM holds a newer sequence number: signing above it');
      return this.register(first.staleAbove);
    }
    this.deps.log.warn({ hostId: this.deps.hostId.toString(), why: this.lastError, retryInMs: this.retryMs }, 'binding not registered yet');
    // Try again with backoff until one registration lands; after that the clients refresh it.
    if (this.retryTimer === null) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        void this.register();
      }, this.retryMs);
      this.retryMs = Math.min(30_000, this.retryMs * 2);
    }
  }

  private primary(): RmClient | undefined {
    const i = this.deps.uplinks().findIndex((u) => u.up);
    return this.clients[i < 0 ? 0 : i];
  }

  lookup(id: HostId): Promise<LookupResult> {
    const c = this.primary();
    return c === undefined ? Promise.reject(new Error('RM link not started')) : c.lookup(id);
  }

  /** The sequence number of the binding signed last (0 before the first). */
  get signedSeq(): number {
    return this.binding?.seq ?? 0;
  }

  hasRoom(): boolean {
    const c = this.primary();
    return c !== undefined && c.hasRoom();
  }

  subscribe(ids: readonly HostId[]): Promise<number> {
    const c = this.primary();
    return c === undefined ? Promise.reject(new Error('RM link not started')) : c.subscribe(ids);
  }

  status(): RmLinkStatus {
    const now = this.deps.clock.now();
    return {
      registered: this.registeredAt !== null,
      seq: this.binding?.seq ?? 0,
      lastRegisteredAgoS: this.registeredAt === null ? null : Math.round((now - this.registeredAt) / 1000),
      lastError: this.lastError,
      clients: this.clients.map((c, i) => ({ uplink: this.deps.uplinks()[i]?.name ?? String(i), counters: c.counters() })),
    };
  }

  private noteError(e: unknown): void {
    if (this.stopped) return;
    this.lastError = e instanceof Error ? e.message : String(e);
    this.deps.log.warn({ err: this.lastError }, 'RM client');
  }
}

type FirstOk = { readonly ok: true } | { readonly ok: false; readonly why: string[]; readonly staleAbove: number };

/** Resolves at the first registration the RM acknowledged, or when all have failed (with why, and the highest number an RM said it holds). */
function firstOk(attempts: readonly Promise<RegisterResult>[]): Promise<FirstOk> {
  return new Promise((resolve) => {
    if (attempts.length === 0) return resolve({ ok: false, why: ['no uplink'], staleAbove: 0 });
    const why: string[] = [];
    let staleAbove = 0;
    let left = attempts.length;
    const settle = () => {
      if (--left === 0) resolve({ ok: false, why, staleAbove });
    };
    for (const a of attempts) {
      a.then(
        (r) => {
          if (r.ok) return resolve({ ok: true });
          why.push(r.status);
          if (r.status === 'stale') staleAbove = Math.max(staleAbove, r.seq);
          settle();
        },
        (e: unknown) => {
          why.push(e instanceof Error ? e.message : String(e));
          settle();
        },
      );
    }
  });
}
