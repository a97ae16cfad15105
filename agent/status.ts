import type { AgentConfig } from './config.ts';
import type { AgentStatus, MembershipStatus } from './agent.ts';
import type { DropCounters } from './dataplane/drops.ts';
import type { InsideStats } from './dataplane/inside.ts';
import type { OutsideStats } from './dataplane/outside.ts';
import { locatorText } from '../shared/address.ts';
import type { MapCache } from './mapcache/cache.ts';
import type { PeerPaths } from './paths/probing.ts';
import type { Resolver } from './rm/resolver.ts';
import type { RmLink } from './rm/link.ts';
import type { UplinkSnapshot } from './uplinks/table.ts';
import type { LagStats } from './lag.ts';
import type { FlightRecorder } from './dataplane/flight.ts';
import type { SessionManager } from './sessions/manager.ts';
import type { GroupRouter, GroupRouterStatus } from './groups/router.ts';
import type { ServedStatus } from './groups/serving.ts';
export type { GroupRouterStatus };

/** What `realmnet status` shows, read from the parts (nothing here changes them). */
export interface StatusSources {
  readonly config: AgentConfig;
  readonly hostId: string;
  readonly now: number;
  readonly tunName: string;
  /** TUN batches whose handler threw (caught, counted; a bug if ever non-zero). */
  readonly tunCallbackErrors: number;
  /** Coalescing: super-packets written to the TUN, and the packets merged into them. */
  readonly tunSuperPackets: number;
  readonly tunCoalesced: number;
  /** Coalescing: TSO super-packets read from the TUN, and the segments cut from them. */
  readonly tunSplitSupers: number;
  readonly tunSplitSegments: number;
  readonly uplinks: UplinkSnapshot;
  readonly rm: { readonly link: RmLink; readonly resolver: Resolver; readonly paths: PeerPaths } | null;
  readonly cache: MapCache;
  readonly inside: InsideStats;
  readonly outside: OutsideStats;
  readonly drops: DropCounters;
  readonly eventLoop: LagStats;
  readonly flight: FlightRecorder | null;
  /** Encryption on: the session manager; null when off. */
  readonly sessions: SessionManager | null;
  /** Slice 2: the user/data IDs resolved and the pinned flows; null without an RM. */
  readonly groups: GroupRouter | null;
  readonly served: readonly ServedStatus[];
}

function membershipOf(link: RmLink, resolver: Resolver): MembershipStatus {
  const t = link.trust();
  const iso = (s: number | null | undefined) => (s === null || s === undefined ? null : new Date(s * 1000).toISOString());
  return {
    memberSince: iso(t?.memberSince),
    certNotAfter: iso(t?.cert?.notAfter),
    realmKeys: t?.fingerprints() ?? [],
    joining: t !== null && t.joinFor() !== null,
    revokedIds: resolver.revokedCount(),
  };
}

export function statusOf(s: StatusSources): AgentStatus {
  const { config, rm, cache, now } = s;
  return {
    hostId: s.hostId,
    tun: { name: s.tunName, mtu: config.tun.mtu, offload: config.tun.offload, coalesce: !config.tun.offload && config.tun.coalesce, callbackErrors: s.tunCallbackErrors, superPackets: s.tunSuperPackets, coalesced: s.tunCoalesced, splitSupers: s.tunSplitSupers, splitSegments: s.tunSplitSegments },
    // Uplinks a reload removed keep their slot inside (status paths name them by index) but are gone for the operator.
    uplinks: s.uplinks.filter((u) => !u.retired).map((u) => ({
      name: u.name,
      interface: u.interface ?? null,
      locator: u.locator,
      up: u.up,
      priority: u.priority,
      txPackets: u.socket.stats.txPackets,
      rxPackets: u.socket.stats.rxPackets,
      sendErrors: u.socket.stats.sendErrors,
      callbackErrors: u.socket.stats.callbackErrors,
    })),
    rm:
      rm === null
        ? null
        : {
            ...rm.link.status(),
            servers: (config.rm?.servers ?? []).map((x) => `${x.address}:${x.port}`),
            resolver: { ...rm.resolver.counters },
            pendingIds: rm.resolver.pendingIds(),
            membership: membershipOf(rm.link, rm.resolver),
          },
    mapCacheStats: { size: cache.size, capacity: cache.capacity, evicted: cache.evicted },
    mapCache: cache.entries().map((e) => ({
      hostId: e.hostId,
      source: e.source,
      seq: e.seq,
      locators: e.locators.map((l) => `${locatorText(l.address, l.port)} p${l.priority}${l.up ? '' : ' down'}`),
      path: e.path ? `${s.uplinks[e.path.uplink]?.name ?? e.path.uplink} → ${e.path.locator.address}` : null,
      ageS: Math.round((now - e.createdAt) / 1000),
      ttlS: Number.isFinite(e.expiresAt) ? Math.max(0, Math.round((e.expiresAt - now) / 1000)) : null,
      shadow: e.shadow ? `${s.uplinks[e.shadow.uplink]?.name ?? e.shadow.uplink} → ${e.shadow.locator.address}` : null,
      heldBytes: e.traffic.heldBytes,
    })),
    resend:
      s.flight === null
        ? null
        : { bufferBytes: s.flight.totalBytes, perPeerBytes: config.failover.resend.perPeerBytes, maxAgeMs: config.failover.resend.maxAgeMs, reachMs: Math.round(s.flight.reachMs(now)), ...s.flight.stats },
    inside: { ...s.inside },
    outside: { ...s.outside },
    drops: s.drops.snapshot(),
    paths: rm?.paths.paths() ?? [],
    failovers: rm?.paths.failovers() ?? [],
    peers: rm === null ? null : { ...rm.paths.counters },
    eventLoop: s.eventLoop,
    encryption: s.sessions === null ? null : s.sessions.status(),
    slice2: s.groups === null ? null : { ...s.groups.status(), serving: s.served.map((x) => ({ ...x })) },
  };
}
