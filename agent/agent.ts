import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import { hostIdBytes } from '../shared/locator.ts';
import type { HostId, Prefix } from '../shared/ids.ts';
import { privateSeed, type KeyPair } from '../shared/keys.ts';
import type { Binding, Locator } from '../shared/binding.ts';
import type { AgentConfig } from './config.ts';
import { createInside, type InsideStats } from './dataplane/inside.ts';
import { createOutside, type OutsideStats } from './dataplane/outside.ts';
import { DropCounters, type DropName } from './dataplane/drops.ts';
import { MapCache, boundLocator, locatorText, type BoundLocator, type MapEntry } from './mapcache/cache.ts';
import type { RmClient } from './mapcache/client.ts';
import { Resolver, type ResolverCounter } from './mapcache/resolver.ts';
import { DEFAULT_PEER_PATHS, PeerPaths, type FailoverRecord, type PathStatus, type PeerCounter } from './peers/paths.ts';
import { DEFAULT_PATH_TIMING, type PathTiming } from './failover.ts';
import { tunUpCommands, type NetConfig } from './netconfig.ts';
import { choosePath, repathEntries } from './paths.ts';
import { RmLink, type RmLinkStatus } from './rmlink.ts';
import type { TunDevice, TunOptions } from './tun/tun.ts';
import type { UdpBatchHandler, UdpBatchSocket, UdpOptions } from '../shared/udp/socket.ts';
import { Uplinks } from './uplinks/uplinks.ts';
import type { UplinkFacts, WatchedUplink } from './uplinks/monitor/types.ts';

/** What the agent needs of the uplink monitor (uplinks/monitor/monitor.ts). */
export interface MonitorLike {
  start(): Promise<void>;
  stop(): Promise<void>;
  facts(name: string): UplinkFacts;
  onChange(cb: (uplink: string, facts: UplinkFacts) => void): () => void;
}

/**
 * The agent, wired. Reading order for newcomers: this file, then dataplane/inside.ts and
 * dataplane/outside.ts.
 *
 * Start order: TUN (fails first if we lack privileges), its addresses and routes, the uplink sockets
 * and their policy routing, the map-cache (static bindings), the Realm Manager link (registration,
 * lookups, pushes), then the readers. Stop runs in reverse; closing the TUN fd makes the kernel
 * remove the device and with it our routes.
 */
export interface AgentIdentity {
  readonly key: KeyPair;
  readonly prefix: Prefix;
  readonly hostId: HostId;
}

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
  readonly makeMonitor?: (uplinks: readonly WatchedUplink[]) => MonitorLike;
}

export interface AgentStatus {
  readonly hostId: string;
  readonly tun: { readonly name: string; readonly mtu: number; readonly offload: boolean };
  readonly uplinks: readonly { readonly name: string; readonly interface: string | null; readonly locator: string; readonly up: boolean; readonly priority: number; readonly txPackets: number; readonly rxPackets: number; readonly sendErrors: number }[];
  readonly rm: (RmLinkStatus & { readonly servers: readonly string[]; readonly resolver: Readonly<Record<ResolverCounter, number>>; readonly pendingIds: number }) | null;
  readonly mapCacheStats: { readonly size: number; readonly capacity: number; readonly evicted: number };
  readonly mapCache: readonly { readonly hostId: string; readonly source: string; readonly seq: number; readonly locators: readonly string[]; readonly path: string | null; readonly ageS: number; readonly ttlS: number | null }[];
  readonly inside: Readonly<InsideStats>;
  readonly outside: Readonly<OutsideStats>;
  readonly drops: Readonly<Record<DropName, number>>;
  /** Paths (local uplink × remote locator) of the peers with traffic, as probing sees them. */
  readonly paths: readonly PathStatus[];
  /** Path changes, newest last (at most 20). */
  readonly failovers: readonly FailoverRecord[];
  /** Messages between agents (probes, replies, direct updates) and why some were dropped; null without an RM (probing needs the peers' keys). */
  readonly peers: Readonly<Record<PeerCounter, number>> | null;
}

export interface Agent {
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): AgentStatus;
  /** Signs a new binding from the uplinks' current state and registers it (no-op without an RM). */
  reregister(): Promise<void>;
}

/** UDP payload limits: IPv4 65535 − 20 − 8; we size for the smaller so any uplink can carry any frame. */
const MAX_DATAGRAM = 65_507;
const SWEEP_MS = 1000;

/** Offload chunks fit one underlay packet even over IPv6: MTU − 40 (IPv6) − 8 (UDP) − 8 (data header). */
export function chunkPayload(underlayMtu: number): number {
  return underlayMtu - 40 - 8 - 8;
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
  const log = deps.log;
  const hostId = resolveHostId(config, deps.identity);
  const drops = new DropCounters();
  const cache = new MapCache(config.limits.mapCacheEntries);
  const myId = hostIdBytes(hostId);
  let tun: TunDevice | null = null;
  let uplinks: Uplinks | null = null;
  let rmLink: RmLink | null = null;
  let resolver: Resolver | null = null;
  let sweepTimer: NodeJS.Timeout | null = null;
  let monitor: MonitorLike | null = null;
  let peerPaths: PeerPaths | null = null;
  let inside: InsideStats = { packets: 0, bytes: 0, batches: 0 };
  const outside: OutsideStats = { packets: 0, bytes: 0, batches: 0 };

  function loadStaticBindings(list: Uplinks): void {
    const now = deps.clock.now();
    for (const p of config.peers) {
      const locators: BoundLocator[] = p.locators.map((l) => boundLocator(l.address, l.port, l.priority, l.weight, true));
      const entry: MapEntry = Object.freeze({
        hostId: p.hostId,
        id: hostIdBytes(p.hostId),
        locators: Object.freeze(locators),
        path: choosePath(list.list, locators),
        source: 'static' as const,
        createdAt: now,
        expiresAt: Infinity,
        seq: 0,
        group: [],
        publicKey: null,
        traffic: { tx: 0, rx: 0 },
      });
      if (!cache.set(entry)) log.warn({ hostId: p.hostId }, 'map-cache full: static binding not loaded (raise limits.mapCacheEntries)');
      if (entry.path === null) log.warn({ hostId: p.hostId }, 'no uplink can reach any locator of this host (address families differ?)');
    }
  }

  /**
   * A binding received straight from its host (already verified, newer than ours). The realm's
   * preferences came with the RM's answer: a locator we already had keeps the priority and weight
   * the RM served for it; only its state and the set of locators come from the host.
   */
  function applyDirect(b: Binding, res: Resolver): void {
    const held = cache.lookup(b.hostId.toBytes(), 0);
    const locators: Locator[] = b.locators.map((l) => {
      const h = held?.locators.find((x) => x.address === l.address && x.port === l.port);
      return h === undefined ? l : { ...l, priority: h.priority, weight: h.weight };
    });
    res.applyDirect({ kind: 'binding', hostId: b.hostId, binding: b, locators, ttl: b.ttl });
  }

  /**
   * Organisational control on our own side: the realm's policy on uplinks (e.g. "ispb is backup")
   * also decides which uplink this host sends from. We learn it by looking ourselves up once the RM
   * holds our binding: the answer carries our locators with the realm's preferences applied. An
   * uplink the realm says never to use gets priority 255 (used only when nothing else is left; we
   * do not take a working uplink out because of policy). The config's priorities apply until then.
   */
  async function applyOwnPolicy(link: RmLink, ul: Uplinks): Promise<void> {
    const id = deps.identity;
    if (id === undefined) return;
    const a = await link.lookup(id.hostId).catch(() => null);
    if (a === null || a.kind !== 'binding') return;
    let changed = false;
    for (const l of a.locators) {
      const u = ul.list.find((x) => x.name === l.uplink);
      if (u === undefined) continue;
      const priority = l.state === 'up' || !u.up ? l.priority : 255;
      if (u.priority === priority && u.weight === l.weight) continue;
      log.info({ uplink: u.name, priority, weight: l.weight, was: `${u.priority}/${u.weight}` }, 'realm policy sets this uplink\'s priority and weight');
      u.priority = priority;
      u.weight = l.weight;
      changed = true;
    }
    if (changed) uplinksChanged(ul);
  }

  /** The uplinks' state or priorities changed: every entry's path is chosen again. */
  function uplinksChanged(ul: Uplinks): void {
    if (peerPaths !== null) peerPaths.uplinksChanged();
    else repathEntries(cache, ul.list);
  }

  /**
   * Uplink failover, first step: the monitor reports carrier loss, a removed address or a withdrawn
   * route the moment the kernel does; the uplink is taken out, traffic moves to the best remaining
   * path at once, and a new signed binding (that locator marked down) goes to the RM, which pushes
   * it to the correspondents that follow this host.
   */
  async function startMonitor(ul: Uplinks): Promise<void> {
    if (deps.makeMonitor === undefined) return;
    const watched: WatchedUplink[] = ul.list
      .filter((u) => u.interface !== undefined)
      .map((u) => ({ name: u.name, interface: u.interface as string, locator: u.locator, gateway: config.uplinks.find((c) => c.name === u.name)?.gateway, table: ul.tableOf(u.name) }));
    if (watched.length === 0) return;
    const m = deps.makeMonitor(watched);
    monitor = m;
    const apply = (name: string, f: UplinkFacts) => {
      const u = ul.list.find((x) => x.name === name);
      if (u === undefined) return;
      // The kernel drops an IPv4 policy route with the link; put it back once the link is usable again.
      if (f.carrier && f.adminUp && f.hasAddress && !f.hasRoute) void ul.reinstall(name);
      if (u.up === f.usable) return;
      u.up = f.usable;
      log.warn({ uplink: name, carrier: f.carrier, address: f.hasAddress, route: f.hasRoute }, f.usable ? 'uplink up' : 'uplink down: moving traffic to the remaining uplinks');
      uplinksChanged(ul);
      void rmLink?.register();
    };
    m.onChange(apply);
    await m.start();
    for (const w of watched) apply(w.name, m.facts(w.name));
  }

  return {
    async start() {
      const t = deps.openTun({ name: config.tun.name, mtu: config.tun.mtu, offload: config.tun.offload, batchSize: config.tun.batchSize });
      tun = t;
      try {
        for (const cmd of tunUpCommands({ name: t.name, mtu: config.tun.mtu, offload: config.tun.offload, hostId, prefixes: config.realm.prefixes })) {
          await deps.net.ip(cmd);
        }
        const ul = new Uplinks(
          config.uplinks,
          { port: config.listenPort, batchSize: config.tun.batchSize, maxDatagram: MAX_DATAGRAM, tableBase: config.routing.tableBase, rulePriority: config.routing.rulePriority },
          { openUdp: deps.openUdp, net: deps.net, log },
        );
        uplinks = ul;
        await ul.start();
        loadStaticBindings(ul);

        const outsideHandlers: UdpBatchHandler[] = [];
        const rmCfg = config.rm;
        const id = deps.identity;
        let res: Resolver | null = null;
        if (rmCfg !== undefined && id !== undefined && deps.makeRmClient !== undefined) {
          const makeClient = deps.makeRmClient;
          const link = new RmLink(ul.list, { listenPort: config.listenPort, bindingTtlS: rmCfg.bindingTtlS }, {
            key: id.key,
            prefix: id.prefix,
            hostId: id.hostId,
            makeClient: (i) => makeClient(i, ul.list[i].locator),
            clock: deps.clock,
            log: log.child({ module: 'rm' }),
          });
          rmLink = link;
          link.onRegistered(() => void applyOwnPolicy(link, ul));
          res = new Resolver(
            {
              pendingPerId: rmCfg.pendingPerId,
              pendingTotal: rmCfg.pendingTotal,
              refreshBeforeExpiryMs: Math.min(10_000, (rmCfg.bindingTtlS * 1000) / 4),
              maxNegative: config.limits.mapCacheEntries,
              negativeTtlMaxMs: rmCfg.negativeTtlMaxS * 1000,
              tunStride: t.stride,
              tunHeadroom: t.headroom,
              udpStride: ul.list[0].socket.stride,
            },
            {
              rm: link,
              cache,
              uplinks: () => ul.list,
              clock: deps.clock,
              log: log.child({ module: 'mapcache' }),
              reinjectInside: (buf, lengths, count) => ins.onBatch(buf, lengths, count),
              reinjectOutside: (u, buf, lengths, addrs, ports, count) => outsideHandlers[u](buf, lengths, addrs, ports, count),
            },
          );
          resolver = res;
          link.onPush((a) => res?.applyPush(a));
        }

        const r = res;
        // Probing needs keys (ours, and the peers' from their bindings), so an RM: static peers have no keys.
        const pp = id === undefined || r === null ? null : new PeerPaths(
          { ...DEFAULT_PEER_PATHS, timing: pathTiming(config), instanceId: config.realm.instanceId },
          {
            cache,
            uplinks: ul.list,
            myId,
            mySeed: privateSeed(id.key),
            clock: deps.clock,
            wallClock: Date.now,
            log: log.child({ module: 'paths' }),
            applyBinding: (b) => applyDirect(b, r),
          },
        );
        peerPaths = pp;
        rmLink?.onSigned((b) => pp?.sendUpdate(b));
        const ins = createInside(
          {
            instanceId: config.realm.instanceId,
            offload: config.tun.offload,
            maxDatagram: MAX_DATAGRAM,
            batchSize: config.tun.batchSize,
            stride: t.stride,
            headroom: t.headroom,
            chunkPayload: chunkPayload(config.underlayMtu),
          },
          { cache, sockets: ul.list.map((u) => u.socket), drops, onMiss: r === null ? undefined : (buf, off, len, idOff) => r.missInside(buf, off, len, idOff) },
        );
        inside = ins.stats;
        const maxInner = config.tun.offload ? MAX_DATAGRAM : config.tun.mtu;
        ul.list.forEach((u, i) => {
          const out = createOutside(
            { instanceId: config.realm.instanceId, offload: config.tun.offload, maxInner, batchSize: config.tun.batchSize, stride: u.socket.stride, hostId: myId },
            {
              cache,
              tun: t,
              drops,
              onUnknownSource: r === null ? undefined : (buf, off, len, addrs, srcOff, port, idOff) => r.missOutside(i, buf, off, len, addrs, srcOff, port, idOff),
              onPeerMessage: pp === null ? undefined : (buf, off, len, addrs, srcOff, port) => pp.onMessage(i, buf, off, len, addrs, srcOff, port),
            },
            outside, // all uplinks count into one outside: several doors, one house
          );
          outsideHandlers.push(out.onBatch);
          u.socket.start(out.onBatch);
        });
        // The RM link exists before the first packet can miss in the map-cache.
        rmLink?.start();
        await startMonitor(ul);
        t.start(ins.onBatch);
        pp?.start();
        if (r !== null) {
          sweepTimer = setInterval(() => r.sweep(deps.clock.now()), SWEEP_MS);
          sweepTimer.unref();
        }
        log.info(
          { hostId, tun: t.name, mtu: config.tun.mtu, offload: config.tun.offload, uplinks: ul.list.map((u) => `${u.name}=${u.locator}`).join(','), staticPeers: config.peers.length, rm: rmCfg?.servers.map((s) => s.address).join(',') ?? 'none' },
          'agent up',
        );
      } catch (e) {
        await this.stop();
        throw e;
      }
    },

    async stop() {
      await monitor?.stop();
      monitor = null;
      peerPaths?.stop();
      if (sweepTimer !== null) clearInterval(sweepTimer);
      sweepTimer = null;
      resolver?.stop();
      await rmLink?.stop();
      rmLink = null;
      const t = tun;
      tun = null;
      t?.close();
      await uplinks?.stop();
      uplinks = null;
      log.info({ drops: drops.total(), insidePackets: inside.packets, outsidePackets: outside.packets }, 'agent stopped');
    },

    async reregister() {
      await rmLink?.register();
    },

    status(): AgentStatus {
      const now = deps.clock.now();
      const rl = rmLink;
      const rs = resolver;
      return {
        hostId,
        tun: { name: tun?.name ?? config.tun.name, mtu: config.tun.mtu, offload: config.tun.offload },
        uplinks: (uplinks?.list ?? []).map((u) => ({
          name: u.name,
          interface: u.interface ?? null,
          locator: u.locator,
          up: u.up,
          priority: u.priority,
          txPackets: u.socket.stats.txPackets,
          rxPackets: u.socket.stats.rxPackets,
          sendErrors: u.socket.stats.sendErrors,
        })),
        rm:
          rl === null || rs === null
            ? null
            : { ...rl.status(), servers: (config.rm?.servers ?? []).map((s) => `${s.address}:${s.port}`), resolver: { ...rs.counters }, pendingIds: rs.pendingIds() },
        mapCacheStats: { size: cache.size, capacity: cache.capacity, evicted: cache.evicted },
        mapCache: cache.entries().map((e) => ({
          hostId: e.hostId,
          source: e.source,
          seq: e.seq,
          locators: e.locators.map((l) => `${locatorText(l)} p${l.priority}${l.up ? '' : ' down'}`),
          path: e.path ? `${uplinks?.list[e.path.uplink]?.name ?? e.path.uplink} → ${e.path.locator.address}` : null,
          ageS: Math.round((now - e.createdAt) / 1000),
          ttlS: Number.isFinite(e.expiresAt) ? Math.max(0, Math.round((e.expiresAt - now) / 1000)) : null,
        })),
        inside: { ...inside },
        outside: { ...outside },
        drops: drops.snapshot(),
        paths: peerPaths?.paths() ?? [],
        failovers: peerPaths?.failovers() ?? [],
        peers: peerPaths === null ? null : { ...peerPaths.counters },
      };
    },
  };
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
