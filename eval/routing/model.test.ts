import { describe, expect, it } from 'vitest';
import { asCountAt } from './growth.ts';
import { expectedSeries } from './model.ts';
import { DEFAULT_POPULATION, type DeploymentSchedule, type GrowthModel, type PopulationParams, type ScheduleReading } from './params.ts';
import { prefixesAtYears, yearsBelowFloor, yearsToWithinOfFloor } from './series.ts';

const READINGS: ScheduleReading[] = ['share-of-all', 'share-of-remaining'];
const GROWTHS: GrowthModel[] = ['none', 'linear', 'compound'];
const SHARES = [0.05, 0.1, 0.2, 0.3, 0.5, 1];

const population = (growth: GrowthModel): PopulationParams => ({ ...DEFAULT_POPULATION, growth });
const schedule = (reading: ScheduleReading, share: number, prefixesPerDeployedAs = 1): DeploymentSchedule => ({
  reading,
  sharePerHalfYear: share,
  prefixesPerDeployedAs,
});

describe('expected-value model', () => {
  it('starts from the paper: 30K multihomed stub ASes announcing 90K prefixes', () => {
    const [start] = expectedSeries(DEFAULT_POPULATION, schedule('share-of-all', 0.1), 10);
    expect(start).toMatchObject({ years: 0, ases: 30_000, prefixes: 90_000, lowerBound: 30_000, deployedAses: 0 });
  });

  it('reproduces 90K x 0.9^10 = 31.4K when 10% of the remaining deploy and deployed ASes announce nothing', () => {
    const series = expectedSeries(DEFAULT_POPULATION, schedule('share-of-remaining', 0.1, 0), 10);
    expect(prefixesAtYears(series, 5)).toBeCloseTo(90_000 * 0.9 ** 10, 6);
    expect(prefixesAtYears(series, 5)).toBeCloseTo(31_381, 0);
  });

  it('keeps the excess above one prefix per AS, not the whole table, when deployed ASes keep one prefix', () => {
    const series = expectedSeries(DEFAULT_POPULATION, schedule('share-of-remaining', 0.1, 1), 10);
    series.forEach((p) => expect(p.prefixes).toBeCloseTo(30_000 + 60_000 * 0.9 ** p.halfYear, 6));
    expect(prefixesAtYears(series, 5)).toBeGreaterThan(50_000);
  });

  it('share-of-all falls linearly and reaches the bound after 1/share half-years', () => {
    const slow = expectedSeries(DEFAULT_POPULATION, schedule('share-of-all', 0.1), 12);
    slow.forEach((p) => expect(p.prefixes).toBeCloseTo(30_000 * (1 + 2 * (1 - Math.min(1, 0.1 * p.halfYear))), 6));
    expect(prefixesAtYears(slow, 5)).toBeCloseTo(30_000, 6);
    const fast = expectedSeries(DEFAULT_POPULATION, schedule('share-of-all', 0.2), 10);
    expect(prefixesAtYears(fast, 2.5)).toBeCloseTo(30_000, 6);
    expect(yearsToWithinOfFloor(slow, 0.05)).toBe(5);
    expect(yearsToWithinOfFloor(fast, 0.05)).toBe(2.5);
  });

  it('grows the population linearly or compounded at 8.45% a year', () => {
    expect(asCountAt(population('none'), 10)).toBe(30_000);
    expect(asCountAt(population('linear'), 10)).toBeCloseTo(30_000 * (1 + 5 * 0.0845), 6);
    expect(asCountAt(population('compound'), 10)).toBeCloseTo(30_000 * 1.0845 ** 5, 6);
    const baseline = expectedSeries(population('linear'), schedule('share-of-all', 0), 10);
    expect(prefixesAtYears(baseline, 5)).toBeCloseTo(90_000 * (1 + 5 * 0.0845), 6);
  });

  describe.each(GROWTHS)('with growth %s', (growth) => {
    it.each(READINGS)('%s: never undershoots one prefix per AS when a deployed AS keeps one', (reading) => {
      for (const share of SHARES) {
        const series = expectedSeries(population(growth), schedule(reading, share), 60);
        expect(yearsBelowFloor(series)).toBeNull();
        series.forEach((p) => expect(p.deployedAses).toBeLessThanOrEqual(p.ases + 1e-9));
      }
    });

    it.each(READINGS)('%s: a faster schedule never leaves more prefixes, and deploying never adds any', (reading) => {
      const baseline = expectedSeries(population(growth), schedule(reading, 0), 40);
      for (let i = 1; i < SHARES.length; i++) {
        const slower = expectedSeries(population(growth), schedule(reading, SHARES[i - 1]), 40);
        const faster = expectedSeries(population(growth), schedule(reading, SHARES[i]), 40);
        faster.forEach((p, k) => {
          expect(p.prefixes).toBeLessThanOrEqual(slower[k].prefixes + 1e-6);
          expect(slower[k].prefixes).toBeLessThanOrEqual(baseline[k].prefixes + 1e-6);
        });
      }
    });

    it('the no-deployment baseline never shrinks', () => {
      const baseline = expectedSeries(population(growth), schedule('share-of-all', 0), 40);
      baseline.slice(1).forEach((p, k) => expect(p.prefixes).toBeGreaterThanOrEqual(baseline[k].prefixes));
    });
  });

  it.each(READINGS)('%s without growth: prefixes never rise while ASes deploy', (reading) => {
    for (const share of SHARES) {
      for (const kept of [0, 1]) {
        const series = expectedSeries(DEFAULT_POPULATION, schedule(reading, share, kept), 40);
        series.slice(1).forEach((p, k) => expect(p.prefixes).toBeLessThanOrEqual(series[k].prefixes + 1e-9));
      }
    }
  });

  it('undershoots the "bound" in the 0.9^k reading: there 30K is not a floor', () => {
    const fast = expectedSeries(DEFAULT_POPULATION, schedule('share-of-remaining', 0.2, 0), 10);
    expect(prefixesAtYears(fast, 2.5)).toBeCloseTo(90_000 * 0.8 ** 5, 6);
    expect(yearsBelowFloor(fast)).toBe(2.5);
  });
});
