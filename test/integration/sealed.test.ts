import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/agent.ts';
import { parseAgentConfig } from '../../agent/config.ts';
import { MemoryTun } from '../../agent/tun/memory.ts';
import { MemoryNet, type TappedDatagram } from '../../shared/udp/memory.ts';
import { ManualClock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/log.ts';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { saveKeyPair } from '../../shared/keyfile.ts';
import { parseHostId, parsePrefix } from '../../shared/ids.ts';
import { FLAG_I, FLAG_N, HANDSHAKE_FLAGS, SEALED_HEADER_LEN, TAG_LEN } from '../../shared/wire/header.ts';
import { ipv6Packet } from '../helpers/packets.ts';

/**
 * Sealed data between two agents wired as in production, on a fake TUN and a fake network whose tap
 * plays the on-path attacker: it reads every datagram and sends copies, changed or not, to the
 * receiver. The keys, the handshake and the AEAD are the real ones (native addon).
 */
const MH = 'fd00:1::a';
const CH = 'fd00:1::c';
const dirs: string[] = [];
const running: Agent[] = [];

afterEach(async () => {
  for (const a of running.splice(0)) await a.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Side {
  /** The agent's device (made when it starts: its layout comes from the agent's options). */
  tun: MemoryTun;
  readonly agent: Agent;
  readonly key: KeyPair;
}

async function pair(opts: { offload?: boolean; dataplane?: Record<string, unknown>; chEncryption?: 'on' | 'off' } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'realmnet-sealed-'));
  dirs.push(dir);
  const net = new MemoryNet();
  const clock = new ManualClock(1000);
  const keys = { mh: generateKeyPair(), ch: generateKeyPair() };
  for (const [n, k] of Object.entries(keys)) saveKeyPair(join(dir, `${n}.key`), k, { overwrite: true });
  const b64 = (k: KeyPair) => Buffer.from(k.publicKey).toString('base64');
  const mk = (hostId: string, key: KeyPair, raw: Record<string, unknown>): Side => {
    const identity = { key, prefix: parsePrefix(`${hostId}/128`), hostId: parseHostId(hostId) };
    const side = { key } as Side;
    const agent = createAgent(parseAgentConfig(raw), { openTun: (o) => (side.tun = new MemoryTun(o)), openUdp: (o) => net.open(o), net: { ip: async () => {} }, log: silentLogger, clock, identity });
    running.push(agent);
    return Object.assign(side, { agent });
  };
  const common = { realm: { prefixes: ['fd00::/8'], instanceId: 7 }, tun: { offload: opts.offload ?? false } };
  const mh = mk(MH, keys.mh, {
    ...common,
    hostId: MH,
    identity: { key: join(dir, 'mh.key') },
    dataplane: { ...opts.dataplane },
    uplinks: [{ name: 'ispa', locator: '192.0.2.1' }],
    peers: [{ hostId: CH, publicKey: b64(keys.ch), locators: [{ address: '203.0.113.2' }] }],
  });
  const ch = mk(CH, keys.ch, {
    ...common,
    hostId: CH,
    identity: { key: join(dir, 'ch.key') },
    dataplane: { ...opts.dataplane, encryption: opts.chEncryption ?? 'on' },
    uplinks: [{ name: 'core', locator: '203.0.113.2' }],
    peers: [{ hostId: MH, publicKey: b64(keys.mh), locators: [{ address: '192.0.2.1' }] }],
  });
  const seen: TappedDatagram[] = [];
  net.tap((d) => seen.push(d));
  await mh.agent.start();
  await ch.agent.start();
  const attacker = net.open({ address: '198.51.100.77', port: 4341 });
  const toCh = (data: Buffer) => {
    const dst = new Uint8Array(16);
    dst.set([203, 0, 113, 2]);
    attacker.send(data, Uint32Array.of(0), Uint32Array.of(data.length), dst, Uint16Array.of(4341), 1);
  };
  return { net, clock, mh, ch, seen, toCh };
}

const isData = (d: TappedDatagram) => (d.data[0] & FLAG_N) !== 0 && (d.data[0] & FLAG_I) !== 0;

describe('sealed data plane', () => {
  it('the first packet to a peer waits for the handshake, then everything arrives intact both ways', async () => {
    const { net, mh, ch, seen } = await pair();
    const out = ipv6Packet(MH, CH, Buffer.from('hello from mh'));
    mh.tun.inject(out);
    await net.idle();
    expect(ch.tun.written).toHaveLength(1);
    expect(Buffer.compare(ch.tun.written[0], out)).toBe(0);
    const back = ipv6Packet(CH, MH, 1200);
    ch.tun.inject(back);
    await net.idle();
    expect(mh.tun.written.map((b) => Buffer.compare(b, back))).toEqual([0]);
    // One initiation, one response, then sealed data only; no plaintext byte of the packets on the wire.
    expect(seen.filter((d) => d.data[0] === HANDSHAKE_FLAGS).map((d) => d.data[1])).toEqual([1, 2]);
    const data = seen.filter(isData);
    expect(data.length).toBeGreaterThanOrEqual(2);
    for (const d of data) {
      expect(d.data.includes(Buffer.from('hello from mh'))).toBe(false);
      expect(d.data.includes(Buffer.from(parseHostId(CH).toBytes()))).toBe(false);
    }
    expect(data.find((d) => d.data.length === out.length + SEALED_HEADER_LEN + TAG_LEN)).toBeDefined();
    const st = mh.agent.status();
    expect(st.encryption?.sessions).toBe(1);
    expect(st.encryption?.counters.handshakesCompleted).toBe(1);
    expect(Object.values(st.drops).every((n) => n === 0)).toBe(true);
  });

  it('drops what an on-path attacker replays, changes, truncates or forges, and counts each', async () => {
    const { net, mh, ch, seen, toCh } = await pair();
    for (let i = 0; i < 20; i++) mh.tun.inject(ipv6Packet(MH, CH, 100 + i));
    await net.idle();
    expect(ch.tun.written).toHaveLength(20);
    const captured = seen.filter((d) => isData(d) && d.to === '203.0.113.2' && d.data.length > SEALED_HEADER_LEN + TAG_LEN);
    expect(captured).toHaveLength(20);
    // Replayed from another address: the replay window refuses every one.
    for (const d of captured) toCh(d.data);
    await net.idle();
    expect(ch.tun.written).toHaveLength(20);
    expect(ch.agent.status().drops['outside.duplicate']).toBe(20);
    // One flipped bit anywhere (header, ciphertext, tag) of a datagram not yet delivered: forged.
    mh.tun.inject(ipv6Packet(MH, CH, 300));
    const fresh = seen[seen.length - 1].data;
    await net.idle();
    expect(ch.tun.written).toHaveLength(21);
    const before = ch.agent.status().drops;
    for (const at of [0, 5, 9, 13, SEALED_HEADER_LEN + 3, fresh.length - 1]) {
      const bad = Buffer.from(fresh);
      bad[at] ^= 0x10;
      toCh(bad);
    }
    await net.idle();
    const after = ch.agent.status().drops;
    const forgedOrRefused = ['outside.forged', 'outside.noSession', 'outside.badHeader', 'outside.wrongInstance', 'outside.duplicate', 'outside.plaintext'].reduce((n, k) => n + after[k as keyof typeof after] - before[k as keyof typeof before], 0);
    expect(forgedOrRefused).toBe(6);
    expect(after['outside.forged'] - before['outside.forged']).toBeGreaterThanOrEqual(3);
    // Truncated at every length: never delivered, never a crash.
    for (let n = 1; n < fresh.length; n += 7) toCh(fresh.subarray(0, n));
    await net.idle();
    expect(ch.tun.written).toHaveLength(21);
    // Random bytes that look like sealed data under a session index that does not exist.
    const junk = Buffer.alloc(200, 0x5a);
    junk[0] = FLAG_N | FLAG_I | 0x01;
    junk.writeUIntBE(7, 4, 3);
    toCh(junk);
    await net.idle();
    expect(ch.tun.written).toHaveLength(21);
    expect(ch.agent.status().drops['outside.noSession']).toBeGreaterThanOrEqual(1);
    // The real traffic still flows.
    mh.tun.inject(ipv6Packet(MH, CH, 50));
    await net.idle();
    expect(ch.tun.written).toHaveLength(22);
  });

  it('a flood of initiation-shaped garbage is dropped at mac1 (no Diffie-Hellman), and the real peer keeps its session', async () => {
    const { net, mh, ch, toCh } = await pair({ dataplane: { handshakesPerS: 5 } });
    mh.tun.inject(ipv6Packet(MH, CH, 10));
    await net.idle();
    expect(ch.tun.written).toHaveLength(1);
    // Initiation-shaped garbage: fails mac1 before any Diffie-Hellman.
    for (let i = 0; i < 500; i++) {
      const fake = Buffer.alloc(148 + (i % 200), i & 0xff);
      fake[0] = HANDSHAKE_FLAGS;
      fake[1] = 1;
      fake.writeUIntBE(7, 4, 3);
      toCh(fake);
    }
    await net.idle();
    const enc = ch.agent.status().encryption;
    const dropped = Object.values(enc?.counters.dropped ?? {}).reduce((a, b) => a + b, 0);
    expect(dropped).toBe(500);
    expect(enc?.counters.responsesSent).toBe(1);
    mh.tun.inject(ipv6Packet(MH, CH, 20));
    await net.idle();
    expect(ch.tun.written).toHaveLength(2);
  });

  it('offload mode: chunks of a 64 KB frame are sealed one by one and reassembled after they were opened', async () => {
    const { net, mh, ch } = await pair({ offload: true });
    const vnet = Buffer.alloc(10);
    const big = Buffer.concat([vnet, ipv6Packet(MH, CH, 60_000)]);
    mh.tun.inject(big);
    await net.idle();
    expect(ch.tun.written).toHaveLength(1);
    expect(Buffer.compare(ch.tun.written[0], big)).toBe(0);
  });

  it('mixed settings: the agent with encryption off drops sealed data and handshakes, and refuses', async () => {
    const { net, mh, ch } = await pair({ chEncryption: 'off' });
    mh.tun.inject(ipv6Packet(MH, CH, 10));
    await net.idle();
    expect(ch.tun.written).toHaveLength(0);
    expect(ch.agent.status().drops['outside.sealed']).toBeGreaterThanOrEqual(1);
    expect(mh.agent.status().encryption?.counters.refusalsReceived).toBeGreaterThanOrEqual(1);
    ch.tun.inject(ipv6Packet(CH, MH, 10));
    await net.idle();
    expect(mh.tun.written).toHaveLength(0);
    expect(mh.agent.status().drops['outside.plaintext']).toBe(1);
  });
  it('rekeys under traffic without losing a packet, and a packet of a wiped session is refused', async () => {
    const { net, clock, mh, ch, seen, toCh } = await pair({ dataplane: { rekeyAfterS: 1, rejectAfterS: 2 } });
    const tick = () => new Promise((r) => setTimeout(r, 120)); // the managers' timers run every 50 ms
    let sent = 0;
    const burst = async () => {
      for (let i = 0; i < 10; i++) mh.tun.inject(ipv6Packet(MH, CH, 64 + (sent++ % 500)));
      ch.tun.inject(ipv6Packet(CH, MH, 64));
      await net.idle();
    };
    await burst();
    const firstSession = seen.filter((d) => isData(d) && d.to === '203.0.113.2')[0].data;
    // 5 s of traffic in 250 ms steps: sessions live 1 s, die at 2 s.
    for (let step = 0; step < 20; step++) {
      clock.advance(250);
      await burst(); // traffic since the last tick: the session is active, worth a rekey
      await tick();
    }
    expect(ch.tun.written).toHaveLength(sent);
    const [a, b] = [mh.agent.status().encryption, ch.agent.status().encryption];
    expect((a?.counters.rekeys ?? 0) + (b?.counters.rekeys ?? 0)).toBeGreaterThanOrEqual(3);
    expect(a?.counters.keysWiped).toBeGreaterThanOrEqual(2);
    expect(a?.counters.givenUp).toBe(0);
    expect(Object.entries(ch.agent.status().drops).filter(([, n]) => n > 0)).toEqual([]);
    // The first session's keys are gone on both sides: its packets no longer open.
    toCh(firstSession);
    await net.idle();
    expect(ch.tun.written).toHaveLength(sent);
    expect(ch.agent.status().drops['outside.noSession']).toBe(1);
  });

  it('expires an idle session after rejectAfterS (keys wiped), and the next packet starts a new one', async () => {
    const { net, clock, mh, ch } = await pair({ dataplane: { rekeyAfterS: 1, rejectAfterS: 2 } });
    mh.tun.inject(ipv6Packet(MH, CH, 10));
    await net.idle();
    expect(mh.agent.status().encryption?.sessions).toBe(1);
    clock.advance(2_100);
    await new Promise((r) => setTimeout(r, 120));
    expect(mh.agent.status().encryption?.sessions).toBe(0);
    expect(ch.agent.status().encryption?.sessions).toBe(0);
    mh.tun.inject(ipv6Packet(MH, CH, 11));
    await net.idle();
    expect(ch.tun.written).toHaveLength(2);
    expect(mh.agent.status().encryption?.counters.handshakesCompleted).toBe(2);
  });

  it('a peer that lost its session (restarted) is caught up by a new handshake within seconds', async () => {
    const { net, clock, mh, ch } = await pair();
    mh.tun.inject(ipv6Packet(MH, CH, 10));
    ch.tun.inject(ipv6Packet(CH, MH, 10));
    await net.idle();
    expect(mh.tun.written).toHaveLength(1);
    // ch forgets everything (as a restarted agent would): mh's packets under the old session fail.
    await ch.agent.stop();
    await ch.agent.start();
    mh.tun.inject(ipv6Packet(MH, CH, 12));
    await net.idle();
    // (ch's device is new: the restarted agent opened its own.)
    expect(ch.tun.written.length).toBe(0);
    expect(ch.agent.status().drops['outside.noSession']).toBe(1);
    // mh keeps sending and hears nothing: after 3 s of that it starts a new handshake.
    for (let t = 0; t < 8; t++) {
      clock.advance(500);
      mh.tun.inject(ipv6Packet(MH, CH, 13));
      await net.idle();
      await new Promise((r) => setTimeout(r, 60));
    }
    mh.tun.inject(ipv6Packet(MH, CH, 14));
    await net.idle();
    expect(ch.tun.written.at(-1)?.length).toBe(54);
    expect(mh.agent.status().encryption?.counters.handshakesCompleted).toBe(2);
  });
});
