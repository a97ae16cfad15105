import type { TunDevice } from '../tun/tun.ts';
import type { UdpBatchHandler } from '../../shared/udp/socket.ts';
import type { BoundLocator, MapCache } from '../mapcache/cache.ts';
import { sameBytes16 } from '../../shared/bytes.ts';
import { CHUNK_LAST, HANDSHAKE_FLAGS, HEADER_LEN, HeaderCheck, MAX_CHUNKS, PEER_FLAGS, SEALED_HEADER_LEN, TAG_LEN, VNET_HDR_LEN, checkHeader, chunkByte, headerHasVnet, headerNonce, headerSealed, sealedCounter } from '../../shared/wire/header.ts';
import { OpenResult } from '../../shared/crypto/aead.ts';
import type { MismatchHandler, Sealing } from './sealing.ts';
import type { Grouping } from './grouping.ts';
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
 * 5. The inner destination must be this host's ID (or a user/data ID it serves: slice 2).
 * 4'. Slice 2: an inner source that is a user or data ID is accepted only from a host bound to it
 *    now (grouping.ts: from one of that host's locators, or sealed, from its session).
 * 5'. The data counter must be new from this peer (its duplicate filter): the copies a failover
 *    re-sends, or make-before-break sends on a second path, reach the TUN once.
 * 6. Queue the inner packet (header stripped, no copy) and write the whole batch to the TUN.
 *
 * Encryption on (the default), steps 4-5' are replaced: every sealed datagram of the batch is first
 * listed (2), then opened in one native call (3s: the tag verified over header and frame, the frame
 * decrypted in place, the session's replay window consulted only after that — it is also the
 * duplicate filter of 5'), then each opened frame must be IPv6, for us, and from the session's own
 * peer (4s). The source locator no longer matters: the key proves the sender (a host that moved
 * keeps its session), and no locator is learned from it. Handshake messages go to the session
 * manager; plaintext data while encryption is on here (or sealed data while off) is dropped and
 * reported, so both ends of a mixed setting say so.
 *
 * Offload mode: a frame sent in chunks is copied together in order (2') and, checked like any other,
 * written to the TUN as one TSO super-packet. Its first chunk carries the inner header, so it must
 * pass the cheap checks of 4 and 5 (for us, from a locator bound to the inner source) before it gets
 * a reassembly context; the contexts are a small preallocated table per uplink keyed by (source
 * locator, frame nonce), so a chunk from anyone else cannot reset or continue a frame in progress
 * (docs/security.md decision 5).
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
  /** Offload frames reassembled at once (each holds a 64 KiB buffer); default REASSEMBLY_SLOTS. */
  readonly reassemblySlots?: number;
}

/**
 * Why 8: a sender's chunks arrive in order and usually in one batch, so one frame per sender is in
 * progress at a time, two when a re-send after a failover overlaps new traffic; 8 lets a few peers
 * interleave on one uplink for 8 × 64 KiB of memory per uplink, allocated once.
 */
export const REASSEMBLY_SLOTS = 8;

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
  /** Encryption on: the sessions datagrams are opened with. Absent: plain data only (encryption off). */
  readonly sealing?: Sealing;
  /** Slice 2: packets to the user/data IDs this host serves, and from those its correspondents use. */
  readonly grouping?: Grouping;
  /** Sealed data or a handshake while encryption is off here, or plain data while on. */
  readonly onMismatch?: MismatchHandler;
  /** Which uplink this outside serves (for replies to handshakes). */
  readonly uplink?: number;
}

export interface OutsideStats {
  packets: number;
  bytes: number;
  batches: number;
  /** A peer's data counter jumped back beyond the duplicate window: it restarted its counter. */
  counterRestarts: number;
  /** Encryption on: sealed datagrams opened, and empty ones (keepalives confirming a new session). */
  opened: number;
  keepalives: number;
}

/** `stats` may be shared by the outside of every uplink. */
export function createOutside(
  opts: OutsideOptions,
  deps: OutsideDeps,
  stats: OutsideStats = { packets: 0, bytes: 0, batches: 0, counterRestarts: 0, opened: 0, keepalives: 0 },
): { onBatch: UdpBatchHandler; stats: OutsideStats } {
  const { cache, tun, drops } = deps;
  const onUnknownSource = deps.onUnknownSource ?? (() => false);
  const onPeerMessage = deps.onPeerMessage;
  const grouping = deps.grouping ?? null;
  /** For us: our host ID, or a user/data ID this host serves (slice 2). */
  const forUs = (b: Buffer, at: number): boolean => sameBytes16(me, 0, b, at) || (grouping !== null && grouping.serves(b, at));
  const offsets = new Uint32Array(opts.batchSize);
  const lens = new Uint32Array(opts.batchSize);
  const ipOff = opts.offload ? VNET_HDR_LEN : 0;
  const me = opts.hostId;
  // Offload: frames being reassembled from chunks, one context per (source locator, nonce), all
  // allocated here: slot k's frame is at slab[k*SLOT_BYTES), its source at rSrc[k*16).
  const slots = opts.offload ? Math.max(1, opts.reassemblySlots ?? REASSEMBLY_SLOTS) : 0;
  const slab = slots > 0 ? Buffer.allocUnsafeSlow(slots * SLOT_BYTES) : Buffer.alloc(0);
  const rSrc = new Uint8Array(slots * 16);
  const rPort = new Uint16Array(slots);
  // Plain: the 24-bit frame nonce; sealed: the counter of the frame's first chunk (up to 2^53).
  const rNonce = new Float64Array(slots);
  /** The chunk index the context expects next; 0: the slot is free. */
  const rNext = new Uint8Array(slots);
  const rLen = new Uint32Array(slots);
  /** When the context was started (a count of starts): the smallest is the oldest. */
  const rStarted = new Float64Array(slots);
  let starts = 0;
  const one = new Uint32Array(1);
  const oneLen = new Uint32Array(1);
  const sealing = deps.sealing ?? null;
  const uplink = deps.uplink ?? 0;
  const onMismatch = deps.onMismatch;
  // Sealed datagrams of the batch (3s): where they are, and what opening them found.
  const oOffsets = new Uint32Array(opts.batchSize);
  const oLengths = new Uint32Array(opts.batchSize);
  const oResults = new Uint8Array(opts.batchSize);
  const oSlots = new Uint16Array(opts.batchSize);
  // Sealed chunks take reassembly contexts keyed by (session slot, first counter): the slot stands
  // in for the source locator's port, with an all-zero address.
  const noAddr = new Uint8Array(16);

  /** 4s for an opened frame at b[frame, frame+frameLen) of session `slot`: ADMIT or a drop reason. */
  function checkSealed(b: Buffer, frame: number, frameLen: number, slot: number, whole: boolean): number {
    const ip = frame + ipOff;
    const ipLen = frameLen - ipOff;
    if (ipLen < 40 || b[ip] >> 4 !== 6) return Drop.OutsideMalformed;
    if (whole && ((b[ip + 4] << 8) | b[ip + 5]) + 40 !== ipLen) return Drop.OutsideMalformed;
    if (ipLen > opts.maxInner) return Drop.OutsideOversized;
    if (!forUs(b, ip + 24)) return Drop.OutsideNotForUs;
    const slotPeer = (sealing as Sealing).slotPeer;
    // From a user/data ID (slice 2): only if it is bound to the session's peer right now.
    if (!sameBytes16(slotPeer, slot * 16, b, ip + 8) && (grouping === null || grouping.inbound(b, ip, ipLen, slotPeer, slot * 16, noAddr, 0, 0) === undefined)) return Drop.OutsideNotFromPeer;
    if (!whole) return ADMIT;
    const entry = cache.lookup(b, ip + 8);
    if (entry !== undefined) entry.traffic.rx++;
    stats.packets++;
    stats.bytes += ipLen;
    return ADMIT;
  }

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
    if (!forUs(b, ip + 24)) return Drop.OutsideNotForUs;
    let entry = cache.lookup(b, ip + 8);
    // From a user/data ID (slice 2): the host it is bound to whose locator sent it.
    if (entry === undefined && grouping !== null) entry = grouping.inbound(b, ip, ipLen, null, 0, srcAddrs, srcOff, port);
    if (entry === undefined) return dgOff >= 0 && onUnknownSource(b, dgOff, dgLen, srcAddrs, srcOff, port, ip + 8) ? KEPT : Drop.OutsideUnknownPeer;
    if (!boundTo(entry.locators, srcAddrs, srcOff, port)) return Drop.OutsideSourceNotBound;
    // 5'. Only now: a datagram from an unbound source must not move the peer's window.
    const dup = entry.traffic.rxFilter.check(counter);
    if (dup === DuplicateCheck.Duplicate) return Drop.OutsideDuplicate;
    if (dup === DuplicateCheck.Restarted) stats.counterRestarts++;
    entry.traffic.rx++;
    stats.packets++;
    stats.bytes += ipLen;
    return ADMIT;
  }

  /**
   * 2'. The first chunk of a frame, before it may take a context: the inner header is there, so the
   * checks of 3-5 that need no whole frame (IPv6, for us, a bound source locator) run now. ADMIT or a
   * drop reason.
   */
  function plausibleStart(b: Buffer, frame: number, frameLen: number, srcAddrs: Uint8Array, srcOff: number, port: number): number {
    const ip = frame + ipOff;
    if (frameLen - ipOff < 40 || b[ip] >> 4 !== 6) return Drop.OutsideMalformed;
    if (!forUs(b, ip + 24)) return Drop.OutsideNotForUs;
    let entry = cache.lookup(b, ip + 8);
    if (entry === undefined && grouping !== null) entry = grouping.inbound(b, ip, frameLen - ipOff, null, 0, srcAddrs, srcOff, port);
    if (entry === undefined) return Drop.OutsideUnknownPeer;
    return boundTo(entry.locators, srcAddrs, srcOff, port) ? ADMIT : Drop.OutsideSourceNotBound;
  }

  /** The context of this source locator's frame with this nonce, or -1. */
  function findContext(srcAddrs: Uint8Array, srcOff: number, port: number, nonce: number): number {
    for (let k = 0; k < slots; k++) {
      if (rNext[k] !== 0 && rNonce[k] === nonce && rPort[k] === port && sameBytes16(rSrc, k * 16, srcAddrs, srcOff)) return k;
    }
    return -1;
  }

  /**
   * A context for a new frame: the same frame's (its first chunk again: start over), else a free
   * one, else the oldest of this source's own if it holds half the table (a source that keeps
   * starting frames, or forges their nonces, then only replaces its own), else the oldest of all.
   * A frame in progress that is replaced is given up and counted.
   */
  function claimContext(srcAddrs: Uint8Array, srcOff: number, port: number, nonce: number): number {
    let k = findContext(srcAddrs, srcOff, port, nonce);
    if (k < 0) {
      let free = -1;
      let oldest = 0;
      let own = 0;
      let oldestOwn = -1;
      for (let j = 0; j < slots; j++) {
        if (rNext[j] === 0) {
          free = j;
          break;
        }
        if (rStarted[j] < rStarted[oldest]) oldest = j;
        if (rPort[j] === port && sameBytes16(rSrc, j * 16, srcAddrs, srcOff)) {
          own++;
          if (oldestOwn < 0 || rStarted[j] < rStarted[oldestOwn]) oldestOwn = j;
        }
      }
      k = free >= 0 ? free : own * 2 >= slots ? oldestOwn : oldest;
    }
    if (rNext[k] !== 0) drops.add(Drop.OutsideReassembly);
    for (let b = 0; b < 16; b++) rSrc[k * 16 + b] = srcAddrs[srcOff + b]; // no subarray: no view per frame
    rPort[k] = port;
    rNonce[k] = nonce;
    rLen[k] = 0;
    rStarted[k] = ++starts;
    return k;
  }

  /**
   * 2'. One chunk, b[frame, frame+frameLen), of the frame keyed by (addrs[addrOff], port, frameId):
   * the first takes a context if `start` (its checks, ADMIT or a drop reason) admits it; the others
   * append, in order, to theirs. Returns the context once its frame is whole in the slab, else -1:
   * chunks still missing, or the frame given up (counted).
   */
  function takeChunk(b: Buffer, frame: number, frameLen: number, chunk: number, addrs: Uint8Array, addrOff: number, port: number, frameId: number, start: number): number {
    const index = chunk & MAX_CHUNKS;
    let k: number;
    if (index === 0) {
      if (start !== ADMIT) {
        drops.add(start);
        return -1;
      }
      k = claimContext(addrs, addrOff, port, frameId);
    } else {
      k = findContext(addrs, addrOff, port, frameId);
      if (k < 0 || index !== rNext[k]) {
        drops.add(Drop.OutsideReassembly);
        if (k >= 0) rNext[k] = 0;
        return -1;
      }
    }
    const at = k * SLOT_BYTES;
    if (rLen[k] + frameLen > SLOT_BYTES) {
      drops.add(Drop.OutsideOversized);
      rNext[k] = 0;
      return -1;
    }
    b.copy(slab, at + rLen[k], frame, frame + frameLen);
    rLen[k] += frameLen;
    rNext[k] = index + 1;
    if ((chunk & CHUNK_LAST) === 0) return -1;
    rNext[k] = 0;
    return k;
  }

  /** Writes context k's whole frame, after the n frames queued before it (the flow's order holds). */
  function writeWhole(b: Buffer, n: number, k: number): void {
    flush(b, n);
    one[0] = k * SLOT_BYTES;
    oneLen[0] = rLen[k];
    if (tun.write(slab, one, oneLen, 1) < 1) drops.add(Drop.OutsideTunWriteError);
  }

  function flush(b: Buffer, n: number): void {
    if (n === 0) return;
    const written = tun.write(b, offsets, lens, n);
    if (written < n) drops.add(Drop.OutsideTunWriteError, n - written);
  }

  let nOpen = 0;

  /** 3s-6 for the sealed datagrams listed in this batch; returns how many frames it queued (from n). */
  function openListed(buf: Buffer, n: number): number {
    const s = sealing as Sealing;
    s.table.open(buf, oOffsets, oLengths, nOpen, oResults, oSlots);
    for (let k = 0; k < nOpen; k++) {
      const res = oResults[k];
      if (res !== OpenResult.Ok) {
        drops.add(res === OpenResult.Replayed ? Drop.OutsideDuplicate : res === OpenResult.Forged ? Drop.OutsideForged : res === OpenResult.TooOld ? Drop.OutsideTooOld : res === OpenResult.Truncated ? Drop.OutsideTruncated : Drop.OutsideNoSession);
        continue;
      }
      stats.opened++;
      const off = oOffsets[k];
      const slot = oSlots[k];
      if (s.slotUnconfirmed[slot] !== 0) s.onConfirmed(slot);
      const frame = off + SEALED_HEADER_LEN;
      const frameLen = oLengths[k] - SEALED_HEADER_LEN; // open() took the tag off the length
      if (frameLen === 0) {
        stats.keepalives++;
        continue;
      }
      const chunk = opts.offload ? chunkByte(buf, off) : CHUNK_LAST;
      if (chunk !== CHUNK_LAST) {
        // A frame's chunks carry consecutive counters: the first one's names the frame.
        const index = chunk & MAX_CHUNKS;
        const start = index === 0 ? checkSealed(buf, frame, frameLen, slot, false) : ADMIT;
        const c = takeChunk(buf, frame, frameLen, chunk, noAddr, 0, slot, sealedCounter(buf, off) - index, start);
        if (c < 0) continue;
        const r = checkSealed(slab, c * SLOT_BYTES, rLen[c], slot, true);
        if (r !== ADMIT) {
          drops.add(r);
          continue;
        }
        writeWhole(buf, n, c);
        n = 0;
        continue;
      }
      const r = checkSealed(buf, frame, frameLen, slot, true);
      if (r !== ADMIT) {
        drops.add(r);
        continue;
      }
      offsets[n] = frame;
      lens[n] = frameLen;
      n++;
    }
    nOpen = 0;
    return n;
  }

  const onBatch: UdpBatchHandler = (buf, lengths, srcAddrs, srcPorts, count) => {
    stats.batches++;
    let n = 0;
    nOpen = 0;
    for (let i = 0; i < count; i++) {
      const off = i * opts.stride;
      const len = lengths[i];
      // 1'. Agent-to-agent messages (rare) leave the data path here.
      if (len > 0 && buf[off] === PEER_FLAGS && onPeerMessage !== undefined) {
        onPeerMessage(buf, off, len, srcAddrs, i * 16, srcPorts[i]);
        continue;
      }
      if (len > 0 && buf[off] === HANDSHAKE_FLAGS) {
        if (sealing !== null) sealing.onHandshake(uplink, buf, off, len, srcAddrs, i * 16, srcPorts[i]);
        else {
          drops.add(Drop.OutsideSealed);
          onMismatch?.(false, uplink, buf, off, len, srcAddrs, i * 16, srcPorts[i]);
        }
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
      if (headerSealed(buf, off) !== (sealing !== null)) {
        drops.add(sealing !== null ? Drop.OutsidePlaintext : Drop.OutsideSealed);
        onMismatch?.(sealing !== null, uplink, buf, off, len, srcAddrs, i * 16, srcPorts[i]);
        continue;
      }
      if (sealing !== null) {
        // 2s. Listed for one native open of the whole batch.
        oOffsets[nOpen] = off;
        oLengths[nOpen] = len;
        nOpen++;
        continue;
      }
      const frame = off + HEADER_LEN;
      const frameLen = len - HEADER_LEN;
      const port = srcPorts[i];
      const chunk = opts.offload ? chunkByte(buf, off) : CHUNK_LAST;
      if (chunk !== CHUNK_LAST) {
        // 2'. A chunk of a larger offload frame: the first one, if plausible, takes a context; the
        // others append in order to their source's frame with their nonce, or the frame is given up.
        const start = (chunk & MAX_CHUNKS) === 0 ? plausibleStart(buf, frame, frameLen, srcAddrs, i * 16, port) : ADMIT;
        const k = takeChunk(buf, frame, frameLen, chunk, srcAddrs, i * 16, port, headerNonce(buf, off), start);
        if (k < 0) continue;
        // The whole frame is checked again: its length, and the binding may have changed meanwhile.
        const r = check(slab, k * SLOT_BYTES, rLen[k], rSrc, k * 16, rPort[k], -1, 0, rNonce[k]);
        if (r !== ADMIT) {
          drops.add(r);
          continue;
        }
        writeWhole(buf, n, k);
        n = 0;
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
    if (nOpen > 0) n = openListed(buf, n);
    flush(buf, n);
  };
  return { onBatch, stats };
}

const ADMIT = -1;
const KEPT = -2;
/** A reassembly context's buffer: the largest frame (a TSO super-packet) with its vnet header. */
const SLOT_BYTES = 65_535 + VNET_HDR_LEN;

/** The datagram's source (16 bytes at srcAddrs[srcOff), port) is one of these bound locators. */
function boundTo(locs: readonly BoundLocator[], srcAddrs: Uint8Array, srcOff: number, port: number): boolean {
  for (let l = 0; l < locs.length; l++) if (locs[l].port === port && sameBytes16(locs[l].bytes, 0, srcAddrs, srcOff)) return true;
  return false;
}
