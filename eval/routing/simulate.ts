/**
 * The per-AS simulation: a synthetic population in which each multihomed stub AS announces its
 * own number of prefixes, and each half-year a uniformly random set of undeployed ASes deploys.
 * Its mean over seeds should follow the expected-value model; its spread shows how much the
 * result depends on which ASes happen to deploy when a few ASes announce hundreds of prefixes.
 */
import { asCountAt } from './growth.ts';
import { cumulativeShare } from './model.ts';
import type { DeploymentSchedule, PopulationParams } from './params.ts';
import type { PrefixCountDistribution } from './prefix-distribution.ts';
import { createRng, randomIndex, type Rng } from './random.ts';
import { point, type SeriesPoint } from './series.ts';

export interface SimulationInput {
  population: PopulationParams;
  schedule: DeploymentSchedule;
  prefixCounts: PrefixCountDistribution;
  halfYears: number;
  seed: number;
}

export function simulate(input: SimulationInput): SeriesPoint[] {
  const { population, schedule, prefixCounts, halfYears } = input;
  const rng = createRng(input.seed);
  // Only undeployed ASes need their own prefix count: a deployed AS announces a fixed number.
  const undeployed: number[] = [];
  let undeployedPrefixes = 0;
  let deployed = 0;
  const arrive = (count: number): void => {
    for (let i = 0; i < count; i++) {
      const prefixes = prefixCounts.draw(rng);
      undeployed.push(prefixes);
      undeployedPrefixes += prefixes;
    }
  };

  arrive(Math.round(asCountAt(population, 0)));
  const series: SeriesPoint[] = [point(0, undeployed.length, 0, undeployedPrefixes)];
  for (let k = 1; k <= halfYears; k++) {
    arrive(Math.round(asCountAt(population, k)) - (undeployed.length + deployed));
    const ases = undeployed.length + deployed;
    const deployers = Math.min(undeployed.length, deployersThisHalfYear(schedule, k, ases, deployed, undeployed.length));
    for (let i = 0; i < deployers; i++) {
      undeployedPrefixes -= removeRandom(undeployed, rng);
      deployed++;
    }
    series.push(point(k, ases, deployed, undeployedPrefixes + deployed * schedule.prefixesPerDeployedAs));
  }
  return series;
}

function deployersThisHalfYear(
  schedule: DeploymentSchedule,
  k: number,
  ases: number,
  deployed: number,
  undeployed: number,
): number {
  switch (schedule.reading) {
    case 'share-of-all':
      return Math.max(0, Math.round(cumulativeShare(schedule.sharePerHalfYear, k) * ases) - deployed);
    case 'share-of-remaining':
      return Math.round(schedule.sharePerHalfYear * undeployed);
  }
}

/** Removes a uniformly chosen element in O(1) (order does not matter) and returns it. */
function removeRandom(pool: number[], rng: Rng): number {
  const i = randomIndex(rng, pool.length);
  const chosen = pool[i];
  const last = pool.pop();
  if (last !== undefined && i < pool.length) pool[i] = last;
  return chosen;
}
