// MemoryTun: a TunDevice with no kernel behind it, for tests without root.
//
// 1. inject()/injectBatch() play the kernel's part: packets are copied into one slot laid out exactly
//    like the real device's (same tunLayout: headroom, stride, batchSize), and the handler is called
//    synchronously with (buf, lengths, count), at most batchSize packets per call. Like the real
//    device, a handler that throws is counted (callbackErrors) and the next batch still comes.
// 2. Packets injected before start() wait, as the kernel's queue would, and arrive on start().
//    Packets injected from inside the handler arrive as the next batch, after the handler returns.
// 3. write() checks packets as the kernel does (an IP version nibble of 4 or 6 after the vnet header in
//    offload mode, else EINVAL), keeps copies in `written`, and tells onWrite() listeners.
import { SystemError } from '../../shared/errors.ts';
import { tunLayout, VNET_HDR_SIZE, type TunBatchHandler, type TunDevice, type TunLayout, type TunOptions, type TunStats } from './tun.ts';

/** Defaults: name mem0, mtu 1400, no offload. */
export type MemoryTunOptions = Partial<TunOptions>;

const EINVAL = 22;

export class MemoryTun implements TunDevice {
  readonly name: string;
  readonly offload: boolean;
  /** Accepted and reported; the fake writes packets as they come (coalescing is the kernel device's). */
  readonly coalesce: boolean;
  readonly headroom: number;
  readonly stride: number;
  readonly layout: TunLayout;
  /** Copies of the packets written, in order (with the vnet header in offload mode). */
  readonly written: Buffer[] = [];
  private readonly slot: Buffer;
  private readonly lengths: Uint32Array;
  private readonly pending: Uint8Array[] = [];
  private readonly writeListeners = new Set<(packet: Buffer) => void>();
  private handler: TunBatchHandler | null = null;
  private delivering = false;
  private closed = false;
  private counts = { readPackets: 0, readBatches: 0, writePackets: 0, writeErrors: 0, lastWriteErrno: 0, callbackErrors: 0 };

  constructor(opts: MemoryTunOptions = {}) {
    const full: TunOptions = { name: 'mem0', mtu: 1400, offload: false, ...opts };
    this.layout = tunLayout(full);
    this.name = full.name;
    this.offload = full.offload;
    this.coalesce = !full.offload && full.coalesce === true;
    this.headroom = this.layout.headroom;
    this.stride = this.layout.stride;
    this.slot = Buffer.alloc(this.layout.batchSize * this.stride);
    this.lengths = new Uint32Array(this.layout.batchSize);
  }

  start(onBatch: TunBatchHandler): void {
    if (this.closed) throw new SystemError('TUN_FAILED', `TUN device ${this.name} is closed`, 'open a new device');
    if (this.handler !== null) throw new SystemError('TUN_FAILED', `TUN device ${this.name} is already started`, 'call start() once');
    this.handler = onBatch;
    this.deliver();
  }

  /** The kernel sends one packet into the device (include the vnet header in offload mode). */
  inject(packet: Uint8Array): void {
    this.injectBatch([packet]);
  }

  /** The kernel sends these packets; they arrive in batches of at most batchSize. */
  injectBatch(packets: readonly Uint8Array[]): void {
    if (this.closed) return; // the device is gone: the kernel has nowhere to send
    for (const p of packets) {
      // The real read() would truncate silently; a test that does this has a bug.
      if (p.length > this.layout.space) throw new RangeError(`packet of ${p.length} bytes is larger than the device's read space ${this.layout.space}`);
      this.pending.push(p);
    }
    this.deliver();
  }

  private deliver(): void {
    if (this.delivering) return; // the running loop below picks them up after the handler returns
    this.delivering = true;
    try {
      while (this.handler !== null && this.pending.length > 0) {
        const count = Math.min(this.pending.length, this.layout.batchSize);
        for (let i = 0; i < count; i++) {
          const p = this.pending[i];
          this.slot.set(p, i * this.stride + this.headroom);
          this.lengths[i] = p.length;
        }
        this.pending.splice(0, count);
        this.counts.readPackets += count;
        this.counts.readBatches++;
        try {
          this.handler(this.slot, this.lengths, count);
        } catch {
          this.counts.callbackErrors++; // as NativeTunDevice does
        }
      }
    } finally {
      this.delivering = false;
    }
  }

  write(buf: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    if (this.closed) return 0;
    // As the addon: what the arrays do not describe cannot be written, and is counted.
    const fit = Math.min(count, offsets.length, lengths.length);
    if (fit < count) {
      this.counts.writeErrors += count - fit;
      this.counts.lastWriteErrno = EINVAL;
      count = fit;
    }
    let written = 0;
    const ipAt = this.offload ? VNET_HDR_SIZE : 0;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      const len = lengths[i];
      const version = len > ipAt ? buf[off + ipAt] >> 4 : 0;
      if (off + len > buf.length || (version !== 4 && version !== 6)) {
        this.counts.writeErrors++;
        this.counts.lastWriteErrno = EINVAL;
        continue;
      }
      const copy = Buffer.from(buf.subarray(off, off + len));
      this.written.push(copy);
      written++;
      for (const listener of this.writeListeners) listener(copy);
    }
    this.counts.writePackets += written;
    return written;
  }

  /** Calls `listener` with each packet written from now on; returns a function that stops it. */
  onWrite(listener: (packet: Buffer) => void): () => void {
    this.writeListeners.add(listener);
    return () => this.writeListeners.delete(listener);
  }

  /** Resolves with the next packet written. */
  nextWrite(): Promise<Buffer> {
    return new Promise((resolve) => {
      const stop = this.onWrite((p) => {
        stop();
        resolve(p);
      });
    });
  }

  get stats(): TunStats {
    return { ...this.counts, readErrors: 0, lastReadErrno: 0, superPackets: 0, coalesced: 0, splitSupers: 0, splitSegments: 0, splitDropped: 0 };
  }

  close(): void {
    this.closed = true;
    this.handler = null;
    this.pending.length = 0;
  }
}
