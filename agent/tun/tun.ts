// The inside edge: a Linux TUN device read and written in batches through the realmnet_tun addon
// (native/tun.cc). It knows nothing of the overlay: packets in, packets out.
//
// 1. openTun() checks the options, opens the device and returns a TunDevice; nothing is read yet.
// 2. start(onBatch) allocates the slot buffers once (slots x batchSize x stride) and starts the
//    reader thread. Each batch arrives on the JS thread as (slot buffer, slot lengths, count): the
//    same Buffer and Uint32Array objects every time that slot comes round, so nothing is allocated
//    per packet or per batch.
// 3. The slot goes back to the reader when onBatch returns: the buffer is borrowed, copy what you keep.
//    What onBatch throws is caught and counted (callbackErrors); the next batch comes as usual.
// 4. write() hands a batch to the kernel synchronously.
// 5. close() stops the thread and closes the fd; the kernel removes the device.
import { existsSync } from 'node:fs';
import { SystemError } from '../../shared/errors.ts';
import { errnoName, isNativeErrnoError, loadNative } from '../../shared/native.ts';

export interface TunOptions {
  /** e.g. 'rn0'; at most 15 characters. A name with %d lets the kernel pick the number. */
  name: string;
  /** The agent sets the MTU itself with `ip link`; here it sizes the read buffers. */
  mtu: number;
  /** IFF_VNET_HDR + TUNSETOFFLOAD(TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6): every packet read or written
   *  starts with the 10-byte struct virtio_net_hdr, and reads take up to 65535+10 bytes. */
  offload: boolean;
  /**
   * MTU mode only: merge consecutive TCP segments of one flow into one GSO super-packet when writing
   * (receive-side coalescing, as Linux GRO), so the kernel takes one packet instead of tens. Reads
   * and the packets handed to write() stay plain. Default false here; the agent turns it on.
   */
  coalesce?: boolean;
  /** Packets per batch, default 64. */
  batchSize?: number;
  /** Batch buffers in flight between the reader thread and JS, default 4. */
  slots?: number;
  /** Free bytes before each read packet for an encapsulation header, default 32 (>= 32, multiple of 8). */
  headroom?: number;
  /** Free bytes after the largest packet, for a trailer written in place (an AEAD tag), default 0. */
  tailroom?: number;
}

/** Called on the JS thread. borrowed: buf is refilled after the handler returns; copy what you keep.
 *  Packet i occupies buf[i*stride + headroom, i*stride + headroom + lengths[i]). The `headroom` bytes
 *  before each packet are free for the caller to write an encapsulation header in place. */
export type TunBatchHandler = (buf: Buffer, lengths: Uint32Array, count: number) => void;

export interface TunStats {
  readonly readPackets: number;
  readonly readBatches: number;
  readonly writePackets: number;
  /** Packets the kernel refused (EINVAL for a non-IP packet, EIO...) or out of the buffer's bounds. */
  readonly writeErrors: number;
  readonly readErrors: number;
  readonly lastReadErrno: number;
  readonly lastWriteErrno: number;
  /** Batches whose handler threw: the exception was swallowed and the next batch delivered as usual. */
  readonly callbackErrors: number;
  /** Coalescing: super-packets written, and the packets merged into them. */
  readonly superPackets: number;
  readonly coalesced: number;
  /** Coalescing: TSO super-packets the kernel handed over, the segments cut from them, reads dropped (not TCP/IPv6). */
  readonly splitSupers: number;
  readonly splitSegments: number;
  readonly splitDropped: number;
}

export interface TunDevice {
  /** The name the kernel actually gave. */
  readonly name: string;
  readonly offload: boolean;
  /** Writes merge TCP segments into super-packets (TunOptions.coalesce). */
  readonly coalesce: boolean;
  /** >= 32, multiple of 8. */
  readonly headroom: number;
  readonly stride: number;
  /** Starts the reader thread. Once started, the device keeps the event loop alive (like a
   *  node:dgram socket) until close(). An exception from onBatch is caught and counted in
   *  `callbackErrors`, never rethrown: it must not take the process down. */
  start(onBatch: TunBatchHandler): void;
  /** Synchronous batch write: packet i is buf[offsets[i], offsets[i]+lengths[i]). Returns how many were
   *  written; a packet the kernel refuses (EINVAL, EIO) is skipped and counted in `writeErrors`, EAGAIN
   *  stops the batch. In offload mode each packet starts with a virtio_net_hdr (zeros = no offload).
   *  count is not bounded by batchSize (that sizes reads only). Never throws: a count beyond the end of
   *  offsets or lengths writes what they describe and counts the rest in `writeErrors` (EINVAL). */
  write(buf: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  readonly stats: TunStats;
  /** Stops the thread, closes the fd (the kernel removes the device). Idempotent. */
  close(): void;
}

export const VNET_HDR_SIZE = 10;
const MAX_IFNAME = 15; // IFNAMSIZ - 1
const MAX_PACKET = 65535;

export interface TunLayout {
  readonly headroom: number;
  /** Bytes read() may fill per packet: the MTU, or 65535 + the vnet header with offload. */
  readonly space: number;
  readonly stride: number;
  readonly batchSize: number;
  readonly slots: number;
}

/** The slot layout both the real device and MemoryTun use; throws TUN_FAILED on bad options. */
export function tunLayout(opts: TunOptions): TunLayout {
  checkInt('tun.mtu', opts.mtu, 68, MAX_PACKET);
  const headroom = opts.headroom ?? 32;
  checkInt('tun.headroom', headroom, 32, 4096);
  if (headroom % 8 !== 0) throw optionError(`tun.headroom ${headroom} is not a multiple of 8`);
  const batchSize = opts.batchSize ?? 64;
  checkInt('tun.batchSize', batchSize, 1, 1024);
  const slots = opts.slots ?? 4;
  checkInt('tun.slots', slots, 1, 64);
  // A read buffer smaller than the largest packet truncates silently, so size it from the MTU.
  const space = opts.offload ? MAX_PACKET + VNET_HDR_SIZE : opts.mtu;
  const tailroom = opts.tailroom ?? 0;
  checkInt('tun.tailroom', tailroom, 0, 4096);
  const stride = Math.ceil((headroom + space + tailroom) / 8) * 8;
  return { headroom, space, stride, batchSize, slots };
}

function checkInt(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw optionError(`${what} ${value} is out of range ${min}..${max}`);
  }
}

function optionError(message: string): SystemError {
  return new SystemError('TUN_FAILED', message, 'fix the tun options in the config');
}

/** errno from the addon → typed error. Pure, so every branch is unit-tested without root. */
export function tunError(errno: number, syscall: string, name: string, nameExists: boolean): SystemError {
  const code = errnoName(errno);
  const permission = code === 'EPERM' || code === 'EACCES';
  const permissionHint = 'run as root or give the process CAP_NET_ADMIN';
  if (syscall === 'open /dev/net/tun') {
    if (permission) return new SystemError('TUN_NO_PERMISSION', `no permission to open /dev/net/tun (${code})`, permissionHint);
    if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENXIO') {
      return new SystemError('TUN_NO_DEVICE', `the TUN driver is not available: /dev/net/tun gives ${code}`, 'load the tun module: modprobe tun (in a container, pass --device /dev/net/tun)');
    }
  }
  if (syscall === 'TUNSETIFF') {
    if (permission) return new SystemError('TUN_NO_PERMISSION', `no permission to create TUN device ${name} (${code})`, permissionHint);
    if (code === 'EBUSY') {
      return new SystemError('TUN_NAME_TAKEN', `TUN device ${name} is already open in another process`, 'choose another tun.name in the config or stop the program that holds it');
    }
    // The kernel answers EINVAL when the name belongs to a device that is not a TUN (a veth, lo...).
    if (code === 'EINVAL' && nameExists) {
      return new SystemError('TUN_NAME_TAKEN', `a network device named ${name} exists and is not a TUN device`, 'choose another tun.name in the config or remove that device');
    }
  }
  if (syscall === 'TUNSETOFFLOAD' || syscall === 'TUNSETVNETHDRSZ') {
    return new SystemError('TUN_FAILED', `the kernel refused TUN offload for ${name} (${syscall}: ${code})`, 'set tun.offload to false in the config');
  }
  return new SystemError('TUN_FAILED', `opening TUN device ${name} failed: ${syscall} gave ${code}`, 'check the kernel log (dmesg) and that the tun module works');
}

/** Opens the device; reading starts with start(). Throws SystemError TUN_* or NATIVE_NOT_BUILT. */
export function openTun(opts: TunOptions): TunDevice {
  const layout = tunLayout(opts);
  if (opts.name.length === 0 || opts.name.length > MAX_IFNAME || /[\s/:]/.test(opts.name)) {
    throw new SystemError('TUN_FAILED', `"${opts.name}" is not a valid interface name`, `choose a tun.name of 1 to ${MAX_IFNAME} characters without spaces, "/" or ":"`);
  }
  const handle = new (binding().Tun)();
  let name: string;
  try {
    name = handle.open(opts.name, opts.offload, !opts.offload && opts.coalesce === true);
  } catch (e) {
    if (!isNativeErrnoError(e)) throw e;
    throw tunError(e.errno, e.syscall, opts.name, existsSync(`/sys/class/net/${opts.name}`));
  }
  return new NativeTunDevice(handle, name, opts.offload, !opts.offload && opts.coalesce === true, layout);
}

/** The addon's surface (native/tun.cc). */
interface NativeTun {
  open(name: string, offload: boolean, coalesce: boolean): string;
  start(bufs: Buffer[], lens: Uint32Array[], stride: number, headroom: number, space: number, onBatch: (slot: number, count: number) => void): void;
  write(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  stats(out: Float64Array): void;
  close(): void;
}
interface TunBinding {
  Tun: new () => NativeTun;
  coalesceForTest(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): [number, number, Buffer | null][];
  splitForTest(frame: Uint8Array): Buffer[] | null;
}

function binding(): TunBinding {
  return loadNative('realmnet_tun') as TunBinding;
}

/**
 * What a coalescing write would emit for these packets, without a device (native/coalesce.h): per
 * run, its first packet, the packet after its last, and the super-packet (virtio header + packet)
 * when the run merged more than one. For tests.
 */
export function coalesceForTest(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): { first: number; end: number; packet: Buffer | null }[] {
  return binding()
    .coalesceForTest(buf, offsets, lengths, count)
    .map(([first, end, packet]) => ({ first, end, packet }));
}

/** What the coalescing reader hands over for one read (virtio header + packet): its segments, or null (dropped). For tests. */
export function splitForTest(frame: Uint8Array): Buffer[] | null {
  return binding().splitForTest(frame);
}

class NativeTunDevice implements TunDevice {
  readonly headroom: number;
  readonly stride: number;
  private readonly slotBufs: Buffer[] = [];
  private readonly slotLens: Uint32Array[] = [];
  private readonly counters = new Float64Array(12);
  private handler: TunBatchHandler | null = null;
  private closed = false;
  private callbackErrors = 0;

  constructor(
    private readonly handle: NativeTun,
    readonly name: string,
    readonly offload: boolean,
    readonly coalesce: boolean,
    private readonly layout: TunLayout,
  ) {
    this.headroom = layout.headroom;
    this.stride = layout.stride;
  }

  start(onBatch: TunBatchHandler): void {
    if (this.closed) throw new SystemError('TUN_FAILED', `TUN device ${this.name} is closed`, 'open a new device');
    if (this.handler !== null) throw new SystemError('TUN_FAILED', `TUN device ${this.name} is already started`, 'call start() once');
    const { batchSize, slots, stride, headroom, space } = this.layout;
    for (let i = 0; i < slots; i++) {
      // allocUnsafeSlow: a dedicated backing store the reader thread may write into while JS runs.
      this.slotBufs.push(Buffer.allocUnsafeSlow(batchSize * stride));
      this.slotLens.push(new Uint32Array(batchSize));
    }
    this.handler = onBatch;
    this.handle.start(this.slotBufs, this.slotLens, stride, headroom, space, this.dispatch);
  }

  // One function for the device's life: the addon calls it once per batch.
  private readonly dispatch = (slot: number, count: number): void => {
    const handler = this.handler;
    if (handler === null) return;
    try {
      handler(this.slotBufs[slot], this.slotLens[slot], count);
    } catch {
      // A throw here is a bug in the handler, but an exception escaping a native callback kills the
      // process, and with it every host's traffic: lose this batch, count it, and go on.
      this.callbackErrors++;
    }
  };

  write(buf: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    return this.handle.write(buf, offsets, lengths, count);
  }

  get stats(): TunStats {
    const c = this.counters;
    this.handle.stats(c);
    return { readPackets: c[0], readBatches: c[1], writePackets: c[2], writeErrors: c[3], readErrors: c[4], lastReadErrno: c[5], lastWriteErrno: c[6], callbackErrors: this.callbackErrors, superPackets: c[7], coalesced: c[8], splitSupers: c[9], splitSegments: c[10], splitDropped: c[11] };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handle.close();
    this.handler = null;
  }
}
