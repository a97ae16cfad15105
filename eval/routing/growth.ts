/** How many multihomed stub ASes exist after a number of half-years, under the growth model. */
import { HALF_YEARS_PER_YEAR, type PopulationParams } from './params.ts';

export function asCountAt(population: PopulationParams, halfYear: number): number {
  const years = halfYear / HALF_YEARS_PER_YEAR;
  switch (population.growth) {
    case 'none':
      return population.initialAses;
    case 'linear':
      // The paper calls the growth "roughly linear": a fixed increment, 8.45% of today's count.
      return population.initialAses * (1 + population.annualGrowth * years);
    case 'compound':
      return population.initialAses * (1 + population.annualGrowth) ** years;
  }
}
