import type { TunBatchHandler } from '../tun/tun.ts';
import type { UdpBatchSocket } from '../../shared/udp/socket.ts';
import type { MapCache } from '../mapcache/cache.ts';
import { CHUNK_LAST, HEADER_LEN, MAX_CHUNKS, SEALED_HEADER_LEN, TAG_LEN, VNET_HDR_LEN, writeChunk, writeHeader, writeSealedHeader } from '../../shared/wire/header.ts';
import { flowHash, pickByWeight } from './flows.ts';
import { Drop, type DropCounters } from './drops.ts';
import type { FlightRecorder } from './flight.ts';
import type { Path } from '../mapcache/cache.ts';
import { constants as osConstants } from 'node:os';
import { DROP, HELD, type Sealing } from './sealing.ts';
import type { Grouping } from './grouping.ts';

/*
 * inside: TUN → UDP, the send path.
 *
 * 1. The TUN reader thread hands over a borrowed batch: packet i at buf[i*stride + headroom], with
 *    `headroom` free bytes in front of it (offload mode: the packet starts with a virtio_net_hdr).
 * 2. For each packet, check it is IPv6 and read its destination host ID in place.
 * 3. Look the ID up in the map-cache; the entry's path names the uplink and the remote locator
 *    (or its flow group does: 3').
 *    Not a host there: a user or data ID takes the entry of the host its flow is pinned to (slice 2,
 *    grouping.ts); the inner packet keeps its destination.
 *    On a miss the control plane may keep a copy while it asks the Realm Manager.
 * 4. Write the data header into the headroom, right in front of the packet (no copy). Its nonce is
 *    the destination's own data counter, so the receiver can drop copies that arrive twice.
 *    Encryption on (the default): the sealed header instead, with the index of the destination's
 *    session (a destination without one: the session manager holds the packet and starts a handshake).
 * 5. Queue (offset, length, locator) on that uplink's send batch, and stage it for the flight
 *    recorder. While the entry has a shadow path (make-before-break), queue it there too.
 * 6. Encryption on: seal the whole batch in one native call (each datagram in place, its counter
 *    taken from its session, the tag behind the frame, which TUN slots leave room for).
 * 7. After the whole batch, send each uplink's queue with one sendmmsg, then count refusals; the
 *    flight recorder copies the batch (one copy) so a failover can send it again (flight.ts): sealed
 *    datagrams are kept and re-sent as sealed, so the receiver's replay window drops the copies.
 *
 * Offload mode differs in steps 4-5: a frame (virtio header + up to 64 KB of TSO super-packet) is
 * cut into chunks of `chunkPayload` bytes, each copied behind its own header into an arena that
 * lives as long as the agent, so that equal-size chunks to one locator leave as one UDP GSO message.
 * Sealed, every chunk is sealed on its own with its own counter; the chunks of a frame get
 * consecutive counters (they are sealed in order), which is how the receiver groups them.
 *
 * Everything is allocated once in createInside(); per packet nothing is allocated or logged.
 */

export interface InsideOptions {
  readonly instanceId: number;
  readonly offload: boolean;
  /** Largest datagram payload the underlay can carry in one UDP datagram (header included). */
  readonly maxDatagram: number;
  /** The TUN batch size: how many packets one call can queue on one uplink. */
  readonly batchSize: number;
  /** From the TUN device: packet i of a batch is at i*stride + headroom. */
  readonly stride: number;
  readonly headroom: number;
  /** Offload mode: frame bytes per chunk (the underlay's MTU less IP, UDP and data headers, and the tag). */
  readonly chunkPayload: number;
}

export interface InsideDeps {
  readonly cache: MapCache;
  /** Indexed like Path.uplink. */
  readonly sockets: readonly UdpBatchSocket[];
  readonly drops: DropCounters;
  /**
   * Called on a map-cache miss with the packet (frame at off, destination ID at idOff); returns true
   * when the control plane kept a copy to send once the binding is known. The buffer is borrowed.
   */
  readonly onMiss?: (buf: Buffer, off: number, len: number, idOff: number) => boolean;
  /** Keeps a copy of what was sent, for re-sending after a failover; none: nothing is kept. */
  readonly flight?: FlightRecorder;
  /**
   * Called when sends on an uplink failed with ENETDOWN, ENETUNREACH or EHOSTUNREACH, at most once per
   * uplink and batch: the control plane hears of a dead uplink with the first packet it refused.
   */
  readonly onSendError?: (uplink: number, errno: number) => void;
  /** Encryption on: the sessions packets are sealed with. Absent: plain headers (encryption off). */
  readonly sealing?: Sealing;
  /** Slice 2: user and data IDs (flows pinned to one of their hosts). Absent: host IDs only. */
  readonly grouping?: Grouping;
}

const { ENETDOWN, ENETUNREACH, EHOSTUNREACH } = osConstants.errno;

export interface InsideStats {
  packets: number;
  bytes: number;
  batches: number;
  /** Make-before-break: copies sent on a shadow path. */
  shadowPackets: number;
  /** Encryption on: packets held for a handshake, and batches sealed. */
  heldForSession: number;
  sealedBatches: number;
}

/** One uplink's pending sends for the current batch. */
class SendQueue {
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly addrs: Uint8Array;
  readonly ports: Uint16Array;
  count = 0;
  constructor(n: number) {
    this.offsets = new Uint32Array(n);
    this.lengths = new Uint32Array(n);
    this.addrs = new Uint8Array(n * 16);
    this.ports = new Uint16Array(n);
  }
}

/** Datagrams one TUN frame can become: 1, or in offload mode the chunks of a 64 KB super-packet. */
export function chunksPerFrame(offload: boolean, chunkPayload: number): number {
  return offload ? Math.ceil((65_535 + VNET_HDR_LEN) / chunkPayload) : 1;
}

export function createInside(opts: InsideOptions, deps: InsideDeps): { onBatch: TunBatchHandler; stats: InsideStats; keepalive: (id: Uint8Array) => void; uplinksAdded: () => void } {
  const sealing = deps.sealing ?? null;
  const hdrLen = sealing === null ? HEADER_LEN : SEALED_HEADER_LEN;
  const tagLen = sealing === null ? 0 : TAG_LEN;
  if (opts.headroom < hdrLen) throw new Error(`TUN headroom ${opts.headroom} < ${hdrLen}`);
  const { cache, sockets, drops } = deps;
  const onMiss = deps.onMiss ?? (() => false);
  const grouping = deps.grouping ?? null;
  const ipOff = opts.offload ? VNET_HDR_LEN : 0;
  const minLen = ipOff + 40;
  // Offload: a frame is at most a 64 KB packet plus its virtio header, sent in chunks.
  const maxChunks = chunksPerFrame(opts.offload, opts.chunkPayload);
  if (maxChunks > MAX_CHUNKS) throw new Error(`chunk size ${opts.chunkPayload} too small for 64 KB frames`);
  const maxFrame = opts.offload ? 65_535 + VNET_HDR_LEN : opts.maxDatagram - hdrLen - tagLen;
  // Twice the batch: a shadow path may share the uplink of the path it doubles.
  const queues = sockets.map(() => new SendQueue(2 * opts.batchSize * maxChunks));
  const flight = deps.flight ?? null;
  const segment = opts.chunkPayload + hdrLen + tagLen;
  const arena = opts.offload ? Buffer.allocUnsafeSlow(opts.batchSize * maxChunks * segment) : Buffer.alloc(0);
  let arenaAt = 0;
  const stats: InsideStats = { packets: 0, bytes: 0, batches: 0, shadowPackets: 0, heldForSession: 0, sealedBatches: 0 };
  // Step 6's list: where each datagram to seal is, and with which session slot.
  const maxSeal = opts.batchSize * maxChunks;
  const sealOffsets = new Uint32Array(maxSeal);
  const sealLengths = new Uint32Array(maxSeal);
  const sealSlots = new Uint16Array(maxSeal);
  let sealCount = 0;

  /** Queues a datagram for sealing: its header is at `at`, its frame `n` bytes behind. */
  function stageSeal(at: number, n: number, slot: number): void {
    sealOffsets[sealCount] = at;
    sealLengths[sealCount] = hdrLen + n;
    sealSlots[sealCount] = slot;
    sealCount++;
  }

  /**
   * Error path only (a key was wiped or used up between the check and the seal): the datagrams that
   * were not sealed must never leave — their frames are still plaintext. Their bytes are zeroed (so
   * neither a send nor the flight recorder can leak them) and they are taken out of the queues.
   */
  function unsealable(from: Buffer): void {
    for (let k = 0; k < sealCount; k++) {
      if (sealLengths[k] !== 0) continue;
      const at = sealOffsets[k];
      from.fill(0, at, at + segmentOf(at));
      drops.add(Drop.InsideSealError);
      for (const q of queues) {
        let w = 0;
        for (let r = 0; r < q.count; r++) {
          if (q.offsets[r] === at) continue;
          q.offsets[w] = q.offsets[r];
          q.lengths[w] = q.lengths[r];
          q.addrs.copyWithin(w * 16, r * 16, r * 16 + 16);
          q.ports[w] = q.ports[r];
          w++;
        }
        q.count = w;
      }
    }
  }
  /** The bytes a staged datagram at `at` spans (header, frame and tag room), found from its queue entry. */
  function segmentOf(at: number): number {
    for (const q of queues) for (let r = 0; r < q.count; r++) if (q.offsets[r] === at) return q.lengths[r];
    return hdrLen;
  }

  function enqueue(p: Path, at: number, n: number): void {
    const q = queues[p.uplink];
    const k = q.count++;
    q.offsets[k] = at;
    q.lengths[k] = n;
    q.addrs.set(p.locator.bytes, k * 16);
    q.ports[k] = p.locator.port;
  }

  const onBatch: TunBatchHandler = (buf, lengths, count) => {
    stats.batches++;
    for (let i = 0; i < count; i++) {
      const off = i * opts.stride + opts.headroom;
      const len = lengths[i];
      // 2. IPv6 only: host IDs are IPv6; the kernel may also hand us its own chatter.
      if (len < minLen || buf[off + ipOff] >> 4 !== 6) {
        drops.add(Drop.InsideMalformed);
        continue;
      }
      if (len > maxFrame) {
        drops.add(Drop.InsideOversized);
        continue;
      }
      // 3. The destination ID is bytes 24..40 of the IPv6 header.
      let entry = cache.lookup(buf, off + ipOff + 24);
      if (entry === undefined && grouping !== null) {
        // 3. A user or data ID: the host its flow is pinned to.
        const host = grouping.outbound(buf, off + ipOff, len - ipOff);
        if (host === null) continue;
        entry = host;
      }
      if (entry === undefined) {
        if (!onMiss(buf, off, len, off + ipOff + 24)) drops.add(Drop.InsideNoBinding);
        continue;
      }
      let path = entry.path;
      if (path === null) {
        drops.add(Drop.InsideNoPath);
        continue;
      }
      // 3'. Several equally preferred paths: the flow's hash picks one by weight, so one TCP flow
      // always takes one path (no reordering) while flows spread over the uplinks.
      const group = entry.group;
      if (group.length > 1) {
        const g = pickByWeight(flowHash(buf, off + ipOff, len - ipOff), group);
        if (g >= 0) path = group[g];
      }
      const traffic = entry.traffic;
      let slot = -1;
      if (sealing !== null) {
        slot = traffic.txSlot;
        if (slot < 0) {
          slot = sealing.sessionFor(traffic, entry.id, 0, buf, off, len);
          if (slot === HELD) stats.heldForSession++;
          if (slot === DROP) drops.add(Drop.InsideNoSession);
          if (slot < 0) continue;
        }
      }
      traffic.tx++;
      const nonce = (traffic.txCounter = (traffic.txCounter + 1) & 0xffffff);
      const shadow = entry.shadow ?? null;
      const doubled = shadow !== null && (shadow.uplink !== path.uplink || shadow.locator !== path.locator);
      if (opts.offload) {
        // 4'-5'. Chunks behind their own headers in the arena.
        for (let at = 0, index = 0; at < len; at += opts.chunkPayload, index++) {
          const n = Math.min(opts.chunkPayload, len - at);
          if (slot >= 0) {
            writeSealedHeader(arena, arenaAt, opts.instanceId, true, (index & MAX_CHUNKS) | (at + n >= len ? CHUNK_LAST : 0), traffic.txIndex);
            stageSeal(arenaAt, n, slot);
          } else {
            writeHeader(arena, arenaAt, nonce, opts.instanceId, true);
            writeChunk(arena, arenaAt, index, at + n >= len);
          }
          buf.copy(arena, arenaAt + hdrLen, off + at, off + at + n);
          const dg = hdrLen + n + tagLen;
          enqueue(path, arenaAt, dg);
          if (doubled) enqueue(shadow, arenaAt, dg);
          flight?.stage(arenaAt, dg, path.uplink, traffic, path.locator);
          arenaAt += segment;
        }
      } else {
        // 4. Header in the headroom.
        const hdr = off - hdrLen;
        if (slot >= 0) {
          writeSealedHeader(buf, hdr, opts.instanceId, false, 0, traffic.txIndex);
          stageSeal(hdr, len, slot);
        } else writeHeader(buf, hdr, nonce, opts.instanceId, false);
        // 5. Queue on the uplink (and its shadow), stage for the recorder.
        const dg = hdrLen + len + tagLen;
        enqueue(path, hdr, dg);
        if (doubled) enqueue(shadow, hdr, dg);
        flight?.stage(hdr, dg, path.uplink, traffic, path.locator);
      }
      if (doubled) stats.shadowPackets++;
      stats.packets++;
      stats.bytes += len;
    }
    const from = opts.offload ? arena : buf;
    arenaAt = 0;
    // 6. Seal.
    if (sealing !== null && sealCount > 0) {
      stats.sealedBatches++;
      if (sealing.table.seal(from, sealOffsets, sealLengths, sealSlots, sealCount) < sealCount) unsealable(from);
      sealCount = 0;
    }
    // 7. Flush.
    for (let u = 0; u < queues.length; u++) {
      const q = queues[u];
      if (q.count === 0) continue;
      const sent = sockets[u].send(from, q.offsets, q.lengths, q.addrs, q.ports, q.count);
      if (sent < q.count) {
        drops.add(Drop.InsideSendError, q.count - sent);
        // Error path only: reading stats builds an object, once per uplink and batch.
        const errno = deps.onSendError === undefined ? 0 : sockets[u].stats.lastSendErrno;
        if (errno === ENETDOWN || errno === ENETUNREACH || errno === EHOSTUNREACH) deps.onSendError?.(u, errno);
      }
      q.count = 0;
    }
    flight?.commit(from);
  };

  // A keepalive: a sealed empty frame to one host on its path, confirming a new session to the
  // responder when the initiator has nothing to send (control plane, rare: its own small buffers).
  const ka = Buffer.alloc(SEALED_HEADER_LEN + TAG_LEN);
  const kaOff = new Uint32Array(1);
  const kaLen = new Uint32Array(1);
  const kaSlot = new Uint16Array(1);
  const kaAddr = new Uint8Array(16);
  const kaPort = new Uint16Array(1);
  function keepalive(id: Uint8Array): void {
    const entry = cache.lookup(id, 0);
    if (sealing === null || entry === undefined || entry.path === null || entry.traffic.txSlot < 0) return;
    writeSealedHeader(ka, 0, opts.instanceId, opts.offload, CHUNK_LAST, entry.traffic.txIndex);
    kaLen[0] = SEALED_HEADER_LEN;
    kaSlot[0] = entry.traffic.txSlot;
    if (sealing.table.seal(ka, kaOff, kaLen, kaSlot, 1) < 1) return;
    kaAddr.set(entry.path.locator.bytes);
    kaPort[0] = entry.path.locator.port;
    sockets[entry.path.uplink].send(ka, kaOff, kaLen, kaAddr, kaPort, 1);
  }
  /** A reload appended sockets to deps.sockets (the agent owns that array): a send queue for each. */
  const uplinksAdded = (): void => {
    while (queues.length < sockets.length) queues.push(new SendQueue(2 * opts.batchSize * maxChunks));
  };
  return { onBatch, stats, keepalive, uplinksAdded };
}
