// Used by control sessions (step 2 of shared/wire/handshake.ts) and by the agents' path probes
// (agent/paths/probing.ts).

export const REPLAY_WINDOW = 1024;

/**
 * Sliding window over received sequence numbers (RFC 4303 section 3.4.3 style): accepts each number
 * once, and numbers up to REPLAY_WINDOW behind the highest seen (datagrams reorder). Call check()
 * only after the MAC verified, so forged numbers cannot move the window.
 */
export class ReplayWindow {
  private top = 0;
  private readonly bits = new Uint8Array(REPLAY_WINDOW / 8);

  /** True (and records seq) if seq is new; false for a replay or a number too old. */
  check(seq: number): boolean {
    if (seq <= 0) return false;
    if (seq > this.top) {
      const shift = seq - this.top;
      if (shift >= REPLAY_WINDOW) this.bits.fill(0);
      else for (let s = this.top + 1; s < seq; s++) this.clear(s);
      this.top = seq;
      this.set(seq);
      return true;
    }
    if (this.top - seq >= REPLAY_WINDOW) return false;
    if (this.get(seq)) return false;
    this.set(seq);
    return true;
  }

  private get(s: number): boolean {
    const i = s % REPLAY_WINDOW;
    return (this.bits[i >> 3] & (1 << (i & 7))) !== 0;
  }
  private set(s: number): void {
    const i = s % REPLAY_WINDOW;
    this.bits[i >> 3] |= 1 << (i & 7);
  }
  private clear(s: number): void {
    const i = s % REPLAY_WINDOW;
    this.bits[i >> 3] &= ~(1 << (i & 7));
  }
}

/** The data header's nonce field: 24 bits, so the data counter wraps (shared/wire/header.ts). */
export const DATA_COUNTER_MOD = 1 << 24;
/** Counters a DuplicateFilter remembers behind the highest it has seen. */
export const DUPLICATE_WINDOW = 4096;

/** What DuplicateFilter.check() found; numbers so the receive path allocates nothing. */
export const DuplicateCheck = { New: 0, Duplicate: 1, Restarted: 2 } as const;
export type DuplicateCheck = (typeof DuplicateCheck)[keyof typeof DuplicateCheck];

/**
 * Exactly-once delivery of data packets from one peer (issue #11): a sliding window over the 24-bit
 * counter the sender writes per destination into the data header. It is not a security mechanism
 * (anyone on the path can forge a counter until the data plane is authenticated): it exists so that
 * the packets a sender re-sends after a failover (dataplane/flight.ts) and the copies make-before-
 * break sends on a second path reach the TUN once.
 *
 * Counters compare modulo 2^24 (they wrap in ~2 minutes at 1 Gbit/s). A counter up to WINDOW behind
 * the highest seen is delivered once; one further behind cannot come from a re-send (a sender
 * re-sends at most WINDOW/2 packets per peer, see flight.ts), so it means the sender started a new
 * counter (a restart, or the peer's map-cache entry was evicted and recreated: both pick a random
 * start): the window starts again from it and the packet is delivered. The cost of that rule is a
 * new random start within WINDOW behind the old highest counter (probability 2 × 4096 / 2^24 ≈ 0.05 %
 * per restart): up to WINDOW packets taken for duplicates and dropped until the new counter passes
 * the old one, which TCP recovers like any loss.
 */
export class DuplicateFilter {
  private top = -1;
  private readonly bits = new Uint32Array(DUPLICATE_WINDOW / 32);

  check(counter: number): DuplicateCheck {
    const c = counter & (DATA_COUNTER_MOD - 1);
    if (this.top < 0) return this.restart(c);
    // Signed distance from the highest seen, in (-2^23, 2^23].
    let d = (c - this.top) & (DATA_COUNTER_MOD - 1);
    if (d > DATA_COUNTER_MOD / 2) d -= DATA_COUNTER_MOD;
    if (d > 0) {
      if (d >= DUPLICATE_WINDOW) this.bits.fill(0);
      else for (let k = 1; k < d; k++) this.clearBit((this.top + k) & (DATA_COUNTER_MOD - 1));
      this.top = c;
      this.setBit(c);
      return DuplicateCheck.New;
    }
    if (-d >= DUPLICATE_WINDOW) return this.restart(c);
    if (this.getBit(c)) return DuplicateCheck.Duplicate;
    this.setBit(c);
    return DuplicateCheck.New;
  }

  private restart(c: number): DuplicateCheck {
    const first = this.top < 0;
    this.bits.fill(0);
    this.top = c;
    this.setBit(c);
    return first ? DuplicateCheck.New : DuplicateCheck.Restarted;
  }

  private getBit(c: number): boolean {
    const i = c % DUPLICATE_WINDOW;
    return (this.bits[i >>> 5] & (1 << (i & 31))) !== 0;
  }
  private setBit(c: number): void {
    const i = c % DUPLICATE_WINDOW;
    this.bits[i >>> 5] |= 1 << (i & 31);
  }
  private clearBit(c: number): void {
    const i = c % DUPLICATE_WINDOW;
    this.bits[i >>> 5] &= ~(1 << (i & 31));
  }
}
