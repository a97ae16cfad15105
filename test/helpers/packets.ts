import { hostIdBytes } from '../../shared/ids.ts';

/** A minimal IPv6 packet (next header 17 = UDP, checksum not computed) from one host ID to another. */
export function ipv6Packet(src: string, dst: string, payload: Uint8Array | number = 8): Buffer {
  const body = typeof payload === 'number' ? Buffer.alloc(payload, 0xab) : Buffer.from(payload);
  const p = Buffer.alloc(40 + body.length);
  p[0] = 0x60;
  p.writeUInt16BE(body.length, 4);
  p[6] = 17;
  p[7] = 64;
  p.set(hostIdBytes(src), 8);
  p.set(hostIdBytes(dst), 24);
  p.set(body, 40);
  return p;
}
