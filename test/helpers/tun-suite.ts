/**
 * One TunDevice compliance suite, run against MemoryTun (test/unit/tun-memory.test.ts) and the native
 * device (test/e2e/native-tun.test.ts), so the fake cannot drift from the real thing.
 *
 * A scenario drives a device through a TunHarness: `emit` makes the "kernel" route UDP datagrams into
 * the device, `listen` receives what packets written to the device deliver to the local stack. The
 * memory harness plays the kernel itself; the real one uses the kernel of a network namespace. The real
 * scenarios need root and a namespace, so they run in a child process that the e2e test starts with
 * `ip netns exec` (runRealTunSuite below) and that reports one RESULT line per scenario. Assertions use
 * node:assert so the same code runs inside and outside vitest.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { isRealmnetError } from '../../shared/errors.ts';
import { openTun, VNET_HDR_SIZE, type TunDevice } from '../../agent/tun/tun.ts';
import { addressToBytes, bytesToAddress } from '../../shared/address.ts';

export interface TunHarness {
  /** The device's own address: written packets addressed here reach `listen`. */
  readonly local: string;
  /** An address routed into the device: `emit` sends there. */
  readonly peer: string;
  readonly mtu: number;
  open(opts: { offload: boolean; batchSize?: number }): TunDevice;
  /** Sends UDP datagrams local → peer:port; the stack routes them into the last opened device. */
  emit(port: number, payloads: Buffer[]): Promise<void>;
  /** Receives UDP payloads for local:port from packets written to the last opened device; resolves once bound. */
  listen(port: number): Promise<Listener>;
}

export interface Listener {
  take(n: number, timeoutMs?: number): Promise<Buffer[]>;
  close(): void;
}

export interface TunScenario {
  name: string;
  run(h: TunHarness): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------
// Packets

export interface UdpPacket {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

function checksum(bufs: Uint8Array[]): number {
  let sum = 0;
  for (const b of bufs) {
    for (let i = 0; i < b.length; i += 2) sum += (b[i] << 8) | (i + 1 < b.length ? b[i + 1] : 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function addr(text: string): Uint8Array {
  const out = new Uint8Array(16);
  return addressToBytes(text, out, 0) === 4 ? out.subarray(0, 4) : out;
}

/** An IPv4/UDP packet with a valid header checksum and no UDP checksum (0 is allowed over IPv4). */
export function ipv4Udp(src: string, dst: string, srcPort: number, dstPort: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(28 + payload.length);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b[8] = 64;
  b[9] = 17;
  b.set(addr(src), 12);
  b.set(addr(dst), 16);
  b.writeUInt16BE(checksum([b.subarray(0, 20)]), 10);
  b.writeUInt16BE(srcPort, 20);
  b.writeUInt16BE(dstPort, 22);
  b.writeUInt16BE(8 + payload.length, 24);
  payload.copy(b, 28);
  return b;
}

/** An ICMPv6 echo request with a valid checksum. */
export function icmp6EchoRequest(src: string, dst: string, id: number, seq: number, data: Buffer): Buffer {
  const b = Buffer.alloc(48 + data.length);
  b[0] = 0x60;
  b.writeUInt16BE(8 + data.length, 4);
  b[6] = 58;
  b[7] = 64;
  b.set(addr(src), 8);
  b.set(addr(dst), 24);
  b[40] = 128;
  b.writeUInt16BE(id, 44);
  b.writeUInt16BE(seq, 46);
  data.copy(b, 48);
  const pseudo = Buffer.alloc(8);
  pseudo.writeUInt32BE(8 + data.length, 0);
  pseudo[7] = 58;
  b.writeUInt16BE(checksum([b.subarray(8, 40), pseudo, b.subarray(40)]), 42);
  return b;
}

/** UDP over IPv4 or IPv6 (no extension headers), or null. */
export function parseUdp(p: Uint8Array): UdpPacket | null {
  const version = p.length > 0 ? p[0] >> 4 : 0;
  let at: number;
  let src: string;
  let dst: string;
  if (version === 4 && p.length >= 28 && p[9] === 17) {
    at = (p[0] & 0x0f) * 4;
    src = bytesToAddress(4, p, 12);
    dst = bytesToAddress(4, p, 16);
  } else if (version === 6 && p.length >= 48 && p[6] === 17) {
    at = 40;
    src = bytesToAddress(6, p, 8);
    dst = bytesToAddress(6, p, 24);
  } else {
    return null;
  }
  const view = Buffer.from(p.buffer, p.byteOffset, p.length);
  const udpLength = view.readUInt16BE(at + 4);
  return { src, dst, srcPort: view.readUInt16BE(at), dstPort: view.readUInt16BE(at + 2), payload: Buffer.from(view.subarray(at + 8, at + udpLength)) };
}

function withVnet(offload: boolean, packet: Buffer): Buffer {
  return offload ? Buffer.concat([Buffer.alloc(VNET_HDR_SIZE), packet]) : packet;
}

// ---------------------------------------------------------------------------------------------------
// Helpers for scenarios

async function waitFor(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Inbox {
  payloads: string[];
  batches: number[];
  vnetHeaders: Buffer[];
}

/** Starts `dev`, keeping copies of UDP payloads to dstPort and every batch size. */
function startInbox(dev: TunDevice, dstPort: number): Inbox {
  const inbox: Inbox = { payloads: [], batches: [], vnetHeaders: [] };
  const ipAt = dev.offload ? VNET_HDR_SIZE : 0;
  dev.start((buf, lengths, count) => {
    inbox.batches.push(count);
    for (let i = 0; i < count; i++) {
      const start = i * dev.stride + dev.headroom;
      const udp = parseUdp(buf.subarray(start + ipAt, start + lengths[i]));
      if (udp === null || udp.dstPort !== dstPort) continue; // IPv6 router/neighbour chatter, say
      inbox.payloads.push(udp.payload.toString());
      if (dev.offload) inbox.vnetHeaders.push(Buffer.from(buf.subarray(start, start + VNET_HDR_SIZE)));
    }
  });
  return inbox;
}

function errorCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return isRealmnetError(e) ? e.code : String(e);
  }
  return 'no error';
}

// ---------------------------------------------------------------------------------------------------
// Scenarios for every TunDevice

export const tunScenarios: TunScenario[] = [false, true].flatMap((offload): TunScenario[] => {
  const mode = offload ? 'offload' : 'plain';
  const port = offload ? 7101 : 7001;
  return [
    {
      name: `${mode}: delivers packets routed into the device in batches with the documented layout`,
      async run(h) {
        const dev = h.open({ offload, batchSize: 16 });
        try {
          assert.equal(dev.offload, offload);
          assert.ok(dev.headroom >= 32 && dev.headroom % 8 === 0, `headroom ${dev.headroom}`);
          assert.ok(dev.stride >= dev.headroom + (offload ? 65535 + VNET_HDR_SIZE : h.mtu), `stride ${dev.stride}`);
          const inbox = startInbox(dev, port);
          const sent = Array.from({ length: 200 }, (_, i) => `packet ${i} `.padEnd(20 + ((i * 37) % 900), '.'));
          await h.emit(port, sent.map((s) => Buffer.from(s)));
          await waitFor(() => inbox.payloads.length >= 200, 5000, `200 packets (got ${inbox.payloads.length})`);
          assert.deepEqual([...inbox.payloads].sort(), [...sent].sort());
          assert.ok(Math.max(...inbox.batches) <= 16, `a batch over batchSize: ${inbox.batches}`);
          assert.ok(Math.max(...inbox.batches) > 1, `every batch had one packet: ${inbox.batches}`);
          const stats = dev.stats;
          assert.ok(stats.readPackets >= 200 && stats.readBatches === inbox.batches.length, JSON.stringify(stats));
          // virtio_net_hdr of a plain UDP datagram: no segmentation offload (gso_type at byte 1 is 0)
          for (const v of inbox.vnetHeaders) assert.equal(v[1], 0, `gso_type ${v[1]}`);
        } finally {
          dev.close();
        }
      },
    },
    {
      name: `${mode}: writes a batch from offsets in one buffer, skipping and counting refused packets`,
      async run(h) {
        const dev = h.open({ offload });
        const listener = await h.listen(port + 1);
        try {
          const a = withVnet(offload, ipv4Udp(h.peer, h.local, 40000, port + 1, Buffer.from('first')));
          const junk = withVnet(offload, Buffer.alloc(40)); // IP version 0: the kernel answers EINVAL
          const b = withVnet(offload, ipv4Udp(h.peer, h.local, 40000, port + 1, Buffer.from('second')));
          const buf = Buffer.alloc(1024);
          const offsets = new Uint32Array([40, 300, 600]);
          const lengths = new Uint32Array([a.length, junk.length, b.length]);
          a.copy(buf, 40);
          junk.copy(buf, 300);
          b.copy(buf, 600);
          assert.equal(dev.write(buf, offsets, lengths, 3), 2);
          assert.equal(dev.stats.writePackets, 2);
          assert.equal(dev.stats.writeErrors, 1);
          assert.equal(dev.stats.lastWriteErrno, 22);
          const got = await listener.take(2);
          assert.deepEqual(got.map((p) => p.toString()).sort(), ['first', 'second']);
        } finally {
          listener.close();
          dev.close();
        }
      },
    },
    {
      name: `${mode}: a handler that throws is counted in callbackErrors, and the next batch is still delivered`,
      async run(h) {
        const dev = h.open({ offload });
        try {
          const got: string[] = [];
          const ipAt = offload ? VNET_HDR_SIZE : 0;
          dev.start((buf, lengths, count) => {
            let boom = false;
            for (let i = 0; i < count; i++) {
              const start = i * dev.stride + dev.headroom;
              const udp = parseUdp(buf.subarray(start + ipAt, start + lengths[i]));
              if (udp === null || udp.dstPort !== port + 3) continue;
              got.push(udp.payload.toString());
              boom ||= udp.payload.toString() === 'boom';
            }
            if (boom) throw new Error('a bug in the handler');
          });
          await h.emit(port + 3, [Buffer.from('boom')]);
          await waitFor(() => dev.stats.callbackErrors === 1, 3000, 'the throw to be counted');
          await h.emit(port + 3, [Buffer.from('after')]);
          await waitFor(() => got.includes('after'), 3000, 'the batch after the throw');
          assert.equal(dev.stats.callbackErrors, 1);
          assert.ok(dev.stats.readBatches >= 2, JSON.stringify(dev.stats));
        } finally {
          dev.close();
        }
      },
    },
    {
      name: `${mode}: writes more packets than batchSize in one call; a count past the arrays is counted, not thrown`,
      async run(h) {
        const dev = h.open({ offload, batchSize: 2 });
        const listener = await h.listen(port + 4);
        try {
          const packets = Array.from({ length: 5 }, (_, i) => withVnet(offload, ipv4Udp(h.peer, h.local, 40000, port + 4, Buffer.from(`p${i}`))));
          const buf = Buffer.concat(packets);
          const offsets = new Uint32Array(5);
          const lengths = new Uint32Array(5);
          for (let i = 0, at = 0; i < 5; at += packets[i].length, i++) [offsets[i], lengths[i]] = [at, packets[i].length];
          assert.equal(dev.write(buf, offsets, lengths, 5), 5); // batchSize sizes reads, not writes
          // Three packets described, seven claimed: the three go, four are counted as refused.
          assert.equal(dev.write(buf, offsets.subarray(0, 3), lengths.subarray(0, 3), 7), 3);
          assert.equal(dev.stats.writePackets, 8);
          assert.equal(dev.stats.writeErrors, 4);
          assert.equal(dev.stats.lastWriteErrno, 22);
          const got = await listener.take(8);
          assert.deepEqual(got.map((p) => p.toString()).sort(), ['p0', 'p0', 'p1', 'p1', 'p2', 'p2', 'p3', 'p4']);
        } finally {
          listener.close();
          dev.close();
        }
      },
    },
    {
      name: `${mode}: close() is idempotent, and nothing is delivered or written after it`,
      async run(h) {
        const dev = h.open({ offload });
        const inbox = startInbox(dev, port + 2);
        dev.close();
        dev.close();
        const p = withVnet(offload, ipv4Udp(h.peer, h.local, 40000, port + 2, Buffer.from('late')));
        assert.equal(dev.write(p, new Uint32Array([0]), new Uint32Array([p.length]), 1), 0);
        await h.emit(port + 2, [Buffer.from('late')]).catch(() => undefined); // the route is gone with the device
        await new Promise((r) => setTimeout(r, 50));
        assert.deepEqual(inbox.payloads, []);
        assert.match(errorCode(() => dev.start(() => {})), /TUN_FAILED/);
      },
    },
  ];
});

// ---------------------------------------------------------------------------------------------------
// Scenarios only the kernel can play

export const realTunScenarios: TunScenario[] = [
  {
    name: 'the kernel picks the number of a %d name; the device goes away on close()',
    async run() {
      const dev = openTun({ name: 'rnq%d', mtu: 1400, offload: false });
      try {
        assert.match(dev.name, /^rnq\d+$/);
        assert.ok(existsSync(`/sys/class/net/${dev.name}`));
      } finally {
        dev.close();
      }
      assert.ok(!existsSync(`/sys/class/net/${dev.name}`), 'the device outlived close()');
    },
  },
  {
    name: 'a name in use, by a TUN or another device, gives TUN_NAME_TAKEN',
    async run() {
      const dev = openTun({ name: 'rntaken', mtu: 1400, offload: false });
      try {
        assert.equal(errorCode(() => openTun({ name: 'rntaken', mtu: 1400, offload: false })), 'TUN_NAME_TAKEN');
        assert.equal(errorCode(() => openTun({ name: 'lo', mtu: 1400, offload: false })), 'TUN_NAME_TAKEN');
        assert.equal(errorCode(() => openTun({ name: 'a-name-too-long-for-linux', mtu: 1400, offload: false })), 'TUN_FAILED');
      } finally {
        dev.close();
      }
    },
  },
  {
    name: 'IPv6: the kernel answers an ICMPv6 echo request written to the device',
    async run(h) {
      const dev = h.open({ offload: false });
      try {
        const got: { reply?: Buffer } = {};
        dev.start((buf, lengths, count) => {
          for (let i = 0; i < count; i++) {
            const p = buf.subarray(i * dev.stride + dev.headroom, i * dev.stride + dev.headroom + lengths[i]);
            // ICMPv6 echo reply (129) with our identifier
            if (p[0] >> 4 === 6 && p[6] === 58 && p[40] === 129 && p.readUInt16BE(44) === 0x4242) got.reply = Buffer.from(p);
          }
        });
        const req = icmp6EchoRequest(REAL.peer6, REAL.local6, 0x4242, 1, Buffer.from('realmnet'));
        assert.equal(dev.write(req, new Uint32Array([0]), new Uint32Array([req.length]), 1), 1);
        await waitFor(() => got.reply !== undefined, 3000, 'the echo reply');
        const r = got.reply ?? Buffer.alloc(0);
        assert.equal(bytesToAddress(6, r, 8), REAL.local6);
        assert.equal(bytesToAddress(6, r, 24), REAL.peer6);
        assert.equal(r.subarray(48).toString(), 'realmnet');
      } finally {
        dev.close();
      }
    },
  },
];

// ---------------------------------------------------------------------------------------------------
// The real harness: runs inside a network namespace of its own (root)

const REAL = { local: '192.0.2.1', peer: '192.0.2.2', local6: 'fd00:7e57::1', peer6: 'fd00:7e57::2', mtu: 1400 };

function realTunHarness(): TunHarness {
  let n = 0;
  return {
    local: REAL.local,
    peer: REAL.peer,
    mtu: REAL.mtu,
    open(opts) {
      const dev = openTun({ name: `rnt${n++}`, mtu: REAL.mtu, offload: opts.offload, batchSize: opts.batchSize });
      const ip = (...args: string[]): void => void execFileSync('ip', args);
      ip('addr', 'add', `${REAL.local}/24`, 'dev', dev.name);
      ip('-6', 'addr', 'add', `${REAL.local6}/64`, 'dev', dev.name, 'nodad');
      ip('link', 'set', dev.name, 'mtu', String(REAL.mtu), 'up');
      return dev;
    },
    async emit(port, payloads) {
      const s = dgram.createSocket('udp4');
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(0, REAL.local, resolve);
      });
      try {
        await Promise.all(payloads.map((p) => new Promise<void>((resolve, reject) => s.send(p, port, REAL.peer, (e) => (e ? reject(e) : resolve())))));
      } finally {
        s.close();
      }
    },
    async listen(port) {
      const s = dgram.createSocket('udp4');
      const got: Buffer[] = [];
      s.on('message', (m) => got.push(m));
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(port, REAL.local, resolve);
      });
      return {
        async take(count, timeoutMs = 3000) {
          await waitFor(() => got.length >= count, timeoutMs, `${count} datagrams on UDP ${port}`);
          return got.slice(0, count);
        },
        close: () => s.close(),
      };
    },
  };
}

/** The e2e child's entry point: runs every scenario on the real device, one RESULT line each. */
export async function runRealTunSuite(): Promise<void> {
  const h = realTunHarness();
  for (const s of [...tunScenarios, ...realTunScenarios]) {
    let result: { name: string; ok: boolean; error?: string };
    try {
      await s.run(h);
      result = { name: s.name, ok: true };
    } catch (e) {
      result = { name: s.name, ok: false, error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
    }
    console.log(`RESULT ${JSON.stringify(result)}`);
  }
  // No process.exit(): the parent checks that closed devices leave nothing keeping the loop alive.
}
