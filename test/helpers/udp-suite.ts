/**
 * One UdpBatchSocket compliance suite, run against MemoryNet (test/unit/udp-memory.test.ts) and the
 * native socket on loopback (test/e2e/native-udp.test.ts), so the fake cannot drift from the real thing.
 * The batch tests also pin down that UDP GSO/GRO stay invisible: runs of same-size datagrams, which the
 * native socket sends as GSO messages and loopback delivers coalesced to a GRO socket, must reach the
 * handler as the same separate datagrams, in order, with their sources.
 */
import { describe, expect, it } from 'vitest';
import { isRealmnetError } from '../../shared/errors.ts';
import { addressToBytes, bytesToAddress } from '../../shared/address.ts';
import type { UdpBatchSocket, UdpOptions } from '../../shared/udp/socket.ts';

export interface UdpSuiteTarget {
  open(opts: UdpOptions): UdpBatchSocket;
  /** Lets in-flight datagrams arrive (MemoryNet: idle(); real: the event loop turns). */
  settle(): Promise<void>;
  /** The target really coalesces (native on loopback): check the gso/gro stats too. */
  offloads?: boolean;
}

interface Received {
  data: Buffer;
  src: string;
  srcPort: number;
}

/** Starts `s` and collects copies of what it receives, with the batch sizes seen. */
function collect(s: UdpBatchSocket): { got: Received[]; batches: number[] } {
  const got: Received[] = [];
  const batches: number[] = [];
  s.start((buf, lengths, srcAddrs, srcPorts, count) => {
    batches.push(count);
    for (let i = 0; i < count; i++) {
      const off = i * s.stride;
      got.push({ data: Buffer.from(buf.subarray(off, off + lengths[i])), src: bytesToAddress(s.family, srcAddrs, i * 16), srcPort: srcPorts[i] });
    }
  });
  return { got, batches };
}

async function until(target: UdpSuiteTarget, done: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!done() && Date.now() < end) {
    await target.settle();
    if (!done()) await new Promise((r) => setTimeout(r, 5));
  }
}

/** A send batch of `payloads` in one buffer at 8-aligned offsets, all to `to`. */
function batch(payloads: Buffer[], to: UdpBatchSocket): [Buffer, Uint32Array, Uint32Array, Uint8Array, Uint16Array, number] {
  const n = payloads.length;
  const offsets = new Uint32Array(n);
  const lengths = new Uint32Array(n);
  const addrs = new Uint8Array(n * 16);
  const ports = new Uint16Array(n);
  let size = 0;
  for (let i = 0; i < n; i++) {
    offsets[i] = size;
    lengths[i] = payloads[i].length;
    size += Math.ceil(payloads[i].length / 8) * 8 + 8;
    addressToBytes(to.localAddress, addrs, i * 16);
    ports[i] = to.localPort;
  }
  const buf = Buffer.alloc(size);
  for (let i = 0; i < n; i++) payloads[i].copy(buf, offsets[i]);
  return [buf, offsets, lengths, addrs, ports, n];
}

/** A send batch of datagrams to several sockets, in the given order. */
function mixed(items: Array<{ data: Buffer; to: UdpBatchSocket }>): [Buffer, Uint32Array, Uint32Array, Uint8Array, Uint16Array, number] {
  const n = items.length;
  const [buf, offsets, lengths, addrs, ports] = batch(
    items.map((d) => d.data),
    items[0].to,
  );
  for (let i = 0; i < n; i++) {
    addressToBytes(items[i].to.localAddress, addrs, i * 16);
    ports[i] = items[i].to.localPort;
  }
  return [buf, offsets, lengths, addrs, ports, n];
}

/** The sequence numbers received, in arrival order. */
function seqs(got: Received[]): number[] {
  return got.map((r) => r.data.readUInt32BE(0));
}

function payload(seq: number, length: number): Buffer {
  const p = Buffer.alloc(length);
  for (let i = 0; i < length; i++) p[i] = (seq * 31 + i) & 0xff;
  if (length >= 4) p.writeUInt32BE(seq, 0);
  return p;
}

export function udpSuite(name: string, makeTarget: () => UdpSuiteTarget, addresses: { v4: string; v6: string }): void {
  describe(`UdpBatchSocket compliance: ${name}`, () => {
    for (const [fam, address] of [[4, addresses.v4], [6, addresses.v6]] as const) {
      describe(`IPv${fam} on ${address}`, () => {
        it('binds an ephemeral port and reports family, address and stride', () => {
          const t = makeTarget();
          const s = t.open({ address, port: 0, maxDatagram: 2000 });
          try {
            expect(s.family).toBe(fam);
            expect(s.localAddress).toBe(address);
            expect(s.localPort).toBeGreaterThan(0);
            expect(s.stride).toBeGreaterThanOrEqual(2000);
            expect(s.stride % 8).toBe(0);
          } finally {
            s.close();
          }
        });

        it('delivers a batch of 200 datagrams with their sources, lengths and contents', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          const b = t.open({ address, port: 0, batchSize: 32 });
          try {
            const rx = collect(b);
            const payloads = Array.from({ length: 200 }, (_, i) => payload(i, 4 + ((i * 97) % 1397)));
            expect(a.send(...batch(payloads, b))).toBe(200);
            await until(t, () => rx.got.length >= 200);
            expect(rx.got.length).toBe(200);
            expect(Math.max(...rx.batches)).toBeLessThanOrEqual(32);
            const bySeq = new Map(rx.got.map((r) => [r.data.readUInt32BE(0), r]));
            for (let i = 0; i < 200; i++) {
              const r = bySeq.get(i);
              expect(r?.data.equals(payloads[i])).toBe(true);
              expect(r?.src).toBe(a.localAddress);
              expect(r?.srcPort).toBe(a.localPort);
            }
            expect(a.stats.txPackets).toBe(200);
            expect(a.stats.sendErrors).toBe(0);
            expect(b.stats.rxPackets).toBe(200);
            expect(b.stats.rxBatches).toBe(rx.batches.length);
          } finally {
            a.close();
            b.close();
          }
        });

        it('carries the largest datagram the family allows (64 KB)', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          const b = t.open({ address, port: 0 });
          try {
            const rx = collect(b);
            const big = payload(7, fam === 4 ? 65507 : 65527);
            expect(a.send(...batch([big], b))).toBe(1);
            await until(t, () => rx.got.length >= 1);
            expect(rx.got.length).toBe(1);
            expect(rx.got[0].data.equals(big)).toBe(true);
          } finally {
            a.close();
            b.close();
          }
        });

        // 1408 = MTU 1400 + our 8-byte header: the bulk-TCP case. Every combination of the offloads.
        for (const [gso, gro] of [[true, true], [false, true], [true, false], [false, false]] as const) {
          it(`64 same-length datagrams to one destination arrive as 64, intact and in order (gso ${gso}, gro ${gro})`, async () => {
            const t = makeTarget();
            const a = t.open({ address, port: 0, gso });
            const b = t.open({ address, port: 0, gro });
            try {
              const rx = collect(b);
              const payloads = Array.from({ length: 64 }, (_, i) => payload(i, 1408));
              expect(a.send(...batch(payloads, b))).toBe(64);
              await until(t, () => rx.got.length >= 64);
              await t.settle();
              expect(rx.got.length).toBe(64);
              expect(seqs(rx.got)).toEqual(payloads.map((_, i) => i));
              for (let i = 0; i < 64; i++) {
                expect(rx.got[i].data.equals(payloads[i])).toBe(true);
                expect(rx.got[i].src).toBe(a.localAddress);
                expect(rx.got[i].srcPort).toBe(a.localPort);
              }
              expect(a.stats).toMatchObject({ txPackets: 64, sendErrors: 0 });
              expect(b.stats).toMatchObject({ rxPackets: 64, rxTruncated: 0 });
              if (t.offloads) {
                expect(a.stats.gso).toBe(gso);
                expect(b.stats.gro).toBe(gro);
                // 46 * 1408 <= 65000 < 47 * 1408: two GSO messages.
                expect(a.stats.gsoMessages).toBe(gso ? 2 : 0);
                // Loopback hands the GSO messages to a GRO socket whole, so the addon had to split them.
                if (gso && gro) expect(b.stats.groMessages).toBeGreaterThan(0);
                if (!gro) expect(b.stats.groMessages).toBe(0);
              }
            } finally {
              a.close();
              b.close();
            }
          });
        }

        it('mixed lengths and destinations in one batch each arrive right, in order', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          const b = t.open({ address, port: 0 });
          const c = t.open({ address, port: 0 });
          try {
            const rxB = collect(b);
            const rxC = collect(c);
            const plan: Array<[UdpBatchSocket, number, number]> = [
              // [to, how many, length]
              [b, 10, 1000],
              [c, 5, 1000], // same length, other destination: a new run
              [b, 3, 1000],
              [b, 1, 300], // a shorter last datagram ends a run...
              [b, 4, 1000], // ...and the next one starts a new run
              [c, 4, 500],
              [c, 1, 501], // longer than the run: not part of it
              [b, 2, fam === 4 ? 1472 : 1452], // the largest segment coalesced
              [b, 2, fam === 4 ? 1473 : 1453], // one more: sent one by one
              [c, 1, 0], // an empty datagram is still a datagram
              [b, 1, 9000],
              [b, 3, 7],
            ];
            const items: Array<{ data: Buffer; to: UdpBatchSocket }> = [];
            const want = new Map<UdpBatchSocket, Buffer[]>([[b, []], [c, []]]);
            for (const [to, n, len] of plan) {
              for (let k = 0; k < n; k++) {
                // Sequence numbers need 4 bytes; the empty datagram is recognised by its length.
                const data = len === 0 ? Buffer.alloc(0) : payload(items.length, Math.max(len, 4));
                items.push({ data, to });
                want.get(to)?.push(data);
              }
            }
            expect(a.send(...mixed(items))).toBe(items.length);
            const wantB = want.get(b) ?? [];
            const wantC = want.get(c) ?? [];
            await until(t, () => rxB.got.length >= wantB.length && rxC.got.length >= wantC.length);
            await t.settle();
            expect(rxB.got.map((r) => r.data.length)).toEqual(wantB.map((d) => d.length));
            expect(rxC.got.map((r) => r.data.length)).toEqual(wantC.map((d) => d.length));
            for (const [rx, w] of [[rxB, wantB], [rxC, wantC]] as const) {
              for (let i = 0; i < w.length; i++) {
                expect(rx.got[i].data.equals(w[i])).toBe(true);
                expect(rx.got[i].src).toBe(a.localAddress);
                expect(rx.got[i].srcPort).toBe(a.localPort);
              }
            }
            expect(a.stats).toMatchObject({ txPackets: items.length, sendErrors: 0 });
            if (t.offloads) expect(a.stats.gsoMessages).toBeGreaterThanOrEqual(5);
          } finally {
            a.close();
            b.close();
            c.close();
          }
        });

        it('runs longer than 64 datagrams and coalesced receives larger than a batch arrive whole and in order', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          // Small batches and stride: a coalesced receive (up to 64 datagrams) spans several batches.
          const b = t.open({ address, port: 0, batchSize: 16, maxDatagram: 1500 });
          try {
            const rx = collect(b);
            const payloads = [
              ...Array.from({ length: 150 }, (_, i) => payload(i, 1000)), // 64 + 64 + 22
              ...Array.from({ length: 100 }, (_, i) => payload(150 + i, 1408)), // 46 + 46 + 8 (65000 bytes)
            ];
            expect(a.send(...batch(payloads, b))).toBe(250);
            await until(t, () => rx.got.length >= 250);
            await t.settle();
            expect(seqs(rx.got)).toEqual(payloads.map((_, i) => i));
            for (let i = 0; i < 250; i++) expect(rx.got[i].data.equals(payloads[i])).toBe(true);
            expect(Math.max(...rx.batches)).toBeLessThanOrEqual(16);
            expect(b.stats).toMatchObject({ rxPackets: 250, rxBatches: rx.batches.length, rxTruncated: 0 });
            if (t.offloads) expect(a.stats.gsoMessages).toBe(6);
          } finally {
            a.close();
            b.close();
          }
        });

        it('counts each datagram over maxDatagram in rxTruncated and drops it, also inside a run', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          const b = t.open({ address, port: 0, maxDatagram: 500 });
          try {
            const rx = collect(b);
            const payloads = [...Array.from({ length: 10 }, (_, i) => payload(i, 1000)), payload(10, 500), payload(11, 100)];
            expect(a.send(...batch(payloads, b))).toBe(12);
            await until(t, () => rx.got.length >= 2);
            await t.settle();
            expect(seqs(rx.got)).toEqual([10, 11]);
            expect(b.stats).toMatchObject({ rxPackets: 2, rxTruncated: 10 });
          } finally {
            a.close();
            b.close();
          }
        });

        it('skips and counts a datagram it cannot send, and sends the rest of the batch', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          const b = t.open({ address, port: 0 });
          try {
            const rx = collect(b);
            const args = batch([payload(1, 100), payload(2, 100), payload(3, 100), payload(4, 100)], b);
            args[1][1] = 1 << 30; // datagram 1: outside the buffer
            args[2][2] = 70_000; // datagram 2: larger than any UDP datagram
            args[0] = Buffer.concat([args[0], Buffer.alloc(70_000)]);
            expect(a.send(...args)).toBe(2);
            expect(a.stats.sendErrors).toBe(2);
            expect(a.stats.lastSendErrno).toBeGreaterThan(0);
            await until(t, () => rx.got.length >= 2);
            expect(rx.got.map((r) => r.data.readUInt32BE(0)).sort()).toEqual([1, 4]);
          } finally {
            a.close();
            b.close();
          }
        });

        it('a handler that throws is counted in callbackErrors, and the next batch is still delivered', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          const b = t.open({ address, port: 0 });
          try {
            const got: number[] = [];
            b.start((buf, _lengths, _srcAddrs, _srcPorts, count) => {
              let boom = false;
              for (let i = 0; i < count; i++) {
                const seq = buf.readUInt32BE(i * b.stride);
                got.push(seq);
                boom ||= seq === 1;
              }
              if (boom) throw new Error('a bug in the handler');
            });
            expect(a.send(...batch([payload(1, 100)], b))).toBe(1);
            await until(t, () => b.stats.callbackErrors === 1);
            expect(b.stats.callbackErrors).toBe(1);
            expect(a.send(...batch([payload(2, 100)], b))).toBe(1);
            await until(t, () => got.includes(2));
            expect(got).toEqual([1, 2]);
            expect(b.stats).toMatchObject({ callbackErrors: 1, rxBatches: 2 });
          } finally {
            a.close();
            b.close();
          }
        });

        it('sends a batch larger than its batchSize whole; a count past the arrays is counted, not thrown', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0, batchSize: 4 });
          const b = t.open({ address, port: 0 });
          try {
            const rx = collect(b);
            // batchSize sizes receives only; 300 is also more than the addon's sendmmsg chunk (256).
            const payloads = Array.from({ length: 300 }, (_, i) => payload(i, 100 + (i % 3)));
            expect(a.send(...batch(payloads, b))).toBe(300);
            await until(t, () => rx.got.length >= 300);
            expect(rx.got.length).toBe(300);
            expect(a.stats).toMatchObject({ txPackets: 300, sendErrors: 0 });
            // Three datagrams described, seven claimed: the three go, four are counted as not sent.
            const [buf, offsets, lengths, addrs, ports] = batch([payload(1000, 50), payload(1001, 50), payload(1002, 50)], b);
            expect(a.send(buf, offsets, lengths, addrs, ports, 7)).toBe(3);
            expect(a.stats).toMatchObject({ txPackets: 303, sendErrors: 4, lastSendErrno: 22 });
            await until(t, () => rx.got.length >= 303);
            expect(seqs(rx.got.slice(300)).sort()).toEqual([1000, 1001, 1002]);
          } finally {
            a.close();
            b.close();
          }
        });

        it('sending to a port nobody listens on neither throws nor breaks the socket', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          const gone = t.open({ address, port: 0 });
          const b = t.open({ address, port: 0 });
          try {
            gone.close();
            const rx = collect(b);
            for (let round = 0; round < 3; round++) {
              a.send(...batch([payload(round, 50)], gone));
              await new Promise((r) => setTimeout(r, 20)); // time for an ICMP port unreachable to come back
            }
            expect(a.send(...batch([payload(9, 50)], b))).toBe(1);
            await until(t, () => rx.got.length >= 1);
            expect(rx.got.map((r) => r.data.readUInt32BE(0))).toEqual([9]);
          } finally {
            a.close();
            b.close();
          }
        });

        it('refuses a second socket on the same address and port with UDP_PORT_IN_USE', () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          try {
            let error: unknown;
            try {
              t.open({ address, port: a.localPort }).close();
            } catch (e) {
              error = e;
            }
            expect(isRealmnetError(error) && error.code).toBe('UDP_PORT_IN_USE');
            expect(isRealmnetError(error) && error.message).toContain(String(a.localPort));
          } finally {
            a.close();
          }
        });

        it('close() is idempotent, sends nothing after and frees the port', async () => {
          const t = makeTarget();
          const a = t.open({ address, port: 0 });
          const b = t.open({ address, port: 0 });
          const rx = collect(b);
          a.close();
          a.close();
          expect(a.send(...batch([payload(1, 10)], b))).toBe(0);
          b.close();
          b.close();
          await t.settle();
          expect(rx.got.length).toBe(0);
          t.open({ address, port: b.localPort }).close();
        });
      });
    }
  });
}
