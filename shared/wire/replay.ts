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
