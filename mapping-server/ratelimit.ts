/**
 * Token buckets per source address, in a bounded table.
 *
 * Keyed by address only (not port): a sender changing ports gets no new budget. When the table is
 * full, new sources share one overflow bucket (counted), so a spoofed-address flood cannot grow
 * memory, and it can only starve other new sources, not the ones already in the table. Idle buckets
 * are pruned by the sweep.
 */
export interface Bucket {
  tokens: number;
  /** Clock ms of the last refill. */
  at: number;
}

/** Pure: refills b for the time since b.at and takes one token if there is one. */
export function takeToken(b: Bucket, now: number, ratePerS: number, burst: number): boolean {
  const elapsed = now - b.at;
  if (elapsed > 0) {
    b.tokens = Math.min(burst, b.tokens + (elapsed * ratePerS) / 1000);
    b.at = now;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return true;
  }
  return false;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly overflow: Bucket;
  overflowHits = 0;

  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
    private readonly maxSources: number,
    now: number,
  ) {
    this.overflow = { tokens: burst, at: now };
  }

  /** True if a message from source may be processed now. */
  allow(source: string, now: number): boolean {
    let b = this.buckets.get(source);
    if (b === undefined) {
      if (this.buckets.size >= this.maxSources) {
        this.overflowHits++;
        return takeToken(this.overflow, now, this.ratePerS, this.burst);
      }
      b = { tokens: this.burst, at: now };
      this.buckets.set(source, b);
    }
    return takeToken(b, now, this.ratePerS, this.burst);
  }

  /** Forgets buckets that are full again (idle long enough to have refilled). */
  prune(now: number): void {
    const refillMs = (this.burst / this.ratePerS) * 1000;
    for (const [k, b] of this.buckets) if (now - b.at >= refillMs) this.buckets.delete(k);
  }

  get size(): number {
    return this.buckets.size;
  }
}
