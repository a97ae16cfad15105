// The outside edge: one unconnected UDP socket per uplink, received and sent in batches through the
// realmnet_udp addon (native/udp.cc): recvmmsg on a reader thread, sendmmsg on the JS thread.
//
// 1. openUdp() binds the socket synchronously and returns a UdpBatchSocket; nothing is received yet.
// 2. start(onBatch) allocates the slot arrays once (data, lengths, 16-byte sources, ports) and starts
//    the reader thread. Each batch arrives on the JS thread in the same slot objects every time, so
//    nothing is allocated per datagram or per batch.
// 3. The slot goes back to the reader when onBatch returns: everything is borrowed, copy what you keep.
//    What onBatch throws is caught and counted (callbackErrors); the next batch comes as usual.
// 4. send() hands a batch to sendmmsg; a full send buffer blocks it up to 20 ms (backpressure), then the
//    rest of the batch is dropped and counted. Per-datagram errors are counted, never thrown.
//    UDP GSO and GRO stay inside the addon: runs of same-size datagrams to one destination cross the
//    kernel as one message, and coalesced receives are split back, so callers see datagrams only.
// 5. close() stops the thread and closes the socket.
import { canonicalAddress } from '../address.ts';
import { SystemError } from '../errors.ts';
import { errnoName, isNativeErrnoError, loadNative } from '../native.ts';

export interface UdpOptions {
  /** Local address to bind (IPv4 or IPv6 literal, IPv6 may carry a %zone); the family follows from it. */
  address: string;
  /** 0 = ephemeral. */
  port: number;
  /** Per-datagram receive space, default 65535. A larger datagram is dropped and counted in rxTruncated. */
  maxDatagram?: number;
  /** Datagrams per received batch, default 64. */
  batchSize?: number;
  /** Batch buffers in flight between the reader thread and JS, default 4. */
  slots?: number;
  /** Default 4 MiB each (SO_SNDBUFFORCE/SO_RCVBUFFORCE as root, else capped by net.core.[wr]mem_max). */
  sndbuf?: number;
  rcvbuf?: number;
  /** UDP generic segmentation offload on send (Linux >= 4.18), default true. It is switched off for
   *  good, on its own, if the kernel refuses it on this socket's route. */
  gso?: boolean;
  /** UDP generic receive offload (Linux >= 5.0), default true. */
  gro?: boolean;
}

/** borrowed, like TunBatchHandler. Datagram i is buf[i*stride, i*stride+lengths[i]).
 *  Its source is srcAddrs[i*16 .. i*16+16) (IPv4: first 4 bytes, rest zero; IPv6: 16 bytes) and srcPorts[i]. */
export type UdpBatchHandler = (buf: Buffer, lengths: Uint32Array, srcAddrs: Uint8Array, srcPorts: Uint16Array, count: number) => void;

export interface UdpStats {
  readonly rxPackets: number;
  readonly rxBatches: number;
  readonly txPackets: number;
  /** Datagrams not sent: refused by the kernel (ENETUNREACH, EPERM, EMSGSIZE...), out of the buffer's
   *  bounds (EINVAL), or dropped after the send buffer stayed full for 20 ms (EAGAIN). */
  readonly sendErrors: number;
  /** The errno behind the last send error, for logs; 0 if none. */
  readonly lastSendErrno: number;
  /** Datagrams larger than maxDatagram, dropped. */
  readonly rxTruncated: number;
  readonly rxErrors: number;
  /** Whether send() coalesces datagrams with UDP GSO now: false if switched off, unsupported by the
   *  kernel, or refused on this socket's route (then it stays off). */
  readonly gso: boolean;
  /** GSO messages sent (each carried 2..64 datagrams, all counted in txPackets). */
  readonly gsoMessages: number;
  /** Whether the socket receives with UDP GRO. */
  readonly gro: boolean;
  /** Coalesced messages received and split (their datagrams are counted in rxPackets). */
  readonly groMessages: number;
  /** Batches whose handler threw: the exception was swallowed and the next batch delivered as usual. */
  readonly callbackErrors: number;
}

export interface UdpBatchSocket {
  readonly family: 4 | 6;
  readonly localAddress: string;
  /** The real bound port (useful with 0). */
  readonly localPort: number;
  readonly stride: number;
  /** Starts receiving. Once started, the socket keeps the event loop alive (like node:dgram) until close().
   *  An exception from onBatch is caught and counted in `callbackErrors`, never rethrown: it must not
   *  take the process down. */
  start(onBatch: UdpBatchHandler): void;
  /** Synchronous batch send: datagram i = buf[offsets[i], +lengths[i]) to dstAddrs[i*16..] (16 bytes
   *  each, as shared/address.ts writes them) port dstPorts[i]. Returns how many the kernel took. Never
   *  throws for a datagram: a failed one is skipped and counted in sendErrors. count is not bounded by
   *  batchSize (that sizes receives only); a count beyond the end of one of the arrays sends what they
   *  describe and counts the rest in sendErrors (EINVAL). */
  send(buf: Buffer, offsets: Uint32Array, lengths: Uint32Array, dstAddrs: Uint8Array, dstPorts: Uint16Array, count: number): number;
  readonly stats: UdpStats;
  /** Idempotent. */
  close(): void;
}

const MAX_UDP_PAYLOAD = 65535;
const DEFAULT_SOCKET_BUFFER = 4 * 1024 * 1024;

export interface UdpLayout {
  readonly maxDatagram: number;
  readonly stride: number;
  readonly batchSize: number;
  readonly slots: number;
}

/** The slot layout both the real socket and MemoryNet use; throws UDP_FAILED on bad options. */
export function udpLayout(opts: UdpOptions): UdpLayout {
  checkInt('port', opts.port, 0, 65535);
  const maxDatagram = opts.maxDatagram ?? MAX_UDP_PAYLOAD;
  checkInt('maxDatagram', maxDatagram, 1, MAX_UDP_PAYLOAD);
  const batchSize = opts.batchSize ?? 64;
  checkInt('batchSize', batchSize, 1, 1024);
  const slots = opts.slots ?? 4;
  checkInt('slots', slots, 1, 64);
  return { maxDatagram, stride: Math.ceil(maxDatagram / 8) * 8, batchSize, slots };
}

function checkInt(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new SystemError('UDP_FAILED', `UDP socket option ${what} ${value} is out of range ${min}..${max}`, 'fix the uplink options in the config');
  }
}

/** errno from the addon → typed error. Pure, so every branch is unit-tested. */
export function udpError(errno: number, syscall: string, address: string, port: number): SystemError {
  const code = errnoName(errno);
  if (syscall === 'getaddrinfo') {
    return new SystemError('UDP_FAILED', `"${address}" is not an IPv4 or IPv6 address`, 'write the uplink address as a literal such as 192.0.2.1 or 2001:db8::1');
  }
  if (code === 'EADDRINUSE') {
    return new SystemError('UDP_PORT_IN_USE', `another process listens on UDP ${port} on ${address}`, 'stop it or set listenPort to a free port');
  }
  if (code === 'EADDRNOTAVAIL') {
    return new SystemError('UDP_ADDRESS_NOT_AVAILABLE', `${address} is not an address of this machine, so UDP ${port} cannot be bound on it`, 'add the address to an interface (ip addr add) or fix the uplink address; a new IPv6 address is usable only after duplicate address detection (or add it with nodad)');
  }
  if (code === 'EAFNOSUPPORT') {
    return new SystemError('UDP_ADDRESS_NOT_AVAILABLE', `cannot bind ${address}: IPv6 is disabled on this machine`, 'enable IPv6 (sysctl net.ipv6.conf.all.disable_ipv6=0) or use an IPv4 uplink address');
  }
  if (code === 'EACCES' && syscall === 'bind') {
    return new SystemError('UDP_FAILED', `no permission to bind UDP ${port} on ${address}`, 'use a port >= 1024 or run as root (or with CAP_NET_BIND_SERVICE)');
  }
  return new SystemError('UDP_FAILED', `opening UDP ${address}:${port} failed: ${syscall} gave ${code}`, 'check the uplink address and port in the config');
}

/** Opens and binds synchronously (the syscalls do not block); receiving starts with start(). */
export function openUdp(opts: UdpOptions): UdpBatchSocket {
  const layout = udpLayout(opts);
  const sndbuf = opts.sndbuf ?? DEFAULT_SOCKET_BUFFER;
  const rcvbuf = opts.rcvbuf ?? DEFAULT_SOCKET_BUFFER;
  checkInt('sndbuf', sndbuf, 4096, 2 ** 30);
  checkInt('rcvbuf', rcvbuf, 4096, 2 ** 30);
  const handle = new (binding().Udp)();
  let bound: { family: 4 | 6; port: number };
  try {
    bound = handle.open(opts.address, opts.port, sndbuf, rcvbuf, opts.gso ?? true, opts.gro ?? true);
  } catch (e) {
    if (!isNativeErrnoError(e)) throw e;
    throw udpError(e.errno, e.syscall, opts.address, opts.port);
  }
  return new NativeUdpSocket(handle, bound.family, canonicalAddress(opts.address), bound.port, layout);
}

/** The addon's surface (native/udp.cc). */
interface NativeUdp {
  open(address: string, port: number, sndbuf: number, rcvbuf: number, gso: boolean, gro: boolean): { family: 4 | 6; port: number };
  start(bufs: Buffer[], lens: Uint32Array[], addrs: Uint8Array[], ports: Uint16Array[], stride: number, maxDatagram: number, onBatch: (slot: number, count: number) => void): void;
  send(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, dstAddrs: Uint8Array, dstPorts: Uint16Array, count: number): number;
  stats(out: Float64Array): void;
  close(): void;
}
interface UdpBinding {
  Udp: new () => NativeUdp;
}

function binding(): UdpBinding {
  return loadNative('realmnet_udp') as UdpBinding;
}

class NativeUdpSocket implements UdpBatchSocket {
  readonly stride: number;
  private readonly slotBufs: Buffer[] = [];
  private readonly slotLens: Uint32Array[] = [];
  private readonly slotAddrs: Uint8Array[] = [];
  private readonly slotPorts: Uint16Array[] = [];
  private readonly counters = new Float64Array(12);
  private handler: UdpBatchHandler | null = null;
  private closed = false;
  private callbackErrors = 0;

  constructor(
    private readonly handle: NativeUdp,
    readonly family: 4 | 6,
    readonly localAddress: string,
    readonly localPort: number,
    private readonly layout: UdpLayout,
  ) {
    this.stride = layout.stride;
  }

  start(onBatch: UdpBatchHandler): void {
    const where = `UDP ${this.localAddress}:${this.localPort}`;
    if (this.closed) throw new SystemError('UDP_FAILED', `${where} is closed`, 'open a new socket');
    if (this.handler !== null) throw new SystemError('UDP_FAILED', `${where} is already started`, 'call start() once');
    const { batchSize, slots, stride, maxDatagram } = this.layout;
    for (let i = 0; i < slots; i++) {
      // allocUnsafeSlow: a dedicated backing store the reader thread may write into while JS runs.
      this.slotBufs.push(Buffer.allocUnsafeSlow(batchSize * stride));
      this.slotLens.push(new Uint32Array(batchSize));
      this.slotAddrs.push(new Uint8Array(batchSize * 16));
      this.slotPorts.push(new Uint16Array(batchSize));
    }
    this.handler = onBatch;
    this.handle.start(this.slotBufs, this.slotLens, this.slotAddrs, this.slotPorts, stride, maxDatagram, this.dispatch);
  }

  // One function for the socket's life: the addon calls it once per batch.
  private readonly dispatch = (slot: number, count: number): void => {
    const handler = this.handler;
    if (handler === null) return;
    try {
      handler(this.slotBufs[slot], this.slotLens[slot], this.slotAddrs[slot], this.slotPorts[slot], count);
    } catch {
      // A throw here is a bug in the handler, but an exception escaping a native callback kills the
      // process, and with it every host's traffic: lose this batch, count it, and go on.
      this.callbackErrors++;
    }
  };

  send(buf: Buffer, offsets: Uint32Array, lengths: Uint32Array, dstAddrs: Uint8Array, dstPorts: Uint16Array, count: number): number {
    return this.handle.send(buf, offsets, lengths, dstAddrs, dstPorts, count);
  }

  get stats(): UdpStats {
    const c = this.counters;
    this.handle.stats(c);
    return {
      rxPackets: c[0],
      rxBatches: c[1],
      txPackets: c[2],
      sendErrors: c[3],
      lastSendErrno: c[4],
      rxErrors: c[5],
      rxTruncated: c[6],
      gso: c[8] === 1,
      gsoMessages: c[9],
      gro: c[10] === 1,
      groMessages: c[11],
      callbackErrors: this.callbackErrors,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handle.close();
    this.handler = null;
  }
}
