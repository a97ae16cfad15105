/**
 * Seeded random streams, one per site RM and one for the population. eval/routing's mulberry32
 * has a 32-bit state: two of its streams seeded differently are the same sequence shifted, and
 * with 1,000 streams of ~10^5 draws each some pairs would overlap. xoshiro128** (Blackman and
 * Vigna) has a 128-bit state; seeding each stream through splitmix32 of (seed, stream) makes
 * overlaps vanishingly unlikely. Same seed, same numbers, on every machine.
 */
export class Stream {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream: number) {
    let s = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca77)) >>> 0;
    const next = (): number => {
      // splitmix32: spreads a small seed over all 128 state bits, never all zero in practice.
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next() | 1;
  }

  /** Uniform in [0, 1). */
  next(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result / 4_294_967_296;
  }

  /** Exponential with the given mean. 1 - u is in (0, 1], so the log is finite. */
  exp(mean: number): number {
    return -Math.log(1 - this.next()) * mean;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** The population's stream (classes, homes, popularity, changes) is stream -1; site b's lookups use stream b. */
export const POPULATION_STREAM = -1;
