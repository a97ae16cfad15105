import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import { familyOf, hostIdBytes, locatorBytes } from '../shared/locator.ts';
import type { AgentConfig } from './config.ts';
import { createInside, type InsideStats } from './dataplane/inside.ts';
import { createOutside, type OutsideStats } from './dataplane/outside.ts';
import { DropCounters, type DropName } from './dataplane/drops.ts';
import { MapCache, type BoundLocator, type MapEntry } from './mapcache/cache.ts';
import { tunUpCommands, type NetConfig } from './netconfig.ts';
import { choosePath } from './paths.ts';
import type { TunDevice, TunOptions } from './tun/tun.ts';
import type { UdpBatchSocket, UdpOptions } from './uplinks/socket.ts';
import { Uplinks } from './uplinks/uplinks.ts';

/**
 * The agent, wired. Reading order for newcomers: this file, then dataplane/inside.ts and
 * dataplane/outside.ts.
 *
 * Start order: TUN (fails first if we lack privileges), its addresses and routes, the uplink sockets
 * and their policy routing, the map-cache, then the readers. Stop runs in reverse, and closing the
 * TUN fd makes the kernel remove the device and with it our routes.
 */
export interface AgentDeps {
  readonly openTun: (opts: TunOptions) => TunDevice;
  readonly openUdp: (opts: UdpOptions) => UdpBatchSocket | Promise<UdpBatchSocket>;
  readonly net: NetConfig;
  readonly log: Logger;
  readonly clock: Clock;
}

export interface AgentStatus {
  readonly hostId: string;
  readonly tun: { readonly name: string; readonly mtu: number; readonly offload: boolean };
  readonly uplinks: readonly { readonly name: string; readonly interface: string | null; readonly locator: string; readonly up: boolean; readonly priority: number; readonly txPackets: number; readonly rxPackets: number; readonly sendErrors: number }[];
  readonly mapCache: readonly { readonly hostId: string; readonly source: string; readonly locators: readonly string[]; readonly path: string | null; readonly ageS: number }[];
  readonly inside: Readonly<InsideStats>;
  readonly outside: Readonly<OutsideStats>;
  readonly drops: Readonly<Record<DropName, number>>;
}

export interface Agent {
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): AgentStatus;
}

/** UDP payload limits: IPv4 65535 − 20 − 8; we size for the smaller so any uplink can carry any frame. */
const MAX_DATAGRAM = 65_507;

export function createAgent(config: AgentConfig, deps: AgentDeps): Agent {
  const log = deps.log;
  const drops = new DropCounters();
  const cache = new MapCache(config.limits.mapCacheEntries);
  const myId = hostIdBytes(config.hostId);
  let tun: TunDevice | null = null;
  let uplinks: Uplinks | null = null;
  let inside: InsideStats = { packets: 0, bytes: 0, batches: 0 };
  const outside: OutsideStats = { packets: 0, bytes: 0, batches: 0 };

  function loadStaticBindings(list: Uplinks): void {
    const now = deps.clock.now();
    for (const p of config.peers) {
      const locators: BoundLocator[] = p.locators.map((l) => ({
        address: l.address,
        port: l.port,
        family: familyOf(l.address),
        bytes: locatorBytes(l.address),
        priority: l.priority,
        weight: l.weight,
        up: true,
      }));
      const entry: MapEntry = Object.freeze({
        hostId: p.hostId,
        id: hostIdBytes(p.hostId),
        locators: Object.freeze(locators),
        path: choosePath(list.list, locators),
        source: 'static' as const,
        createdAt: now,
      });
      if (!cache.set(entry)) log.warn({ hostId: p.hostId }, 'map-cache full: static binding not loaded (raise limits.mapCacheEntries)');
      if (entry.path === null) log.warn({ hostId: p.hostId }, 'no uplink can reach any locator of this host (address families differ?)');
    }
  }

  return {
    async start() {
      const t = deps.openTun({ name: config.tun.name, mtu: config.tun.mtu, offload: config.tun.offload, batchSize: config.tun.batchSize });
      tun = t;
      try {
        for (const cmd of tunUpCommands({ name: t.name, mtu: config.tun.mtu, offload: config.tun.offload, hostId: config.hostId, prefixes: config.realm.prefixes })) {
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

        const ins = createInside(
          { instanceId: config.realm.instanceId, offload: config.tun.offload, maxDatagram: MAX_DATAGRAM, batchSize: config.tun.batchSize, stride: t.stride, headroom: t.headroom },
          { cache, sockets: ul.list.map((u) => u.socket), drops },
        );
        inside = ins.stats;
        const maxInner = config.tun.offload ? MAX_DATAGRAM : config.tun.mtu;
        for (const u of ul.list) {
          const out = createOutside(
            { instanceId: config.realm.instanceId, offload: config.tun.offload, maxInner, batchSize: config.tun.batchSize, stride: u.socket.stride, hostId: myId },
            { cache, tun: t, drops },
            outside, // all uplinks count into one outside: several doors, one house
          );
          u.socket.start(out.onBatch);
        }
        t.start(ins.onBatch);
        log.info(
          { hostId: config.hostId, tun: t.name, mtu: config.tun.mtu, offload: config.tun.offload, uplinks: ul.list.map((u) => `${u.name}=${u.locator}`).join(','), peers: cache.size },
          'agent up',
        );
      } catch (e) {
        await this.stop();
        throw e;
      }
    },

    async stop() {
      const t = tun;
      tun = null;
      t?.close();
      await uplinks?.stop();
      uplinks = null;
      log.info({ drops: drops.total(), insidePackets: inside.packets, outsidePackets: outside.packets }, 'agent stopped');
    },

    status(): AgentStatus {
      const now = deps.clock.now();
      return {
        hostId: config.hostId,
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
        mapCache: cache.entries().map((e) => ({
          hostId: e.hostId,
          source: e.source,
          locators: e.locators.map((l) => `${l.family === 6 ? `[${l.address}]` : l.address}:${l.port} p${l.priority}`),
          path: e.path ? `${uplinks?.list[e.path.uplink]?.name ?? e.path.uplink} → ${e.path.locator.address}` : null,
          ageS: Math.round((now - e.createdAt) / 1000),
        })),
        inside: { ...inside },
        outside: { ...outside },
        drops: drops.snapshot(),
      };
    },
  };
}
