import { describe, expect, it } from 'vitest';
import { isRealmnetError } from '../../shared/errors.ts';
import { MemoryNet } from '../../shared/udp/memory.ts';
import { addressToBytes, bytesToAddress } from '../../shared/address.ts';
import { udpError, udpLayout } from '../../shared/udp/socket.ts';
import { udpSuite } from '../helpers/udp-suite.ts';

udpSuite(
  'MemoryNet',
  () => {
    const net = new MemoryNet();
    return { open: (o) => net.open(o), settle: () => net.idle() };
  },
  { v4: '127.0.0.1', v6: '::1' },
);

function send1(net: MemoryNet, from: ReturnType<MemoryNet['open']>, to: string, port: number, data: Buffer): number {
  const addrs = new Uint8Array(16);
  addressToBytes(to, addrs, 0);
  return from.send(data, new Uint32Array([0]), new Uint32Array([data.length]), addrs, new Uint16Array([port]), 1);
}

describe('MemoryNet', () => {
  it('delivers asynchronously, in batches of at most batchSize, after the sender returns', async () => {
    const net = new MemoryNet();
    const a = net.open({ address: '192.0.2.1', port: 4341 });
    const b = net.open({ address: '198.51.100.1', port: 4341, batchSize: 4 });
    const counts: number[] = [];
    b.start((_buf, _lens, _src, _ports, count) => counts.push(count));
    for (let i = 0; i < 10; i++) send1(net, a, '198.51.100.1', 4341, Buffer.from([i]));
    expect(counts).toEqual([]);
    await net.idle();
    expect(counts).toEqual([4, 4, 2]);
    expect(net.stats.delivered).toBe(10);
  });

  it('holds datagrams for a socket that has not started, as a receive buffer would', async () => {
    const net = new MemoryNet();
    const a = net.open({ address: '192.0.2.1', port: 1 });
    const b = net.open({ address: '192.0.2.2', port: 2 });
    send1(net, a, '192.0.2.2', 2, Buffer.from('early'));
    await net.idle();
    const got: string[] = [];
    b.start((buf, lens, _s, _p, count) => {
      for (let i = 0; i < count; i++) got.push(buf.toString('utf8', i * b.stride, i * b.stride + lens[i]));
    });
    await net.idle();
    expect(got).toEqual(['early']);
  });

  it('blackholes an address silently in both directions, and restores it', async () => {
    const net = new MemoryNet();
    const a = net.open({ address: '192.0.2.1', port: 1 });
    const b = net.open({ address: '198.51.100.7', port: 2 });
    let got = 0;
    b.start((_b, _l, _s, _p, count) => (got += count));
    a.start(() => {});
    net.blackhole('198.51.100.7');
    expect(send1(net, a, '198.51.100.7', 2, Buffer.from('x'))).toBe(1); // the sender cannot tell
    expect(send1(net, b, '192.0.2.1', 1, Buffer.from('y'))).toBe(1);
    await net.idle();
    expect(got).toBe(0);
    expect(net.stats.blackholed).toBe(2);
    expect(a.stats.sendErrors).toBe(0);
    net.restore('198.51.100.7');
    send1(net, a, '198.51.100.7', 2, Buffer.from('x'));
    await net.idle();
    expect(got).toBe(1);
  });

  it('counts datagrams to nobody, and a wildcard socket receives for every address of its family', async () => {
    const net = new MemoryNet();
    const a = net.open({ address: '2001:db8::1', port: 1 });
    send1(net, a, '2001:db8::2', 9, Buffer.from('x'));
    expect(net.stats.noListener).toBe(1);
    const any = net.open({ address: '::', port: 9 });
    const from: string[] = [];
    any.start((_b, _l, src, ports, count) => {
      for (let i = 0; i < count; i++) from.push(`${bytesToAddress(6, src, i * 16)}/${ports[i]}`);
    });
    send1(net, a, '2001:db8::2', 9, Buffer.from('x'));
    await net.idle();
    expect(from).toEqual(['2001:db8::1/1']);
    expect(() => net.open({ address: '2001:db8::5', port: 9 })).toThrow(/listens on UDP 9/);
  });

  it('restricts binding to its addresses when given, with UDP_ADDRESS_NOT_AVAILABLE', () => {
    const net = new MemoryNet({ addresses: ['192.0.2.1', '2001:db8::1'] });
    net.open({ address: '192.0.2.1', port: 0 }).close();
    net.open({ address: '2001:0db8:0::1', port: 0 }).close();
    let error: unknown;
    try {
      net.open({ address: '192.0.2.55', port: 4341 });
    } catch (e) {
      error = e;
    }
    expect(isRealmnetError(error) && error.code).toBe('UDP_ADDRESS_NOT_AVAILABLE');
  });

  it('drops and counts what exceeds the receiver maxDatagram or its queue', async () => {
    const net = new MemoryNet({ queueLimit: 2 });
    const a = net.open({ address: '192.0.2.1', port: 1 });
    const b = net.open({ address: '192.0.2.2', port: 2, maxDatagram: 100 });
    send1(net, a, '192.0.2.2', 2, Buffer.alloc(101));
    for (let i = 0; i < 3; i++) send1(net, a, '192.0.2.2', 2, Buffer.alloc(10));
    expect(net.stats).toMatchObject({ truncated: 1, overflow: 1, delivered: 2 });
    expect(b.stats.rxTruncated).toBe(1);
  });
});

describe('addressToBytes / bytesToAddress', () => {
  const cases: Array<[string, 4 | 6, string, string?]> = [
    ['192.0.2.1', 4, 'c0000201000000000000000000000000'],
    ['0.0.0.0', 4, '00000000000000000000000000000000'],
    ['255.255.255.255', 4, 'ffffffff000000000000000000000000'],
    ['::', 6, '00000000000000000000000000000000'],
    ['::1', 6, '00000000000000000000000000000001'],
    ['2001:db8::1', 6, '20010db8000000000000000000000001'],
    ['2001:DB8:0:0:1:0:0:1', 6, '20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', 6, '20010db8000000010001000100010001'],
    ['fd00:1:2:3:4:5:6:7', 6, 'fd000001000200030004000500060007'],
    ['1::', 6, '00010000000000000000000000000000'],
    ['::ffff:192.0.2.1', 6, '00000000000000000000ffffc0000201'],
    ['64:ff9b::192.0.2.1', 6, '0064ff9b0000000000000000c0000201', '64:ff9b::c000:201'],
    ['fe80::1%eth0', 6, 'fe800000000000000000000000000001', 'fe80::1'],
  ];
  it.each(cases)('%s', (text, family, hex, canonical) => {
    const out = new Uint8Array(20).fill(0xaa);
    expect(addressToBytes(text, out, 2)).toBe(family);
    expect(Buffer.from(out.subarray(2, 18)).toString('hex')).toBe(hex);
    expect(out[0]).toBe(0xaa);
    expect(out[18]).toBe(0xaa);
    expect(bytesToAddress(family, out, 2)).toBe(canonical ?? text);
  });

  it('compresses the first of two equal zero runs, and never a single zero group (RFC 5952)', () => {
    const b = Buffer.from('20010db8000000000001000000000001', 'hex');
    expect(bytesToAddress(6, b, 0)).toBe('2001:db8::1:0:0:1');
    const single = Buffer.from('20010db8000000010001000100010001', 'hex');
    expect(bytesToAddress(6, single, 0)).toBe('2001:db8:0:1:1:1:1:1');
  });

  it('rejects what is not an address literal', () => {
    for (const bad of ['', 'localhost', '192.0.2', '192.0.2.256', '1:2:3:4:5:6:7:8:9', '2001:db8::g']) {
      expect(() => addressToBytes(bad, new Uint8Array(16), 0)).toThrow(/is not an IPv4 or IPv6 address/);
    }
  });
});

describe('udpError maps errno to typed errors', () => {
  it.each([
    [98, 'bind', 'UDP_PORT_IN_USE', /another process listens on UDP 4341 on 192.0.2.1/],
    [99, 'bind', 'UDP_ADDRESS_NOT_AVAILABLE', /192.0.2.1 is not an address of this machine/],
    [97, 'socket', 'UDP_ADDRESS_NOT_AVAILABLE', /IPv6 is disabled/],
    [13, 'bind', 'UDP_FAILED', /no permission to bind UDP 4341/],
    [22, 'getaddrinfo', 'UDP_FAILED', /is not an IPv4 or IPv6 address/],
    [12, 'socket', 'UDP_FAILED', /socket gave ENOMEM/],
  ])('errno %i from %s → %s', (errno, syscall, code, message) => {
    const e = udpError(errno, syscall, '192.0.2.1', 4341);
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
    expect(e.hint.length).toBeGreaterThan(10);
  });

  it('checks options with UDP_FAILED', () => {
    expect(() => udpLayout({ address: '::1', port: 70000 })).toThrow(/port 70000 is out of range/);
    expect(() => udpLayout({ address: '::1', port: 0, batchSize: 0 })).toThrow(/batchSize/);
    expect(udpLayout({ address: '::1', port: 0 })).toEqual({ maxDatagram: 65535, stride: 65536, batchSize: 64, slots: 4 });
  });
});
