import { afterEach, describe, expect, it } from 'vitest';
import type { MonitorLike } from '../../agent/agent.ts';
import { MemoryNet } from '../../shared/udp/memory.ts';
import type { UplinkFacts } from '../../agent/uplinks/monitor/types.ts';
import { pairKey } from '../../agent/paths/pairkey.ts';
import { PeerType, encodePeer } from '../../agent/paths/wire.ts';
import { generateKeyPair, privateSeed } from '../../shared/crypto/ed25519.ts';
import { hostIdBytes } from '../../shared/ids.ts';
import { fakeAgent, until, type FakeAgent, type UplinkSpec } from '../helpers/fake-agent.ts';
import { ipv6Packet } from '../helpers/packets.ts';
import { REALM_PREFIX, startHarness, type Harness } from './rm-harness.ts';

/**
 * Path probing and failover between two agents on fakes (MemoryTun, MemoryNet with blackholes, a
 * fake uplink monitor) with a real in-process RM. Real timers: the default timing detects a silent
 * path in ~150-300 ms, so each case takes about a second.
 */
let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

const UP: UplinkFacts = Object.freeze({ carrier: true, adminUp: true, hasAddress: true, hasRoute: true, usable: true });
const DOWN: UplinkFacts = Object.freeze({ carrier: false, adminUp: true, hasAddress: true, hasRoute: false, usable: false });

/** The uplink monitor, played by the test. */
class FakeMonitor implements MonitorLike {
  private readonly state = new Map<string, UplinkFacts>();
  private readonly cbs = new Set<(uplink: string, facts: UplinkFacts) => void>();
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  facts(name: string): UplinkFacts {
    return this.state.get(name) ?? UP;
  }
  onChange(cb: (uplink: string, facts: UplinkFacts) => void): () => void {
    this.cbs.add(cb);
    return () => this.cbs.delete(cb);
  }
  set(name: string, f: UplinkFacts): void {
    this.state.set(name, f);
    for (const cb of this.cbs) cb(name, f);
  }
}

interface Node extends FakeAgent {
  readonly monitor: FakeMonitor;
}

function agentOn(net: MemoryNet, rm: Harness, uplinks: UplinkSpec[], failover: Record<string, number> = {}): Node {
  const monitor = new FakeMonitor();
  return { ...fakeAgent(net, { port: rm.port, publicKey: rm.rmKey.publicKey, admit: (k, p) => rm.admit(k, p) }, REALM_PREFIX, uplinks, { config: { failover }, monitor }), monitor };
}

async function started(n: Node): Promise<void> {
  await n.agent.start();
  cleanup.push(() => n.agent.stop());
  await until(() => n.agent.status().rm?.registered === true, 5000, 'registered');
}

/** mh (ispa preferred, ispb backup) and ch, exchanging a packet each way every 20 ms. */
async function talkingPair(failover: Record<string, number> = {}, rmExtra: Record<string, unknown> = {}) {
  const rm = await startHarness(rmExtra);
  cleanup.push(() => rm.close());
  const net = new MemoryNet();
  const mh = agentOn(net, rm, [
    { name: 'ispa', locator: '192.0.2.1', priority: 1 },
    { name: 'ispb', locator: '192.0.2.65', priority: 2 },
  ], failover);
  const ch = agentOn(net, rm, [{ name: 'core', locator: '203.0.113.2' }], failover);
  await started(mh);
  await started(ch);
  const timer = setInterval(() => {
    mh.tun.inject(ipv6Packet(mh.id, ch.id));
    ch.tun.inject(ipv6Packet(ch.id, mh.id));
  }, 20);
  cleanup.push(async () => clearInterval(timer));
  await until(() => mh.agent.status().paths.filter((p) => p.state === 'up').length === 2 && ch.agent.status().paths.filter((p) => p.state === 'up').length === 2, 5000, 'all paths up');
  return { rm, net, mh, ch };
}

function inUse(n: Node): string {
  return n.agent.status().paths.find((p) => p.inUse)?.locator ?? 'none';
}
function inUseUplink(n: Node): string {
  return n.agent.status().paths.find((p) => p.inUse)?.uplink ?? 'none';
}

describe('path probing and failover', () => {
  it('probes every path of a peer with traffic and measures RTT', async () => {
    const { mh, ch } = await talkingPair();
    const paths = mh.agent.status().paths;
    expect(paths.map((p) => `${p.uplink} ${p.locator}`).sort()).toEqual(['ispa 203.0.113.2:4341', 'ispb 203.0.113.2:4341']);
    expect(paths.every((p) => p.rttMs !== null && p.rttMs >= 0)).toBe(true);
    expect(inUseUplink(mh)).toBe('ispa');
    expect(ch.agent.status().paths.map((p) => p.locator).sort()).toEqual(['192.0.2.1:4341', '192.0.2.65:4341']);
    expect(inUse(ch)).toBe('192.0.2.1:4341');
    const c = mh.agent.status().peers;
    expect(c?.probesSent).toBeGreaterThan(0);
    expect(c?.repliesReceived).toBeGreaterThan(0);
    expect(c?.peerBadMac).toBe(0);
  });

  it('moves both directions off a silently blackholed path, then back after the hold-down', async () => {
    const { net, mh, ch } = await talkingPair({ holdDownMs: 300 });
    const t0 = Date.now();
    net.blackhole('192.0.2.1');
    await until(() => inUseUplink(mh) === 'ispb' && inUse(ch) === '192.0.2.65:4341', 3000, 'both sides on ispb');
    const took = Date.now() - t0;
    expect(took).toBeLessThan(2000); // generous: the timing says ~150-300 ms
    const f = mh.agent.status().failovers.at(-1);
    expect(f?.from).toBe('ispa → 203.0.113.2:4341');
    expect(f?.to).toBe('ispb → 203.0.113.2:4341');
    expect(f?.reason).toMatch(/no probe reply/);
    expect(ch.agent.status().failovers.at(-1)?.to).toBe('core → 192.0.2.65:4341');
    // Data flows on the new path.
    const before = ch.tun.written.length;
    await until(() => ch.tun.written.length > before + 5, 2000, 'data on ispb');
    expect(mh.agent.status().paths.find((p) => p.uplink === 'ispa')?.state).toMatch(/suspect|down/);

    net.restore('192.0.2.1');
    await until(() => inUseUplink(mh) === 'ispa' && inUse(ch) === '192.0.2.1:4341', 5000, 'back on ispa');
    expect(mh.agent.status().failovers.at(-1)?.reason).toMatch(/preferred path is up again/);
  });

  it('carries a lost uplink to the correspondent by a direct signed update, with the RM gone, and takes it back after the hold-down', async () => {
    const { rm, mh, ch } = await talkingPair({ holdDownMs: 400 });
    await rm.close();
    const seqBefore = ch.agent.status().mapCache.find((e) => e.hostId === mh.id)?.seq ?? 0;
    mh.monitor.set('ispa', DOWN);
    // At once on mh (no probing needed for a local link event).
    expect(inUseUplink(mh)).toBe('ispb');
    expect(mh.agent.status().failovers.at(-1)?.reason).toBe('uplink ispa down');
    await until(() => (ch.agent.status().mapCache.find((e) => e.hostId === mh.id)?.seq ?? 0) > seqBefore, 2000, 'update applied at ch');
    const entry = ch.agent.status().mapCache.find((e) => e.hostId === mh.id);
    expect(entry?.locators).toContain('192.0.2.1:4341 p1 down');
    expect(inUse(ch)).toBe('192.0.2.65:4341');
    expect(ch.agent.status().peers?.updatesApplied).toBe(1);
    await until(() => (mh.agent.status().peers?.updatesAcked ?? 0) >= 1, 2000, 'update acked');

    // The uplink comes back: both sides wait out the hold-down before traffic returns to it.
    const back = Date.now();
    mh.monitor.set('ispa', UP);
    expect(mh.agent.status().paths.find((p) => p.uplink === 'ispa')?.state).toBe('probation');
    expect(inUseUplink(mh)).toBe('ispb');
    await until(() => inUseUplink(mh) === 'ispa' && inUse(ch) === '192.0.2.1:4341', 5000, 'back on ispa');
    expect(Date.now() - back).toBeGreaterThanOrEqual(400);
    expect(ch.agent.status().peers?.updatesApplied).toBe(2);
  });

  it("follows the realm's policy on uplinks on both sides (organisational control)", async () => {
    // The realm says ispa (the host's own first choice) is backup only.
    const { mh, ch } = await talkingPair({}, { policy: { uplinks: { ispa: { use: 'backup' } } } });
    await until(() => inUseUplink(mh) === 'ispb' && inUse(ch) === '192.0.2.65:4341', 3000, 'both on ispb');
    expect(mh.agent.status().uplinks.find((u) => u.name === 'ispa')?.priority).toBeGreaterThanOrEqual(200);
    expect(ch.agent.status().mapCache.find((e) => e.hostId === mh.id)?.locators.some((l) => /^192\.0\.2\.1:4341 p2\d\d$/.test(l))).toBe(true);
  });

  it('drops forged, replayed and stray peer messages and counts them', async () => {
    const { net, mh, ch } = await talkingPair();
    const attacker = net.open({ address: '198.51.100.9', port: 4341 });
    attacker.start(() => undefined);
    cleanup.push(async () => attacker.close());
    const send = (b: Buffer, len: number) => {
      const dst = new Uint8Array(16);
      dst.set([203, 0, 113, 2]);
      attacker.send(b, Uint32Array.of(0), Uint32Array.of(len), dst, Uint16Array.of(4341), 1);
    };
    const buf = Buffer.alloc(2048);
    const mhId = hostIdBytes(mh.id);
    const chId = hostIdBytes(ch.id);
    // A probe MACed with a key nobody holds: bad MAC.
    const wrong = pairKey(privateSeed(generateKeyPair()), mhId, ch.key.publicKey, chId);
    if (wrong === null) throw new Error('key');
    send(buf, encodePeer(buf, { type: PeerType.Probe, instanceId: 3, from: mhId, to: chId, token: 1, counter: 1 }, wrong));
    // The right key (as if stolen from mh), an old counter: a replay.
    const right = pairKey(privateSeed(mh.key), mhId, ch.key.publicKey, chId);
    if (right === null) throw new Error('key');
    send(buf, encodePeer(buf, { type: PeerType.Probe, instanceId: 3, from: mhId, to: chId, token: 2, counter: 1 }, right));
    // A reply to nothing.
    send(buf, encodePeer(buf, { type: PeerType.Reply, instanceId: 3, from: mhId, to: chId, token: 3, counter: Date.now() * 2000 }, right));
    // Not for ch.
    send(buf, encodePeer(buf, { type: PeerType.Probe, instanceId: 3, from: mhId, to: mhId, token: 4, counter: Date.now() * 2000 + 1 }, right));
    // Truncated.
    send(buf, 20);
    await until(() => {
      const c = ch.agent.status().peers;
      return c !== null && c.peerBadMac === 1 && c.peerReplay === 1 && c.peerUnexpectedReply === 1 && c.peerNotForUs === 1 && c.peerMalformed === 1;
    }, 2000, 'all five counted');
    // And the real paths are unharmed.
    expect(ch.agent.status().paths.every((p) => p.state === 'up')).toBe(true);
  });

  it('spreads flows over equally preferred uplinks by weight', async () => {
    const rm = await startHarness();
    cleanup.push(() => rm.close());
    const net = new MemoryNet();
    const mh = agentOn(net, rm, [
      { name: 'ispa', locator: '192.0.2.1', priority: 1, weight: 1 },
      { name: 'ispb', locator: '192.0.2.65', priority: 1, weight: 1 },
    ]);
    const ch = agentOn(net, rm, [{ name: 'core', locator: '203.0.113.2' }]);
    await started(mh);
    await started(ch);
    const timer = setInterval(() => mh.tun.inject(ipv6Packet(mh.id, ch.id)), 20);
    cleanup.push(async () => clearInterval(timer));
    await until(() => mh.agent.status().paths.filter((p) => p.inUse).length === 2, 5000, 'a group of two');
    // 64 UDP flows (distinct source ports): both uplinks carry some, and each flow sticks to one.
    const tx0 = mh.agent.status().uplinks.map((u) => u.txPackets);
    for (let round = 0; round < 3; round++) {
      for (let port = 1000; port < 1064; port++) mh.tun.inject(udpPacket(mh.id, ch.id, port));
      await new Promise((r) => setTimeout(r, 30));
    }
    const tx = mh.agent.status().uplinks.map((u, i) => u.txPackets - tx0[i]);
    expect(tx[0]).toBeGreaterThan(20);
    expect(tx[1]).toBeGreaterThan(20);
  });
});

function udpPacket(src: string, dst: string, srcPort: number): Buffer {
  const p = ipv6Packet(src, dst, 8 + 8);
  p[6] = 17; // next header UDP
  p.writeUInt16BE(srcPort, 40);
  p.writeUInt16BE(9, 42);
  p.writeUInt16BE(16, 44);
  return p;
}
