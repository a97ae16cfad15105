import { Histogram, newRegistry, readCounter, readGauge, snake, type Registry } from '../shared/prometheus.ts';
import type { AgentStatus } from './agent.ts';
import type { FailoverRecord } from './paths/records.ts';

/**
 * The agent's Prometheus metrics (docs/operations.md lists them). Every value comes from one status
 * snapshot taken when the scrape arrives (`beforeScrape`), the same document `realmnet status --json`
 * prints; only failovers are observed as they happen, for the duration histogram.
 */
export interface AgentMetrics {
  readonly registry: Registry;
  /** Takes the snapshot the collectors read (call once per scrape). */
  readonly beforeScrape: () => void;
  /** Counts a failover (paths/records.ts) and observes its duration. */
  readonly failover: (r: FailoverRecord) => void;
}

/** Seconds buckets around what failover measures: link events ~0-50 ms, silent failures ~150-500 ms. */
const FAILOVER_BUCKETS = [0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5];

type Row<L extends string> = readonly [Partial<Record<L, string>>, number];

export function agentMetrics(status: () => AgentStatus, version: string): AgentMetrics {
  const registry = newRegistry('realmnet_agent_');
  let st: AgentStatus | null = null;
  const s = (): AgentStatus => (st ??= status());
  const one = (v: number): Row<never>[] => [[{}, v]];
  const each = <L extends string>(label: L, rec: Readonly<Record<string, number>> | null | undefined): Row<L>[] =>
    Object.entries(rec ?? {}).map(([k, v]) => [{ [label]: snake(k) } as Partial<Record<L, string>>, v]);

  readGauge(registry, 'realmnet_agent_info', 'This agent: its host ID and version (always 1).', ['host_id', 'version'], () => [[{ host_id: s().hostId, version }, 1]]);
  // The two edges of the data plane.
  readCounter(registry, 'realmnet_agent_inside_packets_total', 'Packets read from the TUN device (applications to the overlay).', [], () => one(s().inside.packets));
  readCounter(registry, 'realmnet_agent_inside_bytes_total', 'Bytes read from the TUN device.', [], () => one(s().inside.bytes));
  readCounter(registry, 'realmnet_agent_outside_packets_total', 'Packets received from peers and written to the TUN device.', [], () => one(s().outside.packets));
  readCounter(registry, 'realmnet_agent_outside_bytes_total', 'Bytes received from peers and written to the TUN device.', [], () => one(s().outside.bytes));
  readCounter(registry, 'realmnet_agent_dropped_packets_total', 'Packets dropped, by reason (realmnet status lists the same names).', ['reason'], () =>
    Object.entries(s().drops).map(([k, v]) => [{ reason: snake(k) }, v] as const),
  );
  // Uplinks.
  const uplinks = <L extends string>(read: (u: AgentStatus['uplinks'][number]) => number) => () => s().uplinks.map((u) => [{ uplink: u.name } as Partial<Record<L, string>>, read(u)] as const);
  readGauge(registry, 'realmnet_agent_uplink_up', 'Whether the uplink is usable now (carrier, address, route): 1 or 0.', ['uplink'], uplinks((u) => (u.up ? 1 : 0)));
  readGauge(registry, 'realmnet_agent_uplink_priority', "The uplink's priority now (lower is preferred; the realm's policy may change it).", ['uplink'], uplinks((u) => u.priority));
  readCounter(registry, 'realmnet_agent_uplink_sent_datagrams_total', 'UDP datagrams sent on the uplink.', ['uplink'], uplinks((u) => u.txPackets));
  readCounter(registry, 'realmnet_agent_uplink_received_datagrams_total', 'UDP datagrams received on the uplink.', ['uplink'], uplinks((u) => u.rxPackets));
  readCounter(registry, 'realmnet_agent_uplink_send_errors_total', 'Datagrams the kernel refused to send on the uplink.', ['uplink'], uplinks((u) => u.sendErrors));
  // Paths and failover.
  readGauge(registry, 'realmnet_agent_paths', 'Paths (uplink × peer locator) of peers with traffic, by state.', ['state'], () => {
    const by: Record<string, number> = { unknown: 0, up: 0, suspect: 0, down: 0 };
    for (const p of s().paths) by[p.state] = (by[p.state] ?? 0) + 1;
    return Object.entries(by).map(([state, v]) => [{ state }, v] as const);
  });
  readCounter(registry, 'realmnet_agent_path_state_changes_total', 'Changes of a path state (unknown, up, suspect, down).', [], () => one(s().peers?.pathStateChanges ?? 0));
  let failovers = 0;
  let switches = 0;
  readCounter(registry, 'realmnet_agent_failovers_total', 'Traffic to a peer moved off a failed path (uplink down, no probe reply, locator withdrawn).', [], () => one(failovers));
  readCounter(registry, 'realmnet_agent_path_switches_total', 'Every change of the path to a peer: failovers and planned moves (a preferred path back).', [], () => one(switches));
  const duration = new Histogram({
    name: 'realmnet_agent_failover_duration_seconds',
    help: 'From the first sign of trouble (link event, first unanswered probe) to traffic on the new path.',
    buckets: FAILOVER_BUCKETS,
    registers: [registry],
  });
  // Map-cache and the RM.
  readGauge(registry, 'realmnet_agent_map_cache_entries', 'Bindings in the map-cache.', [], () => one(s().mapCacheStats.size));
  readGauge(registry, 'realmnet_agent_map_cache_capacity', 'Map-cache capacity (limits.mapCacheEntries).', [], () => one(s().mapCacheStats.capacity));
  readCounter(registry, 'realmnet_agent_map_cache_evictions_total', 'Bindings evicted from a full map-cache.', [], () => one(s().mapCacheStats.evicted));
  readCounter(registry, 'realmnet_agent_lookups_total', 'Lookups sent to the RM (map-cache misses and refreshes).', [], () => one(s().rm?.resolver.lookups ?? 0));
  readCounter(registry, 'realmnet_agent_pushes_applied_total', 'Bindings pushed by the RM and applied.', [], () => one(s().rm?.resolver.pushesApplied ?? 0));
  readCounter(registry, 'realmnet_agent_resolver_events_total', 'What the resolver did, by event (lookups, answers, pushes, expiries, …).', ['event'], () => each('event', s().rm?.resolver));
  readGauge(registry, 'realmnet_agent_registered', 'Whether the RM holds this host\'s current binding: 1 or 0 (no RM: 0).', [], () => one(s().rm?.registered === true ? 1 : 0));
  readGauge(registry, 'realmnet_agent_binding_sequence', "Sequence number of this host's last signed binding.", [], () => one(s().rm?.seq ?? 0));
  readCounter(registry, 'realmnet_agent_rm_client_events_total', "Each uplink's RM client: registrations, requests, retransmissions, pushes, by event.", ['uplink', 'event'], () =>
    (s().rm?.clients ?? []).flatMap((c) => Object.entries(c.counters).filter(([k]) => !k.includes('.')).map(([k, v]) => [{ uplink: c.uplink, event: snake(k) }, v] as const)),
  );
  // Sessions and messages between agents.
  readGauge(registry, 'realmnet_agent_sessions', 'Encrypted sessions with peers (0 when dataplane.encryption is off).', [], () => one(s().encryption?.sessions ?? 0));
  readCounter(registry, 'realmnet_agent_session_events_total', 'Handshakes, rekeys, cookies and wiped keys, by event.', ['event'], () => {
    const c = s().encryption?.counters;
    if (c === undefined) return [];
    const { dropped, ...rest } = c;
    return [...each('event', rest), ...Object.entries(dropped).map(([k, v]) => [{ event: `dropped_${snake(k)}` }, v] as const)];
  });
  readCounter(registry, 'realmnet_agent_peer_messages_total', 'Probes, replies and direct binding updates between agents, and why some were dropped.', ['event'], () =>
    each('event', s().peers === null ? null : Object.fromEntries(Object.entries(s().peers ?? {}).filter(([k]) => k !== 'pathStateChanges'))),
  );
  // The event loop the data path shares (lag.ts): the process's own histogram is in realmnet_agent_nodejs_eventloop_lag_*.
  readGauge(registry, 'realmnet_agent_event_loop_lag_seconds', 'How late the event loop ran timers over the last 10 s (p99 and max).', ['stat'], () => [
    [{ stat: 'p99' }, s().eventLoop.recentP99Ms / 1000],
    [{ stat: 'max' }, s().eventLoop.recentMaxMs / 1000],
  ]);

  return {
    registry,
    beforeScrape: () => {
      st = null;
    },
    failover: (r) => {
      switches++;
      if (r.tookMs === null) return;
      failovers++;
      duration.observe(r.tookMs / 1000);
    },
  };
}
