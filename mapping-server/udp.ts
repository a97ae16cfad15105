import { addressToBytes, bytesToAddress } from '../shared/address.ts';
import { openUdp, type UdpBatchSocket } from '../shared/udp/socket.ts';
import { SystemError } from '../shared/errors.ts';
import { MAX_DATAGRAM } from '../shared/wire/messages.ts';
import type { ControlSocket } from './sessions.ts';

/**
 * The RM's sockets: the project's batched UDP addon (shared/udp), not node:dgram.
 *
 * node:dgram costs one syscall and one JS callback per datagram each way; on this 2-vCPU box a Node
 * UDP echo with no work at all tops out at 40–45k round trips/s, under the 100k lookups/s target
 * whatever the RM does. Here:
 *
 *   1. the reader thread receives up to BATCH datagrams per recvmmsg; onBatch hands each one to the
 *      RM (onDatagram) as a view into the borrowed slot (valid only during the call: the RM copies
 *      what it keeps);
 *   2. every answer the RM sends while handling the batch is copied into the send arena, and the
 *      whole arena leaves in one sendmmsg at the end of the batch (or when it is full);
 *   3. a send outside a batch (a commit callback, a push retransmission) is queued the same way and
 *      flushed on setImmediate, so a burst of 1,000 pushes is one or a few sendmmsg calls too.
 *
 * Source addresses become strings for the rate limiter and sessions; the last one is remembered, so
 * a busy source costs no string per datagram.
 *
 * Nothing may throw out of the batch callback: the addon turns an exception there into a fatal one
 * (napi_fatal_exception), and it would also lose the rest of the batch. onDatagram is written not to
 * throw (the RM's dispatch catches per datagram); this file catches whatever still does, per
 * datagram and around each send, and hands it to onFault.
 */
/** buf is borrowed: valid only during the call (the RM copies what it keeps). */
export type OnDatagram = (buf: Buffer, address: string, port: number, socket: ControlSocket) => void;

/** Told what the socket caught at its edge (a throwing onDatagram or send); must not throw itself. */
export type OnFault = (e: unknown) => void;

/** How the RM opens a listening socket (tests may pass another through RmDeps.openSocket). */
export type OpenSocket = (address: string, port: number, onDatagram: OnDatagram, onFault: OnFault) => Promise<ControlSocket>;

/** One batched native socket per listen address (IPv6 sockets are IPv6-only so 0.0.0.0 and :: coexist). */
export const openUdpSocket: OpenSocket = async (address, port, onDatagram, onFault) => openControlSocket(address, port, onDatagram, onFault);

const BATCH = 64;
/** Datagrams queued before a flush is forced. */
const ARENA_SLOTS = 256;

export function openControlSocket(address: string, port: number, onDatagram: OnDatagram, onFault: OnFault): ControlSocket {
  let sock: UdpBatchSocket;
  try {
    sock = openUdp({ address, port, maxDatagram: MAX_DATAGRAM, batchSize: BATCH, slots: 8, sndbuf: 8 << 20, rcvbuf: 8 << 20 });
  } catch (e) {
    throw rmSocketError(e, address, port);
  }
  const cs = new BatchedControlSocket(sock, onFault);
  sock.start((buf, lens, srcAddrs, srcPorts, count) => cs.onBatch(onDatagram, buf, lens, srcAddrs, srcPorts, count));
  return cs;
}

/** The socket's hints speak of uplinks; say what to change in the RM's config instead. */
function rmSocketError(e: unknown, address: string, port: number): unknown {
  if (e instanceof SystemError && e.code === 'UDP_PORT_IN_USE') {
    return new SystemError('UDP_PORT_IN_USE', `cannot listen on ${address} port ${port}: in use`, 'is another Realm Manager running? change port or listen in the config');
  }
  if (e instanceof SystemError && e.code === 'UDP_ADDRESS_NOT_AVAILABLE') return new SystemError('UDP_ADDRESS_NOT_AVAILABLE', e.message, 'fix listen in the config');
  return e;
}

/**
 * Answers are queued into one arena and sent with one sendmmsg per received batch (or on the next
 * turn of the loop when sent from a timer). Hot path: onBatch and send allocate nothing per datagram.
 */
class BatchedControlSocket implements ControlSocket {
  readonly local: { readonly address: string; readonly port: number };
  private readonly arena = Buffer.allocUnsafeSlow(ARENA_SLOTS * MAX_DATAGRAM);
  private readonly offsets = new Uint32Array(ARENA_SLOTS);
  private readonly lengths = new Uint32Array(ARENA_SLOTS);
  private readonly dstAddrs = new Uint8Array(ARENA_SLOTS * 16);
  private readonly dstPorts = new Uint16Array(ARENA_SLOTS);
  private queued = 0;
  private inBatch = false;
  private flushScheduled = false;
  private closed = false;
  private oversizeAtClose = 0;
  // The last destination's bytes, so that answering one source many times converts its address once.
  private lastDst = '';
  private readonly lastDstBytes = new Uint8Array(16);
  // The last source's string, for the same reason on the way in.
  private readonly lastSrcBytes = new Uint8Array(16);
  private lastSrc = '';
  private readonly flushBound = (): void => this.flush();

  constructor(
    private readonly sock: UdpBatchSocket,
    private readonly onFault: OnFault,
  ) {
    this.local = { address: sock.localAddress, port: sock.localPort };
    for (let i = 0; i < ARENA_SLOTS; i++) this.offsets[i] = i * MAX_DATAGRAM;
  }

  send(buf: Uint8Array, dstPort: number, dstAddress: string, length = buf.length): void {
    if (this.closed || length > MAX_DATAGRAM) return;
    if (dstAddress !== this.lastDst) {
      addressToBytes(dstAddress, this.lastDstBytes, 0);
      this.lastDst = dstAddress;
    }
    const i = this.queued++;
    this.arena.set(length === buf.length ? buf : buf.subarray(0, length), this.offsets[i]);
    this.lengths[i] = length;
    this.dstAddrs.set(this.lastDstBytes, i * 16);
    this.dstPorts[i] = dstPort;
    if (this.queued === ARENA_SLOTS) this.flush();
    else if (!this.inBatch && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushBound);
    }
  }

  oversize(): number {
    return this.closed ? this.oversizeAtClose : this.sock.stats.rxTruncated;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.oversizeAtClose = this.sock.stats.rxTruncated;
    this.closed = true;
    this.sock.close();
  }

  /** The native batch callback: nothing may escape it (a throw there ends the process). */
  onBatch(onDatagram: OnDatagram, buf: Buffer, lens: Uint32Array, srcAddrs: Uint8Array, srcPorts: Uint16Array, count: number): void {
    this.inBatch = true;
    for (let i = 0; i < count; i++) {
      try {
        const a = i * 16;
        let same = this.lastSrc !== '';
        for (let j = 0; same && j < 16; j++) same = srcAddrs[a + j] === this.lastSrcBytes[j];
        if (!same) {
          for (let j = 0; j < 16; j++) this.lastSrcBytes[j] = srcAddrs[a + j];
          this.lastSrc = bytesToAddress(this.sock.family, srcAddrs, a);
        }
        const off = i * this.sock.stride;
        onDatagram(buf.subarray(off, off + lens[i]), this.lastSrc, srcPorts[i], this);
      } catch (e) {
        this.fault(e);
      }
    }
    this.inBatch = false;
    this.flush();
  }

  // Never throws. The queue is emptied before the send, so a send that throws loses its own batch
  // only, instead of failing again on every later flush.
  private flush(): void {
    this.flushScheduled = false;
    const n = this.queued;
    this.queued = 0;
    if (n === 0 || this.closed) return;
    try {
      // Counted by the addon (sendErrors) if the kernel refuses some: UDP, the client retransmits.
      this.sock.send(this.arena, this.offsets, this.lengths, this.dstAddrs, this.dstPorts, n);
    } catch (e) {
      this.fault(e);
    }
  }

  private fault(e: unknown): void {
    try {
      this.onFault(e);
    } catch {
      // Nothing is left to tell: the fault must not reach the addon either.
    }
  }
}
