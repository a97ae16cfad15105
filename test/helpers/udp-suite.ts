/**
 * One UdpBatchSocket compliance suite, run against MemoryNet (test/unit/udp-memory.test.ts) and the
 * native socket on loopback (test/e2e/native-udp.test.ts), so the fake cannot drift from the real thing.
 */
import { describe, expect, it } from 'vitest';
import { isRealmnetError } from '../../shared/errors.ts';
import { addressToBytes, bytesToAddress, type UdpBatchSocket, type UdpOptions } from '../../agent/uplinks/socket.ts';

export interface UdpSuiteTarget {
  open(opts: UdpOptions): UdpBatchSocket;
  /** Lets in-flight datagrams arrive (MemoryNet: idle(); real: the event loop turns). */
  settle(): Promise<void>;
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
