import { describe, expect, it } from 'vitest';
import { MemoryTun } from '../../agent/tun/memory.ts';
import { tunError, tunLayout } from '../../agent/tun/tun.ts';
import { ipv4Udp, parseUdp, tunScenarios, type Listener, type TunHarness } from '../helpers/tun-suite.ts';

/** The memory harness plays the kernel: emit injects IPv4/UDP packets, listen parses what is written. */
function memoryHarness(): TunHarness {
  let dev: MemoryTun | null = null;
  const h: TunHarness = {
    local: '192.0.2.1',
    peer: '192.0.2.2',
    mtu: 1400,
    open(opts) {
      dev = new MemoryTun({ name: 'mem0', mtu: 1400, offload: opts.offload, batchSize: opts.batchSize });
      return dev;
    },
    async emit(port, payloads) {
      const d = dev;
      if (d === null) throw new Error('open a device first');
      d.injectBatch(payloads.map((p) => {
        const packet = ipv4Udp(h.local, h.peer, 40000, port, p);
        return d.offload ? Buffer.concat([Buffer.alloc(10), packet]) : packet;
      }));
    },
    async listen(port): Promise<Listener> {
      const d = dev;
      if (d === null) throw new Error('open a device first');
      const got: Buffer[] = [];
      const stop = d.onWrite((p) => {
        const udp = parseUdp(d.offload ? p.subarray(10) : p);
        if (udp !== null && udp.dst === h.local && udp.dstPort === port) got.push(udp.payload);
      });
      return {
        async take(n) {
          if (got.length < n) throw new Error(`only ${got.length} of ${n} datagrams were written`);
          return got.slice(0, n);
        },
        close: stop,
      };
    },
  };
  return h;
}

describe('TunDevice compliance: MemoryTun', () => {
  for (const s of tunScenarios) it(s.name, () => s.run(memoryHarness()));
});

describe('MemoryTun', () => {
  it('lays a batch out like the real device: packet i at i*stride + headroom', () => {
    const tun = new MemoryTun({ mtu: 1400, batchSize: 4 });
    expect(tun.headroom).toBe(32);
    expect(tun.stride).toBe(1432);
    const seen: Array<[number, number, number]> = [];
    tun.start((buf, lengths, count) => {
      for (let i = 0; i < count; i++) seen.push([count, lengths[i], buf[i * tun.stride + tun.headroom]]);
    });
    tun.injectBatch([1, 2, 3, 4, 5].map((n) => Buffer.alloc(n * 10, n)));
    expect(seen).toEqual([
      [4, 10, 1],
      [4, 20, 2],
      [4, 30, 3],
      [4, 40, 4],
      [1, 50, 5],
    ]);
    expect(tun.stats).toMatchObject({ readPackets: 5, readBatches: 2 });
  });

  it('holds packets injected before start(), and delivers packets injected by the handler as the next batch', () => {
    const tun = new MemoryTun();
    tun.inject(Buffer.from([0x45, 1]));
    const batches: number[][] = [];
    tun.start((buf, lengths, count) => {
      batches.push(Array.from({ length: count }, (_, i) => buf[i * tun.stride + tun.headroom + 1]));
      if (batches.length === 1) tun.inject(Buffer.from([0x45, 2])); // re-entrant: must not clobber this batch
    });
    expect(batches).toEqual([[1], [2]]);
  });

  it('refuses a packet larger than its read space, as a test bug', () => {
    const tun = new MemoryTun({ mtu: 1400 });
    expect(() => tun.inject(Buffer.alloc(1401))).toThrow(RangeError);
    const off = new MemoryTun({ mtu: 1400, offload: true });
    off.inject(Buffer.alloc(65545)); // offload reads take a 64 KB super-packet plus the vnet header
  });

  it('keeps copies of written packets and tells onWrite/nextWrite', async () => {
    const tun = new MemoryTun();
    const next = tun.nextWrite();
    const buf = Buffer.from([0x60, 0, 0, 0, 0x45, 9]);
    expect(tun.write(buf, new Uint32Array([0, 4]), new Uint32Array([4, 2]), 2)).toBe(2);
    buf.fill(0);
    expect(tun.written.map((p) => p.toString('hex'))).toEqual(['60000000', '4509']);
    expect((await next).toString('hex')).toBe('60000000');
  });

  it('counts a packet outside the buffer as a write error', () => {
    const tun = new MemoryTun();
    expect(tun.write(Buffer.alloc(10, 0x45), new Uint32Array([8]), new Uint32Array([4]), 1)).toBe(0);
    expect(tun.stats.writeErrors).toBe(1);
  });
});

describe('tunLayout', () => {
  it('sizes slots from the MTU, or for a 64 KB super-packet plus vnet header with offload', () => {
    expect(tunLayout({ name: 'rn0', mtu: 1400, offload: false })).toEqual({ headroom: 32, space: 1400, stride: 1432, batchSize: 64, slots: 4 });
    expect(tunLayout({ name: 'rn0', mtu: 1400, offload: true, headroom: 64 })).toMatchObject({ headroom: 64, space: 65545, stride: 65616 });
  });

  it('rejects bad options with TUN_FAILED', () => {
    expect(() => tunLayout({ name: 'rn0', mtu: 20, offload: false })).toThrow(/tun.mtu 20 is out of range/);
    expect(() => tunLayout({ name: 'rn0', mtu: 1400, offload: false, headroom: 36 })).toThrow(/multiple of 8/);
    expect(() => tunLayout({ name: 'rn0', mtu: 1400, offload: false, batchSize: 0 })).toThrow(/batchSize/);
  });
});

describe('tunError maps errno to typed errors', () => {
  it.each([
    [13, 'open /dev/net/tun', false, 'TUN_NO_PERMISSION', /CAP_NET_ADMIN/],
    [1, 'TUNSETIFF', false, 'TUN_NO_PERMISSION', /CAP_NET_ADMIN/],
    [2, 'open /dev/net/tun', false, 'TUN_NO_DEVICE', /modprobe tun/],
    [19, 'open /dev/net/tun', false, 'TUN_NO_DEVICE', /modprobe tun/],
    [16, 'TUNSETIFF', true, 'TUN_NAME_TAKEN', /choose another tun.name/],
    [22, 'TUNSETIFF', true, 'TUN_NAME_TAKEN', /choose another tun.name/],
    [22, 'TUNSETIFF', false, 'TUN_FAILED', /dmesg/],
    [22, 'TUNSETOFFLOAD', false, 'TUN_FAILED', /tun.offload/],
    [12, 'open /dev/net/tun', false, 'TUN_FAILED', /dmesg/],
  ])('errno %i from %s (name exists: %s) → %s', (errno, syscall, exists, code, hint) => {
    const e = tunError(errno, syscall, 'rn0', exists);
    expect(e.code).toBe(code);
    expect(e.hint).toMatch(hint);
    expect(e.message.length).toBeGreaterThan(10);
  });
});
