/**
 * Who looks up whom, and when. The correspondents of a site share their site RM's cache, so the
 * simulation only needs each site's merged lookup stream: a Poisson process whose rate is the
 * site's hosts times the per-host rate, each lookup asking for a Zipf-distributed target. Each
 * site draws from its own stream, so every strategy sees the identical trace whatever order the
 * sites are simulated in.
 */
import type { ZipfTargets } from './population.ts';
import { Stream } from './streams.ts';

/** Called once per lookup, in time order within a site. Plain callback: this is the hot loop. */
export type LookupVisitor = (x: number, target: number) => void;

export interface LookupSource {
  forEachLookup(site: number, visit: LookupVisitor): void;
}

export class PoissonZipfLookups implements LookupSource {
  /**
   * @param ratePerSite lookups per second made by each site's hosts together
   * @param end the simulation's end (s); lookups run from 0
   */
  constructor(
    private readonly seed: number,
    private readonly ratePerSite: Float64Array,
    private readonly end: number,
    private readonly targets: ZipfTargets,
  ) {}

  forEachLookup(site: number, visit: LookupVisitor): void {
    const rate = this.ratePerSite[site];
    if (rate <= 0) return;
    const rng = new Stream(this.seed, site);
    const mean = 1 / rate;
    const targets = this.targets;
    for (let x = rng.exp(mean); x < this.end; x += rng.exp(mean)) visit(x, targets.sample(rng));
  }
}

/** Lookups listed by hand (tests): perSite[b] is a list of [time, target], in time order. */
export class ListedLookups implements LookupSource {
  constructor(private readonly perSite: readonly (readonly (readonly [number, number])[])[]) {}

  forEachLookup(site: number, visit: LookupVisitor): void {
    for (const [x, target] of this.perSite[site] ?? []) visit(x, target);
  }
}

/** Each site's rate: its own hosts times the per-host rate. */
export function siteRates(home: Int32Array, sites: number, lookupsPerHostHour: number): Float64Array {
  const rates = new Float64Array(sites);
  for (let h = 0; h < home.length; h++) rates[home[h]] += lookupsPerHostHour / 3_600;
  return rates;
}
