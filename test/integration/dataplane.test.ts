import { describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/agent.ts';
import { parseAgentConfig } from '../../agent/config.ts';
import type { NetConfig } from '../../shared/ip.ts';
import { MemoryTun } from '../../agent/tun/memory.ts';
import { MemoryNet } from '../../shared/udp/memory.ts';
import { ManualClock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/log.ts';
import { HEADER_LEN, writeHeader } from '../../shared/wire/header.ts';
import { ipv6Packet } from '../helpers/packets.ts';

/** Two agents wired through the same code as in production, on a fake TUN and a fake network. */
function recorder(): NetConfig & { cmds: string[] } {
  const cmds: string[] = [];
  return { cmds, ip: async (args) => void cmds.push(args.join(' ')) };
}

const MH = 'fd00:1::a';
const CH = 'fd00:1::c';

async function pair(opts: { offload?: boolean } = {}) {
  const net = new MemoryNet();
  const clock = new ManualClock(1000);
  const mk = (raw: unknown) => {
    const tun = new MemoryTun({ name: 'rn0', offload: opts.offload ?? false });
    const nc = recorder();
    const agent = createAgent(parseAgentConfig(raw), { openTun: () => tun, openUdp: (o) => net.open(o), net: nc, log: silentLogger, clock });
    return { tun, nc, agent };
  };
  const mh = mk({
    hostId: MH,
    realm: { prefixes: ['fd00::/8'], instanceId: 7 },
    tun: { offload: opts.offload ?? false },
    // The plain data plane (measurement only): the sealed one has its own suite (sealed.test.ts).
    dataplane: { encryption: 'off' },
    uplinks: [
      { name: 'ispa', interface: 'eth-a', locator: '192.0.2.1', gateway: '192.0.2.2', priority: 1 },
      { name: 'ispb', interface: 'eth-b', locator: '192.0.2.65', gateway: '192.0.2.66', priority: 2 },
    ],
    peers: [{ hostId: CH, locators: [{ address: '203.0.113.2' }] }],
  });
  const ch = mk({
    hostId: CH,
    realm: { prefixes: ['fd00::/8'], instanceId: 7 },
    tun: { offload: opts.offload ?? false },
    // The plain data plane (measurement only): the sealed one has its own suite (sealed.test.ts).
    dataplane: { encryption: 'off' },
    uplinks: [{ name: 'core', locator: '203.0.113.2' }],
    peers: [{ hostId: MH, locators: [{ address: '192.0.2.1', priority: 1 }, { address: '192.0.2.65', priority: 2 }] }],
  });
  await mh.agent.start();
  await ch.agent.start();
  return { net, mh, ch };
}

async function stopAll(...agents: Agent[]) {
  for (const a of agents) await a.stop();
}

describe('data plane over fake TUN and network', () => {
  it('carries packets both ways between host IDs, header stripped, bytes intact', async () => {
    const { net, mh, ch } = await pair();
    const out = ipv6Packet(MH, CH, Buffer.from('hello from mh'));
    mh.tun.inject(out);
    await net.idle();
    expect(ch.tun.written).toHaveLength(1);
    expect(Buffer.compare(ch.tun.written[0], out)).toBe(0);

    const back = ipv6Packet(CH, MH, 1200);
    ch.tun.inject(back);
    await net.idle();
    expect(mh.tun.written).toHaveLength(1);
    expect(Buffer.compare(mh.tun.written[0], back)).toBe(0);
    expect(mh.agent.status().inside.packets).toBe(1);
    expect(mh.agent.status().outside.packets).toBe(1);
    expect(Object.values(mh.agent.status().drops).every((n) => n === 0)).toBe(true);
    await stopAll(mh.agent, ch.agent);
  });

  it('sends on the preferred uplink and accepts from any bound locator', async () => {
    const { net, mh, ch } = await pair();
    mh.tun.injectBatch(Array.from({ length: 100 }, () => ipv6Packet(MH, CH, 100)));
    await net.idle();
    const st = mh.agent.status();
    expect(st.uplinks.map((u) => u.txPackets)).toEqual([100, 0]);
    expect(ch.tun.written).toHaveLength(100);
    expect(st.mapCache[0].path).toBe('ispa → 203.0.113.2');
    await stopAll(mh.agent, ch.agent);
  });

  it('installs source-policy routing for each uplink and the realm route, never a default route', async () => {
    const { mh, ch } = await pair();
    expect(mh.nc.cmds).toContain('-4 rule add from 192.0.2.65 table 4342 priority 4342');
    expect(mh.nc.cmds).toContain('-6 route replace fd00::/8 dev rn0');
    expect(mh.nc.cmds.filter((c) => c.includes('default') && c.includes('rn0'))).toEqual([]);
    await stopAll(mh.agent, ch.agent);
    expect(mh.nc.cmds).toContain('-4 rule del from 192.0.2.65 table 4342 priority 4342');
  });

  it('counts, and never forwards, traffic without a binding or from the wrong locator', async () => {
    const { net, mh, ch } = await pair();
    mh.tun.inject(ipv6Packet(MH, 'fd00:9::9')); // no binding
    mh.tun.inject(Buffer.from([0x45, 0, 0, 20])); // IPv4 / garbage
    await net.idle();
    expect(mh.agent.status().drops['inside.noBinding']).toBe(1);
    expect(mh.agent.status().drops['inside.malformed']).toBe(1);

    // A stranger on the network sends a well-formed datagram claiming to be MH.
    const stranger = net.open({ address: '198.51.100.77', port: 4341 });
    const pkt = ipv6Packet(MH, CH, 20);
    const dg = Buffer.alloc(HEADER_LEN + pkt.length);
    writeHeader(dg, 0, 1, 7, false);
    dg.set(pkt, HEADER_LEN);
    const dst = new Uint8Array(16);
    dst.set([203, 0, 113, 2]);
    stranger.send(dg, Uint32Array.of(0), Uint32Array.of(dg.length), dst, Uint16Array.of(4341), 1);
    await net.idle();
    expect(ch.agent.status().drops['outside.sourceNotBound']).toBe(1);
    expect(ch.tun.written).toHaveLength(0);
    await stopAll(mh.agent, ch.agent);
  });

  it('offload mode carries the virtio header end to end', async () => {
    const { net, mh, ch } = await pair({ offload: true });
    const vnet = Buffer.alloc(10);
    vnet[0] = 1; // NEEDS_CSUM: must reach the other kernel unchanged
    const frame = Buffer.concat([vnet, ipv6Packet(MH, CH, 3000)]);
    mh.tun.inject(frame);
    await net.idle();
    expect(ch.tun.written).toHaveLength(1);
    expect(Buffer.compare(ch.tun.written[0], frame)).toBe(0);
    await stopAll(mh.agent, ch.agent);
  });

  it('offload mode carries a 64 KB super-packet in MTU-sized chunks and rebuilds it whole', async () => {
    const { net, mh, ch } = await pair({ offload: true });
    const frames = [60_000, 100, 65_000, 1444 * 3].map((n, i) => {
      const f = Buffer.concat([Buffer.alloc(10), ipv6Packet(MH, CH, n)]);
      f.fill(i + 1, 50);
      return f;
    });
    mh.tun.injectBatch(frames);
    await net.idle();
    expect(ch.tun.written.map((w) => w.length)).toEqual(frames.map((f) => f.length));
    ch.tun.written.forEach((w, i) => expect(Buffer.compare(w, frames[i])).toBe(0));
    // Every datagram on the wire fits a 1500-byte underlay packet.
    const st = mh.agent.status();
    expect(st.uplinks[0].txPackets).toBe(frames.reduce((n, f) => n + Math.ceil(f.length / 1444), 0));
    expect(ch.agent.status().drops['outside.reassembly']).toBe(0);
    await stopAll(mh.agent, ch.agent);
  });
});
