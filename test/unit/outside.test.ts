import { describe, expect, it } from 'vitest';
import { createOutside } from '../../agent/dataplane/outside.ts';
import { DropCounters } from '../../agent/dataplane/drops.ts';
import { MapCache, newTraffic } from '../../agent/mapcache/cache.ts';
import { MemoryTun } from '../../agent/tun/memory.ts';
import { addressBytes, addressToBytes } from '../../shared/address.ts';
import { hostIdBytes } from '../../shared/ids.ts';
import { HEADER_LEN, writeChunk, writeHeader } from '../../shared/wire/header.ts';
import { ipv6Packet } from '../helpers/packets.ts';

/** The receive path fed datagrams by hand: chunk reassembly in offload mode. */
const ME = 'fd00:1::c';
const PEER = 'fd00:1::a';
const SRC = '192.0.2.1';
const STRIDE = 2048;

const PEER2 = 'fd00:1::b';
const SRC2 = '192.0.2.2';

function setup() {
  const cache = new MapCache(8);
  for (const [id, src] of [
    [PEER, SRC],
    [PEER2, SRC2],
  ]) {
    cache.set({
      hostId: id,
      id: hostIdBytes(id),
      locators: [{ address: src, port: 4341, family: 4, bytes: addressBytes(src), priority: 1, weight: 1, up: true }],
      path: null,
      source: 'static',
      createdAt: 0,
      expiresAt: Infinity,
      seq: 0,
      group: [],
      publicKey: null,
      traffic: newTraffic(),
    });
  }
  const tun = new MemoryTun({ offload: true });
  const drops = new DropCounters();
  const out = createOutside({ instanceId: 1, offload: true, maxInner: 65_507, batchSize: 64, stride: STRIDE, hostId: hostIdBytes(ME) }, { cache, tun, drops });
  return { tun, drops, out };
}

/** Cuts a frame into chunk datagrams of `size` payload bytes: [header | piece]. */
function chunks(frame: Buffer, size: number, nonce: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, i = 0; at < frame.length; at += size, i++) {
    const piece = frame.subarray(at, Math.min(frame.length, at + size));
    const d = Buffer.alloc(HEADER_LEN + piece.length);
    writeHeader(d, 0, nonce, 1, true);
    writeChunk(d, 0, i, at + size >= frame.length);
    piece.copy(d, HEADER_LEN);
    out.push(d);
  }
  return out;
}

function deliver(out: ReturnType<typeof setup>['out'], dgs: Buffer[], from = SRC, port = 4341): void {
  deliverMixed(
    out,
    dgs.map((d) => ({ d, from, port })),
  );
}

/** One batch whose datagrams come from different source locators. */
function deliverMixed(out: ReturnType<typeof setup>['out'], dgs: readonly { d: Buffer; from: string; port?: number }[]): void {
  const buf = Buffer.alloc(dgs.length * STRIDE);
  const lengths = new Uint32Array(dgs.length);
  const addrs = new Uint8Array(dgs.length * 16);
  const ports = new Uint16Array(dgs.length);
  dgs.forEach(({ d, from, port }, i) => {
    d.copy(buf, i * STRIDE);
    lengths[i] = d.length;
    addressToBytes(from, addrs, i * 16);
    ports[i] = port ?? 4341;
  });
  out.onBatch(buf, lengths, addrs, ports, dgs.length);
}

const frame = (n: number, from = PEER, fill = 7) => Buffer.concat([Buffer.alloc(10, 0), ipv6Packet(from, ME, n)]).fill(fill, 60);

/** a[0], b[0], a[1], b[1], ...: the datagrams of two senders interleaved. */
function interleave<T>(a: readonly T[], b: readonly T[]): T[] {
  const out: T[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (i < a.length) out.push(a[i]);
    if (i < b.length) out.push(b[i]);
  }
  return out;
}

describe('outside: offload chunk reassembly', () => {
  it('rebuilds a frame from in-order chunks, also across batches', () => {
    const { tun, out, drops } = setup();
    const f = frame(5000);
    const c = chunks(f, 1444, 5);
    deliver(out, c.slice(0, 2));
    expect(tun.written).toHaveLength(0);
    deliver(out, c.slice(2));
    expect(tun.written).toHaveLength(1);
    expect(Buffer.compare(tun.written[0], f)).toBe(0);
    expect(drops.total()).toBe(0);
  });

  it('gives a frame up when a chunk is missing, reordered, or from another locator', () => {
    const { tun, out, drops } = setup();
    const c = chunks(frame(5000), 1444, 9);
    deliver(out, [c[0], c[2], c[3]]); // chunk 1 lost
    expect(tun.written).toHaveLength(0);
    expect(drops.get('outside.reassembly')).toBe(2); // chunk 2 gives the frame up; chunk 3 finds no frame
    const d = chunks(frame(3000), 1444, 10);
    deliver(out, [d[0]]);
    deliver(out, [d[1], d[2]], '192.0.2.99'); // a stranger continues the frame
    expect(tun.written).toHaveLength(0);
    expect(drops.get('outside.reassembly')).toBe(4);
    // And the next good frame still goes through.
    const g = frame(4000);
    deliver(out, chunks(g, 1444, 11));
    expect(tun.written).toHaveLength(1);
    expect(Buffer.compare(tun.written[0], g)).toBe(0);
  });

  it('checks a rebuilt frame like any other: a forged inner source is dropped', () => {
    const { tun, out, drops } = setup();
    const f = Buffer.concat([Buffer.alloc(10), ipv6Packet('fd00:1::bad', ME, 4000)]);
    deliver(out, chunks(f, 1444, 1));
    expect(tun.written).toHaveLength(0);
    expect(drops.get('outside.unknownPeer')).toBe(1);
  });
});

describe('outside: reassembly contexts per (source locator, frame nonce) (docs/security.md decision 5)', () => {
  const has = (written: readonly Buffer[], f: Buffer) => written.some((w) => Buffer.compare(w, f) === 0);

  it('interleaved chunks of two senders both complete', () => {
    const { tun, out, drops } = setup();
    const f1 = frame(5000, PEER, 1);
    const f2 = frame(4000, PEER2, 2);
    const a = chunks(f1, 1444, 5).map((d) => ({ d, from: SRC }));
    const b = chunks(f2, 1444, 5).map((d) => ({ d, from: SRC2 })); // the same nonce: another source
    deliverMixed(out, interleave(a, b));
    expect(tun.written).toHaveLength(2);
    expect(has(tun.written, f1) && has(tun.written, f2)).toBe(true);
    expect(drops.total()).toBe(0);
  });

  it('interleaved chunks of two frames of one sender (a re-send overlapping new traffic) both complete, across batches', () => {
    const { tun, out, drops } = setup();
    const f1 = frame(5000, PEER, 1);
    const f2 = frame(3000, PEER, 2);
    const mixed = interleave(chunks(f1, 1444, 20), chunks(f2, 1444, 21)).map((d) => ({ d, from: SRC }));
    deliverMixed(out, mixed.slice(0, 3));
    deliverMixed(out, mixed.slice(3));
    expect(tun.written).toHaveLength(2);
    expect(has(tun.written, f1) && has(tun.written, f2)).toBe(true);
    expect(drops.total()).toBe(0);
  });

  it("a forged first chunk from another source does not break a frame in progress", () => {
    const { tun, out, drops } = setup();
    const f = frame(5000);
    const c = chunks(f, 1444, 7);
    deliver(out, [c[0], c[1]]);
    // A stranger's chunk 0 with the frame's nonce: not a bound locator, dropped before any context.
    deliver(out, [c[0]], '198.51.100.9');
    expect(drops.get('outside.sourceNotBound')).toBe(1);
    // Another peer's (or a spoofer of its locator) chunk 0 with the same nonce: its own context.
    deliver(out, [chunks(frame(3000, PEER2), 1444, 7)[0]], SRC2);
    // The frame's own source port differs: another locator, another context.
    deliver(out, [c[0]], SRC, 9999);
    deliver(out, c.slice(2));
    expect(tun.written).toHaveLength(1);
    expect(Buffer.compare(tun.written[0], f)).toBe(0);
    expect(drops.get('outside.reassembly')).toBe(0);
  });

  it('a source starting frame after frame (or forging nonces) replaces only its own once it holds half the table', () => {
    const { tun, out, drops } = setup();
    const f = frame(5000);
    const c = chunks(f, 1444, 100);
    deliver(out, [c[0]]);
    // PEER2's locator starts 20 frames it never finishes: 7 free contexts, then its own oldest.
    const junk = chunks(frame(3000, PEER2), 1444, 0)[0];
    for (let n = 0; n < 20; n++) {
      junk.writeUIntBE(200 + n, 1, 3); // the nonce
      deliver(out, [junk], SRC2);
    }
    expect(drops.get('outside.reassembly')).toBe(20 - 7);
    deliver(out, c.slice(1));
    expect(tun.written).toHaveLength(1);
    expect(Buffer.compare(tun.written[0], f)).toBe(0);
    // A full table: a new frame from PEER takes the oldest context (PEER2's), and completes.
    const g = frame(4000, PEER, 9);
    deliver(out, chunks(g, 1444, 101));
    expect(tun.written).toHaveLength(2);
    expect(Buffer.compare(tun.written[1], g)).toBe(0);
  });

  it('a first chunk not for us, or from an unknown inner source, takes no context', () => {
    const { tun, out, drops } = setup();
    const f = frame(5000);
    const c = chunks(f, 1444, 3);
    deliver(out, [c[0]]);
    const notForUs = chunks(Buffer.concat([Buffer.alloc(10), ipv6Packet(PEER, 'fd00:1::99', 3000)]), 1444, 50)[0];
    const unknown = chunks(Buffer.concat([Buffer.alloc(10), ipv6Packet('fd00:1::bad', ME, 3000)]), 1444, 51)[0];
    for (let n = 0; n < 10; n++) deliver(out, [notForUs, unknown]);
    expect(drops.get('outside.notForUs')).toBe(10);
    expect(drops.get('outside.unknownPeer')).toBe(10);
    deliver(out, c.slice(1));
    expect(tun.written).toHaveLength(1);
    expect(drops.get('outside.reassembly')).toBe(0);
  });
});

describe('outside: the destination is checked before the source is looked up', () => {
  it('a datagram for another host never costs a lookup of its unknown source', () => {
    const cache = new MapCache(8);
    const tun = new MemoryTun({ offload: false });
    const drops = new DropCounters();
    let lookups = 0;
    const out = createOutside(
      { instanceId: 1, offload: false, maxInner: 1400, batchSize: 64, stride: STRIDE, hostId: hostIdBytes(ME) },
      { cache, tun, drops, onUnknownSource: () => (lookups++, true) },
    );
    const d = Buffer.alloc(HEADER_LEN + 48);
    writeHeader(d, 0, 1, 1, false);
    ipv6Packet('fd00:1::77', 'fd00:1::99', 8).copy(d, HEADER_LEN);
    deliver(out, [d]);
    expect(lookups).toBe(0);
    expect(drops.get('outside.notForUs')).toBe(1);
    // The same unknown source writing to this host is handed to the control plane.
    const e = Buffer.alloc(HEADER_LEN + 48);
    writeHeader(e, 0, 2, 1, false);
    ipv6Packet('fd00:1::77', ME, 8).copy(e, HEADER_LEN);
    deliver(out, [e]);
    expect(lookups).toBe(1);
  });
});
