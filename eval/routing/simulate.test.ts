import { describe, expect, it } from 'vitest';
import { expectedSeries } from './model.ts';
import { DEFAULT_POPULATION, type DeploymentSchedule, type GrowthModel, type ScheduleReading } from './params.ts';
import { constantPrefixCount, powerLawPrefixCount } from './prefix-distribution.ts';
import { yearsBelowFloor } from './series.ts';
import { simulate, type SimulationInput } from './simulate.ts';

const heavyTailed = powerLawPrefixCount(3, 1_000);
const input = (overrides: Partial<SimulationInput> = {}): SimulationInput => ({
  population: DEFAULT_POPULATION,
  schedule: { reading: 'share-of-remaining', sharePerHalfYear: 0.1, prefixesPerDeployedAs: 1 },
  prefixCounts: heavyTailed,
  halfYears: 10,
  seed: 1,
  ...overrides,
});

const CASES: [ScheduleReading, GrowthModel, number, number][] = [];
for (const reading of ['share-of-all', 'share-of-remaining'] as const) {
  for (const growth of ['none', 'linear', 'compound'] as const) {
    for (const share of [0.1, 0.2]) for (const kept of [0, 1]) CASES.push([reading, growth, share, kept]);
  }
}

describe('per-AS simulation', () => {
  it.each(CASES)('matches the expected-value model for a homogeneous population (%s, growth %s, %f, keeps %i)', (reading, growth, share, kept) => {
    const population = { ...DEFAULT_POPULATION, growth };
    const schedule: DeploymentSchedule = { reading, sharePerHalfYear: share, prefixesPerDeployedAs: kept };
    const model = expectedSeries(population, schedule, 20);
    const sim = simulate(input({ population, schedule, prefixCounts: constantPrefixCount(3), halfYears: 20 }));
    // Only rounding to whole ASes separates the two, so the tolerance is tight: 0.1% of the start.
    sim.forEach((p, k) => {
      expect(Math.abs(p.prefixes - model[k].prefixes)).toBeLessThan(90);
      expect(Math.abs(p.ases - model[k].ases)).toBeLessThanOrEqual(0.5);
    });
  });

  it('averaged over seeds, follows the model for a heavy-tailed population', () => {
    const schedule: DeploymentSchedule = { reading: 'share-of-remaining', sharePerHalfYear: 0.1, prefixesPerDeployedAs: 1 };
    const seeds = Array.from({ length: 10 }, (_, i) => i + 1);
    // Compare each run with the model for its own population (its realised mean prefixes per AS),
    // so the test checks the deployment process, not the sampling of the population.
    const errors = seeds.map((seed) => {
      const sim = simulate(input({ schedule, seed }));
      const model = expectedSeries({ ...DEFAULT_POPULATION, meanPrefixesPerAs: sim[0].prefixes / sim[0].ases }, schedule, 10);
      return (sim[10].prefixes - model[10].prefixes) / model[10].prefixes;
    });
    const meanError = errors.reduce((a, b) => a + b, 0) / errors.length;
    expect(Math.abs(meanError)).toBeLessThan(0.02);
  });

  it('never undershoots one prefix per AS when a deployed AS keeps one, whatever the prefix counts', () => {
    for (const reading of ['share-of-all', 'share-of-remaining'] as const) {
      for (const growth of ['none', 'linear'] as const) {
        const sim = simulate(
          input({
            population: { ...DEFAULT_POPULATION, growth },
            schedule: { reading, sharePerHalfYear: 0.2, prefixesPerDeployedAs: 1 },
            halfYears: 20,
          }),
        );
        expect(yearsBelowFloor(sim)).toBeNull();
      }
    }
  });

  it('deploys everyone after 1/share half-years under the share-of-all reading', () => {
    const sim = simulate(input({ schedule: { reading: 'share-of-all', sharePerHalfYear: 0.2, prefixesPerDeployedAs: 1 } }));
    expect(sim[5]).toMatchObject({ deployedAses: 30_000, prefixes: 30_000 });
  });

  it('gives the same run for the same seed and a different one for another seed', () => {
    expect(simulate(input({ seed: 7 }))).toEqual(simulate(input({ seed: 7 })));
    expect(simulate(input({ seed: 7 }))[10].prefixes).not.toBe(simulate(input({ seed: 8 }))[10].prefixes);
  });
});
