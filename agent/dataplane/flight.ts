import type { UdpBatchSocket } from '../../shared/udp/socket.ts';
import { sameBytes16 } from '../../shared/bytes.ts';
import type { BoundLocator, Path, Traffic } from '../mapcache/cache.ts';
import { DUPLICATE_WINDOW } from '../../shared/wire/replay.ts';

/*
 * The flight recorder: a copy of every datagram recently sent, so that the packets in flight on a
 * path that failed can be sent again over the new one (issue #11). TCP would otherwise wait for its
 * retransmission timeout (≥ 200 ms, doubling) for them, however fast the agents switched.
 *
 * 1. inside.ts stages each datagram it queues (where it is in the batch buffer, the path, the peer's
 *    counters) and, after sending the batch, commit() copies the batch's datagrams into a ring with
 *    ONE copy per batch and appends their descriptions to a metadata ring. Nothing is allocated.
 * 2. The oldest datagrams are overwritten: memory is `totalBytes` whatever the traffic. How far back
 *    the ring reaches is totalBytes / send rate (16 MiB: 670 ms at 200 Mbit/s, 90 ms at 1.5 Gbit/s).
 * 3. When path choice moves a peer's traffic off a failed path (paths/probing.ts), replay() finds the
 *    datagrams sent to that peer on that path since the moment they may have been lost, newest first
 *    up to `perPeerBytes` and at most DUPLICATE_WINDOW / 2 of them, and sends them in their original
 *    order over the new path, paced at the rate they were first sent. The datagrams are re-sent as
 *    they were, data counter included: the receiver's duplicate filter drops those that had arrived.
 *    A re-sent datagram is recorded again as sent on the new path (no second copy of its bytes), so
 *    that if that path fails too (two uplinks lost 100 ms apart), it is re-sent once more.
 *
 * Why the sender re-sends rather than the receiver asking: only the sender knows what it sent, and it
 * knows the moment the path failed; a request would cost another round trip on a path just chosen.
 */

export interface FlightOptions {
  /** Ring size; the memory the recorder uses (plus ~3 % of metadata). */
  readonly totalBytes: number;
  /** At most this many bytes re-sent to one peer for one failover (the newest). */
  readonly perPeerBytes: number;
  /** Datagrams older than this are never re-sent (their loss is TCP's business by then). */
  readonly maxAgeMs: number;
  /** Most datagrams one TUN batch can queue (batchSize × chunks per frame). */
  readonly maxStaged: number;
}

export interface FlightStats {
  /** Datagrams and bytes copied into the ring. */
  recordedPackets: number;
  recordedBytes: number;
  /** Batches larger than the ring (not recorded). */
  tooLarge: number;
  /** Failovers that re-sent something, and what. */
  replays: number;
  replayedPackets: number;
  replayedBytes: number;
  /** Replays cut at perPeerBytes or the duplicate window. */
  replaysCapped: number;
  /** Paced slices not sent because the ring had overwritten them meanwhile. */
  replayOverwritten: number;
}

/** Where a re-send goes: the new path's uplink (index and socket) and its remote locator. */
export interface ReplayTarget {
  readonly uplink: number;
  readonly socket: UdpBatchSocket;
  readonly locator: BoundLocator;
}

/** A failed path as the data plane recorded it: local uplink and remote locator. */
export type FailedPath = Pick<Path, 'uplink' | 'locator'>;

/** Delay between paced slices of a replay. */
const SLICE_MS = 2;
/** Sent at once, without pacing: about one TSO super-packet's worth. */
const FIRST_SLICE_BYTES = 64 * 1024;

export class FlightRecorder {
  readonly stats: FlightStats = { recordedPackets: 0, recordedBytes: 0, tooLarge: 0, replays: 0, replayedPackets: 0, replayedBytes: 0, replaysCapped: 0, replayOverwritten: 0 };
  private readonly ring: Buffer;
  /** Absolute byte position of the next write (ring offset = writeAbs mod size). */
  private writeAbs = 0;
  // The metadata ring: slot i describes one datagram.
  private readonly mAbs: Float64Array;
  private readonly mLen: Uint32Array;
  private readonly mAt: Float64Array;
  private readonly mUplink: Uint16Array;
  private readonly mTraffic: (Traffic | null)[];
  private readonly mLoc: (BoundLocator | null)[];
  private mTail = 0;
  private mCount = 0;
  // What the current batch queued (offsets into its own buffer).
  private readonly sOff: Uint32Array;
  private readonly sLen: Uint32Array;
  private readonly sUplink: Uint16Array;
  private readonly sTraffic: (Traffic | null)[];
  private readonly sLoc: (BoundLocator | null)[];
  private sCount = 0;
  // A replay's selection (slot indices, newest first).
  private readonly pick = new Uint32Array(DUPLICATE_WINDOW / 2);

  constructor(
    private readonly opts: FlightOptions,
    /** Clock ms: stamps batches (read once per commit) and dates replays, the path state's clock. */
    private readonly now: () => number,
  ) {
    this.ring = Buffer.allocUnsafeSlow(opts.totalBytes);
    const slots = Math.max(1024, Math.ceil(opts.totalBytes / 256));
    this.mAbs = new Float64Array(slots);
    this.mLen = new Uint32Array(slots);
    this.mAt = new Float64Array(slots);
    this.mUplink = new Uint16Array(slots);
    this.mTraffic = new Array<Traffic | null>(slots).fill(null);
    this.mLoc = new Array<BoundLocator | null>(slots).fill(null);
    this.sOff = new Uint32Array(opts.maxStaged);
    this.sLen = new Uint32Array(opts.maxStaged);
    this.sUplink = new Uint16Array(opts.maxStaged);
    this.sTraffic = new Array<Traffic | null>(opts.maxStaged).fill(null);
    this.sLoc = new Array<BoundLocator | null>(opts.maxStaged).fill(null);
  }

  get totalBytes(): number {
    return this.ring.length;
  }

  /** How far back the ring reaches now (ms), for status: the age of its oldest datagram. */
  reachMs(now: number): number {
    return this.mCount === 0 ? 0 : now - this.mAt[this.mTail];
  }

  /** Hot path: one queued datagram at src[off, off+len) of the batch being sent. */
  stage(off: number, len: number, uplink: number, traffic: Traffic, locator: BoundLocator): void {
    const k = this.sCount;
    if (k >= this.sOff.length) return;
    this.sOff[k] = off;
    this.sLen[k] = len;
    this.sUplink[k] = uplink;
    this.sTraffic[k] = traffic;
    this.sLoc[k] = locator;
    this.sCount = k + 1;
  }

  /** Hot path, after the batch was sent: copies what was staged from `src` (offsets ascending). */
  commit(src: Buffer): void {
    const n = this.sCount;
    if (n === 0) return;
    const now = this.now();
    this.sCount = 0;
    const lo = this.sOff[0];
    const hi = this.sOff[n - 1] + this.sLen[n - 1];
    const span = hi - lo;
    const size = this.ring.length;
    if (span > size) {
      this.stats.tooLarge++;
      return;
    }
    let pos = this.writeAbs % size;
    if (pos + span > size) {
      this.writeAbs += size - pos;
      pos = 0;
    }
    this.evictBefore(this.writeAbs + span - size);
    src.copy(this.ring, pos, lo, hi);
    for (let k = 0; k < n; k++) {
      this.append(this.writeAbs + (this.sOff[k] - lo), this.sLen[k], now, this.sUplink[k], this.sTraffic[k] as Traffic, this.sLoc[k] as BoundLocator);
      this.stats.recordedPackets++;
      this.stats.recordedBytes += this.sLen[k];
    }
    this.writeAbs += span;
  }

  /** A record of a datagram whose bytes are at absolute position `abs` of the ring. */
  private append(abs: number, len: number, at: number, uplink: number, traffic: Traffic, locator: BoundLocator): void {
    const slots = this.mAbs.length;
    if (this.mCount === slots) this.dropOldest();
    const i = (this.mTail + this.mCount) % slots;
    this.mAbs[i] = abs;
    this.mLen[i] = len;
    this.mAt[i] = at;
    this.mUplink[i] = uplink;
    this.mTraffic[i] = traffic;
    this.mLoc[i] = locator;
    traffic.heldBytes += len;
    this.mCount++;
  }

  /**
   * Control plane: re-sends to `to` the datagrams sent to the peer (`traffic`) on `from` at or after
   * `since` (clock ms), oldest first, paced; returns how many will be sent.
   */
  replay(traffic: Traffic, from: FailedPath, since: number, to: ReplayTarget): { packets: number; bytes: number } {
    const now = this.now();
    const slots = this.mAbs.length;
    const oldest = Math.max(since, now - this.opts.maxAgeMs);
    let n = 0;
    let bytes = 0;
    let capped = false;
    const floor = this.writeAbs - this.ring.length;
    for (let j = this.mCount - 1; j >= 0; j--) {
      const i = (this.mTail + j) % slots;
      if (this.mAt[i] < oldest) break;
      // A re-sent datagram's record may outlive its bytes (it points back into the ring).
      if (this.mTraffic[i] !== traffic || this.mUplink[i] !== from.uplink || this.mAbs[i] < floor) continue;
      const loc = this.mLoc[i] as BoundLocator;
      if (loc.port !== from.locator.port || !sameBytes16(loc.bytes, 0, from.locator.bytes, 0)) continue;
      if (bytes + this.mLen[i] > this.opts.perPeerBytes || n === this.pick.length) {
        capped = true;
        break;
      }
      this.pick[n++] = i;
      bytes += this.mLen[i];
    }
    if (n === 0) return { packets: 0, bytes: 0 };
    this.stats.replays++;
    if (capped) this.stats.replaysCapped++;
    // Oldest first, with their absolute positions (a slot may be reused before a paced slice leaves).
    const abs = new Float64Array(n);
    const lens = new Uint32Array(n);
    for (let k = 0; k < n; k++) {
      const i = this.pick[n - 1 - k];
      abs[k] = this.mAbs[i];
      lens[k] = this.mLen[i];
    }
    const spanMs = Math.max(1, this.mAt[this.pick[0]] - this.mAt[this.pick[n - 1]]);
    const bytesPerMs = bytes / spanMs;
    this.sendPaced(traffic, abs, lens, 0, to, bytesPerMs, FIRST_SLICE_BYTES);
    return { packets: n, bytes };
  }

  /** Sends datagrams from index `at` up to `budget` bytes now, the rest SLICE_MS later at `bytesPerMs`. */
  private sendPaced(traffic: Traffic, abs: Float64Array, lens: Uint32Array, at: number, to: ReplayTarget, bytesPerMs: number, budget: number): void {
    const size = this.ring.length;
    const floor = this.writeAbs - size;
    let end = at;
    let used = 0;
    while (end < abs.length && (end === at || used + lens[end] <= budget)) used += lens[end++];
    const count = end - at;
    const offsets = new Uint32Array(count);
    const lengths = new Uint32Array(count);
    const addrs = new Uint8Array(count * 16);
    const ports = new Uint16Array(count);
    let m = 0;
    for (let k = at; k < end; k++) {
      // Overwritten since (the ring wrapped under heavy traffic): that one is TCP's again.
      if (abs[k] < floor) {
        this.stats.replayOverwritten++;
        continue;
      }
      offsets[m] = abs[k] % size;
      lengths[m] = lens[k];
      addrs.set(to.locator.bytes, m * 16);
      ports[m] = to.locator.port;
      m++;
      this.stats.replayedPackets++;
      this.stats.replayedBytes += lens[k];
    }
    if (m > 0) {
      to.socket.send(this.ring, offsets, lengths, addrs, ports, m);
      const now = this.now();
      for (let k = at; k < end; k++) if (abs[k] >= floor) this.append(abs[k], lens[k], now, to.uplink, traffic, to.locator);
    }
    if (end >= abs.length) return;
    // The event loop may run the timer late: the budget is for the time that actually passed.
    const scheduled = performance.now();
    const t = setTimeout(() => this.sendPaced(traffic, abs, lens, end, to, bytesPerMs, Math.max(bytesPerMs * (performance.now() - scheduled), lens[end])), SLICE_MS);
    t.unref();
  }

  /**
   * Forgets (and un-counts) the records, oldest first, of datagrams that start before absolute
   * position `abs`. A re-send's record (it points back) may stay behind a newer one until its turn:
   * replay() checks every record it uses against the ring's floor.
   */
  private evictBefore(abs: number): void {
    while (this.mCount > 0 && this.mAbs[this.mTail] < abs) this.dropOldest();
  }

  private dropOldest(): void {
    const i = this.mTail;
    const t = this.mTraffic[i];
    if (t !== null) t.heldBytes -= this.mLen[i];
    this.mTraffic[i] = null;
    this.mLoc[i] = null;
    this.mTail = (i + 1) % this.mAbs.length;
    this.mCount--;
  }
}
