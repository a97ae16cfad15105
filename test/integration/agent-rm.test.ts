import { afterEach, describe, expect, it } from 'vitest';
import type { Agent } from '../../agent/agent.ts';
import { MemoryNet } from '../../shared/udp/memory.ts';
import { fakeAgent, until, type FakeAgent, type UplinkSpec } from '../helpers/fake-agent.ts';
import { ipv6Packet } from '../helpers/packets.ts';
import { REALM_PREFIX, startHarness, type Harness } from './rm-harness.ts';

/**
 * Agents with no static bindings find each other through an in-process Realm Manager: the data plane
 * runs on fakes, the control protocol on real UDP over 127.0.0.1.
 */
let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

function agentOn(net: MemoryNet, rm: Harness, uplinks: UplinkSpec[]): FakeAgent {
  return fakeAgent(net, { port: rm.port, publicKey: rm.rmKey.publicKey, admit: (k, p) => rm.admit(k, p) }, REALM_PREFIX, uplinks);
}

async function started(a: { agent: Agent }): Promise<void> {
  await a.agent.start();
  cleanup.push(() => a.agent.stop());
  await until(() => a.agent.status().rm?.registered === true);
}

/** An RM, a multihomed mh (ispa preferred, ispb) and a single-homed ch, both started and registered. */
async function multihomedPair() {
  const rm = await startHarness();
  cleanup.push(() => rm.close());
  const net = new MemoryNet();
  const mh = agentOn(net, rm, [
    { name: 'ispa', locator: '192.0.2.1', priority: 1 },
    { name: 'ispb', locator: '192.0.2.65', priority: 2 },
  ]);
  const ch = agentOn(net, rm, [{ name: 'core', locator: '203.0.113.2' }]);
  await started(mh);
  await started(ch);
  return { mh, ch };
}

describe('agent with a Realm Manager', () => {
  it('registers, resolves a peer on the first packet, keeps that packet, and answers back', async () => {
    const { mh, ch } = await multihomedPair();

    const first = ipv6Packet(mh.id, ch.id, Buffer.from('first packet'));
    mh.tun.inject(first);
    await until(() => ch.tun.written.length === 1);
    expect(Buffer.compare(ch.tun.written[0], first)).toBe(0);
    // ch did not know mh: mh's handshake proved its key and its membership (the certificate it
    // carries), so its sealed packet was delivered without a lookup; one session, mh the initiator.
    const st = ch.agent.status();
    expect(st.encryption?.sessions).toBe(1);
    expect(st.encryption?.peers).toEqual([expect.objectContaining({ hostId: mh.id, initiator: false })]);
    expect(st.rm?.resolver.queued).toBe(0);

    // The reply needs mh's locators: ch looks mh up (the packet waits), then sends on the session.
    const reply = ipv6Packet(ch.id, mh.id, 64);
    ch.tun.inject(reply);
    await until(() => mh.tun.written.length === 1);
    expect(Buffer.compare(mh.tun.written[0], reply)).toBe(0);
    expect(ch.agent.status().rm?.resolver.queued).toBe(1);
    expect(ch.agent.status().mapCache.find((e) => e.hostId === mh.id)?.locators).toEqual(['192.0.2.1:4341 p1', '192.0.2.65:4341 p2']);
    expect(ch.agent.status().encryption?.counters.handshakesCompleted).toBe(0);
    expect(mh.agent.status().drops['inside.noBinding']).toBe(0);
    // Both are members, with a certificate from the realm key they pinned.
    const m = mh.agent.status().rm?.membership;
    expect(m?.certNotAfter).not.toBeNull();
    expect(m?.realmKeys).toHaveLength(1);
    expect(m?.joining).toBe(false);
  });

  it('handles a packet that is waiting in the TUN the moment the agent starts', async () => {
    const rm = await startHarness();
    cleanup.push(() => rm.close());
    const net = new MemoryNet();
    const ch = agentOn(net, rm, [{ name: 'core', locator: '203.0.113.2' }]);
    await started(ch);
    const mh = agentOn(net, rm, [{ name: 'ispa', locator: '192.0.2.1' }]);
    // Queued before start: the fake hands it over as soon as the TUN reader starts.
    const early = ipv6Packet(mh.id, ch.id, Buffer.from('early'));
    mh.tun.inject(early);
    await started(mh);
    await until(() => ch.tun.written.length === 1);
    expect(Buffer.compare(ch.tun.written[0], early)).toBe(0);
  });

  it('answers an unknown ID with a negative entry instead of a lookup per packet', async () => {
    const rm = await startHarness();
    cleanup.push(() => rm.close());
    const net = new MemoryNet();
    const mh = agentOn(net, rm, [{ name: 'ispa', locator: '192.0.2.1' }]);
    await started(mh);
    const ghost = 'fd00:1:0:0:dead:beef:0:1';
    mh.tun.inject(ipv6Packet(mh.id, ghost));
    await until(() => (mh.agent.status().rm?.resolver.negative ?? 0) === 1);
    for (let i = 0; i < 50; i++) mh.tun.inject(ipv6Packet(mh.id, ghost));
    await new Promise((r) => setTimeout(r, 50));
    const st = mh.agent.status();
    expect(st.rm?.resolver.lookups).toBe(1);
    // 50, plus the first packet: it waited for the answer, which was negative, and was then dropped.
    expect(st.rm?.resolver.negativeHits).toBe(51);
    expect(st.drops['inside.noBinding']).toBe(51);
  });

  it('applies a pushed binding at once when the peer re-registers', async () => {
    const { mh, ch } = await multihomedPair();
    ch.tun.inject(ipv6Packet(ch.id, mh.id));
    await until(() => mh.tun.written.length === 1);
    const seq0 = ch.agent.status().mapCache.find((e) => e.hostId === mh.id)?.seq ?? 0;
    // mh signs and registers a new binding (as it will when an uplink changes): ch gets it pushed.
    const before = mh.agent.status().rm?.seq ?? 0;
    await mh.agent.reregister();
    expect(mh.agent.status().rm?.seq ?? 0).toBeGreaterThan(before);
    await until(() => (ch.agent.status().mapCache.find((e) => e.hostId === mh.id)?.seq ?? 0) > seq0);
    expect(ch.agent.status().rm?.resolver.pushesApplied).toBeGreaterThanOrEqual(1);
  });
});
