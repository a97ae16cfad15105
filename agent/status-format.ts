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
  out.push(
    st.mapCache.length === 0
      ? 'map-cache: empty'
      : table(
          ['host ID', 'source', 'locators', 'path', 'age'],
          st.mapCache.map((e) => [e.hostId, e.source, e.locators.join(', '), e.path ?? 'NONE', `${e.ageS}s`]),
        ),
  );
  out.push('');
  out.push(`inside  (TUN→UDP): ${st.inside.packets} packets, ${st.inside.bytes} bytes`);
  out.push(`outside (UDP→TUN): ${st.outside.packets} packets, ${st.outside.bytes} bytes`);
  const drops = Object.entries(st.drops).filter(([, n]) => n > 0);
  out.push(drops.length === 0 ? 'drops: none' : table(['drop reason', 'count'], drops.map(([k, n]) => [k, String(n)])));
  return out.join('\n') + '\n';
}

export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}
