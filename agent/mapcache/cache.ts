import { sameBytes16 } from '../../shared/bytes.ts';
import { idKey } from '../../shared/ids.ts';
import { addressBytes, familyOf, type Family } from '../../shared/address.ts';
import { DATA_COUNTER_MOD, DuplicateFilter } from '../../shared/wire/replay.ts';

/**
 * The map-cache: host ID → binding, read by the data plane for every packet.
 *
 * Entries are immutable; the control plane builds a new entry (for example with another chosen path)
 * and swaps it in with set(). The data plane looks entries up straight from packet bytes: the key is
 * a small-integer hash of the ID's last eight bytes (a Smi, so V8 allocates nothing), each bucket an
 * array compared byte by byte. IDs of one realm share their prefix, so the low bytes, which come from
 * the key hash, spread well.
 *
 * Bounded, with approximate LRU eviction (CLOCK, second chance). Exact LRU would need the data plane
 * to move an entry to the head of a list on every packet; instead the data plane only bumps the
 * entry's traffic counters (a number write it does anyway), and the counters are the reference bit:
 *   1. a full cache asked to take a new ID advances a hand over the entries in insertion order;
 *   2. an entry whose tx + rx changed since the hand last passed it was used: it gets a second chance
 *      (its count is noted) and the hand moves on; a new entry gets one more chance of its own;
 *   3. the first entry unused for a whole turn of the hand is evicted (counted in `evicted`);
 *   4. static-config peers (source 'static') are pinned: the hand skips them, they are never evicted.
 *      A cache of pinned entries only refuses the new ID (set() returns false, as before).
 * All of it runs in set(), on the control plane, at most two turns of the hand per insertion.
 */
export interface BoundLocator {
  readonly address: string;
  readonly port: number;
  readonly family: Family;
  /** 16 bytes: IPv4 in the first four. */
  readonly bytes: Uint8Array;
  readonly priority: number;
  readonly weight: number;
  readonly up: boolean;
}

/** A locator in the form the data plane compares: family and 16 raw bytes precomputed. */
export function boundLocator(address: string, port: number, priority: number, weight: number, up: boolean): BoundLocator {
  return Object.freeze({ address, port, family: familyOf(address), bytes: addressBytes(address), priority, weight, up });
}

export interface Path {
  /** Index of the local uplink that sends. */
  readonly uplink: number;
  readonly locator: BoundLocator;
}

/**
 * Counters the data plane bumps for an entry (the one mutable part of it: a plain number write per
 * packet, no allocation). The control plane reads them to tell active peers from idle ones (path
 * probing, direct binding updates, eviction). A new entry for the same ID keeps the same object.
 */
export interface Traffic {
  /** Packets sent to this host. */
  tx: number;
  /** Packets received from this host. */
  rx: number;
  /**
   * The data counter of the last packet sent to this host (24 bits, in the data header's nonce
   * field): one sequence per destination, so the receiver's duplicate filter sees every number.
   * Starts at random (see DuplicateFilter for why).
   */
  txCounter: number;
  /** Drops the copies of this host's packets that arrive twice (re-sends after a failover, make-before-break). */
  readonly rxFilter: DuplicateFilter;
  /** Bytes of packets to this host held for re-sending (dataplane/flight.ts keeps it). */
  heldBytes: number;
  /**
   * Encryption on: the native session slot packets to this host are sealed with, and the index the
   * host chose for that session (written into each header); -1 while there is none. Set by the
   * session manager (agent/sessions/), read by the data plane per packet.
   */
  txSlot: number;
  txIndex: number;
}

/** Counters for a host new to the map-cache (a new entry for a known ID keeps its old ones). */
export function newTraffic(): Traffic {
  return { tx: 0, rx: 0, txCounter: Math.floor(Math.random() * DATA_COUNTER_MOD), rxFilter: new DuplicateFilter(), heldBytes: 0, txSlot: -1, txIndex: 0 };
}

/** A member of an entry's flow group: its share of the flows and a stable key for the flow hash. */
export interface GroupPath extends Path {
  readonly weight: number;
  readonly key: number;
}

export interface MapEntry {
  readonly hostId: string;
  /** 16 raw bytes of the host ID. */
  readonly id: Uint8Array;
  readonly locators: readonly BoundLocator[];
  /** The path the data plane uses now; null when no uplink can reach any locator. */
  readonly path: Path | null;
  /**
   * Equally preferred paths that flows are spread over by weight (never the packets of one flow);
   * empty or one element: everything takes `path`.
   */
  readonly group: readonly GroupPath[];
  /**
   * Make-before-break: a second path that gets a copy of every packet while the one traffic just
   * left is only suspect (the receiver drops whichever copy comes second); null otherwise.
   */
  readonly shadow?: Path | null;
  /** The host's Ed25519 public key (from its signed binding); null for static peers without one. */
  readonly publicKey: Uint8Array | null;
  readonly traffic: Traffic;
  readonly source: 'static' | 'rm';
  readonly createdAt: number;
  /** When the binding may no longer be used (clock ms); Infinity for static bindings. */
  readonly expiresAt: number;
  /**
   * When the host's membership certificate ends (clock ms): no binding of it, from the RM or from
   * the host directly, is used past this. Absent for static bindings.
   */
  readonly certExpiresAt?: number;
  /** The binding's sequence number (0 for static bindings). */
  readonly seq: number;
}

/** The CLOCK's view of one cached ID. */
interface ClockSlot {
  readonly id: Uint8Array;
  traffic: Traffic;
  /** tx + rx when the hand last passed (or when the entry came in). */
  seen: number;
  /** New since the hand last passed: counts as used once. */
  fresh: boolean;
  pinned: boolean;
}

export class MapCache {
  private readonly buckets = new Map<number, MapEntry[]>();
  private count = 0;
  /** Every cached ID in insertion order (key: idKey, control plane only); the hand walks it. */
  private readonly clock = new Map<string, ClockSlot>();
  private hand: Iterator<ClockSlot> | null = null;
  /** Entries evicted to make room (least recently used, approximately). */
  evicted = 0;

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.count;
  }

  /** Hot path: the 16-byte ID at buf[off..off+16). */
  lookup(buf: Uint8Array, off: number): MapEntry | undefined {
    const bucket = this.buckets.get(hashAt(buf, off));
    if (bucket === undefined) return undefined;
    for (let i = 0; i < bucket.length; i++) {
      const e = bucket[i];
      if (sameId(e.id, buf, off)) return e;
    }
    return undefined;
  }

  /**
   * Inserts or replaces the entry for e.id. A new ID in a full cache evicts the least recently used
   * evictable entry (see the class comment); false only when every entry is pinned (counted by the
   * caller).
   */
  set(e: MapEntry): boolean {
    const h = hashAt(e.id, 0);
    const bucket = this.buckets.get(h);
    if (bucket !== undefined) {
      for (let i = 0; i < bucket.length; i++) {
        if (sameId(bucket[i].id, e.id, 0)) {
          // Copy-on-write: a reader iterating the old bucket array sees a consistent old view.
          const next = bucket.slice();
          next[i] = e;
          this.buckets.set(h, next);
          const slot = this.clock.get(idKey(e.id));
          if (slot !== undefined) {
            if (slot.traffic !== e.traffic) {
              slot.traffic = e.traffic;
              slot.seen = e.traffic.tx + e.traffic.rx;
            }
            slot.pinned = e.source === 'static';
          }
          return true;
        }
      }
    }
    if (this.count >= this.capacity && !this.evictOne()) return false;
    // Copy-on-write again; re-read the bucket, the victim may have shared it.
    const now = this.buckets.get(h);
    this.buckets.set(h, now === undefined ? [e] : [...now, e]);
    this.count++;
    this.clock.set(idKey(e.id), { id: e.id, traffic: e.traffic, seen: e.traffic.tx + e.traffic.rx, fresh: true, pinned: e.source === 'static' });
    return true;
  }

  delete(id: Uint8Array): boolean {
    const h = hashAt(id, 0);
    const bucket = this.buckets.get(h);
    if (bucket === undefined) return false;
    const next = bucket.filter((e) => !sameId(e.id, id, 0));
    if (next.length === bucket.length) return false;
    if (next.length === 0) this.buckets.delete(h);
    else this.buckets.set(h, next);
    this.count--;
    this.clock.delete(idKey(id));
    return true;
  }

  /** One CLOCK eviction; false if no entry may be evicted (all pinned). */
  private evictOne(): boolean {
    // Two turns at most: the first may only use up second chances, the second then finds a victim.
    for (let steps = 2 * this.clock.size + 1; steps > 0; steps--) {
      let n = this.hand?.next();
      if (n === undefined || n.done === true) {
        // Map iterators are live (they see deletions and later insertions): a new one starts the next
        // turn at the oldest entry.
        this.hand = this.clock.values();
        n = this.hand.next();
        if (n.done === true) return false;
      }
      const slot = n.value;
      if (slot.pinned) continue;
      const used = slot.traffic.tx + slot.traffic.rx;
      if (used !== slot.seen) {
        slot.seen = used;
        continue;
      }
      // Being new is a chance of its own, apart from traffic: an entry just installed for a miss
      // survives the next turn even before its first queued packet has gone out.
      if (slot.fresh) {
        slot.fresh = false;
        continue;
      }
      this.delete(slot.id);
      this.evicted++;
      return true;
    }
    return false;
  }

  entries(): MapEntry[] {
    const out: MapEntry[] = [];
    for (const b of this.buckets.values()) out.push(...b);
    return out;
  }
}

function hashAt(b: Uint8Array, off: number): number {
  const lo = (b[off + 12] << 24) | (b[off + 13] << 16) | (b[off + 14] << 8) | b[off + 15];
  const hi = (b[off + 8] << 24) | (b[off + 9] << 16) | (b[off + 10] << 8) | b[off + 11];
  // Keep 30 bits: a V8 small integer on every platform.
  return (lo ^ Math.imul(hi, 0x9e3779b1)) & 0x3fffffff;
}

function sameId(id: Uint8Array, buf: Uint8Array, off: number): boolean {
  return sameBytes16(id, 0, buf, off);
}
