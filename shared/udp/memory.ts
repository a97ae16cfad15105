// MemoryNet: an in-memory UDP network of UdpBatchSockets, for integration tests without root.
//
// 1. net.open({address, port}) binds a fake socket with the real one's rules: the same options and slot
//    layout (udpLayout), ephemeral ports for port 0, UDP_PORT_IN_USE for a taken address:port (a
//    wildcard address 0.0.0.0 or :: overlaps every address of its family), UDP_ADDRESS_NOT_AVAILABLE
//    for an address outside `addresses` when that list is given.
// 2. send() checks each datagram as the kernel would (bounds → EINVAL, over 65507/65527 bytes →
//    EMSGSIZE, counted in sendErrors), then copies it into the receiving socket's queue. Like an
//    unconnected socket, the sender is never told that nobody listens or that the path is blackholed.
// 3. Delivery is asynchronous, as over a real network: each receiving socket flushes its queue on
//    setImmediate, in batches of at most batchSize laid out like the real socket's slot, with the
//    sender's address and port as the source (a socket bound to a wildcard sends from the wildcard).
//    `await net.idle()` waits until every queue is empty. Like the real socket, a handler that throws
//    is counted (callbackErrors) and the next batch still comes.
import { addressToBytes, bytesToAddress } from '../address.ts';
import { SystemError } from '../errors.ts';
import {
  udpError,
  udpLayout,
  type UdpBatchHandler,
  type UdpBatchSocket,
  type UdpLayout,
  type UdpOptions,
  type UdpStats,
} from './socket.ts';

export interface MemoryNetOptions {
  /** The addresses sockets may bind; any address when omitted. */
  addresses?: readonly string[];
  /** Datagrams a socket holds before it is read, like its receive buffer; default 4096. Overflow is dropped and counted. */
  queueLimit?: number;
}

export interface MemoryNetStats {
  readonly delivered: number;
  /** Dropped because the source or destination address is blackholed. */
  readonly blackholed: number;
  /** Sent to an address:port nobody had open (a real host would answer ICMP port unreachable). */
  readonly noListener: number;
  /** Dropped because the receiving socket's queue was full. */
  readonly overflow: number;
  /** Dropped because they were larger than the receiver's maxDatagram. */
  readonly truncated: number;
}

const EINVAL = 22;
const EADDRINUSE = 98;
const EADDRNOTAVAIL = 99;
const EMSGSIZE = 90;
const MAX_PAYLOAD = { 4: 65507, 6: 65527 } as const; // 65535 minus the IPv4/IPv6 and UDP headers
const WILDCARD = { 4: '0.0.0.0', 6: '::' } as const;
const FIRST_EPHEMERAL = 49152;

export interface TappedDatagram {
  readonly data: Buffer;
  readonly from: string;
  readonly fromPort: number;
  readonly to: string;
  readonly toPort: number;
}

interface Queued {
  data: Buffer;
  src: Uint8Array;
  srcPort: number;
}

export class MemoryNet {
  private readonly sockets = new Map<string, MemoryUdpSocket>();
  private readonly blackholes = new Set<string>();
  private readonly allowed: Set<string> | null;
  private readonly queueLimit: number;
  private readonly scheduled = new Set<MemoryUdpSocket>();
  private nextPort = FIRST_EPHEMERAL;
  private counts = { delivered: 0, blackholed: 0, noListener: 0, overflow: 0, truncated: 0 };

  constructor(opts: MemoryNetOptions = {}) {
    this.allowed = opts.addresses ? new Set(opts.addresses.map(canonical)) : null;
    this.queueLimit = opts.queueLimit ?? 4096;
  }

  /** Binds a fake socket; throws the same SystemErrors as openUdp. */
  open(opts: UdpOptions): MemoryUdpSocket {
    const layout = udpLayout(opts);
    const bytes = new Uint8Array(16);
    const family = addressToBytes(opts.address, bytes, 0);
    const address = bytesToAddress(family, bytes, 0);
    if (this.allowed && address !== WILDCARD[family] && !this.allowed.has(address)) {
      throw udpError(EADDRNOTAVAIL, 'bind', opts.address, opts.port);
    }
    const port = opts.port === 0 ? this.ephemeralPort(family, address) : opts.port;
    if (this.taken(family, address, port)) throw udpError(EADDRINUSE, 'bind', opts.address, opts.port);
    const socket = new MemoryUdpSocket(this, family, address, bytes, port, layout);
    this.sockets.set(key(family, address, port), socket);
    return socket;
  }

  /** Datagrams from or to `address` vanish from now on, silently (a blackholed path). */
  blackhole(address: string): void {
    this.blackholes.add(canonical(address));
  }

  restore(address: string): void {
    this.blackholes.delete(canonical(address));
  }

  /** Resolves once every started socket's queue is delivered, including what handlers sent meanwhile. */
  async idle(): Promise<void> {
    // Bounded: two handlers that answer each other forever would otherwise never settle.
    for (let i = 0; i < 10_000 && this.scheduled.size > 0; i++) await new Promise<void>((r) => setImmediate(r));
  }

  get stats(): MemoryNetStats {
    return { ...this.counts };
  }

  private readonly taps: ((d: TappedDatagram) => void)[] = [];

  /** An on-path observer: sees a copy of every datagram sent (tests capture traffic with it). */
  tap(cb: (d: TappedDatagram) => void): void {
    this.taps.push(cb);
  }

  /** @internal one datagram from `from`, already checked for size and bounds. */
  route(from: MemoryUdpSocket, data: Buffer, dst: Uint8Array, dstOffset: number, dstPort: number): void {
    const family = from.family;
    const dstAddress = bytesToAddress(family, dst, dstOffset);
    for (const t of this.taps) t({ data: Buffer.from(data), from: from.localAddress, fromPort: from.localPort, to: dstAddress, toPort: dstPort });
    if (this.blackholes.has(dstAddress) || this.blackholes.has(from.localAddress)) {
      this.counts.blackholed++;
      return;
    }
    const to = this.sockets.get(key(family, dstAddress, dstPort)) ?? this.sockets.get(key(family, WILDCARD[family], dstPort));
    if (to === undefined) {
      this.counts.noListener++;
      return;
    }
    if (data.length > to.layout.maxDatagram) {
      this.counts.truncated++;
      to.countTruncated();
      return;
    }
    if (to.queue.length >= this.queueLimit) {
      this.counts.overflow++;
      return;
    }
    to.queue.push({ data: Buffer.from(data), src: from.addressBytes, srcPort: from.localPort });
    this.counts.delivered++;
    this.schedule(to);
  }

  /** @internal */
  schedule(socket: MemoryUdpSocket): void {
    if (!socket.started || this.scheduled.has(socket)) return;
    this.scheduled.add(socket);
    setImmediate(() => {
      this.scheduled.delete(socket);
      socket.flush();
    });
  }

  /** @internal */
  unbind(socket: MemoryUdpSocket): void {
    this.sockets.delete(key(socket.family, socket.localAddress, socket.localPort));
  }

  private taken(family: 4 | 6, address: string, port: number): boolean {
    if (this.sockets.has(key(family, address, port))) return true;
    if (address === WILDCARD[family]) {
      for (const s of this.sockets.values()) if (s.family === family && s.localPort === port) return true;
      return false;
    }
    return this.sockets.has(key(family, WILDCARD[family], port));
  }

  private ephemeralPort(family: 4 | 6, address: string): number {
    for (let tries = 0; tries < 65536 - FIRST_EPHEMERAL; tries++) {
      const port = this.nextPort;
      this.nextPort = port === 65535 ? FIRST_EPHEMERAL : port + 1;
      if (!this.taken(family, address, port)) return port;
    }
    throw udpError(EADDRINUSE, 'bind', address, 0);
  }
}

export class MemoryUdpSocket implements UdpBatchSocket {
  readonly stride: number;
  /** @internal */
  readonly queue: Queued[] = [];
  private readonly slot: Buffer;
  private readonly lengths: Uint32Array;
  private readonly srcAddrs: Uint8Array;
  private readonly srcPorts: Uint16Array;
  private handler: UdpBatchHandler | null = null;
  private closed = false;
  // No offloads in memory: each datagram is its own message, so gso/gro read false whatever the options.
  private counts = { rxPackets: 0, rxBatches: 0, txPackets: 0, sendErrors: 0, lastSendErrno: 0, rxTruncated: 0, rxErrors: 0, gso: false, gsoMessages: 0, gro: false, groMessages: 0, callbackErrors: 0 };

  constructor(
    private readonly net: MemoryNet,
    readonly family: 4 | 6,
    readonly localAddress: string,
    /** @internal the local address in the 16-byte convention: the source of what this socket sends */
    readonly addressBytes: Uint8Array,
    readonly localPort: number,
    /** @internal */
    readonly layout: UdpLayout,
  ) {
    this.stride = layout.stride;
    this.slot = Buffer.alloc(layout.batchSize * layout.stride);
    this.lengths = new Uint32Array(layout.batchSize);
    this.srcAddrs = new Uint8Array(layout.batchSize * 16);
    this.srcPorts = new Uint16Array(layout.batchSize);
  }

  /** @internal */
  get started(): boolean {
    return this.handler !== null;
  }

  start(onBatch: UdpBatchHandler): void {
    const where = `UDP ${this.localAddress}:${this.localPort}`;
    if (this.closed) throw new SystemError('UDP_FAILED', `${where} is closed`, 'open a new socket');
    if (this.handler !== null) throw new SystemError('UDP_FAILED', `${where} is already started`, 'call start() once');
    this.handler = onBatch;
    if (this.queue.length > 0) this.net.schedule(this);
  }

  send(buf: Buffer, offsets: Uint32Array, lengths: Uint32Array, dstAddrs: Uint8Array, dstPorts: Uint16Array, count: number): number {
    if (this.closed) return 0;
    // As the addon: what the arrays do not describe cannot be sent, and is counted.
    const fit = Math.min(count, offsets.length, lengths.length, dstPorts.length, Math.floor(dstAddrs.length / 16));
    if (fit < count) {
      this.counts.sendErrors += count - fit;
      this.counts.lastSendErrno = EINVAL;
      count = fit;
    }
    let sent = 0;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      const len = lengths[i];
      if (off + len > buf.length) {
        this.sendError(EINVAL);
      } else if (len > MAX_PAYLOAD[this.family]) {
        this.sendError(EMSGSIZE);
      } else {
        this.net.route(this, buf.subarray(off, off + len), dstAddrs, i * 16, dstPorts[i]);
        sent++;
      }
    }
    this.counts.txPackets += sent;
    return sent;
  }

  private sendError(errno: number): void {
    this.counts.sendErrors++;
    this.counts.lastSendErrno = errno;
  }

  /** @internal */
  countTruncated(): void {
    this.counts.rxTruncated++;
  }

  /** @internal delivers the whole queue in batches, as the reader thread would. */
  flush(): void {
    const batchSize = this.layout.batchSize;
    while (this.handler !== null && this.queue.length > 0) {
      const count = Math.min(batchSize, this.queue.length);
      for (let i = 0; i < count; i++) {
        const d = this.queue[i];
        this.slot.set(d.data, i * this.stride);
        this.lengths[i] = d.data.length;
        this.srcAddrs.set(d.src, i * 16);
        this.srcPorts[i] = d.srcPort;
      }
      this.queue.splice(0, count);
      this.counts.rxPackets += count;
      this.counts.rxBatches++;
      try {
        this.handler(this.slot, this.lengths, this.srcAddrs, this.srcPorts, count);
      } catch {
        this.counts.callbackErrors++; // as NativeUdpSocket does
      }
    }
  }

  get stats(): UdpStats {
    return { ...this.counts };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handler = null;
    this.queue.length = 0;
    this.net.unbind(this);
  }
}

function key(family: 4 | 6, address: string, port: number): string {
  return `${family}|${address}|${port}`;
}

function canonical(address: string): string {
  const bytes = new Uint8Array(16);
  return bytesToAddress(addressToBytes(address, bytes, 0), bytes, 0);
}
