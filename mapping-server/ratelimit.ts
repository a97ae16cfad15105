/**
 * Token buckets: one per session (sessionful traffic, dispatch.ts charges it after the MAC), and one
 * per source prefix in a bounded table for what has no session (HELLOs, datagrams naming an unknown
 * session, which draw REJECT).
 *
 * Why per prefix and not per address: one host (or one attacker) holds a whole /64 in IPv6 and often
 * many addresses of a /24 in IPv4, so a per-address table is one bucket per forged address. Why
 * sessionful traffic is not in this table: a source address is not authenticated, so a flood
 * spoofing a real agent's address (or just filling the table) would otherwise drain the agent's
 * budget; a session's bucket is spent only by messages whose MAC verified (docs/security.md,
 * decision 5).
 *
 * When the table is full, new prefixes share one overflow bucket (counted): memory stays bounded,
 * and the flood can starve only other *new* prefixes' sessionless traffic, never an established
 * session. Idle buckets are pruned by the sweep.
 */
export interface Bucket {
  tokens: number;
  /** Clock ms of the last refill; -Infinity: never used, i.e. full (takeToken refills it to burst). */
  at: number;
}

/** A bucket that is full on its first use, whatever the burst: sessions make theirs with this. */
export function fullBucket(): Bucket {
  return { tokens: 0, at: -Infinity };
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

/** Scratch for prefixKey's IPv6 parse (sessionless traffic only, one call at a time). */
const groups = new Array<number>(8);

/**
 * The source prefix an address belongs to, as a table key: "192.0.2.0/24" for IPv4 (and IPv4-mapped
 * IPv6, which is the same sender on a dual-stack socket), "2001:db8:0:1::/64" for IPv6. Parses the
 * socket's address text directly (no ip-address objects: this runs per sessionless datagram); text it
 * cannot parse is its own key, which keeps the table bounded all the same.
 */
export function prefixKey(address: string): string {
  const pct = address.indexOf('%');
  const a = pct < 0 ? address : address.slice(0, pct);
  if (a.indexOf(':') < 0) return v4Key(a);
  if (!v6Groups(a.toLowerCase())) return a;
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    return `${groups[6] >> 8}.${groups[6] & 0xff}.${groups[7] >> 8}.0/24`;
  }
  return `${groups[0].toString(16)}:${groups[1].toString(16)}:${groups[2].toString(16)}:${groups[3].toString(16)}::/64`;
}

function v4Key(a: string): string {
  const i = a.lastIndexOf('.');
  return i < 0 ? a : `${a.slice(0, i)}.0/24`;
}

/** Fills groups from IPv6 text ("::" compression and a dotted IPv4 tail allowed); false if malformed. */
function v6Groups(a: string): boolean {
  const dc = a.indexOf('::');
  const head = dc < 0 ? a : a.slice(0, dc);
  const tail = dc < 0 ? '' : a.slice(dc + 2);
  const h = head === '' ? [] : head.split(':');
  const t = tail === '' ? [] : tail.split(':');
  const hv = parseGroups(h);
  const tv = parseGroups(t);
  if (hv === null || tv === null) return false;
  if (dc < 0 ? hv.length !== 8 : hv.length + tv.length > 7) return false;
  groups.fill(0);
  for (let i = 0; i < hv.length; i++) groups[i] = hv[i];
  for (let i = 0; i < tv.length; i++) groups[8 - tv.length + i] = tv[i];
  return true;
}

function parseGroups(parts: readonly string[]): number[] | null {
  const out: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (i === parts.length - 1 && p.indexOf('.') >= 0) {
      const q = p.split('.');
      if (q.length !== 4) return null;
      const b = q.map((x) => (/^\d{1,3}$/.test(x) ? Number(x) : 256));
      if (b.some((x) => x > 255)) return null;
      out.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
      continue;
    }
    if (!/^[0-9a-f]{1,4}$/.test(p)) return null;
    out.push(parseInt(p, 16));
  }
  return out;
}

/** Buckets per source prefix (prefixKey), bounded; for sessionless traffic only. */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly overflow: Bucket;
  overflowHits = 0;

  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
    private readonly maxPrefixes: number,
    now: number,
  ) {
    this.overflow = { tokens: burst, at: now };
  }

  /** True if a sessionless message from address may be processed now. */
  allow(address: string, now: number): boolean {
    const key = prefixKey(address);
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= this.maxPrefixes) {
        this.overflowHits++;
        return takeToken(this.overflow, now, this.ratePerS, this.burst);
      }
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
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
