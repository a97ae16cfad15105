import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import { HostId, hostIdBytes, idKey, type Prefix } from '../shared/ids.ts';
import { decodeGroup } from '../shared/group.ts';
import { errorLine } from '../shared/errors.ts';
import { privateSeed, type KeyPair } from '../shared/crypto/ed25519.ts';
import type { AgentConfig } from './config.ts';
import { chunksPerFrame, createInside, type InsideStats } from './dataplane/inside.ts';
import { createOutside, type OutsideStats } from './dataplane/outside.ts';
import { DropCounters, type DropName } from './dataplane/drops.ts';
import { FlightRecorder, type FlightStats } from './dataplane/flight.ts';
import { MapCache, boundLocator, newTraffic, type BoundLocator, type MapEntry } from './mapcache/cache.ts';
import type { RmClient } from './rm/client.ts';
import { Resolver, type ResolverCounter } from './rm/resolver.ts';
import { RmLink, type RmLinkStatus } from './rm/link.ts';
import { DEFAULT_PEER_PATHS, PeerPaths, type PathStatus, type PeerCounter } from './paths/probing.ts';
import type { FailoverRecord } from './paths/records.ts';
import { DEFAULT_PATH_TIMING, type PathTiming } from './paths/state.ts';
import { choosePath, repathEntries } from './paths/rank.ts';
import { tunUpCommands } from './netconfig.ts';
import type { NetConfig } from '../shared/ip.ts';
import type { TunDevice, TunOptions } from './tun/tun.ts';
import type { UdpBatchHandler, UdpBatchSocket, UdpOptions } from '../shared/udp/socket.ts';
import { UplinkSockets } from './uplinks/sockets.ts';
import { UplinkTable, type Uplink, type UplinkSnapshot } from './uplinks/table.ts';
import { planReload, type ReloadPlan } from './reload.ts';
import type { UplinkFacts, WatchedUplink } from './uplinks/monitor/types.ts';
import { COUNTER_BLOCK, counterStart, memoryHostState, type HostStateStore } from './hoststate.ts';
import { EventLoopLag, type LagStats } from './lag.ts';
import { statusOf } from './status.ts';
import { Cipher, SessionTable } from '../shared/crypto/aead.ts';
import { SEALED_HEADER_LEN, TAG_LEN, VNET_HDR_LEN } from '../shared/wire/header.ts';
import { admitConfigured, admitMembers } from './sessions/admit.ts';
import type { RealmTrust } from './rm/trust.ts';
import { SessionManager, type SessionStatus } from './sessions/manager.ts';
import { writeRefusal } from './sessions/handshake-wire.ts';
import { DEFAULT_GROUP_ROUTER, GroupRouter, type GroupRouterStatus } from './groups/router.ts';
import { startServing, type ServedStatus } from './groups/serving.ts';
import type { PeerIdentity } from './sessions/noise.ts';

/** What the agent needs of the uplink monitor (uplinks/monitor/monitor.ts). */
export interface MonitorLike {
  start(): Promise<void>;
  stop(): Promise<void>;
  facts(name: string): UplinkFacts;
  onChange(cb: (uplink: string, facts: UplinkFacts) => void): () => void;
  /** The data plane could not send on this uplink (ENETDOWN, ENETUNREACH, EHOSTUNREACH): look again now. */
  sendError?(uplink: string, errno: number): void;
}

/** What the agent gives the monitor besides the uplinks. */
export interface MonitorSignals {
  /** True when the uplinks carried traffic since the previous call (sets the carrier read cadence). */
  readonly activity: () => boolean;
}

export interface AgentIdentity {
  readonly key: KeyPair;
  readonly prefix: Prefix;
  readonly hostId: HostId;
}

/**
 * The agent, wired: composition only, no logic of its own. Reading order for newcomers: this file,
 * then dataplane/inside.ts and dataplane/outside.ts.
 *
 * Start order: TUN (fails first if we lack privileges), its addresses and routes, the uplink sockets
 * and their policy routing, the uplink table, the map-cache (static bindings), the Realm Manager link
 * (registration, lookups, pushes) and path probing, the data plane's handlers, the readers, then the
 * uplink monitor. Stop runs in reverse; closing the TUN fd makes the kernel remove the device and
 * with it our routes.
 *
 * Who tells whom (each event has one owner, and its listeners subscribe to it directly):
 * - the monitor's facts → the uplink table (uplinks/table.ts) → path choice (paths/probing.ts) and
 *   the RM link (rm/link.ts), which signs a new binding;
 * - a new signed binding → direct updates to the peers with traffic (paths/) and registration (rm/);
 * - a pushed binding (rm/client.ts) or a direct update (paths/) → the resolver (rm/resolver.ts),
 *   which swaps the map-cache entry the data plane reads.
 */
export interface AgentDeps {
  readonly openTun: (opts: TunOptions) => TunDevice;
  readonly openUdp: (opts: UdpOptions) => UdpBatchSocket | Promise<UdpBatchSocket>;
  readonly net: NetConfig;
  readonly log: Logger;
  readonly clock: Clock;
  /** With a key: the host ID is derived from it, and the agent can register with an RM. */
  readonly identity?: AgentIdentity;
  /** An RM client for uplink i, bound to `locator` (tests pass in-process ones). */
  readonly makeRmClient?: (uplink: number, locator: string) => RmClient;
  /** Watches the uplinks' link state, addresses and routes (netlink); none in tests on fakes. */
  readonly makeMonitor?: (uplinks: readonly WatchedUplink[], signals: MonitorSignals) => MonitorLike;
  /** Sequence number and message counter kept across restarts; default: in memory. */
  readonly hostState?: HostStateStore;
  /** Realm mode: the pinned realm keys and this host's certificate (sessions admit members by them). */
  readonly trust?: RealmTrust;
  /** Every failover as path probing records it (the metrics' counter and histogram). */
  readonly onFailover?: (r: FailoverRecord) => void;
}

export interface AgentStatus {
  readonly hostId: string;
  readonly tun: { readonly name: string; readonly mtu: number; readonly offload: boolean; readonly coalesce: boolean; readonly callbackErrors: number; readonly superPackets: number; readonly coalesced: number; readonly splitSupers: number; readonly splitSegments: number };
  readonly uplinks: readonly { readonly name: string; readonly interface: string | null; readonly locator: string; readonly up: boolean; readonly priority: number; readonly txPackets: number; readonly rxPackets: number; readonly sendErrors: number; readonly callbackErrors: number }[];
  readonly rm: (RmLinkStatus & { readonly servers: readonly string[]; readonly resolver: Readonly<Record<ResolverCounter, number>>; readonly pendingIds: number; readonly membership: MembershipStatus }) | null;
  readonly mapCacheStats: { readonly size: number; readonly capacity: number; readonly evicted: number };
  readonly mapCache: readonly { readonly hostId: string; readonly source: string; readonly seq: number; readonly locators: readonly string[]; readonly path: string | null; readonly ageS: number; readonly ttlS: number | null; readonly shadow: string | null; readonly heldBytes: number }[];
  /** The flight recorder (re-sending after a failover): its bounds, how far back it reaches now, what it re-sent; null when off. */
  readonly resend: (FlightStats & { readonly bufferBytes: number; readonly perPeerBytes: number; readonly maxAgeMs: number; readonly reachMs: number }) | null;
  readonly inside: Readonly<InsideStats>;
  readonly outside: Readonly<OutsideStats>;
  readonly drops: Readonly<Record<DropName, number>>;
  /** Paths (local uplink × remote locator) of the peers with traffic, as probing sees them. */
  readonly paths: readonly PathStatus[];
  /** Path changes, newest last (at most 20). */
  readonly failovers: readonly FailoverRecord[];
  /** Encryption: the cipher, the sessions with peers and the handshake counters; null when dataplane.encryption is off. */
  readonly encryption: SessionStatus | null;
  /** Slice 2: user/data IDs this host serves and those it resolved, with the host each flow is pinned to and why; null without an RM. */
  readonly slice2: (GroupRouterStatus & { readonly serving: readonly ServedStatus[] }) | null;
  /** Messages between agents (probes, replies, direct updates) and why some were dropped; null without an RM (probing needs the peers' keys). */
  readonly peers: Readonly<Record<PeerCounter, number>> | null;
  /** How late the event loop ran timers (the data path shares it): since start and over the last 10 s. */
  readonly eventLoop: LagStats;
}

/** This host's standing in its realm (rm/trust.ts), for `realmnet status`. */
export interface MembershipStatus {
  /** ISO times; null before the first certificate. */
  readonly memberSince: string | null;
  readonly certNotAfter: string | null;
  /** SHA-256 prefixes of the pinned realm keys. */
  readonly realmKeys: readonly string[];
  /** Whether a join token is configured and still needed (no valid certificate held). */
  readonly joining: boolean;
  /** Peer IDs refused because the RM revoked them. */
  readonly revokedIds: number;
}

export interface Agent {
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): AgentStatus;
  /** Signs a new binding from the uplinks' current state and registers it (no-op without an RM). */
  reregister(): Promise<void>;
  /** Slice 2: hands an owner-signed user/data binding to the RM (`realmnet user|data ...` through the control socket). */
  publish(binding: Uint8Array): Promise<{ ok: boolean; id?: string; seq?: number; error?: string }>;
  /**
   * Applies what can change live from a config read again (reload.ts): uplinks added, removed or
   * re-prioritised and static peers, without touching established flows. Returns the plan it applied;
   * what needs a restart is in plan.restartNeeded and keeps its running value.
   */
  reload(next: AgentConfig): Promise<ReloadPlan>;
}

/** UDP payload limits: IPv4 65535 − 20 − 8; we size for the smaller so any uplink can carry any frame. */
const MAX_DATAGRAM = 65_507;
const SWEEP_MS = 1000;
/** Lookups a second started by peer messages (probes) from hosts not in the map-cache. */
const UNKNOWN_PEER_FETCHES_PER_S = 20;

/** Offload chunks fit one underlay packet even over IPv6: MTU − 40 (IPv6) − 8 (UDP) − the data header (and tag). */
export function chunkPayload(underlayMtu: number, sealed: boolean): number {
  return underlayMtu - 40 - 8 - (sealed ? SEALED_HEADER_LEN + TAG_LEN : 8);
}

/** The host ID: from the key (identity) or the config; both given must agree. */
export function resolveHostId(config: AgentConfig, identity: AgentIdentity | undefined): string {
  if (identity === undefined) {
    if (config.hostId === undefined) throw new Error('no host ID: config validation should have caught this');
    return config.hostId;
  }
  return identity.hostId.toString();
}

export function createAgent(config: AgentConfig, deps: AgentDeps): Agent {
  return new RealmnetAgent(config, deps);
}

/** The parts that exist once start() has opened the TUN and the uplinks. */
interface Running {
  readonly tun: TunDevice;
  readonly sockets: UplinkSockets;
  readonly table: UplinkTable;
  /** With an RM and a key (realm mode); null with static peers only. */
  readonly rm: { readonly link: RmLink; readonly resolver: Resolver; readonly paths: PeerPaths; readonly groups: GroupRouter } | null;
  /** Slice 2: the user/data IDs this host serves (config `serve`). */
  served: ServedStatus[];
  /** Encryption on: the sessions with peers; null when off. */
  sessions: SessionManager | null;
  readonly timers: NodeJS.Timeout[];
  monitor: MonitorLike | null;
  /** The data plane's sockets by uplink index (inside.ts reads this array; a reload appends to it). */
  readonly insideSockets: UdpBatchSocket[];
  /** Tells inside.ts that insideSockets grew. */
  insideAdded: () => void;
}

class RealmnetAgent implements Agent {
  private readonly log: Logger;
  private readonly hostId: string;
  private readonly myId: Uint8Array;
  private readonly drops = new DropCounters();
  private readonly cache: MapCache;
  private readonly outside: OutsideStats = { packets: 0, bytes: 0, batches: 0, counterRestarts: 0, opened: 0, keepalives: 0 };
  private readonly lag = new EventLoopLag();
  private readonly hostState: HostStateStore;
  private inside: InsideStats = { packets: 0, bytes: 0, batches: 0, shadowPackets: 0, heldForSession: 0, sealedBatches: 0 };
  /** A copy of what was sent recently, re-sent after a failover; null when failover.resend is off. */
  private readonly flight: FlightRecorder | null;
  private running: Running | null = null;
  private unknownPeerWindow = -Infinity;
  private unknownPeerFetches = 0;
  /** Static peers' keys (config peers[].publicKey), which sessions admit; a reload refills it. */
  private readonly configuredKeys = new Map<string, Uint8Array>();
  /** Serialises reloads: a second SIGHUP waits for the first. */
  private reloading: Promise<unknown> = Promise.resolve();

  constructor(
    private config: AgentConfig,
    private readonly deps: AgentDeps,
  ) {
    this.log = deps.log;
    this.hostId = resolveHostId(config, deps.identity);
    this.myId = hostIdBytes(this.hostId);
    this.cache = new MapCache(config.limits.mapCacheEntries);
    this.hostState = deps.hostState ?? memoryHostState();
    const r = config.failover.resend;
    this.flight = r.enabled
      ? new FlightRecorder({ totalBytes: r.bufferBytes, perPeerBytes: r.perPeerBytes, maxAgeMs: r.maxAgeMs, maxStaged: config.tun.batchSize * chunksPerFrame(config.tun.offload, chunkPayload(config.underlayMtu, config.dataplane.encryption === 'on')) }, () => deps.clock.now())
      : null;
  }

  async start(): Promise<void> {
    const config = this.config;
    const sealed = config.dataplane.encryption === 'on';
    // Sealed: the tag is written behind each packet in its TUN slot, so slots leave room for it.
    const tun = this.deps.openTun({ name: config.tun.name, mtu: config.tun.mtu, offload: config.tun.offload, coalesce: config.tun.coalesce, batchSize: config.tun.batchSize, tailroom: sealed ? TAG_LEN : 0 });
    const sockets = new UplinkSockets(
      config.uplinks,
      { port: config.listenPort, batchSize: config.tun.batchSize, maxDatagram: MAX_DATAGRAM, tableBase: config.routing.tableBase, rulePriority: config.routing.rulePriority },
      { openUdp: this.deps.openUdp, net: this.deps.net, log: this.log },
    );
    // How long each step of the start took, in the "agent up" line: a restart's and an upgrade's gap is their sum.
    const { phase, phases, totalMs } = phaseTimer();
    try {
      for (const cmd of tunUpCommands({ name: tun.name, mtu: config.tun.mtu, offload: config.tun.offload, hostId: this.hostId, prefixes: config.realm.prefixes })) {
        await this.deps.net.ip(cmd);
      }
      phase('tun');
      await sockets.start();
      phase('uplinks');
      const table = new UplinkTable(sockets.opened);
      const rmParts = this.startControlPlane(table, tun);
      phase('controlPlane');
      const r: Running = { tun, sockets, table, rm: rmParts, sessions: null, timers: [], monitor: null, served: [], insideSockets: table.current.map((u) => u.socket), insideAdded: () => undefined };
      this.running = r;
      r.sessions = this.startSessions(r);
      phase('sessions');
      this.loadStaticBindings(table.current);
      this.wireUplinkEvents(r);
      const inside = this.startDataPlane(r);
      phase('dataPlane');
      r.rm?.link.start();
      r.rm?.groups.start(config.tun.offload, VNET_HDR_LEN);
      phase('rmLink');
      if (r.rm !== null) r.served = await startServing(config.serve, { net: this.deps.net, tunName: tun.name, router: r.rm.groups, link: r.rm.link, hostId: this.hostId, log: this.log.child({ module: 'slice2' }) });
      phase('serving');
      // The readers (and everything traffic needs: probing, sessions) before the monitor: traffic
      // flows at once with every uplink taken as up (as at any start), while the monitor subscribes to
      // netlink (~100 ms); its first facts then correct the table. An upgrade in place
      // (agent/upgrade.ts) saves that much of its gap.
      tun.start(inside);
      r.rm?.paths.start();
      this.startTimers(r);
      this.lag.start();
      r.sessions?.start();
      phase('readers');
      await this.startMonitor(r);
      phase('monitor');
      if (!sealed) this.log.warn('dataplane.encryption is off: packets between hosts can be read, changed and forged on the path (for measurement only)');
      this.log.info(
        { hostId: this.hostId, tun: tun.name, mtu: config.tun.mtu, offload: config.tun.offload, encryption: sealed ? config.dataplane.cipher : 'off', uplinks: table.current.map((u) => `${u.name}=${u.locator}`).join(','), staticPeers: config.peers.length, rm: config.rm?.servers.map((s) => s.address).join(',') ?? 'none', startMs: totalMs(), phases },
        'agent up',
      );
    } catch (e) {
      if (this.running === null) {
        tun.close();
        await sockets.stop();
      } else await this.stop();
      throw e;
    }
  }

  async stop(): Promise<void> {
    const r = this.running;
    this.running = null;
    this.lag.stop();
    if (r === null) return;
    const { phase, phases, totalMs } = phaseTimer();
    await r.monitor?.stop();
    phase('monitor');
    for (const t of r.timers) clearInterval(t);
    r.rm?.paths.stop();
    r.rm?.groups.stop();
    r.rm?.resolver.stop();
    await r.rm?.link.stop();
    phase('rm');
    r.tun.close();
    r.sessions?.stop();
    phase('tun');
    await r.sockets.stop();
    phase('uplinks');
    this.log.info({ drops: this.drops.total(), insidePackets: this.inside.packets, outsidePackets: this.outside.packets, stopMs: totalMs(), phases }, 'agent stopped');
  }

  async reregister(): Promise<void> {
    await this.running?.rm?.link.register();
  }

  async publish(binding: Uint8Array): Promise<{ ok: boolean; id?: string; seq?: number; error?: string }> {
    const link = this.running?.rm?.link;
    if (link === undefined) return { ok: false, error: 'this agent has no Realm Manager (rm in its config): it cannot publish' };
    const d = decodeGroup(binding);
    if (!d.ok) return { ok: false, error: `not a user/data binding (${d.reason})` };
    const r = await link.publish(binding);
    if (r.status === 'ok') return { ok: true, id: d.group.id.toString(), seq: r.seq };
    return { ok: false, id: d.group.id.toString(), seq: r.seq, error: `the Realm Manager refused it: ${r.status}${r.status === 'notInRealm' ? " (is the realm's slice2.userPrefix / dataPrefix set, and the binding made under it?)" : ''}` };
  }

  reload(next: AgentConfig): Promise<ReloadPlan> {
    const run = this.reloading.then(() => this.applyReload(next));
    this.reloading = run.catch(() => undefined);
    return run;
  }

  private async applyReload(next: AgentConfig): Promise<ReloadPlan> {
    const r = this.running;
    if (r === null) throw new Error('reload before start');
    const plan = planReload(this.config, next);
    const setChanged = plan.addUplinks.length > 0 || plan.removeUplinks.length > 0;
    // Removed first: an uplink whose locator changed is removed and added again under the same name.
    for (const name of plan.removeUplinks) {
      const u = r.table.byName(name);
      if (u === undefined) continue;
      // Path choice moves the flows on it to the remaining uplinks now, as for a failed link.
      r.table.apply({ kind: 'retire', name });
      await r.sockets.retire(u.index);
      await r.rm?.link.closeClient(u.index);
      this.log.info({ uplink: name, locator: u.locator }, 'reload: uplink removed');
    }
    const failed = new Set<string>();
    for (const c of plan.addUplinks) {
      const retired = r.table.current.find((u) => u.retired && u.name === c.name && u.locator === c.locator);
      if (retired !== undefined) {
        r.table.apply({ kind: 'restore', name: c.name, priority: c.priority, weight: c.weight });
        await r.sockets.restore(retired.index);
        r.rm?.link.openClient(retired.index);
        this.log.info({ uplink: c.name, locator: c.locator }, 'reload: uplink back');
        continue;
      }
      let opened;
      try {
        opened = await r.sockets.add(c);
      } catch (e) {
        // Left out of the running config, so that the next reload tries again.
        failed.add(c.name);
        this.log.error({ uplink: c.name, locator: c.locator, err: errorLine(e) }, 'reload: uplink not added');
        continue;
      }
      r.table.apply({ kind: 'add', uplink: opened });
      const u = r.table.current[r.table.current.length - 1];
      r.insideSockets.push(u.socket);
      r.insideAdded();
      this.startOutside(r, u);
      r.rm?.link.openClient();
      this.log.info({ uplink: u.name, locator: u.locator }, 'reload: uplink added');
    }
    for (const p of plan.reprioritise) {
      r.table.apply({ kind: 'policy', name: p.name, priority: p.priority, weight: p.weight });
      this.log.info({ uplink: p.name, priority: p.priority, weight: p.weight }, 'reload: uplink preferences from the config');
    }
    // A new set of locators, or new preferences, is news for the realm: a new signed binding (the
    // realm's policy on uplinks is applied again from its answer). Signed now, with no await since
    // the table changed: the answer to a lookup made for an earlier binding (one the retire above
    // registered) must find a newer sequence number and be ignored, or it would put the old
    // preferences back (applyOwnPolicy).
    if (r.rm !== null && (setChanged || plan.reprioritise.length > 0)) void r.rm.link.register();
    const peersBefore = this.config.peers;
    this.config = failed.size === 0 ? plan.effective : { ...plan.effective, uplinks: plan.effective.uplinks.filter((u) => !failed.has(u.name)) };
    if (plan.peersChanged) this.reloadPeers(r, peersBefore);
    if (setChanged) {
      r.rm?.paths.uplinkSetChanged();
      if (r.rm === null) repathEntries(this.cache, r.table.current);
      await r.monitor?.stop();
      r.monitor = null;
      await this.startMonitor(r);
    }
    return plan;
  }

  /** Static peers from the config again: gone ones leave the map-cache, new and changed ones enter it. */
  private reloadPeers(r: Running, before: AgentConfig['peers']): void {
    const unchanged = new Set(this.config.peers.filter((p) => before.some((b) => JSON.stringify(b) === JSON.stringify(p))).map((p) => p.hostId));
    let removed = 0;
    for (const e of this.cache.entries()) {
      if (e.source === 'static' && !unchanged.has(e.hostId)) {
        this.cache.delete(e.id);
        removed++;
      }
    }
    this.fillConfiguredKeys();
    this.loadStaticBindings(r.table.current, (p) => !unchanged.has(p.hostId));
    this.log.info({ peers: this.config.peers.length, replaced: removed, loaded: this.config.peers.length - unchanged.size }, 'reload: static peers');
  }

  private fillConfiguredKeys(): void {
    this.configuredKeys.clear();
    for (const p of this.config.peers) if (p.publicKey !== undefined) this.configuredKeys.set(idKey(hostIdBytes(p.hostId)), new Uint8Array(Buffer.from(p.publicKey, 'base64')));
  }

  status(): AgentStatus {
    const r = this.running;
    return statusOf({
      config: this.config,
      hostId: this.hostId,
      now: this.deps.clock.now(),
      tunName: r?.tun.name ?? this.config.tun.name,
      tunCallbackErrors: r?.tun.stats.callbackErrors ?? 0,
      tunSuperPackets: r?.tun.stats.superPackets ?? 0,
      tunCoalesced: r?.tun.stats.coalesced ?? 0,
      tunSplitSupers: r?.tun.stats.splitSupers ?? 0,
      tunSplitSegments: r?.tun.stats.splitSegments ?? 0,
      uplinks: r?.table.current ?? [],
      rm: r?.rm ?? null,
      cache: this.cache,
      inside: this.inside,
      outside: this.outside,
      drops: this.drops,
      eventLoop: this.lag.stats(),
      flight: this.flight,
      sessions: r?.sessions ?? null,
      groups: r?.rm?.groups ?? null,
      served: r?.served ?? [],
    });
  }

  // ---- wiring ----

  /** The RM link, the resolver and path probing: realm mode only (probing needs the peers' keys). */
  private startControlPlane(table: UplinkTable, tun: TunDevice): Running['rm'] {
    const { config, deps } = this;
    const rmCfg = config.rm;
    const id = deps.identity;
    const makeClient = deps.makeRmClient;
    if (rmCfg === undefined || id === undefined || makeClient === undefined) return null;
    const held = this.hostState.load();
    const counter = counterStart(held, Date.now());
    this.hostState.save({ ...held, counterCeiling: counter.ceiling });
    const link = new RmLink({ listenPort: config.listenPort, bindingTtlS: rmCfg.bindingTtlS }, {
      key: id.key,
      prefix: id.prefix,
      hostId: id.hostId,
      makeClient: (i) => makeClient(i, table.current[i].locator),
      uplinks: () => table.current,
      lastSeq: held.seq,
      onSeq: (seq) => this.hostState.save({ ...this.hostState.load(), seq }),
      clock: deps.clock,
      log: this.log.child({ module: 'rm' }),
    });
    const resolver = new Resolver(
      {
        pendingPerId: rmCfg.pendingPerId,
        pendingTotal: rmCfg.pendingTotal,
        refreshBeforeExpiryMs: Math.min(10_000, (rmCfg.bindingTtlS * 1000) / 4),
        maxNegative: config.limits.mapCacheEntries,
        negativeTtlMaxMs: rmCfg.negativeTtlMaxS * 1000,
        tunStride: tun.stride,
        tunHeadroom: tun.headroom,
        udpStride: table.current[0].socket.stride,
        batchSize: config.tun.batchSize,
      },
      {
        rm: link,
        cache: this.cache,
        uplinks: () => table.current,
        clock: deps.clock,
        log: this.log.child({ module: 'mapcache' }),
        reinjectInside: (buf, lengths, count) => this.reinjectInside(buf, lengths, count),
        reinjectOutside: (u, buf, lengths, addrs, ports, count) => this.reinjectOutside(u, buf, lengths, addrs, ports, count),
        onGroup: (a) => groups.install(a, deps.clock.now()),
      },
    );
    const groups: GroupRouter = new GroupRouter(
      { ...DEFAULT_GROUP_ROUTER, maxFlows: config.slice2.maxFlows, flowIdleMs: config.slice2.flowIdleS * 1000 },
      {
        cache: this.cache,
        tun: () => this.running?.tun ?? null,
        clock: deps.clock,
        log: this.log.child({ module: 'slice2' }),
        health: (k) => paths.health(k),
        fetchHost: (hostId) => resolver.fetch(hostId),
      },
    );
    const paths = new PeerPaths(
      { ...DEFAULT_PEER_PATHS, timing: pathTiming(config), instanceId: config.realm.instanceId, makeBeforeBreak: config.failover.makeBeforeBreak },
      {
        cache: this.cache,
        uplinks: () => table.current,
        counterBase: counter.base,
        myId: this.myId,
        mySeed: privateSeed(id.key),
        clock: deps.clock,
        wallClock: Date.now,
        log: this.log.child({ module: 'paths' }),
        applyBinding: (b) => resolver.applyDirect(b),
        keepActive: (k) => groups.keepActive(k),
        // Unauthenticated until the binding is known: at most UNKNOWN_PEER_FETCHES_PER_S lookups a
        // second, so a spray of made-up sender IDs costs the RM little.
        onUnknownPeer: (buf, off) => this.fetchUnknown(resolver, buf, off),
        onStaleBinding: (id) => resolver.revalidate(HostId.fromBytes(id)),
        onPathFailed: (traffic, from, to, since) => {
          const f = this.flight;
          if (f === null) return 0;
          return f.replay(traffic, from, since, { uplink: to.uplink, socket: table.current[to.uplink].socket, locator: to.locator }).packets;
        },
      },
    );
    if (deps.onFailover !== undefined) paths.onFailover(deps.onFailover);
    link.onPush((a) => resolver.applyPush(a));
    link.onRevoke((hostId, untilS) => resolver.revoke(hostId, untilS));
    link.onGroupPush((a) => groups.install(a, deps.clock.now()));
    link.onSigned((b) => paths.sendUpdate(b));
    link.onRegistered(() => void this.applyOwnPolicy(link, table));
    return { link, resolver, paths, groups };
  }

  /** The uplink table's listeners: path choice first (traffic moves at once), then registration. */
  private wireUplinkEvents(r: Running): void {
    r.table.onChange((now) => {
      if (r.rm !== null) r.rm.paths.uplinksChanged();
      else repathEntries(this.cache, now);
    });
    r.table.onChange((now, before) => {
      // A change of state is news for the realm (a new binding); a change of preferences came from it.
      if (r.rm !== null && now.some((u, i) => u.up !== before[i].up)) void r.rm.link.register();
    });
  }

  private inOnBatch: ((buf: Buffer, lengths: Uint32Array, count: number) => void) | null = null;
  private inKeepalive: ((id: Uint8Array) => void) | null = null;

  /**
   * Encryption on: the native session table and the manager of handshakes (agent/sessions/). A peer
   * is admitted by its static config (hostId and publicKey) or, in a realm, by a membership
   * certificate from a pinned realm key for its ID and key (docs/dataplane-crypto.md).
   */
  /**
   * A lookup for an ID this host cannot place yet (an unknown sender, a peer of another realm):
   * unauthenticated, so at most UNKNOWN_PEER_FETCHES_PER_S a second, and a spray of made-up IDs
   * costs the RM little.
   */
  private fetchUnknown(resolver: Resolver, buf: Uint8Array, off: number): void {
    const now = this.deps.clock.now();
    if (now - this.unknownPeerWindow >= 1000) {
      this.unknownPeerWindow = now;
      this.unknownPeerFetches = 0;
    }
    if (++this.unknownPeerFetches <= UNKNOWN_PEER_FETCHES_PER_S) resolver.fetch(HostId.fromBytes(buf, off));
  }

  private startSessions(r: Running): SessionManager | null {
    const { config, deps } = this;
    const id = deps.identity;
    if (config.dataplane.encryption !== 'on' || id === undefined) return null;
    const d = config.dataplane;
    const trust = deps.trust;
    this.fillConfiguredKeys();
    const configured = admitConfigured(this.configuredKeys);
    const member = trust === undefined ? () => false : admitMembers((pid) => trust.keysFor(pid), () => trust.nowS());
    // A configured static peer is trusted with its configured key; anyone else needs a membership
    // certificate, and no session for an ID the RM revoked.
    const admit = (p: PeerIdentity): boolean => {
      if (configured(p)) return true;
      if (member(p)) return r.rm?.resolver.isRevoked(idKey(p.id)) !== true;
      // Perhaps a host of another realm whose key this host has not been endorsed yet
      // (docs/hierarchy.md): the RM's answer for it carries the endorsement, and the initiator's
      // retry (250 ms on) is admitted then.
      if (p.cert !== null && r.rm !== null) this.fetchUnknown(r.rm.resolver, p.id, 0);
      return false;
    };
    const sessions = new SessionManager(
      {
        instanceId: config.realm.instanceId,
        cipher: d.cipher === 'aes-256-gcm' ? Cipher.Aes256Gcm : Cipher.ChaCha20Poly1305,
        rekeyAfterMs: d.rekeyAfterS * 1000,
        rekeyAfterPackets: d.rekeyAfterPackets,
        rejectAfterMs: d.rejectAfterS * 1000,
        maxSessions: d.maxSessions,
        handshakesPerS: d.handshakesPerS,
        tunStride: r.tun.stride,
        tunHeadroom: r.tun.headroom,
        batchSize: config.tun.batchSize,
      },
      {
        me: { id: this.myId, edSeed: privateSeed(id.key), edPublic: id.key.publicKey, cert: trust?.cert?.bytes ?? null, instanceId: config.realm.instanceId },
        table: new SessionTable(d.maxSessions),
        cache: this.cache,
        uplinks: () => r.table.current,
        clock: deps.clock,
        wallClock: Date.now,
        log: this.log.child({ module: 'sessions' }),
        admit,
        reinjectInside: (buf, lengths, count) => this.reinjectInside(buf, lengths, count),
        keepalive: (peer) => this.inKeepalive?.(peer),
      },
    );
    r.rm?.link.onRevoke((hostId) => sessions.dropPeer(hostId.toBytes()));
    trust?.onCert((c) => sessions.setCertificate(c.bytes));
    return sessions;
  }

  /**
   * Mixed settings: one end encrypts, the other does not. Both ends say so (at most every 10 s); an
   * end with encryption off answers an initiation with a refusal, so the other end can name it.
   */
  private lastMismatchLog = -Infinity;
  private readonly refusal = Buffer.alloc(16);
  private onMismatch(r: Running, sealedHere: boolean, uplink: number, buf: Buffer, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number): void {
    if (!sealedHere) {
      const n = writeRefusal(this.refusal, buf, off, len, this.config.realm.instanceId);
      if (n > 0) r.table.current[uplink]?.socket.send(this.refusal, Uint32Array.of(0), Uint32Array.of(n), srcAddrs.subarray(srcOff, srcOff + 16), Uint16Array.of(port), 1);
    }
    const now = this.deps.clock.now();
    if (now - this.lastMismatchLog < 10_000) return;
    this.lastMismatchLog = now;
    const from = `${Buffer.from(srcAddrs.subarray(srcOff, srcOff + 16)).toString('hex')} port ${port}`;
    if (sealedHere) this.log.error({ from, uplink: r.table.current[uplink]?.name }, 'a peer sends unencrypted data but dataplane.encryption is on here: dropped; set dataplane.encryption the same on both hosts');
    else this.log.error({ from, uplink: r.table.current[uplink]?.name }, 'a peer sends encrypted data or handshakes but dataplane.encryption is off here: dropped; set dataplane.encryption the same on both hosts');
  }
  private readonly outsideHandlers: UdpBatchHandler[] = [];

  private reinjectInside(buf: Buffer, lengths: Uint32Array, count: number): void {
    this.inOnBatch?.(buf, lengths, count);
  }

  private reinjectOutside(u: number, buf: Buffer, lengths: Uint32Array, addrs: Uint8Array, ports: Uint16Array, count: number): void {
    this.outsideHandlers[u]?.(buf, lengths, addrs, ports, count);
  }

  /** inside.ts for the TUN, one outside.ts per uplink socket; returns the TUN's batch handler. */
  private startDataPlane(r: Running): (buf: Buffer, lengths: Uint32Array, count: number) => void {
    const config = this.config;
    const res = r.rm?.resolver ?? null;
    const paths = r.rm?.paths ?? null;
    const uplinks = r.table.current;
    const sealing = r.sessions ?? undefined;
    this.sealing = sealing;
    const ins = createInside(
      { instanceId: config.realm.instanceId, offload: config.tun.offload, maxDatagram: MAX_DATAGRAM, batchSize: config.tun.batchSize, stride: r.tun.stride, headroom: r.tun.headroom, chunkPayload: chunkPayload(config.underlayMtu, sealing !== undefined) },
      {
        cache: this.cache,
        sockets: r.insideSockets,
        drops: this.drops,
        onMiss: res === null ? undefined : (buf, off, len, idOff) => res.missInside(buf, off, len, idOff),
        flight: this.flight ?? undefined,
        sealing,
        grouping: r.rm?.groups,
        // The monitor is made after the data plane: read at the call, not now.
        onSendError: (u, errno) => r.monitor?.sendError?.(r.table.current[u].name, errno),
      },
    );
    this.inside = ins.stats;
    this.inOnBatch = ins.onBatch;
    this.inKeepalive = ins.keepalive;
    r.insideAdded = ins.uplinksAdded;
    for (const u of uplinks) this.startOutside(r, u);
    return ins.onBatch;
  }

  private sealing: SessionManager | undefined = undefined;

  /** outside.ts for one uplink's socket (at start, and for an uplink a reload added). */
  private startOutside(r: Running, u: Uplink): void {
    const config = this.config;
    const res = r.rm?.resolver ?? null;
    const paths = r.rm?.paths ?? null;
    const sealing = this.sealing;
    const maxInner = config.tun.offload ? MAX_DATAGRAM : config.tun.mtu;
    const i = u.index;
    const out = createOutside(
      { instanceId: config.realm.instanceId, offload: config.tun.offload, maxInner, batchSize: config.tun.batchSize, stride: u.socket.stride, hostId: this.myId },
      {
        cache: this.cache,
        tun: r.tun,
        drops: this.drops,
        onUnknownSource: res === null ? undefined : (buf, off, len, addrs, srcOff, port, idOff) => res.missOutside(i, buf, off, len, addrs, srcOff, port, idOff),
        onPeerMessage: paths === null ? undefined : (buf, off, len, addrs, srcOff, port) => paths.onMessage(i, buf, off, len, addrs, srcOff, port),
        sealing,
        grouping: r.rm?.groups,
        onMismatch: (sealedHere, uplink, buf, off, len, addrs, srcOff, port) => this.onMismatch(r, sealedHere, uplink, buf, off, len, addrs, srcOff, port),
        uplink: i,
      },
      this.outside, // all uplinks count into one outside: several doors, one house
    );
    this.outsideHandlers[i] = out.onBatch;
    u.socket.start(out.onBatch);
  }

  private startTimers(r: Running): void {
    if (r.rm === null) return;
    const { resolver, paths } = r.rm;
    let ceiling = this.hostState.load().counterCeiling;
    const t = setInterval(() => {
      resolver.sweep(this.deps.clock.now());
      // Reserve the next block of message counters before this one runs out.
      if (paths.lastCounter > ceiling - COUNTER_BLOCK / 2) {
        ceiling = paths.lastCounter + COUNTER_BLOCK;
        this.hostState.save({ ...this.hostState.load(), counterCeiling: ceiling });
      }
    }, SWEEP_MS);
    t.unref();
    r.timers.push(t);
  }

  private loadStaticBindings(uplinks: UplinkSnapshot, which: (p: AgentConfig['peers'][number]) => boolean = () => true): void {
    const now = this.deps.clock.now();
    for (const p of this.config.peers) {
      if (!which(p)) continue;
      const locators: BoundLocator[] = p.locators.map((l) => boundLocator(l.address, l.port, l.priority, l.weight, true));
      const entry: MapEntry = Object.freeze({
        hostId: p.hostId,
        id: hostIdBytes(p.hostId),
        locators: Object.freeze(locators),
        path: choosePath(uplinks, locators),
        source: 'static' as const,
        createdAt: now,
        expiresAt: Infinity,
        seq: 0,
        group: [],
        publicKey: p.publicKey === undefined ? null : new Uint8Array(Buffer.from(p.publicKey, 'base64')),
        traffic: newTraffic(),
      });
      if (!this.cache.set(entry)) this.log.warn({ hostId: p.hostId }, 'map-cache full: static binding not loaded (raise limits.mapCacheEntries)');
      if (entry.path === null) this.log.warn({ hostId: p.hostId }, 'no uplink can reach any locator of this host (address families differ?)');
    }
  }

  /**
   * Organisational control on our own side: the realm's policy on uplinks (e.g. "ispb is backup")
   * also decides which uplink this host sends from. We learn it by looking ourselves up once the RM
   * holds our binding: the answer carries our locators with the realm's preferences applied. An
   * uplink the realm says never to use gets priority 255 (used only when nothing else is left; we
   * do not take a working uplink out because of policy). The config's priorities apply until then.
   */
  private async applyOwnPolicy(link: RmLink, table: UplinkTable): Promise<void> {
    const id = this.deps.identity;
    if (id === undefined) return;
    const a = await link.lookup(id.hostId).catch(() => null);
    // Only an answer about the binding we signed last speaks for the uplinks as they are: an older one
    // (a newer binding went out while we asked) would call a restored uplink down, and a flapping
    // link would then swing our priorities with every registration.
    if (a === null || a.kind !== 'binding' || a.binding.seq !== link.signedSeq) return;
    for (const l of a.locators) {
      const u = table.byName(l.uplink);
      if (u === undefined) continue;
      const priority = l.state === 'up' || !u.up ? l.priority : 255;
      if (u.priority === priority && u.weight === l.weight) continue;
      this.log.info({ uplink: u.name, priority, weight: l.weight, was: `${u.priority}/${u.weight}` }, "realm policy sets this uplink's priority and weight");
      table.apply({ kind: 'policy', name: u.name, priority, weight: l.weight });
    }
  }

  /**
   * Uplink failover, first step: the monitor reports carrier loss, a removed address or a withdrawn
   * route the moment the kernel does; the uplink table takes it, traffic moves to the best remaining
   * path at once, and a new signed binding (that locator marked down) goes to the peers and the RM.
   */
  private async startMonitor(r: Running): Promise<void> {
    if (this.deps.makeMonitor === undefined) return;
    const watched: WatchedUplink[] = [];
    for (const u of r.table.current) {
      if (u.interface === undefined || u.retired) continue;
      // By name: after a reload the config's order is not the uplinks' index order.
      watched.push({ name: u.name, interface: u.interface, locator: u.locator, gateway: this.config.uplinks.find((c) => c.name === u.name)?.gateway, table: r.sockets.tableOf(u.name) });
    }
    if (watched.length === 0) return;
    const m = this.deps.makeMonitor(watched, { activity: r.sockets.trafficProbe() });
    r.monitor = m; // stopped by stop() even if its start fails half-way
    const apply = (name: string, f: UplinkFacts) => {
      // The kernel drops an IPv4 policy route with the link; put it back once the link is usable again.
      if (f.carrier && f.adminUp && f.hasAddress && !f.hasRoute) void r.sockets.reinstall(name);
      const was = r.table.byName(name);
      if (!r.table.apply({ kind: 'link', name, usable: f.usable })) return;
      if (was !== undefined) this.log.warn({ uplink: name, carrier: f.carrier, address: f.hasAddress, route: f.hasRoute }, f.usable ? 'uplink up' : 'uplink down: moving traffic to the remaining uplinks');
    };
    m.onChange(apply);
    await m.start();
    for (const w of watched) apply(w.name, m.facts(w.name));
  }
}

/** The path timing from the config; the flap damping keeps its measured defaults. */
export function pathTiming(config: AgentConfig): PathTiming {
  const f = config.failover;
  return Object.freeze({
    ...DEFAULT_PATH_TIMING,
    probeIntervalMs: f.probeIntervalMs,
    idleProbeIntervalMs: f.idleProbeIntervalMs === 0 ? Infinity : f.idleProbeIntervalMs,
    suspectAfterMs: f.suspectAfterMs,
    downAfterMs: f.downAfterMs,
    holdDownMs: f.holdDownMs,
    upAfterReplies: f.upAfterReplies,
  });
}

/**
 * Times the steps of a start or a stop for its log line: phase(name) records the ms (0.1 ms
 * resolution) since the previous phase, or since the timer was made.
 */
function phaseTimer(): { phase: (name: string) => void; phases: Record<string, number>; totalMs: () => number } {
  const t0 = performance.now();
  const phases: Record<string, number> = {};
  let last = t0;
  return {
    phases,
    phase: (name) => {
      const now = performance.now();
      phases[name] = Math.round((now - last) * 10) / 10;
      last = now;
    },
    totalMs: () => Math.round(performance.now() - t0),
  };
}
