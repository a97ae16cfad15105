/**
 * Runs one scenario: the expected-value model and the per-AS simulation for the paper's two
 * schedules (10% and 20% per half-year), plus the no-deployment baseline.
 */
import { expectedSeries } from './model.ts';
import {
  NO_DEPLOYMENT_SHARE,
  PAPER,
  type DeploymentSchedule,
  type PopulationParams,
} from './params.ts';
import type { PrefixCountDistribution } from './prefix-distribution.ts';
import type { Scenario } from './scenarios.ts';
import {
  deployedShareAtYears,
  prefixesAtYears,
  truncate,
  yearsBelowFloor,
  yearsToWithinOfFloor,
  type SeriesPoint,
} from './series.ts';
import { simulate } from './simulate.ts';
import { optionalSpread, spread, type OptionalSpread, type Spread } from './stats.ts';

export interface EvaluationOptions {
  /** Population before the scenario's growth model is applied. */
  population: PopulationParams;
  prefixCounts: PrefixCountDistribution;
  seeds: readonly number[];
  /** The window that is reported and plotted. */
  reportHalfYears: number;
  /** The longer window in which time-to-floor and floor crossings are looked for. */
  metricHalfYears: number;
  floorTolerance: number;
}

export interface SimulationSummary {
  seeds: readonly number[];
  initialPrefixes: Spread;
  prefixesAt5y: Spread;
  prefixesAtFastYears: Spread;
  yearsToFloor: OptionalSpread;
  /** Prefixes at each half-year of the report window, over seeds. */
  perHalfYear: Spread[];
}

export interface ScheduleResult {
  sharePerHalfYear: number;
  series: SeriesPoint[];
  prefixesAt5y: number;
  prefixesAtFastYears: number;
  deployedShareAt5y: number;
  yearsToFloor: number | null;
  yearsBelowFloor: number | null;
  simulation: SimulationSummary;
}

export interface ScenarioResult {
  scenario: Scenario;
  baseline: SeriesPoint[];
  slow: ScheduleResult;
  fast: ScheduleResult;
}

export function evaluateScenario(scenario: Scenario, options: EvaluationOptions): ScenarioResult {
  const population: PopulationParams = { ...options.population, growth: scenario.growth };
  const schedule = (sharePerHalfYear: number): DeploymentSchedule => ({
    reading: scenario.reading,
    sharePerHalfYear,
    prefixesPerDeployedAs: scenario.prefixesPerDeployedAs,
  });
  return {
    scenario,
    baseline: expectedSeries(population, schedule(NO_DEPLOYMENT_SHARE), options.reportHalfYears),
    slow: evaluateSchedule(population, schedule(PAPER.slowShare), options),
    fast: evaluateSchedule(population, schedule(PAPER.fastShare), options),
  };
}

function evaluateSchedule(
  population: PopulationParams,
  schedule: DeploymentSchedule,
  options: EvaluationOptions,
): ScheduleResult {
  const long = expectedSeries(population, schedule, options.metricHalfYears);
  const series = truncate(long, options.reportHalfYears);
  return {
    sharePerHalfYear: schedule.sharePerHalfYear,
    series,
    prefixesAt5y: prefixesAtYears(series, PAPER.slowYears),
    prefixesAtFastYears: prefixesAtYears(series, PAPER.fastYears),
    deployedShareAt5y: deployedShareAtYears(series, PAPER.slowYears),
    yearsToFloor: yearsToWithinOfFloor(long, options.floorTolerance),
    yearsBelowFloor: yearsBelowFloor(long),
    simulation: simulateSeeds(population, schedule, options),
  };
}

function simulateSeeds(
  population: PopulationParams,
  schedule: DeploymentSchedule,
  options: EvaluationOptions,
): SimulationSummary {
  const runs = options.seeds.map((seed) =>
    simulate({ population, schedule, prefixCounts: options.prefixCounts, halfYears: options.metricHalfYears, seed }),
  );
  const reported = runs.map((run) => truncate(run, options.reportHalfYears));
  return {
    seeds: options.seeds,
    initialPrefixes: spread(reported.map((run) => run[0].prefixes)),
    prefixesAt5y: spread(reported.map((run) => prefixesAtYears(run, PAPER.slowYears))),
    prefixesAtFastYears: spread(reported.map((run) => prefixesAtYears(run, PAPER.fastYears))),
    yearsToFloor: optionalSpread(runs.map((run) => yearsToWithinOfFloor(run, options.floorTolerance))),
    perHalfYear: reported[0].map((_, k) => spread(reported.map((run) => run[k].prefixes))),
  };
}
