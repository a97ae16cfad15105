import { idKey } from '../../shared/ids.ts';
/**
 * The probe budget of every remote IP address (all its ports together), shared by all peers (docs/security.md
 * decision 4). The backoff in state.ts limits what one path sends to a locator that does not answer;
 * this limits the sum: several peers (or one peer over several of our uplinks, or a peer re-listing
 * an address under new bindings) can all name the same address, and whatever they name, that address
 * gets at most `perSecond` probes a second from this agent after a burst of `burst`.
 *
 * 1. take(bytes, port, now): the address's token bucket, refilled at perSecond for the time since it
 *    was last asked (never above burst), gives one token or refuses (the caller skips the probe and
 *    counts it).
 * 2. The table holds at most `addresses` buckets, in least-recently-used order (a Map's insertion
 *    order, refreshed on every take). A new address beyond that evicts the least recently used one:
 *    usually a full bucket (it would be full again by now anyway, so nothing is lost); only when more
 *    than `addresses` addresses were probed within burst/perSecond (2 s) does an address get a fresh
 *    burst early, which is counted (`evictedEarly`).
 *
 * Why these numbers: a genuine locator gets at most one probe per probe interval (100 ms) per local
 * uplink, so 10/s per uplink; 100/s leaves room for five uplinks towards two agents behind one address
 * (a NAT, different ports), and a burst of 200 for a failover's probe burst and many peers starting
 * together. A victim address therefore sees at most 100 probes/s (a probe is 76 bytes of UDP
 * payload: ~10 KB/s on the wire) from one agent, however many of its peers list it, under however
 * many ports; and only while it answers or in the first seconds, since paths that never answered
 * back off (state.ts).
 */
export interface ProbeBudgetOptions {
  /** Tokens (probes) a second, per remote address. */
  readonly perSecond: number;
  /** Bucket size: probes an address may get at once. */
  readonly burst: number;
  /** Addresses tracked at most (the least recently used one goes). */
  readonly addresses: number;
}

export const DEFAULT_PROBE_BUDGET: ProbeBudgetOptions = Object.freeze({ perSecond: 100, burst: 200, addresses: 4096 });

export interface Bucket {
  readonly tokens: number;
  /** When `tokens` was computed. */
  readonly at: number;
}

/** The bucket at `now`: refilled for the time since it was computed, never above burst (pure). */
export function refill(b: Bucket, now: number, o: ProbeBudgetOptions): Bucket {
  const elapsed = Math.max(0, now - b.at);
  return { tokens: Math.min(o.burst, b.tokens + (elapsed * o.perSecond) / 1_000), at: Math.max(b.at, now) };
}

export class ProbeBudget {
  private readonly buckets = new Map<string, Bucket>();
  /** Buckets evicted before they had refilled (more than `addresses` addresses in use at once). */
  evictedEarly = 0;

  constructor(private readonly o: ProbeBudgetOptions = DEFAULT_PROBE_BUDGET) {}

  /**
   * One probe to the address (16 bytes, IPv4 mapped) at `now`: true if the budget allows it. The port
   * is taken and left out of the key on purpose: a binding may list one victim under many ports.
   */
  take(bytes: Uint8Array, _port: number, now: number): boolean {
    const key = idKey(bytes); // bytes, not text: one address has many spellings
    const held = this.buckets.get(key);
    let b: Bucket;
    if (held === undefined) {
      if (this.buckets.size >= this.o.addresses) this.evictOldest(now);
      b = { tokens: this.o.burst, at: now };
    } else {
      this.buckets.delete(key); // re-inserted below: most recently used last
      b = refill(held, now, this.o);
    }
    const ok = b.tokens >= 1;
    this.buckets.set(key, ok ? { tokens: b.tokens - 1, at: b.at } : b);
    return ok;
  }

  get size(): number {
    return this.buckets.size;
  }

  private evictOldest(now: number): void {
    const first = this.buckets.entries().next();
    if (first.done === true) return;
    const [key, b] = first.value;
    this.buckets.delete(key);
    if (refill(b, now, this.o).tokens < this.o.burst) this.evictedEarly++;
  }
}
