import { describe, expect, it } from 'vitest';
import { coalesceForTest, splitForTest } from '../../agent/tun/tun.ts';
import { hostIdBytes } from '../../shared/ids.ts';

/**
 * Receive-side coalescing (agent/tun/native/coalesce.h) on crafted TCP/IPv6 segments: which runs
 * merge, and the super-packet the kernel gets (virtio header, lengths, flags, payload order).
 */
const A = 'fd00:1::a';
const C = 'fd00:1::c';

interface Seg {
  seq: number;
  payload: number | Buffer;
  flags?: number;
  ack?: number;
  window?: number;
  tsval?: number;
  src?: string;
  sport?: number;
  hop?: number;
  next?: number;
}

/** A TCP/IPv6 segment with a 12-byte timestamp option (32-byte TCP header), checksum left zero. */
function seg(s: Seg): Buffer {
  const body = typeof s.payload === 'number' ? Buffer.alloc(s.payload, s.seq & 0xff) : s.payload;
  const th = 32;
  const p = Buffer.alloc(40 + th + body.length);
  p[0] = 0x60;
  p.writeUInt16BE(th + body.length, 4);
  p[6] = s.next ?? 6;
  p[7] = s.hop ?? 64;
  p.set(hostIdBytes(s.src ?? A), 8);
  p.set(hostIdBytes(C), 24);
  const t = 40;
  p.writeUInt16BE(s.sport ?? 40000, t);
  p.writeUInt16BE(5201, t + 2);
  p.writeUInt32BE(s.seq >>> 0, t + 4);
  p.writeUInt32BE(s.ack ?? 777, t + 8);
  p[t + 12] = (th / 4) << 4;
  p[t + 13] = s.flags ?? 0x10;
  p.writeUInt16BE(s.window ?? 500, t + 14);
  p.set([1, 1, 8, 10], t + 20);
  p.writeUInt32BE(s.tsval ?? 1000, t + 24);
  p.writeUInt32BE(2000, t + 28);
  p.set(body, 40 + th);
  return p;
}

function run(packets: Buffer[]) {
  const stride = 2048;
  const buf = Buffer.alloc(stride * packets.length);
  const offsets = new Uint32Array(packets.length);
  const lengths = new Uint32Array(packets.length);
  packets.forEach((p, i) => {
    p.copy(buf, i * stride);
    offsets[i] = i * stride;
    lengths[i] = p.length;
  });
  return coalesceForTest(buf, offsets, lengths, packets.length);
}

const MSS = 1328;
const inOrder = (n: number, from = 1000, last?: Partial<Seg>) => Array.from({ length: n }, (_, i) => seg({ seq: from + i * MSS, payload: MSS, ...(i === n - 1 ? last : {}) }));

describe('receive-side coalescing', () => {
  it('merges a run of in-order segments into one GSO super-packet with the right virtio header and lengths', () => {
    const segs = inOrder(10, 1000, { flags: 0x18 }); // the last one pushed
    const out = run(segs);
    expect(out.map((o) => [o.first, o.end])).toEqual([[0, 10]]);
    const sp = out[0].packet as Buffer;
    // virtio_net_hdr: NEEDS_CSUM, GSO_TCPV6, hdr_len 72, gso_size MSS, csum_start 40, csum_offset 16.
    expect([sp[0], sp[1], sp.readUInt16LE(2), sp.readUInt16LE(4), sp.readUInt16LE(6), sp.readUInt16LE(8)]).toEqual([1, 4, 72, MSS, 40, 16]);
    const pkt = sp.subarray(10);
    expect(pkt.length).toBe(72 + 10 * MSS);
    expect(pkt.readUInt16BE(4)).toBe(32 + 10 * MSS);
    expect(pkt.readUInt32BE(44)).toBe(1000); // the first segment's sequence number
    expect(pkt[53]).toBe(0x18); // the last segment's flags (PSH)
    // Payloads in order, byte for byte.
    expect(Buffer.compare(pkt.subarray(72), Buffer.concat(segs.map((s) => s.subarray(72))))).toBe(0);
    // The checksum field holds the folded pseudo-header sum (addresses, length, next header 6).
    let sum = 6 + 32 + 10 * MSS;
    for (let i = 8; i < 40; i += 2) sum += pkt.readUInt16BE(i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    expect(pkt.readUInt16BE(56)).toBe(sum);
  });

  it('a short last segment ends its run; full segments after it start another', () => {
    const segs = [...inOrder(3, 1000), seg({ seq: 1000 + 3 * MSS, payload: 500 }), ...inOrder(2, 1000 + 3 * MSS + 500)];
    expect(run(segs).map((o) => [o.first, o.end])).toEqual([
      [0, 4],
      [4, 6],
    ]);
  });

  it('never merges out-of-order, flagged, option-differing, other-flow or non-TCP packets, and keeps their order', () => {
    const base = 5000;
    const segs = [
      seg({ seq: base, payload: MSS }),
      seg({ seq: base + 2 * MSS, payload: MSS }), // a hole: out of sequence
      seg({ seq: base + 3 * MSS, payload: MSS, flags: 0x11 }), // FIN
      seg({ seq: base + 4 * MSS, payload: MSS, tsval: 1001 }), // another timestamp
      seg({ seq: base + 5 * MSS, payload: MSS, sport: 40001 }), // another flow
      seg({ seq: base + 6 * MSS, payload: MSS, next: 17 }), // UDP
      seg({ seq: base + 7 * MSS, payload: 0 }), // a pure ACK
      seg({ seq: base + 7 * MSS, payload: MSS, ack: 778 }),
      seg({ seq: base + 8 * MSS, payload: MSS, ack: 779 }), // another ACK number
      seg({ seq: base + 9 * MSS, payload: MSS, window: 501 }),
      seg({ seq: base + 10 * MSS, payload: MSS, window: 502 }), // another window
      seg({ seq: base + 11 * MSS, payload: MSS, hop: 63 }),
      seg({ seq: base + 12 * MSS, payload: MSS, hop: 62 }), // another hop limit
    ];
    const out = run(segs);
    expect(out.map((o) => [o.first, o.end])).toEqual(segs.map((_, i) => [i, i + 1]));
    expect(out.every((o) => o.packet === null)).toBe(true);
  });

  it('a pushed segment ends a run and never starts one', () => {
    const segs = [seg({ seq: 0, payload: MSS, flags: 0x18 }), seg({ seq: MSS, payload: MSS }), seg({ seq: 2 * MSS, payload: MSS, flags: 0x18 }), seg({ seq: 3 * MSS, payload: MSS })];
    expect(run(segs).map((o) => [o.first, o.end])).toEqual([
      [0, 1],
      [1, 3],
      [3, 4],
    ]);
  });

  it('stops before the IPv6 payload would pass 65535 bytes', () => {
    const segs = inOrder(60, 0);
    const out = run(segs);
    for (const o of out) if (o.packet !== null) expect(o.packet.subarray(10).readUInt16BE(4)).toBeLessThanOrEqual(65535);
    expect(out[0].end).toBe(Math.floor((65535 - 32) / MSS));
    expect(out.reduce((n, o) => n + (o.end - o.first), 0)).toBe(60);
  });

  it('passes malformed input through alone, never merged, never a crash', () => {
    const good = inOrder(3, 100);
    const lying = Buffer.from(good[1]);
    lying.writeUInt16BE(9999, 4); // payload length disagrees with the packet
    const short = good[2].subarray(0, 50);
    const badHdrLen = Buffer.from(good[2]);
    badHdrLen[52] = 0xf0; // a 60-byte TCP header in a packet that cannot hold it with payload
    const v4 = Buffer.from(good[0]);
    v4[0] = 0x45;
    const out = run([good[0], lying, short, badHdrLen, v4, Buffer.alloc(0)]);
    expect(out.map((o) => [o.first, o.end])).toEqual([0, 1, 2, 3, 4, 5].map((i) => [i, i + 1]));
  });
});

/** The full TCP checksum of a TCP/IPv6 packet, computed here independently (RFC 1071 over pseudo-header and segment). */
function tcpChecksumOk(p: Buffer): boolean {
  const tcpLen = p.length - 40;
  let sum = 6 + tcpLen;
  for (let i = 8; i < 40; i += 2) sum += p.readUInt16BE(i);
  for (let i = 40; i + 1 < p.length; i += 2) sum += p.readUInt16BE(i);
  if (tcpLen % 2 === 1) sum += p[p.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

/** A TSO super-packet as the kernel hands it over: virtio header (GSO_TCPV6, NEEDS_CSUM) + one big segment. */
function superFrame(payload: number, gso: number, flags = 0x18): Buffer {
  const big = seg({ seq: 7000, payload, flags });
  const vnet = Buffer.alloc(10);
  vnet[0] = 1;
  vnet[1] = 4;
  vnet.writeUInt16LE(72, 2);
  vnet.writeUInt16LE(gso, 4);
  vnet.writeUInt16LE(40, 6);
  vnet.writeUInt16LE(16, 8);
  return Buffer.concat([vnet, big]);
}

describe('send-side splitting (userspace GSO)', () => {
  it('cuts a TSO super-packet into MSS-sized segments with correct lengths, sequence numbers, flags and checksums', () => {
    const frame = superFrame(10 * MSS + 100, MSS, 0x18 | 0x80); // PSH and CWR on the super-packet
    const segs = splitForTest(frame) as Buffer[];
    expect(segs).toHaveLength(11);
    const payload = frame.subarray(10 + 72);
    segs.forEach((s, k) => {
      const n = k < 10 ? MSS : 100;
      expect(s.length).toBe(72 + n);
      expect(s.readUInt16BE(4)).toBe(32 + n);
      expect(s.readUInt32BE(44)).toBe(7000 + k * MSS);
      expect(s[53]).toBe(0x10 | (k === 10 ? 0x08 : 0) | (k === 0 ? 0x80 : 0)); // PSH last, CWR first
      expect(tcpChecksumOk(s)).toBe(true);
      expect(Buffer.compare(s.subarray(72), payload.subarray(k * MSS, k * MSS + n))).toBe(0);
    });
  });

  it('finishes a plain packet\'s partial checksum, and drops what it cannot cut (UDP GSO, no TCP, bad offsets)', () => {
    const p = seg({ seq: 1, payload: 500 });
    // Partial checksum as the kernel leaves it: the folded pseudo-header sum in the field.
    let ps = 6 + (p.length - 40);
    for (let i = 8; i < 40; i += 2) ps += p.readUInt16BE(i);
    while (ps > 0xffff) ps = (ps & 0xffff) + (ps >>> 16);
    p.writeUInt16BE(ps, 56);
    const vnet = Buffer.from([1, 0, 0, 0, 0, 0, 40, 0, 16, 0]);
    const out = splitForTest(Buffer.concat([vnet, p])) as Buffer[];
    expect(out).toHaveLength(1);
    expect(tcpChecksumOk(out[0])).toBe(true);
    const udpGso = superFrame(4000, 1000);
    udpGso[1] = 5; // VIRTIO_NET_HDR_GSO_UDP_L4
    expect(splitForTest(udpGso)).toBeNull();
    const badOffsets = Buffer.concat([Buffer.from([1, 0, 0, 0, 0, 0, 0xff, 0xff, 16, 0]), p]);
    expect(splitForTest(badOffsets)).toBeNull();
    expect(splitForTest(Buffer.alloc(5))).toBeNull();
  });

  it('split then coalesce gives back one super-packet with the same payload', () => {
    const frame = superFrame(20 * MSS, MSS, 0x10);
    const segs = splitForTest(frame) as Buffer[];
    const out = run(segs);
    expect(out).toHaveLength(1);
    const back = (out[0].packet as Buffer).subarray(10);
    expect(Buffer.compare(back.subarray(72), frame.subarray(10 + 72))).toBe(0);
  });
});
