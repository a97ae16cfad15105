import { afterEach, describe, expect, it } from 'vitest';
import { MemoryNet } from '../../shared/udp/memory.ts';
import { signBinding, type Locator } from '../../shared/binding.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { generateKeyPair, signBytes } from '../../shared/crypto/ed25519.ts';
import { fakeAgent, until } from '../helpers/fake-agent.ts';
import { ipv6Packet } from '../helpers/packets.ts';
import { REALM_PREFIX } from './rm-harness.ts';
import { ScriptedRm, bound } from './rm-scripted.ts';

/**
 * Forged and replayed bindings in pushes, against a whole agent (data plane on fakes, control protocol
 * on real UDP). The RM verifies registrations, so an honest RM never pushes a forged binding; the
 * agent's own check is what protects it from an RM that is compromised or misconfigured, which is
 * what the scripted RM plays here: every push below carries a valid session MAC. The agent must
 * refuse each bad binding, count it, and keep forwarding to the locator of the binding it verified;
 * an on-path copy of a push it already took is dropped by the session's replay window.
 */
const prefix = parsePrefix(REALM_PREFIX);
const loc = (address: string): Locator[] => [{ address, port: 4341, uplink: 'core', priority: 1, weight: 1, state: 'up' }];

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.reverse()) await f();
  cleanup = [];
});

describe('forged and replayed pushes at the agent', () => {
  it('are refused and counted; the verified binding stays in use; a valid newer push is applied', async () => {
    const rm = new ScriptedRm(await bound(), generateKeyPair());
    cleanup.push(async () => {
      rm.sock.close();
    });
    const { agent, tun, id } = fakeAgent(new MemoryNet(), { port: rm.port, publicKey: rm.key.publicKey }, REALM_PREFIX, [{ name: 'core', locator: '203.0.113.2' }]);
    await agent.start();
    cleanup.push(() => agent.stop());

    // The peer and its real bindings: seq 1 (old), seq 2 (current, served), seq 5 (newer, pushed last).
    const peerKey = generateKeyPair();
    const peer = deriveHostId(prefix, peerKey.publicKey);
    const b1 = signBinding(peerKey, { prefix, locators: loc('198.51.100.1'), seq: 1, ttl: 300 });
    const b2 = signBinding(peerKey, { prefix, locators: loc('203.0.113.9'), seq: 2, ttl: 300 });
    const b5 = signBinding(peerKey, { prefix, locators: loc('203.0.113.10'), seq: 5, ttl: 300 });
    rm.serve(b2);

    const entry = () => agent.status().mapCache.find((e) => e.hostId === peer.toString());
    const counters = () => agent.status().rm?.clients[0]?.counters ?? {};
    // Traffic to the peer: a miss, a lookup, the verified binding, a subscription.
    tun.inject(ipv6Packet(id, peer.toString()));
    await until(() => entry()?.seq === 2 && (agent.status().rm?.clients[0]?.counters['subscriptions.followed'] ?? 0) === 1);

    // 1. Bad signature: seq 3, the attacker's locator, one signature bit flipped.
    const badSig = Buffer.from(signBinding(peerKey, { prefix, locators: loc('192.0.2.66'), seq: 3, ttl: 300 }).bytes);
    badSig[badSig.length - 1] ^= 1;
    // 2. ID/key mismatch: the peer's ID over the attacker's own key, properly signed by that key.
    const evil = generateKeyPair();
    const mm = Buffer.from(signBinding(evil, { prefix, locators: loc('192.0.2.66'), seq: 4, ttl: 300 }).bytes);
    Buffer.from(peer.toBytes()).copy(mm, 4);
    const mismatched = Buffer.concat([mm.subarray(0, -64), signBytes(evil, mm.subarray(0, -64))]);
    // 3. Replay of the older, genuinely signed binding.
    const before = { ...counters() };
    const push = (binding: Uint8Array, pushId: number): Buffer => {
      const d = rm.encode({ type: 'push', pushId, binding, ttl: 300, prefs: [], cert: rm.certFor(binding) });
      rm.send(d);
      return d;
    };
    push(badSig, 1);
    push(mismatched, 2);
    push(b1.bytes, 3);
    await until(() => (counters()['rx.handled.push'] ?? 0) - (before['rx.handled.push'] ?? 0) === 3);
    let c = counters();
    expect(c['binding.forged'] - before['binding.forged']).toBe(1); // bad signature
    // The peer's ID over another key: its key was pinned on first sight (even with a certificate
    // the RM signed for that pair, which only an RM gone rogue would).
    expect(c['binding.keyChanged'] - before['binding.keyChanged']).toBe(1);
    expect(c['binding.stale'] - before['binding.stale']).toBe(1);
    expect(c['push.delivered'] - before['push.delivered']).toBe(0);
    // Acknowledged all the same, so an honest RM would stop retransmitting them.
    await until(() => rm.pushAcks >= 3);
    // The entry is still the verified seq 2, and traffic still goes to its locator.
    expect(entry()?.seq).toBe(2);
    expect(entry()?.locators).toEqual(['203.0.113.9:4341 p1']);
    expect(entry()?.path).toContain('203.0.113.9');

    // 4. A valid newer binding is applied at once...
    const good = push(b5.bytes, 4);
    await until(() => entry()?.seq === 5);
    expect(entry()?.locators).toEqual(['203.0.113.10:4341 p1']);
    // ...and an on-path copy of that very datagram is dropped by the replay window, before any
    // binding check.
    const replays = counters()['rx.drop.replay'];
    rm.send(good);
    await until(() => counters()['rx.drop.replay'] === replays + 1);
    c = counters();
    expect(c['push.delivered'] - before['push.delivered']).toBe(1);
    // After the newer one, the seq 2 binding is itself a replay.
    push(b2.bytes, 5);
    await until(() => counters()['binding.stale'] === c['binding.stale'] + 1);
    expect(entry()?.seq).toBe(5);
  });
});
