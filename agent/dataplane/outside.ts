import type { TunDevice } from '../tun/tun.ts';
import type { UdpBatchHandler } from '../../shared/udp/socket.ts';
import type { MapCache } from '../mapcache/cache.ts';
import { sameBytes16 } from '../../shared/bytes.ts';
import { CHUNK_LAST, HEADER_LEN, HeaderCheck, MAX_CHUNKS, PEER_FLAGS, VNET_HDR_LEN, checkHeader, chunkByte, headerHasVnet, headerNonce } from '../../shared/wire/header.ts';
import { Drop, type DropCounters } from './drops.ts';
import { DuplicateCheck } from '../../shared/wire/replay.ts';

/*
 * outside: UDP → TUN, the receive path. Every datagram from the network is untrusted.
 *
 * 1. An uplink's reader thread hands over a borrowed batch: datagram i at buf[i*stride], its source
 *    locator as 16 bytes + port.
 * 1'. Messages between agents (path probes, binding updates) go to the control plane.
 * 2. Check the data header (length, flags, our realm's instance ID, offload framing).
 * 3. Check the inner packet: IPv6, and its payload length agrees with the datagram.
 * 4. The inner source host ID must have a binding, and the datagram must come from one of that
 *    binding's locators: a locator is only ever learned from a binding, never from a packet.
 * 5. The inner destination must be this host's ID.
 * 5'. The data counter must be new from this peer (its duplicate filter): the copies a failover
 *    re-sends, or make-before-break sends on a second path, reach the TUN once.
 * 6. Queue the inner packet (header stripped, no copy) and write the whole batch to the TUN.
 *
 * Offload mode: a frame sent in chunks is copied together in order into one buffer (2') and,
 * checked like any other, written to the TUN as one TSO super-packet.
 *
 * Drops are counted by reason; nothing throws, nothing is allocated per datagram.
 */

export interface OutsideOptions {
  readonly instanceId: number;
  readonly offload: boolean;
  /** Largest inner packet the TUN takes (its MTU; offload mode: a whole TSO super-packet). */
  readonly maxInner: number;
  readonly batchSize: number;
  /** From the UDP socket: datagram i is at i*stride. */
  readonly stride: number;
  /** This host's ID, 16 bytes. */
  readonly hostId: Uint8Array;
}

export interface OutsideDeps {
  readonly cache: MapCache;
  readonly tun: TunDevice;
  readonly drops: DropCounters;
  /**
   * Called when the inner source ID has no binding (datagram i of the batch at off, source ID at
   * idOff); returns true when the control plane kept a copy to check again once it knows the binding.
   */
  readonly onUnknownSource?: (buf: Buffer, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number, idOff: number) => boolean;
  /** A message between agents (probe, reply, binding update): the control plane checks it. Borrowed. */
  readonly onPeerMessage?: (buf: Buffer, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number) => void;
}

export interface OutsideStats {
  packets: number;
  bytes: number;
  batches: number;
  /** A peer's data counter jumped back beyond the duplicate window: it restarted its counter. */
  counterRestarts: number;
}

/** `stats` may be shared by the outside of every uplink. */
export function createOutside(
  opts: OutsideOptions,
  deps: OutsideDeps,
  stats: OutsideStats = { packets: 0, bytes: 0, batches: 0, counterRestarts: 0 },
): { onBatch: UdpBatchHandler; stats: OutsideStats } {
  const { cache, tun, drops } = deps;
  const onUnknownSource = deps.onUnknownSource ?? (() => false);
  const onPeerMessage = deps.onPeerMessage;
  const offsets = new Uint32Array(opts.batchSize);
  const lens = new Uint32Array(opts.batchSize);
  const ipOff = opts.offload ? VNET_HDR_LEN : 0;
  const me = opts.hostId;
  // Offload: one frame being reassembled from chunks (they arrive in order, usually in one batch).
  const reasm = opts.offload ? Buffer.allocUnsafeSlow(65_535 + VNET_HDR_LEN) : Buffer.alloc(0);
  const reasmSrc = new Uint8Array(16);
  let reasmLen = 0;
  let reasmNonce = -1;
  let reasmNext = 0;
  let reasmPort = 0;
  const one = new Uint32Array(1);
  const oneLen = new Uint32Array(1);

  /**
   * Steps 3-5 for the frame at b[frame, frame+frameLen): returns ADMIT, KEPT (the control plane took
   * it to check later) or the drop counter to bump.
   */
  function check(b: Buffer, frame: number, frameLen: number, srcAddrs: Uint8Array, srcOff: number, port: number, dgOff: number, dgLen: number, counter: number): number {
    const ip = frame + ipOff;
    const ipLen = frameLen - ipOff;
    if (ipLen < 40 || b[ip] >> 4 !== 6 || ((b[ip + 4] << 8) | b[ip + 5]) + 40 !== ipLen) return Drop.OutsideMalformed;
    if (ipLen > opts.maxInner) return Drop.OutsideOversized;
    // The destination first: a packet for someone else must never cost a lookup of its source.
    if (!sameBytes16(me, 0, b, ip + 24)) return Drop.OutsideNotForUs;
    const entry = cache.lookup(b, ip + 8);
    if (entry === undefined) return dgOff >= 0 && onUnknownSource(b, dgOff, dgLen, srcAddrs, srcOff, port, ip + 8) ? KEPT : Drop.OutsideUnknownPeer;
    const locs = entry.locators;
    let bound = false;
    for (let l = 0; l < locs.length; l++) {
      if (locs[l].port === port && sameBytes16(locs[l].bytes, 0, srcAddrs, srcOff)) {
        bound = true;
        break;
      }
    }
    if (!bound) return Drop.OutsideSourceNotBound;
    // 5'. Only now: a datagram from an unbound source must not move the peer's window.
    const dup = entry.traffic.rxFilter.check(counter);
    if (dup === DuplicateCheck.Duplicate) return Drop.OutsideDuplicate;
    if (dup === DuplicateCheck.Restarted) stats.counterRestarts++;
    entry.traffic.rx++;
    stats.packets++;
    stats.bytes += ipLen;
    return ADMIT;
  }

  function flush(b: Buffer, n: number): void {
    if (n === 0) return;
    const written = tun.write(b, offsets, lens, n);
    if (written < n) drops.add(Drop.OutsideTunWriteError, n - written);
  }

  const onBatch: UdpBatchHandler = (buf, lengths, srcAddrs, srcPorts, count) => {
    stats.batches++;
    let n = 0;
    for (let i = 0; i < count; i++) {
      const off = i * opts.stride;
      const len = lengths[i];
      // 1'. Agent-to-agent messages (rare) leave the data path here.
      if (len > 0 && buf[off] === PEER_FLAGS && onPeerMessage !== undefined) {
        onPeerMessage(buf, off, len, srcAddrs, i * 16, srcPorts[i]);
        continue;
      }
      // 2. Header.
      const h = checkHeader(buf, off, len, opts.instanceId);
      if (h !== HeaderCheck.Ok) {
        drops.add(h === HeaderCheck.Truncated ? Drop.OutsideTruncated : h === HeaderCheck.BadFlags ? Drop.OutsideBadHeader : Drop.OutsideWrongInstance);
        continue;
      }
      if (headerHasVnet(buf, off) !== opts.offload) {
        drops.add(Drop.OutsideOffloadMismatch);
        continue;
      }
      const frame = off + HEADER_LEN;
      const frameLen = len - HEADER_LEN;
      const port = srcPorts[i];
      const chunk = opts.offload ? chunkByte(buf, off) : CHUNK_LAST;
      if (chunk !== CHUNK_LAST) {
        // 2'. A chunk of a larger offload frame: append in order, or give the frame up.
        const index = chunk & MAX_CHUNKS;
        const nonce = headerNonce(buf, off);
        if (index === 0) {
          if (reasmNext !== 0) drops.add(Drop.OutsideReassembly);
          reasmNonce = nonce;
          reasmLen = 0;
          reasmPort = port;
          reasmSrc.set(srcAddrs.subarray(i * 16, i * 16 + 16));
        } else if (index !== reasmNext || nonce !== reasmNonce || port !== reasmPort || !sameBytes16(reasmSrc, 0, srcAddrs, i * 16)) {
          drops.add(Drop.OutsideReassembly);
          reasmNext = 0;
          continue;
        }
        if (reasmLen + frameLen > reasm.length) {
          drops.add(Drop.OutsideOversized);
          reasmNext = 0;
          continue;
        }
        buf.copy(reasm, reasmLen, frame, frame + frameLen);
        reasmLen += frameLen;
        reasmNext = index + 1;
        if ((chunk & CHUNK_LAST) === 0) continue;
        reasmNext = 0;
        const r = check(reasm, 0, reasmLen, reasmSrc, 0, reasmPort, -1, 0, reasmNonce);
        if (r !== ADMIT) {
          drops.add(r);
          continue;
        }
        // Keep the flow's order: what is queued goes first, then the reassembled frame.
        flush(buf, n);
        n = 0;
        one[0] = 0;
        oneLen[0] = reasmLen;
        if (tun.write(reasm, one, oneLen, 1) < 1) drops.add(Drop.OutsideTunWriteError);
        continue;
      }
      // 3-5. A whole frame in one datagram.
      const r = check(buf, frame, frameLen, srcAddrs, i * 16, port, off, len, headerNonce(buf, off));
      if (r === KEPT) continue;
      if (r !== ADMIT) {
        drops.add(r);
        continue;
      }
      // 6. Queue without copying: the TUN write reads straight from the UDP batch buffer.
      offsets[n] = frame;
      lens[n] = frameLen;
      n++;
    }
    flush(buf, n);
  };
  return { onBatch, stats };
}

const ADMIT = -1;
const KEPT = -2;
