import type { AgentStatus } from './agent.ts';

/** `realmnet status` as a person reads it: aligned tables, zero drop counters left out. */
export function formatStatus(st: AgentStatus): string {
  const out: string[] = [];
  out.push(`host ID   ${st.hostId}`);
  out.push(`TUN       ${st.tun.name}  mtu ${st.tun.mtu}${st.tun.offload ? '  offload (TSO)' : ''}`);
  out.push('');
  out.push(
    table(
      ['uplink', 'interface', 'locator', 'state', 'prio', 'tx pkts', 'rx pkts', 'send errors'],
      st.uplinks.map((u) => [u.name, u.interface ?? '-', u.locator, u.up ? 'up' : 'DOWN', String(u.priority), String(u.txPackets), String(u.rxPackets), String(u.sendErrors)]),
    ),
  );
  out.push('');
  if (st.rm !== null) {
    const r = st.rm;
    out.push(
      `Realm Manager ${r.servers.join(', ')}: ${r.registered ? `registered (seq ${r.seq}, ${r.lastRegisteredAgoS}s ago)` : `NOT registered${r.lastError ? `: ${r.lastError}` : ''}`}`,
    );
    const m = r.membership;
    out.push(
      m.certNotAfter === null
        ? `  membership: none yet${m.joining ? ' (joining with the token in rm.join)' : ' (not admitted? see the log)'}; realm key ${m.realmKeys.join(', ') || 'none'}`
        : `  member since ${m.memberSince ?? '?'}, certificate valid until ${m.certNotAfter}; realm key ${m.realmKeys.join(', ')}; revoked peers refused ${m.revokedIds}`,
    );
    out.push(`  lookups ${r.resolver.lookups} (positive ${r.resolver.positive}, negative ${r.resolver.negative}, failed ${r.resolver.failed}), pushes applied ${r.resolver.pushesApplied}, waiting packets dropped ${r.resolver.queueOverflow}`);
    out.push('');
  } else {
    out.push('Realm Manager: none configured (static bindings only)');
    out.push('');
  }
  const lag = st.eventLoop;
  out.push(`event loop late by at most ${lag.recentMaxMs} ms over the last ~10 s (p99 ${lag.recentP99Ms} ms); since start ${lag.maxMs} ms (p99 ${lag.p99Ms} ms)`);
  out.push('');
  out.push(`map-cache ${st.mapCacheStats.size}/${st.mapCacheStats.capacity} entries${st.mapCacheStats.evicted > 0 ? `, ${st.mapCacheStats.evicted} evicted (least recently used)` : ''}`);
  out.push(
    st.mapCache.length === 0
      ? 'map-cache: empty'
      : table(
          ['host ID', 'source', 'seq', 'locators', 'path', 'age', 'ttl'],
          st.mapCache.map((e) => [e.hostId, e.source, String(e.seq), e.locators.join(', '), e.path ?? 'NONE', `${e.ageS}s`, e.ttlS === null ? '-' : `${e.ttlS}s`]),
        ),
  );
  out.push('');
  if (st.paths.length > 0) {
    out.push(
      table(
        ['peer', 'uplink', 'locator', 'path state', 'rtt', 'loss', 'in use'],
        st.paths.map((p) => [p.peer, p.uplink, p.locator, p.state, p.rttMs === null ? '-' : `${p.rttMs.toFixed(2)} ms`, `${p.lossPct}%`, p.inUse ? '*' : '']),
      ),
    );
    out.push('');
  }
  const last = st.failovers[st.failovers.length - 1];
  if (last !== undefined) {
    out.push(`last failover ${last.at}: ${last.peer}  ${last.from ?? 'none'} ⇒ ${last.to ?? 'none'}  (${last.reason}${last.tookMs === null ? '' : `, ${last.tookMs} ms`}${last.resentPackets > 0 ? `, ${last.resentPackets} packets re-sent` : ''})  [${st.failovers.length} recorded]`);
    out.push('');
  }
  const pc = st.peers;
  if (pc !== null && (pc.probesBudgetSkipped > 0 || pc.updatesWithheld > 0)) {
    // The no-amplification limits at work (docs/security.md decision 4): a peer's binding may list addresses that are not its own.
    out.push(`held back: ${pc.probesBudgetSkipped} probes over an address's budget, ${pc.updatesWithheld} direct updates to locators that did not answer lately`);
    out.push('');
  }
  const s2 = st.slice2;
  if (s2 !== null && (s2.serving.length > 0 || s2.ids.length > 0)) {
    for (const x of s2.serving) out.push(`serving ${x.kind} ID ${x.id}${x.name === '' ? '' : ` (${x.name})`}: RM says ${x.rm}  [${x.file}]`);
    for (const g of s2.ids) {
      out.push(`${g.kind} ID ${g.id}${g.name === '' ? '' : ` (${g.name})`}, binding seq ${g.seq}:`);
      out.push(
        table(
          ['  host', 'priority', 'weight', 'RM', 'probes', 'rtt'],
          g.hosts.map((h) => [`  ${h.hostId}`, String(h.priority), String(h.weight), h.present ? 'present' : 'absent', h.alive ? 'alive' : 'DEAD', h.rttMs === null ? '-' : `${h.rttMs} ms`]),
        ),
      );
    }
    const live = s2.flows.slice(0, 20);
    if (live.length > 0) {
      out.push(
        table(
          ['pinned flow', 'to', 'host', 'why', 'state', 'idle'],
          live.map((f) => [`${f.proto === 6 ? 'tcp' : f.proto === 17 ? 'udp' : `proto ${f.proto}`} :${f.localPort} → :${f.remotePort}`, f.remote, f.hostId ?? '?', f.why ?? '-', f.state, `${Math.round(f.idleMs / 1000)} s`]),
        ),
      );
      if (s2.flows.length > live.length) out.push(`… and ${s2.flows.length - live.length} more pinned flows (realmnet status --json lists them all)`);
    }
    const c = s2.counters;
    out.push(`slice 2: ${s2.pins.flows ?? 0} flows pinned (${s2.pins.evictedActive ?? 0} evicted while active), ${c.newFlows} new flows, ${c.resets} TCP resets for hosts that died (${c.exactResets} exact re-sends), ${c.noHost} packets with no host to take them`);
    out.push('');
  }
  const enc = st.encryption;
  if (enc === null) out.push('encryption: OFF (dataplane.encryption: off — packets can be read and forged on the path)');
  else {
    const c = enc.counters;
    out.push(`encryption: on, ${enc.cipher}; ${enc.sessions} sessions; handshakes ${c.handshakesCompleted} completed, ${c.responsesSent} answered, ${c.rekeys} rekeys, ${c.cookiesSent} cookies sent${c.givenUp > 0 ? `, ${c.givenUp} given up` : ''}`);
    if (enc.peers.length > 0)
      out.push(table(['session peer', 'age', 'sent', 'role'], enc.peers.map((p) => [p.hostId, p.ageMs === null ? (p.pending ? 'handshaking' : 'none') : `${Math.round(p.ageMs / 1000)} s`, String(p.sent), p.initiator === null ? '-' : p.initiator ? 'initiator' : 'responder'])));
    const hd = Object.entries(c.dropped).filter(([, n]) => n > 0);
    if (hd.length > 0) out.push(table(['handshake dropped', 'count'], hd.map(([k, n]) => [k, String(n)])));
    out.push('');
  }
  out.push(`inside  (TUN→UDP): ${st.tun.coalesce ? `${st.tun.splitSegments} of them cut from ${st.tun.splitSupers} TSO super-packets; ` : ''}${st.inside.packets} packets, ${st.inside.bytes} bytes${st.inside.shadowPackets > 0 ? `, ${st.inside.shadowPackets} copied to a second path (make-before-break)` : ''}`);
  const r = st.resend;
  out.push(
    r === null
      ? 'resend after failover: off'
      : `resend after failover: ${mib(r.bufferBytes)} buffer (reaches back ${r.reachMs} ms now), at most ${mib(r.perPeerBytes)} per peer; ${r.replays} failovers re-sent ${r.replayedPackets} packets (${r.replayedBytes} bytes)${r.replaysCapped > 0 ? `, ${r.replaysCapped} cut at the per-peer bound` : ''}`,
  );
  out.push(`outside (UDP→TUN): ${st.outside.packets} packets, ${st.outside.bytes} bytes${st.tun.coalesce ? `; ${st.tun.coalesced} of them merged into ${st.tun.superPackets} TCP super-packets for the kernel (coalescing)` : ''}`);
  const drops = Object.entries(st.drops).filter(([, n]) => n > 0);
  out.push(drops.length === 0 ? 'drops: none' : table(['drop reason', 'count'], drops.map(([k, n]) => [k, String(n)])));
  const peerDrops = Object.entries(st.peers ?? {}).filter(([k, n]) => n > 0 && k.startsWith('peer'));
  if (peerDrops.length > 0) out.push(table(['peer message dropped', 'count'], peerDrops.map(([k, n]) => [k, String(n)])));
  return out.join('\n') + '\n';
}

export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

function mib(n: number): string {
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(n % (1024 * 1024) === 0 ? 0 : 1)} MiB` : `${Math.round(n / 1024)} KiB`;
}
