/**
 * The expected-value model: every AS that has not deployed announces the population mean, so the
 * whole state is the number of undeployed ASes. Without growth it has a closed form (N ASes,
 * m prefixes per undeployed AS, d per deployed AS, share f per half-year, k half-years):
 *   share-of-all:       P(k) = N d + N (m - d)(1 - min(1, k f))
 *   share-of-remaining: P(k) = N d + N (m - d)(1 - f)^k
 * and with growth it is the same recurrence with newcomers added before each half-year's
 * deployment (so an AS can arrive and deploy in the same half-year).
 */
import { asCountAt } from './growth.ts';
import type { DeploymentSchedule, PopulationParams } from './params.ts';
import { point, type SeriesPoint } from './series.ts';

export function expectedSeries(
  population: PopulationParams,
  schedule: DeploymentSchedule,
  halfYears: number,
): SeriesPoint[] {
  const series: SeriesPoint[] = [];
  let undeployed = population.initialAses;
  let previousAses = population.initialAses;
  for (let k = 0; k <= halfYears; k++) {
    const ases = asCountAt(population, k);
    if (k > 0) undeployed = undeployedAfter(schedule, k, ases, undeployed + (ases - previousAses));
    previousAses = ases;
    const deployed = ases - undeployed;
    const prefixes = undeployed * population.meanPrefixesPerAs + deployed * schedule.prefixesPerDeployedAs;
    series.push(point(k, ases, deployed, prefixes));
  }
  return series;
}

/** Undeployed ASes at the end of half-year k, given the count just before that half-year's deployment. */
function undeployedAfter(schedule: DeploymentSchedule, k: number, ases: number, undeployedBefore: number): number {
  switch (schedule.reading) {
    case 'share-of-all':
      return ases * (1 - cumulativeShare(schedule.sharePerHalfYear, k));
    case 'share-of-remaining':
      return undeployedBefore * (1 - schedule.sharePerHalfYear);
  }
}

export function cumulativeShare(sharePerHalfYear: number, halfYear: number): number {
  return Math.min(1, sharePerHalfYear * halfYear);
}
