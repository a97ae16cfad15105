import { afterEach, describe, expect, it, vi } from 'vitest';
import { DATA_COUNTER_MOD, DUPLICATE_WINDOW, DuplicateCheck, DuplicateFilter } from '../../shared/wire/replay.ts';
import { FlightRecorder } from '../../agent/dataplane/flight.ts';
import { createInside } from '../../agent/dataplane/inside.ts';
import { createOutside } from '../../agent/dataplane/outside.ts';
import { DropCounters } from '../../agent/dataplane/drops.ts';
import { MapCache, boundLocator, newTraffic, type MapEntry, type Traffic } from '../../agent/mapcache/cache.ts';
import { MemoryTun } from '../../agent/tun/memory.ts';
import { HEADER_LEN, headerNonce } from '../../shared/wire/header.ts';
import { addressToBytes } from '../../shared/address.ts';
import { hostIdBytes } from '../../shared/ids.ts';
import { captureSocket, type Captured } from '../helpers/capture-socket.ts';
import { ipv6Packet } from '../helpers/packets.ts';

/** Exactly-once delivery and re-sending the lost flight (issue #11), on fakes. */

describe('DuplicateFilter', () => {
  it('delivers each counter once, also reordered within the window', () => {
    const f = new DuplicateFilter();
    expect(f.check(100)).toBe(DuplicateCheck.New);
    expect(f.check(100)).toBe(DuplicateCheck.Duplicate);
    expect(f.check(103)).toBe(DuplicateCheck.New);
    expect(f.check(101)).toBe(DuplicateCheck.New);
    expect(f.check(102)).toBe(DuplicateCheck.New);
    expect(f.check(101)).toBe(DuplicateCheck.Duplicate);
    expect(f.check(103)).toBe(DuplicateCheck.Duplicate);
    // The oldest counter still in the window.
    const top = 103 + DUPLICATE_WINDOW - 1;
    expect(f.check(top)).toBe(DuplicateCheck.New);
    expect(f.check(100)).toBe(DuplicateCheck.Restarted);
  });

  it('counts across the 24-bit wrap', () => {
    const f = new DuplicateFilter();
    const near = DATA_COUNTER_MOD - 2;
    for (const c of [near, near + 1, 0, 1]) expect(f.check(c)).toBe(DuplicateCheck.New);
    expect(f.check(near)).toBe(DuplicateCheck.Duplicate);
    expect(f.check(DATA_COUNTER_MOD - 1)).toBe(DuplicateCheck.Duplicate);
    expect(f.check(0)).toBe(DuplicateCheck.Duplicate);
    expect(f.check(2)).toBe(DuplicateCheck.New);
  });

  it('a jump forward beyond the window forgets what was seen; far behind is a restarted sender, delivered', () => {
    const f = new DuplicateFilter();
    f.check(10);
    f.check(11);
    expect(f.check(10 + 3 * DUPLICATE_WINDOW)).toBe(DuplicateCheck.New);
    // 11 is now far behind: not a re-send (those stay within the window) but a new counter.
    expect(f.check(11)).toBe(DuplicateCheck.Restarted);
    expect(f.check(12)).toBe(DuplicateCheck.New);
    expect(f.check(11)).toBe(DuplicateCheck.Duplicate);
  });

  it('never delivers a counter twice in 200k random checks near the top (a model with a set)', () => {
    const f = new DuplicateFilter();
    const seen = new Set<number>();
    let top = 5_000;
    f.check(top);
    seen.add(top);
    let wrong = 0;
    let duplicates = 0;
    for (let i = 0; i < 200_000; i++) {
      const c = Math.random() < 0.5 ? top + 1 + Math.floor(Math.random() * 3) : top - Math.floor(Math.random() * (DUPLICATE_WINDOW - 1));
      const r = f.check(c);
      if (c > top) top = c;
      if (seen.has(c)) duplicates++;
      if (r !== (seen.has(c) ? DuplicateCheck.Duplicate : DuplicateCheck.New)) wrong++;
      seen.add(c);
    }
    expect(duplicates).toBeGreaterThan(10_000);
    expect(wrong).toBe(0);
  });
});

describe('FlightRecorder', () => {
  afterEach(() => vi.useRealTimers());
  const A = boundLocator('203.0.113.2', 4341, 1, 1, true);
  const B = boundLocator('203.0.113.66', 4341, 1, 1, true);

  /** The recorders' clock: each batch and replay below says when it happens. */
  const clock = { t: 0 };
  const recorder = (opts: ConstructorParameters<typeof FlightRecorder>[0]) => new FlightRecorder(opts, () => clock.t);

  /** Stages n datagrams of `len` bytes (filled with their index) from one batch buffer, commits at `now`. */
  function batch(rec: FlightRecorder, items: { tag: number; len: number; uplink: number; traffic: Traffic; loc: typeof A }[], now: number): void {
    const buf = Buffer.alloc(items.length * 2048);
    items.forEach((it, i) => {
      buf.fill(it.tag, i * 2048, i * 2048 + it.len);
      rec.stage(i * 2048, it.len, it.uplink, it.traffic, it.loc);
    });
    clock.t = now;
    rec.commit(buf);
  }

  /** rec.replay() at clock time `now`. */
  function replayAt(rec: FlightRecorder, now: number, ...args: Parameters<FlightRecorder['replay']>): ReturnType<FlightRecorder['replay']> {
    clock.t = now;
    return rec.replay(...args);
  }

  it('re-sends, oldest first, the datagrams of that peer on that path since the given time, byte for byte', () => {
    const rec = recorder({ totalBytes: 1 << 20, perPeerBytes: 1 << 20, maxAgeMs: 1000, maxStaged: 64 });
    const p = newTraffic();
    const q = newTraffic();
    batch(rec, [{ tag: 1, len: 100, uplink: 0, traffic: p, loc: A }, { tag: 2, len: 100, uplink: 0, traffic: q, loc: A }], 1000);
    batch(rec, [{ tag: 3, len: 200, uplink: 0, traffic: p, loc: A }, { tag: 4, len: 100, uplink: 1, traffic: p, loc: A }, { tag: 5, len: 300, uplink: 0, traffic: p, loc: B }], 1050);
    batch(rec, [{ tag: 6, len: 400, uplink: 0, traffic: p, loc: A }], 1100);
    expect(p.heldBytes).toBe(100 + 200 + 100 + 300 + 400);
    expect(q.heldBytes).toBe(100);
    const out: Captured[] = [];
    const r = replayAt(rec, 1100, p, { uplink: 0, locator: A }, 1040, { uplink: 1, socket: captureSocket(1, out), locator: B });
    expect(r).toEqual({ packets: 2, bytes: 600 });
    expect(out.map((d) => [d.data[0], d.data.length, d.to])).toEqual([
      [3, 200, '203.0.113.66'],
      [6, 400, '203.0.113.66'],
    ]);
    expect(out.every((d) => d.data.every((b) => b === d.data[0]))).toBe(true);
    expect(rec.stats).toMatchObject({ replays: 1, replayedPackets: 2, replayedBytes: 600 });
    // Nothing older than maxAgeMs, whatever `since` says.
    expect(replayAt(rec, 2090, p, { uplink: 0, locator: A }, 0, { uplink: 1, socket: captureSocket(1, out), locator: B }).packets).toBe(1);
  });

  it('a re-sent datagram counts as sent on the new path: if that fails too, it is re-sent again', () => {
    const rec = recorder({ totalBytes: 1 << 20, perPeerBytes: 1 << 20, maxAgeMs: 1000, maxStaged: 64 });
    const p = newTraffic();
    batch(rec, [{ tag: 1, len: 100, uplink: 0, traffic: p, loc: A }, { tag: 2, len: 100, uplink: 0, traffic: p, loc: A }], 1000);
    const first: Captured[] = [];
    replayAt(rec, 1010, p, { uplink: 0, locator: A }, 990, { uplink: 1, socket: captureSocket(1, first), locator: A });
    batch(rec, [{ tag: 3, len: 100, uplink: 1, traffic: p, loc: A }], 1020);
    const second: Captured[] = [];
    const r = replayAt(rec, 1100, p, { uplink: 1, locator: A }, 1005, { uplink: 2, socket: captureSocket(2, second), locator: A });
    expect(r.packets).toBe(3);
    expect(second.map((d) => d.data[0])).toEqual([1, 2, 3]);
  });

  it('keeps the newest up to the per-peer bound, and forgets what the ring overwrote (bytes held follow)', () => {
    const rec = recorder({ totalBytes: 256 * 1024, perPeerBytes: 3000, maxAgeMs: 10_000, maxStaged: 64 });
    const p = newTraffic();
    for (let i = 0; i < 10; i++) batch(rec, [{ tag: i, len: 1000, uplink: 0, traffic: p, loc: A }], 1000 + i);
    const out: Captured[] = [];
    const r = replayAt(rec, 1010, p, { uplink: 0, locator: A }, 0, { uplink: 1, socket: captureSocket(1, out), locator: B });
    expect(r.packets).toBe(3);
    expect(out.map((d) => d.data[0])).toEqual([7, 8, 9]);
    expect(rec.stats.replaysCapped).toBe(1);
    // 300 batches of 1000 bytes through a 256 KiB ring: what is held never exceeds the ring.
    for (let i = 0; i < 300; i++) batch(rec, [{ tag: i & 0xff, len: 1000, uplink: 0, traffic: p, loc: A }], 2000 + i);
    expect(p.heldBytes).toBeLessThanOrEqual(256 * 1024);
    expect(p.heldBytes).toBeGreaterThan(200 * 1024);
  });

  it('paces a large replay at the rate it was first sent, and skips what the ring overwrote meanwhile', () => {
    vi.useFakeTimers();
    const rec = recorder({ totalBytes: 512 * 1024, perPeerBytes: 1 << 20, maxAgeMs: 10_000, maxStaged: 64 });
    const p = newTraffic();
    // 200 KB sent over 20 ms: 10 KB/ms.
    for (let i = 0; i < 200; i++) batch(rec, [{ tag: 1, len: 1000, uplink: 0, traffic: p, loc: A }], 1000 + i / 10);
    const out: Captured[] = [];
    replayAt(rec, 1020, p, { uplink: 0, locator: A }, 0, { uplink: 1, socket: captureSocket(1, out), locator: B });
    // The first slice at once (64 KiB), the rest later.
    expect(out.length).toBe(65);
    vi.advanceTimersByTime(2);
    expect(out.length).toBeGreaterThan(65);
    expect(out.length).toBeLessThan(200);
    // Traffic overwrites the whole ring before the rest leaves: not sent, counted.
    for (let i = 0; i < 600; i++) batch(rec, [{ tag: 2, len: 1000, uplink: 0, traffic: p, loc: A }], 1030 + i);
    const before = out.length;
    vi.advanceTimersByTime(100);
    expect(out.length).toBe(before);
    expect(rec.stats.replayOverwritten).toBe(200 - before);
  });
});

describe('inside → outside: counters, copies and re-sends reach the TUN once', () => {
  const MH = 'fd00:1::a';
  const CH = 'fd00:1::c';
  const LOC_A = boundLocator('192.0.2.1', 4341, 1, 1, true);
  const LOC_B = boundLocator('192.0.2.65', 4341, 2, 1, true);
  const CH_LOC = boundLocator('203.0.113.2', 4341, 1, 1, true);

  function entry(id: string, locators: (typeof LOC_A)[], path: MapEntry['path']): MapEntry {
    return Object.freeze({ hostId: id, id: hostIdBytes(id), locators, path, group: [], publicKey: null, traffic: newTraffic(), source: 'static' as const, createdAt: 0, expiresAt: Infinity, seq: 0 });
  }

  function setup() {
    const sent: Captured[] = [];
    const sockets = [captureSocket(0, sent), captureSocket(1, sent)];
    const mhCache = new MapCache(8);
    const toCh = entry(CH, [CH_LOC], { uplink: 0, locator: CH_LOC });
    mhCache.set(toCh);
    let now = 1000;
    const flight = new FlightRecorder({ totalBytes: 1 << 20, perPeerBytes: 1 << 20, maxAgeMs: 1000, maxStaged: 64 }, () => now);
    const tunMh = new MemoryTun({ name: 'rn0' });
    const ins = createInside(
      { instanceId: 1, offload: false, maxDatagram: 65_507, batchSize: 64, stride: tunMh.stride, headroom: tunMh.headroom, chunkPayload: 1436 },
      { cache: mhCache, sockets, drops: new DropCounters(), flight },
    );
    const chCache = new MapCache(8);
    chCache.set(entry(MH, [LOC_A, LOC_B], null));
    const tunCh = new MemoryTun({ name: 'rn0' });
    const chDrops = new DropCounters();
    const out = createOutside({ instanceId: 1, offload: false, maxInner: 1400, batchSize: 64, stride: 2048, hostId: hostIdBytes(CH) }, { cache: chCache, tun: tunCh, drops: chDrops });
    const send = (n: number) => {
      const buf = Buffer.alloc(n * tunMh.stride);
      const lengths = new Uint32Array(n);
      for (let i = 0; i < n; i++) {
        const pkt = ipv6Packet(MH, CH, Buffer.from(`packet ${i} at ${now}`));
        pkt.copy(buf, i * tunMh.stride + tunMh.headroom);
        lengths[i] = pkt.length;
      }
      ins.onBatch(buf, lengths, n);
      now += 1;
    };
    const deliver = (dgs: Captured[]) => {
      const buf = Buffer.alloc(dgs.length * 2048);
      const lengths = new Uint32Array(dgs.length);
      const addrs = new Uint8Array(dgs.length * 16);
      const ports = new Uint16Array(dgs.length).fill(4341);
      dgs.forEach((d, i) => {
        d.data.copy(buf, i * 2048);
        lengths[i] = d.data.length;
        addressToBytes(d.uplink === 0 ? LOC_A.address : LOC_B.address, addrs, i * 16);
      });
      out.onBatch(buf, lengths, addrs, ports, dgs.length);
    };
    return { sent, sockets, mhCache, toCh, flight, tunCh, chDrops, send, deliver, out, ins };
  }

  it('numbers the packets to one destination 1, 2, 3… from a random start', () => {
    const t = setup();
    t.send(5);
    const nonces = t.sent.map((d) => headerNonce(d.data, 0));
    for (let i = 1; i < nonces.length; i++) expect(nonces[i]).toBe((nonces[i - 1] + 1) % DATA_COUNTER_MOD);
    expect(t.toCh.traffic.txCounter).toBe(nonces[4]);
  });

  it('make-before-break: a shadow path gets a copy of each packet; the receiver delivers one', () => {
    const t = setup();
    t.mhCache.set(Object.freeze({ ...t.toCh, shadow: { uplink: 1, locator: CH_LOC } }));
    t.send(4);
    expect(t.sent.filter((d) => d.uplink === 0)).toHaveLength(4);
    expect(t.sent.filter((d) => d.uplink === 1)).toHaveLength(4);
    expect(t.ins.stats.shadowPackets).toBe(4);
    t.deliver(t.sent);
    expect(t.tunCh.written).toHaveLength(4);
    expect(t.chDrops.get('outside.duplicate')).toBe(4);
  });

  it('a re-send after a failover delivers what was lost and drops what had arrived', () => {
    const t = setup();
    t.send(6);
    const first = t.sent.splice(0);
    // The last three were lost on the path.
    t.deliver(first.slice(0, 3));
    expect(t.tunCh.written).toHaveLength(3);
    const resent: Captured[] = [];
    const r = t.flight.replay(t.toCh.traffic, { uplink: 0, locator: CH_LOC }, 0, { uplink: 1, socket: captureSocket(1, resent), locator: CH_LOC });
    expect(r.packets).toBe(6);
    t.deliver(resent);
    expect(t.tunCh.written).toHaveLength(6);
    expect(t.chDrops.get('outside.duplicate')).toBe(3);
    const bodies = t.tunCh.written.map((w) => w.subarray(40).toString());
    expect(new Set(bodies).size).toBe(6);
    // The header is the original one: same counter as the first send.
    expect(resent.map((d) => headerNonce(d.data, 0))).toEqual(first.map((d) => headerNonce(d.data, 0)));
    expect(resent[0].data.length).toBe(first[0].data.length);
    expect(first[0].data.length).toBeGreaterThan(HEADER_LEN + 40);
  });
});
