import type { UdpBatchSocket } from '../../shared/udp/socket.ts';

/** A datagram a capturing socket was asked to send: the uplink, a copy of its bytes, the IPv4 destination. */
export interface Captured {
  uplink: number;
  data: Buffer;
  to: string;
}

/** A UdpBatchSocket that sends nothing: it copies every datagram into `log` and reports all sent. */
export function captureSocket(uplink: number, log: Captured[]): UdpBatchSocket {
  const s = {
    family: 4 as const,
    localAddress: '0.0.0.0',
    localPort: 4341,
    stride: 2048,
    start: () => undefined,
    send(buf: Buffer, offs: Uint32Array, lens: Uint32Array, addrs: Uint8Array, _ports: Uint16Array, count: number) {
      for (let i = 0; i < count; i++) log.push({ uplink, data: Buffer.from(buf.subarray(offs[i], offs[i] + lens[i])), to: Array.from(addrs.subarray(i * 16, i * 16 + 4)).join('.') });
      return count;
    },
    stats: { rxPackets: 0, rxBatches: 0, txPackets: 0, sendErrors: 0, lastSendErrno: 0, rxTruncated: 0, rxErrors: 0, gso: false, gsoMessages: 0, gro: false, groMessages: 0, callbackErrors: 0 },
    close: () => undefined,
  };
  return s as UdpBatchSocket;
}
