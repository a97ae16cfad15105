import { sameBytes16 } from '../../shared/bytes.ts';
import { familyOf, locatorBytes, type Family } from '../../shared/locator.ts';

/**
 * The map-cache: host ID → binding, read by the data plane for every packet.
 *
 * Entries are immutable; the control plane builds a new entry (for example with another chosen path)
 * and swaps it in with set(). The data plane looks entries up straight from packet bytes: the key is
 * a small-integer hash of the ID's last eight bytes (a Smi, so V8 allocates nothing), each bucket an
 * array compared byte by byte. IDs of one realm share their prefix, so the low bytes, which come from
 * the key hash, spread well.
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
  return Object.freeze({ address, port, family: familyOf(address), bytes: locatorBytes(address), priority, weight, up });
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
  /** The host's Ed25519 public key (from its signed binding); null for static peers without one. */
  readonly publicKey: Uint8Array | null;
  readonly traffic: Traffic;
  readonly source: 'static' | 'rm';
  readonly createdAt: number;
  /** When the binding may no longer be used (clock ms); Infinity for static bindings. */
  readonly expiresAt: number;
  /** The binding's sequence number (0 for static bindings). */
  readonly seq: number;
}

export class MapCache {
  private readonly buckets = new Map<number, MapEntry[]>();
  private count = 0;

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

  /** Inserts or replaces the entry for e.id. Returns false when full (counted by the caller). */
  set(e: MapEntry): boolean {
    const h = hashAt(e.id, 0);
    const bucket = this.buckets.get(h);
    if (bucket === undefined) {
      if (this.count >= this.capacity) return false;
      this.buckets.set(h, [e]);
      this.count++;
      return true;
    }
    for (let i = 0; i < bucket.length; i++) {
      if (sameId(bucket[i].id, e.id, 0)) {
        // Copy-on-write: a reader iterating the old bucket array sees a consistent old view.
        const next = bucket.slice();
        next[i] = e;
        this.buckets.set(h, next);
        return true;
      }
    }
    if (this.count >= this.capacity) return false;
    this.buckets.set(h, [...bucket, e]);
    this.count++;
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
    return true;
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
