/**
 * A heavy-tailed per-AS prefix count, so the simulation does not rest on "every AS announces the
 * same number of prefixes". A discrete power law P(k) ~ k^-s on 1..max, with the exponent solved
 * so that the mean matches the paper's starting point (90K prefixes / 30K ASes = 3).
 */
import type { Rng } from './random.ts';

export interface PrefixCountDistribution {
  readonly mean: number;
  draw(rng: Rng): number;
}

export function constantPrefixCount(count: number): PrefixCountDistribution {
  return { mean: count, draw: () => count };
}

export function powerLawPrefixCount(targetMean: number, maxPrefixes: number): PrefixCountDistribution {
  if (!(targetMean > 1 && targetMean < (maxPrefixes + 1) / 2)) {
    throw new RangeError(`a power law on 1..${maxPrefixes} cannot have mean ${targetMean}`);
  }
  const exponent = solveExponent(targetMean, maxPrefixes);
  const cdf = cumulative(weights(exponent, maxPrefixes));
  return {
    mean: meanOf(exponent, maxPrefixes),
    draw: (rng) => firstAtLeast(cdf, rng()) + 1,
  };
}

export function powerLawExponent(targetMean: number, maxPrefixes: number): number {
  return solveExponent(targetMean, maxPrefixes);
}

function weights(exponent: number, maxPrefixes: number): number[] {
  return Array.from({ length: maxPrefixes }, (_, i) => (i + 1) ** -exponent);
}

function meanOf(exponent: number, maxPrefixes: number): number {
  const w = weights(exponent, maxPrefixes);
  const total = w.reduce((a, b) => a + b, 0);
  return w.reduce((sum, wi, i) => sum + (i + 1) * wi, 0) / total;
}

/** The mean falls monotonically as the exponent rises, so bisection finds it. */
function solveExponent(targetMean: number, maxPrefixes: number): number {
  let low = 0;
  let high = 20;
  for (let i = 0; i < 100; i++) {
    const mid = (low + high) / 2;
    if (meanOf(mid, maxPrefixes) > targetMean) low = mid;
    else high = mid;
  }
  return (low + high) / 2;
}

function cumulative(w: readonly number[]): Float64Array {
  const total = w.reduce((a, b) => a + b, 0);
  const cdf = new Float64Array(w.length);
  let running = 0;
  w.forEach((wi, i) => {
    running += wi / total;
    cdf[i] = running;
  });
  cdf[w.length - 1] = 1;
  return cdf;
}

function firstAtLeast(cdf: Float64Array, u: number): number {
  let low = 0;
  let high = cdf.length - 1;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (cdf[mid] >= u) high = mid;
    else low = mid + 1;
  }
  return low;
}
