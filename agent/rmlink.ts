import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import { nextSeq, signBinding, type Binding, type Locator } from '../shared/binding.ts';
import type { HostId, Prefix } from '../shared/ids.ts';
import type { KeyPair } from '../shared/keys.ts';
import type { BindingAnswer, LookupResult, RmClient } from './mapcache/client.ts';
import type { ResolverLookup } from './mapcache/resolver.ts';

/**
 * The agent's link to its Realm Managers: one RM client per uplink, each on a socket bound to that
 * uplink's address (so source-policy routing sends it out through that uplink). The host's binding
 * is registered through every working uplink, so the RM hears of the host as long as any one of them
 * works; lookups and subscriptions use the first working uplink.
 *
 * Registration never blocks the agent: an unreachable RM is retried in the background with backoff
 * (inside the client), and forwarding goes on with what the map-cache holds.
 */
export interface RmLinkUplink {
  readonly name: string;
  readonly locator: string;
  readonly priority: number;
  readonly weight: number;
  up: boolean;
}

export interface RmLinkDeps {
  readonly key: KeyPair;
  readonly prefix: Prefix;
  readonly hostId: HostId;
  /** One client per uplink index (bound to that uplink's locator). */
  readonly makeClient: (uplink: number) => RmClient;
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
  private readonly signedListeners = new Set<(b: Binding) => void>();
  private readonly registeredListeners = new Set<(b: Binding) => void>();
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = 1000;

  constructor(
    private readonly uplinks: readonly RmLinkUplink[],
    private readonly opts: RmLinkOptions,
    private readonly deps: RmLinkDeps,
  ) {}

  start(): void {
    this.uplinks.forEach((_, i) => {
      const c = this.deps.makeClient(i);
      c.onPush((a) => {
        for (const l of this.pushListeners) l(a);
      });
      this.clients.push(c);
      c.start().catch((e: unknown) => this.noteError(e));
    });
    void this.register();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    await Promise.all(this.clients.map((c) => c.stop().catch(() => undefined)));
  }

  onPush(cb: (a: BindingAnswer) => void): void {
    this.pushListeners.add(cb);
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
  async register(): Promise<void> {
    const locators: Locator[] = this.uplinks.map((u) => ({
      address: u.locator,
      port: this.opts.listenPort,
      uplink: u.name,
      priority: u.priority,
      weight: u.weight,
      state: u.up ? 'up' : 'down',
    }));
    const b = signBinding(this.deps.key, { prefix: this.deps.prefix, locators, seq: nextSeq(this.binding?.seq ?? 0), ttl: this.opts.bindingTtlS });
    this.binding = b;
    for (const l of this.signedListeners) l(b);
    const results = await Promise.allSettled(this.clients.map((c, i) => (this.uplinks[i].up ? c.register(b) : Promise.reject(new Error('uplink down')))));
    if (this.stopped) return;
    const ok = results.some((r) => r.status === 'fulfilled' && r.value.ok);
    if (ok) {
      this.registeredAt = this.deps.clock.now();
      this.lastError = null;
      this.deps.log.info({ hostId: this.deps.hostId.toString(), seq: b.seq, locators: locators.map((l) => `${l.uplink}=${l.address}/${l.state}`).join(',') }, 'binding registered');
      for (const l of this.registeredListeners) l(b);
    } else {
      const why = results.map((r) => (r.status === 'rejected' ? String((r.reason as Error)?.message ?? r.reason) : r.value.ok ? 'ok' : r.value.status));
      this.lastError = why.join('; ');
      this.deps.log.warn({ hostId: this.deps.hostId.toString(), why: this.lastError, retryInMs: this.retryMs }, 'binding not registered yet');
      // Try again with backoff until one registration lands; after that the clients refresh it.
      if (this.retryTimer === null) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          void this.register();
        }, this.retryMs);
        this.retryMs = Math.min(30_000, this.retryMs * 2);
      }
      return;
    }
    this.retryMs = 1000;
  }

  private primary(): RmClient | undefined {
    const i = this.uplinks.findIndex((u) => u.up);
    return this.clients[i < 0 ? 0 : i];
  }

  lookup(id: HostId): Promise<LookupResult> {
    const c = this.primary();
    return c === undefined ? Promise.reject(new Error('RM link not started')) : c.lookup(id);
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
      clients: this.clients.map((c, i) => ({ uplink: this.uplinks[i].name, counters: c.counters() })),
    };
  }

  private noteError(e: unknown): void {
    if (this.stopped) return;
    this.lastError = e instanceof Error ? e.message : String(e);
    this.deps.log.warn({ err: this.lastError }, 'RM client');
  }
}
