import { describe, expect, it } from 'vitest';
import { PIN_DEAD, PIN_LIVE, PinTable } from '../../agent/dataplane/pins.ts';
import { chooseHost, type HostChoice } from '../../agent/groups/choose.ts';
import { addressBytes } from '../../shared/address.ts';

/** The slice-2 flow table (agent/dataplane/pins.ts) and the host choice (agent/groups/choose.ts). */
const LOCAL = 'fd00:1::c';
const GROUP = 'fd00:2:1::5';

function tcp(src: string, dst: string, sport: number, dport: number, seq: number, ack: number, flags: number, payload = 0): Buffer {
  const b = Buffer.alloc(60 + payload);
  b[0] = 0x60;
  b.writeUInt16BE(20 + payload, 4);
  b[6] = 6;
  b[7] = 64;
  Buffer.from(addressBytes(src)).copy(b, 8);
  Buffer.from(addressBytes(dst)).copy(b, 24);
  b.writeUInt16BE(sport, 40);
  b.writeUInt16BE(dport, 42);
  b.writeUInt32BE(seq >>> 0, 44);
  b.writeUInt32BE(ack >>> 0, 48);
  b[52] = 5 << 4;
  b[53] = flags;
  return b;
}

function udp(src: string, dst: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(48);
  b[0] = 0x60;
  b.writeUInt16BE(8, 4);
  b[6] = 17;
  Buffer.from(addressBytes(src)).copy(b, 8);
  Buffer.from(addressBytes(dst)).copy(b, 24);
  b.writeUInt16BE(sport, 40);
  b.writeUInt16BE(dport, 42);
  return b;
}

/** The TCP checksum over the IPv6 pseudo-header and segment, computed independently: 0 when valid. */
function checksumOk(p: Buffer): boolean {
  let sum = 0;
  const add = (x: number) => (sum += x);
  for (let i = 8; i < 40; i += 2) add(p.readUInt16BE(i));
  add(p.length - 40);
  add(6);
  for (let i = 40; i < p.length; i += 2) add(p.readUInt16BE(i));
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

const SYN = 0x02;
const ACK = 0x10;
const RST = 0x04;

describe('the flow table', () => {
  it('finds a flow from both directions, and tells ports apart', () => {
    const t = new PinTable({ capacity: 64, idleMs: 1000 });
    const out = udp(LOCAL, GROUP, 40000, 53);
    const s = t.insert(out, 0, out.length, true, 7, 0);
    expect(t.find(out, 0, out.length, true)).toBe(s);
    const back = udp(GROUP, LOCAL, 53, 40000);
    expect(t.find(back, 0, back.length, false)).toBe(s);
    expect(t.host(s)).toBe(7);
    const other = udp(LOCAL, GROUP, 40001, 53);
    expect(t.find(other, 0, other.length, true)).toBe(-1);
    // A short packet is never keyed, never throws.
    expect(t.find(Buffer.alloc(20), 0, 20, true)).toBe(-1);
  });

  it('never holds more than its capacity: new flows evict the least recently used of their bucket', () => {
    const t = new PinTable({ capacity: 64, idleMs: 1000 });
    for (let i = 0; i < 640; i++) {
      const p = udp(LOCAL, GROUP, 10000 + i, 53);
      t.insert(p, 0, p.length, true, 1, i < 320 ? 0 : 5000);
    }
    expect(t.stats.flows).toBe(64);
    expect(t.stats.inserted).toBe(640);
    expect(t.stats.evictedIdle + t.stats.evictedActive).toBe(576);
    expect(t.stats.evictedIdle).toBeGreaterThan(0);
    // A table of idle flows empties at the sweep.
    expect(t.sweep(100_000)).toBe(64);
    expect(t.stats.flows).toBe(0);
  });

  it('marks flows of a dead host and lists them by host', () => {
    const t = new PinTable({ capacity: 64, idleMs: 1000, deadHoldMs: 100 });
    const slots = [1, 2, 3].map((i) => {
      const p = udp(LOCAL, GROUP, 20000 + i, 53);
      return t.insert(p, 0, p.length, true, i === 3 ? 9 : 8, 0);
    });
    const seen: number[] = [];
    t.forEachOfHost(8, (s) => seen.push(s));
    expect(seen.sort()).toEqual(slots.slice(0, 2).sort());
    t.markDead(slots[0], 0);
    expect(t.state(slots[0])).toBe(PIN_DEAD);
    expect(t.state(slots[1])).toBe(PIN_LIVE);
    expect(t.sweep(500)).toBe(1);
  });
});

describe('resets for flows whose host died', () => {
  it('established: seq = how far the peer got, ack = what the app sent; checksum valid; flags RST|ACK', () => {
    const t = new PinTable({ capacity: 64, idleMs: 1000 });
    const syn = tcp(LOCAL, GROUP, 40000, 80, 1000, 0, SYN);
    const s = t.insert(syn, 0, syn.length, true, 1, 0);
    t.trackOut(s, syn, 0, syn.length);
    const synAck = tcp(GROUP, LOCAL, 80, 40000, 5000, 1001, SYN | ACK);
    t.trackIn(s, synAck, 0, synAck.length);
    const req = tcp(LOCAL, GROUP, 40000, 80, 1001, 5001, ACK, 100);
    t.trackOut(s, req, 0, req.length);
    const data = tcp(GROUP, LOCAL, 80, 40000, 5001, 1101, ACK, 1000);
    t.trackIn(s, data, 0, data.length);
    const out = Buffer.alloc(80);
    expect(t.writeReset(s, out, 10)).toBe(60);
    const r = out.subarray(10, 70);
    expect(r.subarray(8, 24)).toEqual(Buffer.from(addressBytes(GROUP)));
    expect(r.subarray(24, 40)).toEqual(Buffer.from(addressBytes(LOCAL)));
    expect([r.readUInt16BE(40), r.readUInt16BE(42)]).toEqual([80, 40000]);
    expect(r.readUInt32BE(44)).toBe(6001);
    expect(r.readUInt32BE(48)).toBe(1101);
    expect(r[53]).toBe(RST | ACK);
    expect(checksumOk(Buffer.from(r))).toBe(true);
  });

  it('SYN_SENT: seq 0 and ack = ISS + 1; sequence numbers wrap', () => {
    const t = new PinTable({ capacity: 64, idleMs: 1000 });
    const syn = tcp(LOCAL, GROUP, 40000, 80, 0xffffffff, 0, SYN);
    const s = t.insert(syn, 0, syn.length, true, 1, 0);
    t.trackOut(s, syn, 0, syn.length);
    const out = Buffer.alloc(60);
    expect(t.writeReset(s, out, 0)).toBe(60);
    expect(out.readUInt32BE(44)).toBe(0);
    expect(out.readUInt32BE(48)).toBe(0);
    expect(checksumOk(out)).toBe(true);
  });

  it('answers one outbound segment exactly (the challenge ACK), never a RST, never a non-TCP packet', () => {
    const t = new PinTable({ capacity: 64, idleMs: 1000 });
    const out = Buffer.alloc(60);
    const chal = tcp(LOCAL, GROUP, 40000, 80, 777, 9999, ACK);
    expect(t.writeResetFor(chal, 0, chal.length, out, 0)).toBe(60);
    expect([out.readUInt32BE(44), out.readUInt32BE(48)]).toEqual([9999, 777]);
    expect(checksumOk(out)).toBe(true);
    const rst = tcp(LOCAL, GROUP, 40000, 80, 777, 9999, RST);
    expect(t.writeResetFor(rst, 0, rst.length, out, 0)).toBe(0);
    const u = udp(LOCAL, GROUP, 1, 2);
    expect(t.writeResetFor(u, 0, u.length, out, 0)).toBe(0);
    const s = t.insert(u, 0, u.length, true, 1, 0);
    expect(t.writeReset(s, out, 0)).toBe(0);
  });
});

describe('choosing a host for a new flow', () => {
  const h = (o: Partial<HostChoice> & { key: number }): HostChoice => ({ present: true, alive: true, rttMs: null, priority: 1, weight: 1, ...o });

  it('users: the lowest priority among present, alive hosts; never an absent or dead one', () => {
    const hosts = [h({ key: 0, priority: 1 }), h({ key: 1, priority: 2 })];
    for (let f = 0; f < 100; f++) expect(chooseHost('user', hosts, f * 2654435761)).toBe(0);
    expect(chooseHost('user', [h({ key: 0, priority: 1, alive: false }), h({ key: 1, priority: 2 })], 5)).toBe(1);
    expect(chooseHost('user', [h({ key: 0, priority: 1, present: false }), h({ key: 1, priority: 2 })], 5)).toBe(1);
    expect(chooseHost('user', [h({ key: 0, present: false }), h({ key: 1, alive: false })], 5)).toBe(-1);
    expect(chooseHost('user', [h({ key: 0, priority: 255 })], 5)).toBe(-1);
  });

  it('users: equal priorities share flows by weight', () => {
    const hosts = [h({ key: 0, weight: 3 }), h({ key: 1, weight: 1 })];
    const n = [0, 0];
    for (let f = 0; f < 4000; f++) n[chooseHost('user', hosts, Math.imul(f + 1, 2654435761))]++;
    expect(n[0] / 4000).toBeGreaterThan(0.65);
    expect(n[0] / 4000).toBeLessThan(0.85);
  });

  it('data: the lowest RTT among live replicas; near-ties broken by weight', () => {
    expect(chooseHost('data', [h({ key: 0, rttMs: 20 }), h({ key: 1, rttMs: 2 })], 1)).toBe(1);
    expect(chooseHost('data', [h({ key: 0, rttMs: 20 }), h({ key: 1, rttMs: 2, alive: false })], 1)).toBe(0);
    // Unmeasured counts as slowest, but is still a candidate.
    expect(chooseHost('data', [h({ key: 0, rttMs: null }), h({ key: 1, rttMs: 5 })], 1)).toBe(1);
    expect(chooseHost('data', [h({ key: 0, rttMs: null })], 1)).toBe(0);
    const tie = [h({ key: 0, rttMs: 1.0, weight: 200 }), h({ key: 1, rttMs: 1.5, weight: 1 })];
    let zero = 0;
    for (let f = 0; f < 1000; f++) if (chooseHost('data', tie, Math.imul(f + 1, 2654435761)) === 0) zero++;
    expect(zero).toBeGreaterThan(950);
  });
});
