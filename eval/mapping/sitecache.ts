/**
 * One site RM's shared cache of other sites' bindings: open addressing, linear probing, power-of-
 * two capacity, at most half full. Each slot is one 32-byte record in a Float64Array, so a probe
 * and the fields it then reads share a cache line; at 1M hosts seven strategies' tables do not
 * fit the CPU caches, and separate arrays per field cost one memory miss each.
 *
 * Nothing is ever removed: an expired or lapsed entry keeps its slot and is filled again, which is
 * also how a first ("cold") miss is told from a later one. The simulator runs one site at a time
 * and reuses one table, so it holds only that site's distinct targets (~10^4), not all sites'.
 */
const EMPTY = -1;

/** Record layout: the slot's offset + one of these. */
export const KEY = 0;
/** When the binding was fetched (s). */
export const FILL = 1;
/** TTL entries: when they expire; followed entries: when the follow lapses unless renewed. */
export const UNTIL = 2;
/**
 * 2 x (index into the change trace of the target's first change after the fetch) + 1 while a
 * follow is open (its pushes and stale windows are counted when it closes). Both in one double
 * keep the record at 32 bytes; state(next, follow) and its two readers below pack and unpack it.
 */
export const STATE = 3;
const STRIDE = 4;

export const state = (next: number, follow: boolean): number => next * 2 + (follow ? 1 : 0);
export const nextOf = (s: number): number => Math.floor(s / 2);
export const following = (s: number): boolean => s % 2 === 1;

export class SiteCache {
  /** The records; a slot is an offset into it (a multiple of 4). */
  rec: Float64Array;
  private mask: number;
  private used = 0;

  constructor(capacity = 1_024) {
    const cap = 2 ** Math.ceil(Math.log2(Math.max(16, capacity)));
    this.mask = cap - 1;
    this.rec = emptyRecords(cap);
  }

  get capacity(): number {
    return this.mask + 1;
  }

  get size(): number {
    return this.used;
  }

  /** Empties the table for the next site, keeping its capacity. */
  reset(): void {
    const rec = this.rec;
    for (let i = 0; i < rec.length; i += STRIDE) {
      rec[i + KEY] = EMPTY;
      rec[i + STATE] = 0;
    }
    this.used = 0;
  }

  /** The slot holding k, or -1. */
  find(k: number): number {
    const rec = this.rec;
    for (let i = hash(k) & this.mask; ; i = (i + 1) & this.mask) {
      const v = rec[i * STRIDE];
      if (v === k) return i * STRIDE;
      if (v === EMPTY) return -1;
    }
  }

  /** The slot for k, which must not be present; its other fields are for the caller to set. */
  insert(k: number): number {
    if ((this.used + 1) * 2 > this.capacity) this.grow();
    const rec = this.rec;
    let i = hash(k) & this.mask;
    while (rec[i * STRIDE] !== EMPTY) i = (i + 1) & this.mask;
    rec[i * STRIDE] = k;
    this.used++;
    return i * STRIDE;
  }

  /** Calls visit(slot) for every occupied slot. */
  forEach(visit: (slot: number) => void): void {
    const rec = this.rec;
    for (let i = 0; i < rec.length; i += STRIDE) if (rec[i] !== EMPTY) visit(i);
  }

  private grow(): void {
    const old = this.rec;
    const cap = this.capacity * 2;
    this.mask = cap - 1;
    this.rec = emptyRecords(cap);
    for (let j = 0; j < old.length; j += STRIDE) {
      const k = old[j];
      if (k === EMPTY) continue;
      let i = hash(k) & this.mask;
      while (this.rec[i * STRIDE] !== EMPTY) i = (i + 1) & this.mask;
      this.rec.set(old.subarray(j, j + STRIDE), i * STRIDE);
    }
  }
}

function emptyRecords(cap: number): Float64Array {
  const rec = new Float64Array(cap * STRIDE);
  for (let i = 0; i < rec.length; i += STRIDE) rec[i + KEY] = EMPTY;
  return rec;
}

/** Host IDs are dense integers; a multiplicative hash spreads neighbours over the table. */
function hash(k: number): number {
  return Math.imul(k, 0x9e3779b1) >>> 7;
}
