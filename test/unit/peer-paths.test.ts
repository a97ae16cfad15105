import { describe, expect, it } from 'vitest';
import { MapCache, newTraffic, boundLocator, type MapEntry } from '../../agent/mapcache/cache.ts';
import { DEFAULT_PEER_PATHS, PEER_COUNTERS, PeerPaths } from '../../agent/paths/probing.ts';
import { pairKey } from '../../agent/paths/pairkey.ts';
import { PEER_MAX_LEN, PeerType, encodePeer } from '../../agent/paths/wire.ts';
import { DEFAULT_PATH_TIMING } from '../../agent/paths/state.ts';
import { ManualClock } from '../../shared/clock.ts';
import { generateKeyPair, privateSeed } from '../../shared/crypto/ed25519.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { silentLogger } from '../../shared/log.ts';
import { addressBytes } from '../../shared/address.ts';
import { signBinding } from '../../shared/binding.ts';
import { captureSocket, type Captured } from '../helpers/capture-socket.ts';
import { UplinkTable } from '../../agent/uplinks/table.ts';

/**
 * PeerPaths on a manual clock: nothing sleeps, the test plays the peer (it holds the peer's key) and
 * answers or ignores the probes it captures.
 */
function setup(extra: Partial<ConstructorParameters<typeof PeerPaths>[1]> = {}, opts: Partial<ConstructorParameters<typeof PeerPaths>[0]> = {}) {
  const prefix = parsePrefix('fd00:1::/32');
  const me = generateKeyPair();
  const peer = generateKeyPair();
  const myId = deriveHostId(prefix, me.publicKey).toBytes();
  const peerId = deriveHostId(prefix, peer.publicKey);
  const clock = new ManualClock(1_000_000);
  const sent: Captured[] = [];
  const uplinks = new UplinkTable([
    { name: 'ispa', interface: undefined, locator: '192.0.2.1', family: 4, priority: 1, weight: 1, up: true, socket: captureSocket(0, sent) },
    { name: 'ispb', interface: undefined, locator: '198.51.100.1', family: 4, priority: 2, weight: 1, up: true, socket: captureSocket(1, sent) },
  ]);
  const cache = new MapCache(16);
  const entry: MapEntry = Object.freeze({
    hostId: peerId.toString(),
    id: peerId.toBytes(),
    locators: [boundLocator('203.0.113.2', 4341, 1, 1, true)],
    path: null,
    group: [],
    publicKey: peer.publicKey,
    traffic: { ...newTraffic(), tx: 1 },
    source: 'rm' as const,
    createdAt: 0,
    expiresAt: Infinity,
    seq: 1,
  });
  cache.set(entry);
  const pp = new PeerPaths(
    { ...DEFAULT_PEER_PATHS, timing: DEFAULT_PATH_TIMING, instanceId: 0, ...opts },
    { cache, uplinks: () => uplinks.current, counterBase: 1, myId, mySeed: privateSeed(me), clock, wallClock: () => 0, log: silentLogger, applyBinding: () => undefined, ...extra },
  );
  const key = pairKey(privateSeed(peer), peerId.toBytes(), me.publicKey, myId);
  if (key === null) throw new Error('key');
  const src = addressBytes('203.0.113.2');
  /** The peer answers every probe captured so far on the uplinks in `which` (and sent to `only`, if given). */
  const answer = (which: readonly number[], only?: string) => {
    const out = Buffer.alloc(PEER_MAX_LEN);
    for (const s of sent.splice(0)) {
      if (s.data[9] !== PeerType.Probe || !which.includes(s.uplink) || (only !== undefined && s.to !== only)) continue;
      const token = s.data.readUInt32BE(42) * 2 ** 32 + s.data.readUInt32BE(46);
      const n = encodePeer(out, { type: PeerType.Reply, instanceId: 0, from: peerId.toBytes(), to: myId, token, counter: 1 }, key);
      pp.onMessage(s.uplink, out, 0, n, src, 0, 4341);
    }
  };
  const inUse = () => cache.lookup(peerId.toBytes(), 0)?.path?.uplink;
  /** Time passes in 10 ms ticks; traffic keeps the peer active; the peer answers on `which`. */
  const run = (ms: number, which: readonly number[], only?: string) => {
    for (let t = 0; t < ms; t += 10) {
      clock.advance(10);
      entry.traffic.tx++;
      pp.tick();
      answer(which, only);
    }
  };
  return { pp, clock, sent, uplinks, cache, entry, key, myId, peerId, src, run, inUse, answer };
}

describe('PeerPaths', () => {
  it('moves traffic off a path that stops answering within ~150-300 ms, and back after the hold-down', () => {
    const t = setup();
    t.run(500, [0, 1]);
    expect(t.pp.paths().map((p) => p.state)).toEqual(['up', 'up']);
    expect(t.inUse()).toBe(0);
    // ispa goes silent.
    let moved = -1;
    for (let ms = 10; ms <= 1000; ms += 10) {
      t.run(10, [1]);
      if (t.inUse() === 1) {
        moved = ms;
        break;
      }
    }
    // The last answer came up to one probe interval before the silence began here.
    expect(moved).toBeGreaterThan(0);
    expect(moved).toBeLessThanOrEqual(160);
    const f = t.pp.failovers().at(-1);
    expect(f).toMatchObject({ from: 'ispa → 203.0.113.2:4341', to: 'ispb → 203.0.113.2:4341' });
    // Counted from the last reply: suspect (and moved) after 150 ms of silence, within a tick.
    expect(f?.tookMs).toBeGreaterThanOrEqual(150);
    expect(f?.tookMs).toBeLessThanOrEqual(160);
    t.run(500, [1]);
    expect(t.pp.paths()[0].state).toBe('down');
    // ispa answers again: 3 replies, then 2 s of probation, then traffic returns.
    t.run(1500, [0, 1]);
    expect(t.inUse()).toBe(1);
    t.run(1000, [0, 1]);
    expect(t.inUse()).toBe(0);
  });

  it('acts on a local uplink going down at once, without probes', () => {
    const t = setup();
    t.run(300, [0, 1]);
    t.uplinks.apply({ kind: 'link', name: 'ispa', usable: false });
    t.pp.uplinksChanged();
    expect(t.inUse()).toBe(1);
    expect(t.pp.failovers().at(-1)?.reason).toBe('uplink ispa down');
  });

  it('a flapping uplink on probation does not win traffic back when the other path has a late reply', () => {
    const t = setup();
    t.run(500, [0, 1]);
    for (let i = 0; i < 3; i++) {
      t.uplinks.apply({ kind: 'link', name: 'ispa', usable: false });
      t.pp.uplinksChanged();
      t.run(200, [1]);
      t.uplinks.apply({ kind: 'link', name: 'ispa', usable: true });
      t.pp.uplinksChanged();
      t.run(300, [0, 1]);
    }
    expect(t.inUse()).toBe(1);
    expect(t.pp.paths()[0].state).toBe('probation');
    // ispb's replies stop for 200 ms (suspect, not down): ispa, held by its flap penalty, stays a last resort.
    const before = t.pp.failovers().length;
    for (let i = 0; i < 30 && t.pp.paths()[1].state !== 'suspect'; i++) t.run(10, [0]);
    expect(t.pp.paths()[1].state).toBe('suspect');
    expect(t.inUse()).toBe(1);
    t.run(300, [0, 1]);
    expect(t.inUse()).toBe(1);
    expect(t.pp.failovers().slice(before)).toEqual([]);
  });

  it('probes an idle peer rarely and an active one every probe interval', () => {
    const t = setup();
    t.run(1000, [0, 1]);
    const active = t.pp.counters.probesSent;
    expect(active).toBeGreaterThanOrEqual(18); // 2 paths x 10/s
    for (let i = 0; i < 300; i++) {
      t.clock.advance(10);
      t.pp.tick();
      t.sent.splice(0);
    }
    // 3 s idle (after the 1 s active window): at most one idle probe per path.
    expect(t.pp.counters.probesSent - active).toBeLessThanOrEqual(2 * 10 + 2);
  });

  it('survives 100k random and mutated messages, counting each once', () => {
    const t = setup();
    t.run(200, [0, 1]);
    const before = PEER_COUNTERS.reduce((s, k) => s + t.pp.counters[k], 0) - t.pp.counters.probesSent - t.pp.counters.sendErrors;
    const valid = Buffer.alloc(PEER_MAX_LEN);
    const n = encodePeer(valid, { type: PeerType.Probe, instanceId: 0, from: t.peerId.toBytes(), to: t.myId, token: 5, counter: 10 }, t.key);
    let seed = 12345;
    const rnd = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    const N = 100_000;
    const buf = Buffer.alloc(PEER_MAX_LEN + 64);
    for (let i = 0; i < N; i++) {
      let len: number;
      if (i % 2 === 0) {
        len = rnd() % buf.length;
        for (let j = 0; j < len; j++) buf[j] = rnd() & 0xff;
        if (len > 0 && i % 4 === 0) buf[0] = valid[0]; // past the first check
      } else {
        valid.copy(buf, 0, 0, n);
        len = n;
        const flips = 1 + (rnd() % 3);
        for (let f = 0; f < flips; f++) buf[rnd() % n] ^= 1 + (rnd() % 255);
        if (i % 5 === 0) len = rnd() % (n + 1);
      }
      t.pp.onMessage(0, buf, 0, len, t.src, 0, 4341);
    }
    const c = t.pp.counters;
    const after = PEER_COUNTERS.reduce((s, k) => s + c[k], 0) - c.probesSent - c.sendErrors;
    // Every message lands in exactly one counter (a probe answered counts as probesAnswered).
    expect(after - before).toBe(N);
    expect(c.internalErrors).toBe(0);
    expect(c.peerMalformed + c.peerBadMac + c.peerVersion + c.peerWrongInstance + c.peerNotForUs + c.peerUnknown).toBeGreaterThan(N * 0.9);
  });
});

describe('PeerPaths: recovering the flight lost with a path (issue #11)', () => {
  interface Call {
    from: number;
    to: number;
    since: number;
    at: number;
  }
  function withRecorder(opts: Partial<ConstructorParameters<typeof PeerPaths>[0]> = {}) {
    const calls: Call[] = [];
    let clockRef: ManualClock | null = null;
    const t = setup(
      {
        onPathFailed: (_traffic, from, to, since) => {
          calls.push({ from: from.uplink, to: to.uplink, since, at: clockRef?.now() ?? 0 });
          return 7;
        },
      },
      opts,
    );
    clockRef = t.clock;
    return { ...t, calls };
  }

  it('a carrier loss re-sends what was sent on the lost uplink since one RTT before the loss, and probes every other path at once', () => {
    const t = withRecorder();
    t.run(500, [0, 1]);
    const probesBefore = t.pp.counters.probesSent;
    t.sent.length = 0;
    const lossAt = t.clock.now();
    t.uplinks.apply({ kind: 'link', name: 'ispa', usable: false });
    t.pp.uplinksChanged();
    expect(t.inUse()).toBe(1);
    expect(t.calls).toHaveLength(1);
    const c = t.calls[0];
    expect(c).toMatchObject({ from: 0, to: 1 });
    // Manual clock: RTT 0, so the window opens the margin (10 ms) before the loss.
    expect(c.since).toBeLessThanOrEqual(lossAt - 10);
    expect(c.since).toBeGreaterThan(lossAt - 60);
    expect(t.pp.failovers().at(-1)).toMatchObject({ reason: 'uplink ispa down', resentPackets: 7 });
    expect(t.pp.counters).toMatchObject({ failoverResends: 1, failoverResentPackets: 7, failoverProbeBursts: 1 });
    // The probe burst: ispb's path was probed at once (its last probe was < 100 ms ago, >= 10 ms).
    expect(t.pp.counters.probesSent).toBeGreaterThan(probesBefore);
    expect(t.sent.some((x) => x.uplink === 1 && x.data[9] === PeerType.Probe)).toBe(true);
  });

  it('a silent path: the window opens at its last reply; while it is only suspect it keeps a copy of every packet (make-before-break), not once it is down', () => {
    const t = withRecorder();
    t.run(500, [0, 1]);
    let lastReplyAt = t.clock.now();
    // ispa goes silent until traffic moves.
    for (let ms = 0; ms < 400 && t.inUse() === 0; ms += 10) t.run(10, [1]);
    expect(t.inUse()).toBe(1);
    expect(t.calls).toHaveLength(1);
    expect(t.calls[0].since).toBeLessThanOrEqual(lastReplyAt - 10);
    expect(t.calls[0].since).toBeGreaterThan(lastReplyAt - 200);
    const entry = t.cache.lookup(t.peerId.toBytes(), 0);
    expect(t.pp.paths()[0].state).toBe('suspect');
    expect(entry?.shadow?.uplink).toBe(0);
    // Down: no more copies to it.
    t.run(300, [1]);
    expect(t.pp.paths()[0].state).toBe('down');
    expect(t.cache.lookup(t.peerId.toBytes(), 0)?.shadow ?? null).toBeNull();
    lastReplyAt = 0;
  });

  it('make-before-break is off when configured off, and for a peer without traffic', () => {
    const off = withRecorder({ makeBeforeBreak: false });
    off.run(500, [0, 1]);
    for (let ms = 0; ms < 400 && off.inUse() === 0; ms += 10) off.run(10, [1]);
    expect(off.inUse()).toBe(1);
    expect(off.cache.lookup(off.peerId.toBytes(), 0)?.shadow ?? null).toBeNull();

    // A peer whose traffic stops while the path it left is still suspect gets no more copies.
    const idle = withRecorder({ activeWindowMs: 100 });
    idle.run(500, [0, 1]);
    for (let ms = 0; ms < 400 && idle.inUse() === 0; ms += 10) idle.run(10, [1]);
    expect(idle.cache.lookup(idle.peerId.toBytes(), 0)?.shadow?.uplink).toBe(0);
    for (let ms = 0; ms < 150; ms += 10) {
      idle.clock.advance(10);
      idle.pp.tick();
      idle.answer([1]);
    }
    expect(idle.pp.paths()[0].state).toBe('suspect');
    expect(idle.cache.lookup(idle.peerId.toBytes(), 0)?.shadow ?? null).toBeNull();
  });

  it('a planned move (a preferred path is back) re-sends nothing', () => {
    const t = withRecorder();
    t.run(500, [0, 1]);
    for (let ms = 0; ms < 400 && t.inUse() === 0; ms += 10) t.run(10, [1]);
    t.calls.length = 0;
    t.run(3000, [0, 1]);
    expect(t.inUse()).toBe(0);
    expect(t.calls).toHaveLength(0);
  });
});

describe('PeerPaths: no amplification (docs/security.md decision 4)', () => {
  const VICTIM = '192.0.2.77';
  /** Another peer with traffic whose binding lists `addresses` (port 4341). */
  function addPeer(cache: MapCache, addresses: readonly string[]): MapEntry {
    const k = generateKeyPair();
    const id = deriveHostId(parsePrefix('fd00:1::/32'), k.publicKey);
    const e: MapEntry = Object.freeze({
      hostId: id.toString(),
      id: id.toBytes(),
      locators: addresses.map((a) => boundLocator(a, 4341, 1, 1, true)),
      path: null,
      group: [],
      publicKey: k.publicKey,
      traffic: { ...newTraffic(), tx: 1 },
      source: 'rm' as const,
      createdAt: 0,
      expiresAt: Infinity,
      seq: 1,
    });
    cache.set(e);
    return e;
  }

  /** Ten seconds of two peers with traffic whose bindings both list the victim; nothing answers. Probes per address. */
  function victimScenario(perSecond: number, burst: number) {
    const t = setup({}, { probeBudget: { perSecond, burst, addresses: 16 } });
    t.cache.set(Object.freeze({ ...t.entry, locators: [t.entry.locators[0], boundLocator(VICTIM, 4341, 2, 1, true)] }));
    const other = addPeer(t.cache, ['203.0.113.3', VICTIM]);
    const to = new Map<string, number>();
    for (let ms = 0; ms < 10_000; ms += 10) {
      t.clock.advance(10);
      t.entry.traffic.tx++;
      other.traffic.tx++;
      t.pp.tick();
      for (const s of t.sent.splice(0)) if (s.data[9] === PeerType.Probe) to.set(s.to, (to.get(s.to) ?? 0) + 1);
    }
    return { to, counters: t.pp.counters };
  }

  it('sends a direct update only to the locators that answered a probe within the last 30 s', () => {
    const t = setup();
    t.cache.set(Object.freeze({ ...t.entry, locators: [t.entry.locators[0], boundLocator(VICTIM, 4341, 2, 1, true)] }));
    const updatesTo = new Map<string, number>();
    const count = () => {
      for (const s of t.sent) if (s.data[9] === PeerType.Update) updatesTo.set(s.to, (updatesTo.get(s.to) ?? 0) + 1);
    };
    // The peer's own locator answers its probes; the victim, listed too, never does.
    t.run(500, [0, 1], '203.0.113.2');
    const b = signBinding(generateKeyPair(), { prefix: parsePrefix('fd00:1::/32'), locators: [{ address: '192.0.2.1', port: 4341, uplink: 'ispa', priority: 1, weight: 1, state: 'up' }], seq: 2, ttl: 60 });
    t.pp.sendUpdate(b);
    count();
    expect(updatesTo.get('203.0.113.2')).toBe(2); // over both uplinks
    expect(updatesTo.get(VICTIM)).toBeUndefined();
    expect(t.pp.counters.updatesWithheld).toBe(1);
    expect(t.pp.counters.updatesSent).toBe(2);
    // Nothing answers any more: retransmissions keep to the locator that answered, while it is recent.
    t.sent.length = 0;
    for (let ms = 0; ms < 31_000; ms += 10) {
      t.clock.advance(10);
      t.entry.traffic.tx++;
      t.pp.tick();
      count();
      t.sent.length = 0;
    }
    expect(updatesTo.get('203.0.113.2')).toBeGreaterThan(2);
    expect(updatesTo.get(VICTIM)).toBeUndefined();
    const before = t.pp.counters.updatesSent;
    t.pp.sendUpdate(b);
    // 31 s since its last answer: the peer's locator gets nothing either.
    expect(t.pp.counters.updatesSent).toBe(before);
    expect(t.sent.filter((s) => s.data[9] === PeerType.Update)).toEqual([]);
  });

  it('two peers listing the same address share its probe budget; other addresses keep theirs', () => {
    const free = victimScenario(1_000, 1_000);
    expect(free.counters.probesBudgetSkipped).toBe(0);
    // Backoff alone: 2 uplinks x ~7 probes in 10 s per path, the victim twice that (two peers).
    expect(free.to.get(VICTIM)).toBeGreaterThanOrEqual(24);
    const tight = victimScenario(1, 10);
    // Each address one peer lists stays within its own budget (a burst of 10, then 1/s): untouched.
    expect(tight.to.get('203.0.113.2')).toBe(free.to.get('203.0.113.2'));
    expect(tight.to.get('203.0.113.3')).toBe(free.to.get('203.0.113.3'));
    // The victim gets one budget's worth, not one per peer; the rest is counted as skipped.
    const victim = tight.to.get(VICTIM) ?? 0;
    expect(victim).toBeGreaterThan(0);
    expect(victim).toBeLessThanOrEqual(10 + 10);
    expect(tight.counters.probesBudgetSkipped).toBe((free.to.get(VICTIM) ?? 0) - victim);
  });
});
