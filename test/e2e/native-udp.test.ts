/**
 * The native UDP socket (shared/udp/native/udp.cc) against the same compliance suite as MemoryNet,
 * on loopback, plus what only the kernel does: binding an address the machine does not have, process
 * exit after close(), and kernel fragmentation of 64 KB datagrams over a 1500-byte MTU, and how UDP
 * GSO falls back when the kernel refuses it (in network namespaces this file creates, so those parts
 * need root).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRealmnetError } from '../../shared/errors.ts';
import { loadNative } from '../../shared/native.ts';
import { openUdp } from '../../shared/udp/socket.ts';
import { udpSuite } from '../helpers/udp-suite.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// Fail, not skip, when the addon is missing: a green run must mean the native path was tested.
loadNative('realmnet_udp');

udpSuite(
  'native',
  () => ({ open: openUdp, settle: () => new Promise((r) => setTimeout(r, 2)), offloads: true }),
  { v4: '127.0.0.1', v6: '::1' },
);

/** Runs an ES module snippet in a fresh node with tsx; returns status and output. */
function runNode(code: string, args: string[] = [], prefix: string[] = []): { status: number | null; signal: string | null; out: string } {
  const cmd = [...prefix, process.execPath, '--import', 'tsx', '--input-type=module', '-e', code, ...args];
  const r = spawnSync(cmd[0], cmd.slice(1), { cwd: repoRoot, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
}

describe('native UDP socket: kernel behaviour', () => {
  it('binding an address not on this machine fails with UDP_ADDRESS_NOT_AVAILABLE', () => {
    for (const address of ['192.0.2.55', '2001:db8::55']) {
      let error: unknown;
      try {
        openUdp({ address, port: 4341 }).close();
      } catch (e) {
        error = e;
      }
      expect(isRealmnetError(error) && error.code).toBe('UDP_ADDRESS_NOT_AVAILABLE');
      expect(isRealmnetError(error) && error.message).toContain(address);
    }
  });

  it('an address that is not a literal fails with UDP_FAILED, without a DNS lookup', () => {
    expect(() => openUdp({ address: 'localhost', port: 0 })).toThrow(/"localhost" is not an IPv4 or IPv6 address/);
  });

  it('the process exits by itself once a started socket is closed', () => {
    const code = `
      import { openUdp } from './shared/udp/socket.ts';
      const s = openUdp({ address: '127.0.0.1', port: 0 });
      s.start(() => {});
      setTimeout(() => { s.close(); console.log('closed'); }, 50);`;
    const r = runNode(code);
    expect(r.out).toContain('closed');
    expect(r).toMatchObject({ status: 0, signal: null });
  });
});

describe('native UDP socket: 64 KB datagrams over a 1500-byte MTU (root, own netns)', () => {
  const ns = `rnudp-${process.pid}`;

  beforeAll(() => {
    if (process.getuid?.() !== 0) {
      throw new Error('this part needs root: it creates a network namespace to test kernel fragmentation; run the e2e tests as root');
    }
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up', 'mtu', '1500']);
  });

  afterAll(() => {
    spawnSync('ip', ['netns', 'del', ns]);
  });

  it('the kernel fragments a 64 KB datagram instead of failing with EMSGSIZE, in both families', () => {
    const code = `
      import { openUdp } from './shared/udp/socket.ts';
      import { addressToBytes } from './shared/address.ts';
      for (const [address, size] of [['127.0.0.1', 65507], ['::1', 65527]]) {
        const a = openUdp({ address, port: 0 });
        const b = openUdp({ address, port: 0 });
        let timer;
        const got = await new Promise((resolve) => {
          b.start((buf, lens, src, ports, count) => resolve(lens[0]));
          const addrs = new Uint8Array(16);
          addressToBytes(address, addrs, 0);
          const sent = a.send(Buffer.alloc(size, 7), new Uint32Array([0]), new Uint32Array([size]), addrs, new Uint16Array([b.localPort]), 1);
          if (sent !== 1) resolve('send failed: errno ' + a.stats.lastSendErrno);
          timer = setTimeout(() => resolve('nothing arrived'), 3000);
        });
        clearTimeout(timer);
        console.log(address, got);
        a.close();
        b.close();
      }`;
    const r = runNode(code, [], ['ip', 'netns', 'exec', ns]);
    expect(r.out).toContain('127.0.0.1 65507');
    expect(r.out).toContain('::1 65527');
    expect(r.status).toBe(0);
  });
});

describe('native UDP socket: GSO refused by the kernel (root, own netns)', () => {
  const ns = `rngso-${process.pid}`;

  beforeAll(() => {
    if (process.getuid?.() !== 0) {
      throw new Error('this part needs root: it creates a network namespace to change MTUs and routes; run the e2e tests as root');
    }
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // A route out of a non-loopback device, which a 127.0.0.1 source may not use (EINVAL).
    execFileSync('ip', ['-n', ns, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1']);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'v0', 'up']);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'v1', 'up']);
    execFileSync('ip', ['-n', ns, 'route', 'add', '192.0.2.0/24', 'dev', 'v0']);
  });

  afterAll(() => {
    spawnSync('ip', ['netns', 'del', ns]);
  });

  // Sends `n` datagrams of `len` bytes, sequence-numbered, from a fresh socket to `to` (b's port unless
  // given), then prints what b received and a's stats as one JSON line.
  const script = `
    import { openUdp } from './shared/udp/socket.ts';
    import { addressToBytes } from './shared/address.ts';
    const [to, rounds] = [process.argv[1], Number(process.argv[2])];
    const a = openUdp({ address: '127.0.0.1', port: 0 });
    const b = openUdp({ address: '127.0.0.1', port: 0 });
    const got = [];
    b.start((buf, lens, src, ports, count) => { for (let i = 0; i < count; i++) got.push([buf.readUInt32BE(i * b.stride), lens[i]]); });
    const n = 64, len = 1408, sent = [];
    for (let r = 0; r < rounds; r++) {
      const buf = Buffer.alloc(n * len), offsets = new Uint32Array(n), lengths = new Uint32Array(n).fill(len);
      const addrs = new Uint8Array(n * 16), ports = new Uint16Array(n).fill(b.localPort);
      for (let i = 0; i < n; i++) { offsets[i] = i * len; buf.writeUInt32BE(r * n + i, i * len); addressToBytes(to, addrs, i * 16); }
      sent.push(a.send(buf, offsets, lengths, addrs, ports, n));
    }
    const want = to === '127.0.0.1' ? n * rounds : 0;
    for (let i = 0; i < 300 && got.length < want; i++) await new Promise((r) => setTimeout(r, 10));
    console.log(JSON.stringify({ sent, got, tx: a.stats }));
    a.close();
    b.close();`;

  function run(mtu: number, to: string, rounds: number): { sent: number[]; got: number[][]; tx: Record<string, number | boolean> } {
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'mtu', String(mtu)]);
    const r = runNode(script, [to, String(rounds)], ['ip', 'netns', 'exec', ns]);
    expect(r.status, r.out).toBe(0);
    return JSON.parse(r.out.trim().split('\n').pop() ?? '') as { sent: number[]; got: number[][]; tx: Record<string, number | boolean> };
  }

  it('with a path MTU under 1500 it sends the run again one by one and keeps GSO off for the socket', () => {
    // 1408 + 28 > 1200: the kernel refuses the segment size; single datagrams are IP-fragmented instead.
    const r = run(1200, '127.0.0.1', 2);
    expect(r.sent).toEqual([64, 64]);
    expect(r.got).toEqual(Array.from({ length: 128 }, (_, i) => [i, 1408]));
    expect(r.tx).toMatchObject({ gso: false, gsoMessages: 0, txPackets: 128, sendErrors: 0 });
  });

  it('keeps GSO on when the datagrams would fail alone too, and counts every one of them', () => {
    // 127.0.0.1 may not be the source of a packet out of v0: EINVAL, for GSO or not.
    const r = run(65536, '192.0.2.1', 2);
    expect(r.sent).toEqual([0, 0]);
    expect(r.tx).toMatchObject({ gso: true, sendErrors: 128, lastSendErrno: 22 });
    const ok = run(65536, '127.0.0.1', 1);
    expect(ok.got.length).toBe(64);
    expect(ok.tx).toMatchObject({ gso: true, gsoMessages: 2 });
  });
});
