import type { Clock } from '../../shared/clock.ts';
import type { Logger } from '../../shared/log.ts';
import { HostId, idKey } from '../../shared/ids.ts';
import type { Locator } from '../../shared/binding.ts';
import type { Binding } from '../../shared/binding.ts';
import { choosePath, type UplinkView } from '../paths/rank.ts';
import { boundLocator, newTraffic, type GroupPath, type MapCache, type MapEntry, type BoundLocator, type Path } from '../mapcache/cache.ts';
import type { BindingAnswer, GroupAnswer, LookupResult } from './answers.ts';

/**
 * The control-plane half of the map-cache: it fills the cache from the Realm Manager.
 *
 * 1. The data plane misses (no binding for a destination, or a datagram from an unknown source ID)
 *    and calls missInside / missOutside. A bounded number of packets is copied and kept per ID; the
 *    rest are dropped and counted. One lookup per ID is in flight at a time.
 * 2. A positive answer becomes an immutable MapEntry swapped into the cache; the kept packets go back
 *    through the data plane's own batch handlers (so they are checked like any other). The ID is
 *    followed (subscribe), and every pushed binding replaces the entry at once.
 * 3. A negative answer is remembered for its TTL (a negative entry), so that traffic to an unknown
 *    or forbidden ID does not become a lookup storm. A failed lookup (RM unreachable, client busy)
 *    drops the kept packets and backs off per ID (1 s doubling to 30 s): nothing is re-injected that
 *    would only miss again. No lookup starts while the RM client has no room for it.
 * 2a. Kept packets go back on a later turn of the event loop (setImmediate), never from within the
 *    call that resolved them, in batches no larger than the data plane's batch size.
 * 4. sweep(now) expires entries past their TTL and looks up again those about to expire. If the RM is
 *    unreachable, forwarding goes on with cached bindings until they expire, and never past the
 *    host's membership certificate (an entry's expiresAt is the earlier of the two).
 * 5. A peer the RM revoked (revoke()) is dropped from the cache and refused (misses, pushes, direct
 *    updates) until its last certificate would have expired. A direct update from the peer must
 *    carry the key of the entry it replaces (the key the realm vouched for).
 * Per-packet work happens only on a miss; the lookup itself is asynchronous.
 */
export interface ResolverLookup {
  lookup(hostId: HostId): Promise<LookupResult>;
  /** Whether a lookup now would be kept rather than refused as busy. */
  hasRoom(): boolean;
  subscribe(hostIds: readonly HostId[]): Promise<number>;
}

export interface ResolverOptions {
  readonly pendingPerId: number;
  readonly pendingTotal: number;
  /** Look an entry up again when it has less than this left. */
  readonly refreshBeforeExpiryMs: number;
  /** How many negative entries to remember at most. */
  readonly maxNegative: number;
  /** Cap on a negative answer's TTL, ms. */
  readonly negativeTtlMaxMs: number;
  /** Layouts of the batches the data plane's handlers take. */
  readonly tunStride: number;
  readonly tunHeadroom: number;
  readonly udpStride: number;
  /** Most packets handed back to the data plane in one batch (its batch size). */
  readonly batchSize: number;
}

export interface ResolverDeps {
  readonly rm: ResolverLookup;
  readonly cache: MapCache;
  readonly uplinks: () => readonly UplinkView[];
  readonly clock: Clock;
  readonly log: Logger;
  /** inside.onBatch: TUN-batch layout. */
  readonly reinjectInside: (buf: Buffer, lengths: Uint32Array, count: number) => void;
  /** outside.onBatch of the uplink the datagrams came in on. */
  readonly reinjectOutside: (uplink: number, buf: Buffer, lengths: Uint32Array, srcAddrs: Uint8Array, srcPorts: Uint16Array, count: number) => void;
  /** Wall-clock ms (certificates end at a wall-clock time); default Date.now. */
  readonly wallClock?: () => number;
  /** Slice 2: a verified user/data answer (its inline host bindings are already in the map-cache). */
  readonly onGroup?: (answer: GroupAnswer) => void;
}

interface Waiting {
  readonly inside: Buffer[];
  readonly outside: { uplink: number; data: Buffer; src: Uint8Array; port: number }[];
}

export const RESOLVER_COUNTERS = ['lookups', 'groups', 'fetches', 'positive', 'negative', 'failed', 'queued', 'queueOverflow', 'pushesApplied', 'directApplied', 'expired', 'refreshed', 'negativeHits', 'backoffHits', 'busy', 'droppedAfterFailure', 'revoked', 'revokedHits', 'directKeyChanged', 'certExpired', 'staleSignals'] as const;
export type ResolverCounter = (typeof RESOLVER_COUNTERS)[number];

export class Resolver {
  private readonly waiting = new Map<string, Waiting>();
  private readonly negative = new Map<string, number>();
  private readonly refreshing = new Set<string>();
  /** IDs whose last lookup failed: no new lookup before `until`; `ms` doubles on each failure. */
  private readonly backoff = new Map<string, { until: number; ms: number }>();
  /** Revoked IDs → clock ms until which they are refused. */
  private readonly revokedIds = new Map<string, number>();
  private reinjectTimer: NodeJS.Immediate | null = null;
  private readonly toReinject: { inside: Buffer[]; outside: Waiting['outside'] } = { inside: [], outside: [] };
  private queuedTotal = 0;
  private stopped = false;
  readonly counters: Record<ResolverCounter, number> = Object.fromEntries(RESOLVER_COUNTERS.map((k) => [k, 0])) as Record<ResolverCounter, number>;

  constructor(
    private readonly opts: ResolverOptions,
    private readonly deps: ResolverDeps,
  ) {}

  /** Data plane, inside: no binding for the destination ID at buf[idOff..]. Returns true if the packet was kept. */
  missInside(buf: Uint8Array, off: number, len: number, idOff: number): boolean {
    const key = idKey(buf, idOff);
    if (this.isNegative(key) || this.inBackoff(key) || this.isRevoked(key)) return false;
    const w = this.waitFor(key, buf, idOff);
    if (w === null) return false;
    return this.keep(w.inside.length, () => w.inside.push(Buffer.from(buf.subarray(off, off + len))));
  }

  /** Data plane, outside: a datagram whose inner source ID (at idOff) has no binding. */
  missOutside(uplink: number, buf: Uint8Array, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number, idOff: number): boolean {
    const key = idKey(buf, idOff);
    if (this.isNegative(key) || this.inBackoff(key) || this.isRevoked(key)) return false;
    const w = this.waitFor(key, buf, idOff);
    if (w === null) return false;
    return this.keep(w.outside.length, () =>
      w.outside.push({ uplink, data: Buffer.from(buf.subarray(off, off + len)), src: Uint8Array.from(srcAddrs.subarray(srcOff, srcOff + 16)), port }),
    );
  }

  /**
   * A verified binding straight from its host (paths/ direct updates). The realm's preferences came
   * with the RM's answer: a locator we already had keeps the priority and weight the RM served for
   * it; only its state and the set of locators come from the host.
   */
  applyDirect(b: Binding): void {
    const held = this.deps.cache.lookup(b.hostId.toBytes(), 0);
    if (this.isRevoked(b.hostId.key)) return;
    // Only over a binding the realm vouched for (it carried a certificate), and with the same key.
    if (held === undefined || held.source !== 'rm' || held.publicKey === null || !Buffer.from(held.publicKey).equals(Buffer.from(b.publicKey))) {
      this.counters.directKeyChanged++;
      return;
    }
    const locators = b.locators.map((l) => {
      const h = held?.locators.find((x) => x.address === l.address && x.port === l.port);
      return h === undefined ? l : { ...l, priority: h.priority, weight: h.weight };
    });
    this.counters.directApplied++;
    // The certificate the RM served for the held entry still bounds it.
    const certNotAfter = held.certExpiresAt === undefined ? Infinity : this.toWall(held.certExpiresAt) / 1000;
    this.install({ kind: 'binding', hostId: b.hostId, binding: b, locators, ttl: b.ttl, certNotAfter });
  }

  /**
   * The RM revoked this peer: its entry goes at once, and it is refused until untilS (Unix seconds,
   * when its last certificate would have expired). Bounded like the negative entries.
   */
  revoke(id: HostId, untilS: number): void {
    this.counters.revoked++;
    this.deps.cache.delete(id.toBytes());
    this.negative.delete(id.key);
    const until = this.deps.clock.now() + Math.max(0, untilS * 1000 - this.wall());
    if (this.revokedIds.size < this.opts.maxNegative || this.revokedIds.has(id.key)) this.revokedIds.set(id.key, until);
    this.deps.log.info({ hostId: id.toString() }, 'peer revoked by the RM: binding dropped');
  }

  revokedCount(): number {
    return this.revokedIds.size;
  }

  /**
   * Slice 2: look id up without a packet waiting (a present host of a user/data ID not in the
   * map-cache, a user/data ID about to expire, or a source ID a session's peer used). At most one
   * lookup per ID in flight; negative and backed-off IDs are skipped.
   */
  fetch(id: HostId): void {
    const key = id.key;
    if (this.stopped || this.waiting.has(key) || this.refreshing.has(key) || this.isNegative(key) || this.inBackoff(key) || this.isRevoked(key)) return;
    if (!this.deps.rm.hasRoom()) {
      this.counters.busy++;
      return;
    }
    this.counters.fetches++;
    this.lookup(id, true);
  }

  /**
   * A peer announced (in a probe or reply) another version of its binding than the cached one: ask
   * the RM again now rather than at the TTL (docs/hierarchy.md, the stale-binding signal).
   */
  revalidate(id: HostId): void {
    this.counters.staleSignals++;
    this.fetch(id);
  }

  /** A pushed (verified) binding: replace the entry at once. */
  applyPush(answer: BindingAnswer): void {
    if (this.isRevoked(answer.hostId.key)) return;
    this.counters.pushesApplied++;
    this.install(answer);
  }

  /** One sweep: drop expired entries and negative entries, refresh those about to expire. */
  sweep(now: number): void {
    for (const e of this.deps.cache.entries()) {
      if (e.source !== 'rm') continue;
      if (e.expiresAt <= now) {
        this.deps.cache.delete(e.id);
        const byCert = e.certExpiresAt !== undefined && e.certExpiresAt <= now;
        this.counters[byCert ? 'certExpired' : 'expired']++;
        this.deps.log.info({ hostId: e.hostId }, byCert ? "binding dropped: the host's membership certificate ended (no fresh one from the RM)" : 'binding expired (no answer from the RM in time)');
      } else if (e.expiresAt - now <= this.opts.refreshBeforeExpiryMs) {
        const id = HostId.fromBytes(e.id);
        if (!this.refreshing.has(id.key)) this.lookup(id, true);
      }
    }
    for (const [k, until] of this.negative) if (until <= now) this.negative.delete(k);
    for (const [k, b] of this.backoff) if (b.until + 2 * b.ms <= now) this.backoff.delete(k);
    for (const [k, until] of this.revokedIds) if (until <= now) this.revokedIds.delete(k);
  }

  stop(): void {
    this.stopped = true;
    this.waiting.clear();
    this.queuedTotal = 0;
    if (this.reinjectTimer !== null) clearImmediate(this.reinjectTimer);
    this.reinjectTimer = null;
  }

  pendingIds(): number {
    return this.waiting.size;
  }

  // ---- inside the class ----

  private isNegative(key: string): boolean {
    if (!this.heldUntil(this.negative, key)) return false;
    this.counters.negativeHits++;
    return true;
  }

  /** Whether the RM revoked this ID (idKey) and the revocation still holds. */
  isRevoked(key: string): boolean {
    if (!this.heldUntil(this.revokedIds, key)) return false;
    this.counters.revokedHits++;
    return true;
  }

  /** True while key's deadline in m (clock ms) lies ahead; a passed deadline is forgotten. */
  private heldUntil(m: Map<string, number>, key: string): boolean {
    const until = m.get(key);
    if (until === undefined) return false;
    if (until > this.deps.clock.now()) return true;
    m.delete(key);
    return false;
  }

  private wall(): number {
    return (this.deps.wallClock ?? Date.now)();
  }

  /** A clock time as wall-clock ms. */
  private toWall(clockMs: number): number {
    return clockMs - this.deps.clock.now() + this.wall();
  }

  private inBackoff(key: string): boolean {
    const b = this.backoff.get(key);
    if (b === undefined || b.until <= this.deps.clock.now()) return false;
    this.counters.backoffHits++;
    return true;
  }

  /** The waiting list of an ID, starting its lookup if it is new (and the RM client has room). */
  private waitFor(key: string, buf: Uint8Array, idOff: number): Waiting | null {
    if (this.stopped) return null;
    let w = this.waiting.get(key);
    if (w === undefined) {
      if (!this.deps.rm.hasRoom()) {
        this.counters.busy++;
        return null;
      }
      w = { inside: [], outside: [] };
      this.waiting.set(key, w);
      this.lookup(HostId.fromBytes(buf, idOff), false);
    }
    return w;
  }

  private keep(already: number, push: () => void): boolean {
    if (already >= this.opts.pendingPerId || this.queuedTotal >= this.opts.pendingTotal) {
      this.counters.queueOverflow++;
      return false;
    }
    push();
    this.queuedTotal++;
    this.counters.queued++;
    return true;
  }

  private lookup(id: HostId, refresh: boolean): void {
    this.counters.lookups++;
    if (refresh) this.refreshing.add(id.key);
    // Never let a control-plane failure escape into the data path that called us.
    Promise.resolve()
      .then(() => this.deps.rm.lookup(id))
      .then(
        (answer) => {
          this.refreshing.delete(id.key);
          if (this.stopped) return;
          if (answer.kind === 'binding' && this.isRevoked(id.key)) {
            // Revoked while the lookup was in flight.
            this.dropWaiting(id.key);
            return;
          }
          if (answer.kind === 'group') {
            // A user or data ID: its hosts' bindings go into the map-cache, the rest to the router.
            this.counters.groups++;
            const fresh: HostId[] = [];
            for (const h of answer.hosts) {
              if (this.isRevoked(h.hostId.key)) continue;
              if (this.deps.cache.lookup(h.hostId.toBytes(), 0) === undefined) fresh.push(h.hostId);
              this.install(h);
            }
            this.deps.onGroup?.(answer);
            fresh.unshift(id);
            if (fresh.length > 0) this.deps.rm.subscribe(fresh).catch((e: unknown) => this.deps.log.warn({ id: id.toString(), err: String(e) }, 'subscribe failed'));
          } else if (answer.kind === 'binding') {
            this.counters.positive++;
            if (refresh) this.counters.refreshed++;
            // Not cached yet (a miss, or a fetch): follow it from now on.
            const first = this.deps.cache.lookup(id.toBytes(), 0) === undefined;
            this.install(answer);
            if (first) this.deps.rm.subscribe([id]).catch((e: unknown) => this.deps.log.warn({ hostId: id.toString(), err: String(e) }, 'subscribe failed'));
          } else {
            this.counters.negative++;
            if (this.negative.size < this.opts.maxNegative) this.negative.set(id.key, this.deps.clock.now() + Math.min(answer.ttl * 1000, this.opts.negativeTtlMaxMs));
          }
          this.backoff.delete(id.key);
          this.release(id.key);
        },
        (e: unknown) => {
          this.refreshing.delete(id.key);
          this.counters.failed++;
          if (this.stopped) return;
          const prev = this.backoff.get(id.key);
          const ms = prev === undefined ? BACKOFF_FIRST_MS : Math.min(BACKOFF_MAX_MS, prev.ms * 2);
          if (prev !== undefined || this.backoff.size < this.opts.maxNegative) this.backoff.set(id.key, { until: this.deps.clock.now() + ms, ms });
          this.deps.log.warn({ hostId: id.toString(), err: e instanceof Error ? e.message : String(e), retryInMs: ms }, 'lookup failed');
          this.dropWaiting(id.key);
        },
      );
  }

  private install(answer: BindingAnswer): void {
    const now = this.deps.clock.now();
    const held = this.deps.cache.lookup(answer.hostId.toBytes(), 0);
    // An older binding never replaces a newer one (a late lookup answer after a push).
    if (held !== undefined && held.source === 'rm' && held.seq > answer.binding.seq) return;
    const entry = entryFromAnswer(answer, this.deps.uplinks(), now, held, this.wall());
    if (!this.deps.cache.set(entry)) {
      this.deps.log.warn({ hostId: entry.hostId }, 'map-cache full: binding not cached (raise limits.mapCacheEntries)');
      return;
    }
    this.negative.delete(answer.hostId.key);
  }

  /** The lookup failed: the packets kept for the ID are dropped (they would only miss again). */
  private dropWaiting(key: string): void {
    const w = this.waiting.get(key);
    if (w === undefined) return;
    this.waiting.delete(key);
    const n = w.inside.length + w.outside.length;
    this.queuedTotal -= n;
    this.counters.droppedAfterFailure += n;
  }

  /** The packets kept for an ID go back through the data plane on a later turn of the loop. */
  private release(key: string): void {
    const w = this.waiting.get(key);
    if (w === undefined) return;
    this.waiting.delete(key);
    this.queuedTotal -= w.inside.length + w.outside.length;
    this.toReinject.inside.push(...w.inside);
    this.toReinject.outside.push(...w.outside);
    if (this.reinjectTimer === null) this.reinjectTimer = setImmediate(() => this.reinject());
  }

  /** Hands the released packets to the data plane's handlers, at most batchSize per call. */
  private reinject(): void {
    this.reinjectTimer = null;
    if (this.stopped) return;
    const { tunStride: stride, tunHeadroom: headroom, batchSize } = this.opts;
    const inside = this.toReinject.inside.splice(0);
    const outside = this.toReinject.outside.splice(0);
    for (let at = 0; at < inside.length; at += batchSize) {
      const part = inside.slice(at, at + batchSize);
      const buf = Buffer.alloc(part.length * stride);
      const lengths = new Uint32Array(part.length);
      part.forEach((p, i) => {
        buf.set(p, i * stride + headroom);
        lengths[i] = p.length;
      });
      this.deps.reinjectInside(buf, lengths, part.length);
    }
    for (const d of outside) {
      const buf = Buffer.alloc(this.opts.udpStride);
      buf.set(d.data, 0);
      this.deps.reinjectOutside(d.uplink, buf, Uint32Array.of(d.data.length), d.src, Uint16Array.of(d.port), 1);
    }
  }
}

const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

/** A binding's locator for the data plane; priority 255 means "do not use" (LISP). */
function fromBinding(l: Locator): BoundLocator {
  return boundLocator(l.address, l.port, l.priority, l.weight, l.state === 'up' && l.priority < 255);
}

/**
 * The map-cache entry for a verified answer. With `held` (the entry it replaces), the path and flow
 * group in use stay as they are while their locators are still offered and up: a new binding of a
 * peer (its other uplink failed or came back) must not move traffic that is fine where it is. Path
 * choice (paths/probing.ts) then decides with the new locators; the data plane never sees a static
 * choice in between, which would reorder the flows it moved.
 */
export function entryFromAnswer(answer: BindingAnswer, uplinks: readonly UplinkView[], now: number, held?: MapEntry, wallNow: number = Date.now()): MapEntry {
  const locators = Object.freeze(answer.locators.map(fromBinding));
  const kept = held === undefined ? null : keepPath(held, locators, uplinks);
  // The certificate's end, on this clock: the binding is not used past it, whatever its TTL.
  const certExpiresAt = Number.isFinite(answer.certNotAfter) ? now + (answer.certNotAfter * 1000 - wallNow) : Infinity;
  return Object.freeze({
    hostId: answer.hostId.toString(),
    id: answer.hostId.toBytes(),
    locators,
    path: kept?.path ?? choosePath(uplinks, locators),
    group: kept?.group ?? [],
    source: 'rm' as const,
    createdAt: now,
    expiresAt: Math.min(now + answer.ttl * 1000, certExpiresAt),
    certExpiresAt,
    seq: answer.binding.seq,
    publicKey: answer.binding.publicKey,
    traffic: held?.traffic ?? newTraffic(),
  });
}

/** The held entry's path and group, re-pointed at the new locators; null if any of them is gone or down. */
function keepPath(held: MapEntry, locators: readonly BoundLocator[], uplinks: readonly UplinkView[]): { path: Path; group: GroupPath[] } | null {
  if (held.path === null) return null;
  const same = (l: BoundLocator) => locators.find((x) => x.up && x.port === l.port && x.address === l.address);
  const loc = same(held.path.locator);
  if (loc === undefined || uplinks[held.path.uplink]?.up !== true) return null;
  const group: GroupPath[] = [];
  for (const g of held.group) {
    const gl = same(g.locator);
    if (gl === undefined || uplinks[g.uplink]?.up !== true) return null;
    group.push({ ...g, locator: gl });
  }
  return { path: { uplink: held.path.uplink, locator: loc }, group };
}
