/**
 * The hosts: where each is homed, its customer class, and how popular it is as a lookup target.
 * Class, home and popularity are drawn independently, so a popular host is as likely to be mobile
 * as any other (docs/mapping-hierarchy.md, limits).
 */
import { MOBILE, NOMADIC, STATIC } from './hierarchy-params.ts';
import type { Stream } from './streams.ts';

export interface Population {
  readonly hosts: number;
  readonly bottoms: number;
  readonly middles: number;
  /** host -> its home (bottom) RM. */
  readonly home: Int32Array;
  /** host -> true class (STATIC, NOMADIC, MOBILE). */
  readonly cls: Uint8Array;
  /** bottom RM -> its middle RM. */
  readonly middleOf: Int32Array;
  /** middle RM -> how many bottom RMs hang below it. */
  readonly childCount: Int32Array;
}

/** Hosts are spread evenly over the bottoms and the bottoms evenly over the middles, in blocks (prefix nesting). */
export function buildPopulation(hosts: number, bottoms: number, middles: number, mix: readonly [number, number, number], rng: Stream): Population {
  if (middles > bottoms) throw new RangeError(`more middle RMs (${middles}) than bottom RMs (${bottoms})`);
  const home = new Int32Array(hosts);
  const cls = new Uint8Array(hosts);
  const total = mix[0] + mix[1] + mix[2];
  const pStatic = mix[0] / total;
  const pNomadic = (mix[0] + mix[1]) / total;
  for (let h = 0; h < hosts; h++) {
    home[h] = Math.floor((h * bottoms) / hosts);
    const u = rng.next();
    cls[h] = u < pStatic ? STATIC : u < pNomadic ? NOMADIC : MOBILE;
  }
  return { hosts, bottoms, middles, home, cls, ...tree(bottoms, middles) };
}

export function tree(bottoms: number, middles: number): { middleOf: Int32Array; childCount: Int32Array } {
  const middleOf = new Int32Array(bottoms);
  const childCount = new Int32Array(middles);
  for (let b = 0; b < bottoms; b++) {
    middleOf[b] = Math.floor((b * middles) / bottoms);
    childCount[middleOf[b]]++;
  }
  return { middleOf, childCount };
}

/**
 * Lookup targets: rank k (0 = most popular) is asked with probability proportional to
 * (k + 1)^-s, and rank k is host byRank[k], a random permutation. Sampling uses Walker's alias
 * method (Vose's construction): one uniform number, O(1), which matters at 10^7-10^8 draws.
 */
export class ZipfTargets {
  /** Per rank: [probability of keeping it, its host, its alias's host], together so one draw touches one cache line. */
  private readonly table: Float64Array;
  readonly byRank: Int32Array;
  readonly n: number;

  constructor(n: number, s: number, rng: Stream) {
    this.n = n;
    const weights = new Float64Array(n);
    let sum = 0;
    for (let k = 0; k < n; k++) sum += weights[k] = (k + 1) ** -s;
    const prob = new Float64Array(n);
    const alias = new Int32Array(n);
    const small = new Int32Array(n);
    const large = new Int32Array(n);
    let ns = 0;
    let nl = 0;
    for (let k = 0; k < n; k++) {
      const scaled = (weights[k] * n) / sum;
      prob[k] = scaled;
      if (scaled < 1) small[ns++] = k;
      else large[nl++] = k;
    }
    while (ns > 0 && nl > 0) {
      const lo = small[--ns];
      const hi = large[--nl];
      alias[lo] = hi;
      prob[hi] = prob[hi] + prob[lo] - 1;
      if (prob[hi] < 1) small[ns++] = hi;
      else large[nl++] = hi;
    }
    // Leftovers are 1 up to rounding.
    while (nl > 0) prob[large[--nl]] = 1;
    while (ns > 0) prob[small[--ns]] = 1;

    this.byRank = new Int32Array(n);
    for (let k = 0; k < n; k++) this.byRank[k] = k;
    for (let k = n - 1; k > 0; k--) {
      const j = Math.floor(rng.next() * (k + 1));
      const t = this.byRank[k];
      this.byRank[k] = this.byRank[j];
      this.byRank[j] = t;
    }
    this.table = new Float64Array(3 * n);
    for (let k = 0; k < n; k++) {
      this.table[3 * k] = prob[k];
      this.table[3 * k + 1] = this.byRank[k];
      this.table[3 * k + 2] = this.byRank[alias[k]];
    }
  }

  /** A target host. */
  sample(rng: Stream): number {
    const u = rng.next() * this.n;
    const k = Math.floor(u);
    const j = 3 * k;
    return u - k < this.table[j] ? this.table[j + 1] : this.table[j + 2];
  }

  /** Probability that one lookup asks for rank k (for tests and the report). */
  static probability(n: number, s: number, k: number): number {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += (i + 1) ** -s;
    return (k + 1) ** -s / sum;
  }
}
