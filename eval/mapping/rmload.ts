/**
 * Messages handled per RM per second of the measured window, for the busiest-RM figure. A
 * message between two RMs is handled by both (one sends, one receives), so each side is charged.
 * Messages are charged to the second of the event that causes them (a lookup, a change, a push
 * delivery); the tens of milliseconds an exchange takes are ignored here.
 *
 * RM indices: bottom (site) RMs 0..bottoms-1, middle m at bottoms + m, the top at bottoms + middles.
 * Counts are stored second by second (all RMs of one second together): the RMs one lookup
 * charges (the site, a middle, the home RM) then sit in one memory page.
 */
export type Tier = 'bottom' | 'middle' | 'top';

export interface Peak {
  readonly msgsPerS: number;
  readonly rm: number;
  readonly tier: Tier;
  /** Index of the RM within its tier. */
  readonly index: number;
  /** Second of the measured window. */
  readonly second: number;
}

/** Counts fit 16 bits almost always; the rare second above that keeps its excess in a map. */
const SATURATED = 0xffff;

export class LoadMeter {
  readonly rms: number;
  readonly seconds: number;
  private readonly counts: Uint16Array;
  private readonly excess = new Map<number, number>();
  /** Added to every bottom RM: all-push sends each change to every site, which would be 10^3 adds per change. */
  private readonly allBottoms: Uint32Array;

  constructor(
    readonly bottoms: number,
    readonly middles: number,
    private readonly start: number,
    end: number,
  ) {
    this.rms = bottoms + middles + 1;
    this.seconds = Math.max(1, Math.ceil(end - start));
    this.counts = new Uint16Array(this.rms * this.seconds);
    this.allBottoms = new Uint32Array(this.seconds);
  }

  middle(m: number): number {
    return this.bottoms + m;
  }

  get top(): number {
    return this.bottoms + this.middles;
  }

  /** n messages handled by rm at time t (s since the simulation's start); outside the window: ignored. */
  add(rm: number, t: number, n: number): void {
    const s = Math.floor(t - this.start);
    if (s < 0 || s >= this.seconds) return;
    const i = s * this.rms + rm;
    const v = this.counts[i] + n;
    if (v < SATURATED) {
      this.counts[i] = v;
      return;
    }
    this.counts[i] = SATURATED;
    this.excess.set(i, (this.excess.get(i) ?? 0) + v - SATURATED);
  }

  addAllBottoms(t: number, n: number): void {
    const s = Math.floor(t - this.start);
    if (s < 0 || s >= this.seconds) return;
    this.allBottoms[s] += n;
  }

  peak(): Peak {
    let best = 0;
    let bestRm = 0;
    let bestS = 0;
    for (let s = 0; s < this.seconds; s++) {
      const base = s * this.rms;
      const everySite = this.allBottoms[s];
      for (let rm = 0; rm < this.rms; rm++) {
        let v = this.counts[base + rm];
        if (v === SATURATED) v += this.excess.get(base + rm) ?? 0;
        if (rm < this.bottoms) v += everySite;
        if (v > best) {
          best = v;
          bestRm = rm;
          bestS = s;
        }
      }
    }
    const tier: Tier = bestRm < this.bottoms ? 'bottom' : bestRm < this.top ? 'middle' : 'top';
    const index = tier === 'bottom' ? bestRm : tier === 'middle' ? bestRm - this.bottoms : 0;
    return { msgsPerS: best, rm: bestRm, tier, index, second: bestS };
  }
}
