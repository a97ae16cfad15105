/**
 * A series is the state of the multihomed stub-AS population at the end of each half-year
 * (index 0 = today, before anyone deploys). The metrics below read the paper's claims off it.
 */
import { HALF_YEARS_PER_YEAR } from './params.ts';

export interface SeriesPoint {
  halfYear: number;
  years: number;
  ases: number;
  deployedAses: number;
  /** Prefixes in the global table contributed by multihomed stub ASes. */
  prefixes: number;
  /** The paper's lower bound: one prefix per multihomed stub AS existing at that time. */
  lowerBound: number;
}

export function point(halfYear: number, ases: number, deployedAses: number, prefixes: number): SeriesPoint {
  return { halfYear, years: halfYear / HALF_YEARS_PER_YEAR, ases, deployedAses, prefixes, lowerBound: ases };
}

export function prefixesAtYears(series: readonly SeriesPoint[], years: number): number {
  const found = series.find((p) => p.years === years);
  if (found === undefined) throw new RangeError(`series has no point at ${years} years`);
  return found.prefixes;
}

export function deployedShareAtYears(series: readonly SeriesPoint[], years: number): number {
  const found = series.find((p) => p.years === years);
  if (found === undefined) throw new RangeError(`series has no point at ${years} years`);
  return found.ases === 0 ? 0 : found.deployedAses / found.ases;
}

/**
 * Years until the prefixes first come within `tolerance` of the one-prefix-per-AS bound, or null
 * if they never do within the series. Deployment happens in half-year steps, so the answer is a
 * multiple of 0.5: interpolating between steps would claim a precision the schedule does not have.
 */
export function yearsToWithinOfFloor(series: readonly SeriesPoint[], tolerance: number): number | null {
  const found = series.find((p) => p.prefixes <= p.lowerBound * (1 + tolerance));
  return found === undefined ? null : found.years;
}

/**
 * Years until the prefixes first fall below the one-prefix-per-AS bound. A bound that is crossed
 * is no bound: this flags readings in which the paper's 30K is a coincidence, not a floor.
 */
export function yearsBelowFloor(series: readonly SeriesPoint[]): number | null {
  // A relative epsilon, so that rounding in the closed form does not count as crossing.
  const found = series.find((p) => p.prefixes < p.lowerBound * (1 - 1e-9));
  return found === undefined ? null : found.years;
}

export function truncate(series: readonly SeriesPoint[], halfYears: number): SeriesPoint[] {
  return series.filter((p) => p.halfYear <= halfYears);
}
