import type { TunDevice } from '../tun/tun.ts';
import type { UdpBatchHandler } from '../uplinks/socket.ts';
import type { MapCache } from '../mapcache/cache.ts';
import { sameBytes16 } from '../../shared/bytes.ts';
import { HEADER_LEN, HeaderCheck, VNET_HDR_LEN, checkHeader, headerHasVnet } from '../../shared/wire/header.ts';
import { Drop, type DropCounters } from './drops.ts';

/*
 * outside: UDP → TUN, the receive path. Every datagram from the network is untrusted.
 *
 * 1. An uplink's reader thread hands over a borrowed batch: datagram i at buf[i*stride], its source
 *    locator as 16 bytes + port.
 * 2. Check the data header (length, flags, our realm's instance ID, offload framing).
 * 3. Check the inner packet: IPv6, and its payload length agrees with the datagram.
 * 4. The inner source host ID must have a binding, and the datagram must come from one of that
 *    binding's locators: a locator is only ever learned from a binding, never from a packet.
 * 5. The inner destination must be this host's ID.
 * 6. Queue the inner packet (header stripped, no copy) and write the whole batch to the TUN.
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
}

export interface OutsideStats {
  packets: number;
  bytes: number;
  batches: number;
}

/** `stats` may be shared by the outside of every uplink. */
export function createOutside(
  opts: OutsideOptions,
  deps: OutsideDeps,
  stats: OutsideStats = { packets: 0, bytes: 0, batches: 0 },
): { onBatch: UdpBatchHandler; stats: OutsideStats } {
  const { cache, tun, drops } = deps;
  const onUnknownSource = deps.onUnknownSource ?? (() => false);
  const offsets = new Uint32Array(opts.batchSize);
  const lens = new Uint32Array(opts.batchSize);
  const ipOff = opts.offload ? VNET_HDR_LEN : 0;
  const me = opts.hostId;

  const onBatch: UdpBatchHandler = (buf, lengths, srcAddrs, srcPorts, count) => {
    stats.batches++;
    let n = 0;
    for (let i = 0; i < count; i++) {
      const off = i * opts.stride;
      const len = lengths[i];
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
      // 3. Inner packet.
      const frame = off + HEADER_LEN;
      const frameLen = len - HEADER_LEN;
      const ip = frame + ipOff;
      const ipLen = frameLen - ipOff;
      if (ipLen < 40 || buf[ip] >> 4 !== 6 || ((buf[ip + 4] << 8) | buf[ip + 5]) + 40 !== ipLen) {
        drops.add(Drop.OutsideMalformed);
        continue;
      }
      if (ipLen > opts.maxInner) {
        drops.add(Drop.OutsideOversized);
        continue;
      }
      // 4. Source ID bound, and the datagram came from one of its locators.
      const entry = cache.lookup(buf, ip + 8);
      const port = srcPorts[i];
      if (entry === undefined) {
        if (!onUnknownSource(buf, off, len, srcAddrs, i * 16, port, ip + 8)) drops.add(Drop.OutsideUnknownPeer);
        continue;
      }
      const locs = entry.locators;
      let bound = false;
      for (let l = 0; l < locs.length; l++) {
        if (locs[l].port === port && sameBytes16(locs[l].bytes, 0, srcAddrs, i * 16)) {
          bound = true;
          break;
        }
      }
      if (!bound) {
        drops.add(Drop.OutsideSourceNotBound);
        continue;
      }
      // 5. For us.
      if (!sameBytes16(me, 0, buf, ip + 24)) {
        drops.add(Drop.OutsideNotForUs);
        continue;
      }
      // 6. Queue without copying: the TUN write reads straight from the UDP batch buffer.
      offsets[n] = frame;
      lens[n] = frameLen;
      n++;
      stats.packets++;
      stats.bytes += ipLen;
    }
    if (n > 0) {
      const written = tun.write(buf, offsets, lens, n);
      if (written < n) drops.add(Drop.OutsideTunWriteError, n - written);
    }
  };
  return { onBatch, stats };
}
