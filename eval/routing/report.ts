/**
 * The shape of bench-results/routing.json. Field names are snake_case because the file is read
 * by people and other tools, not by this code; `final_prefixes_5y` and
 * `years_to_within_5pct_of_floor` are the fields the issue asks for in every schedule.
 */
import { checkClaims, reproducesAll, reproducesHeadline, type ClaimCheck } from './claims.ts';
import type { ScenarioResult, ScheduleResult, SimulationSummary } from './evaluate.ts';
import { PAPER, type PopulationParams } from './params.ts';
import type { SeriesPoint } from './series.ts';
import type { OptionalSpread, Spread } from './stats.ts';

export interface ReportInputs {
  population: PopulationParams;
  prefixCountExponent: number;
  maxPrefixesPerAs: number;
  seeds: readonly number[];
  floorTolerance: number;
  reproduceTolerance: number;
  metricHorizonYears: number;
}

export interface ScenarioVerdict {
  result: ScenarioResult;
  claims: ClaimCheck[];
  reproducesHeadline: boolean;
  reproducesAll: boolean;
}

export function judge(results: readonly ScenarioResult[]): ScenarioVerdict[] {
  return results.map((result) => {
    const claims = checkClaims(result);
    return { result, claims, reproducesHeadline: reproducesHeadline(claims), reproducesAll: reproducesAll(claims) };
  });
}

/** The paper's reading is the one scenario in which every statement of the paper holds. */
export function paperReading(verdicts: readonly ScenarioVerdict[]): ScenarioVerdict | null {
  const all = verdicts.filter((v) => v.reproducesAll);
  return all.length === 1 ? all[0] : null;
}

export function buildReport(inputs: ReportInputs, verdicts: readonly ScenarioVerdict[]): object {
  const paper = paperReading(verdicts);
  return {
    generated_by: 'npm run eval:routing (eval/routing/main.ts)',
    paper: {
      section: 'V.A, first-step deployment',
      initial_prefixes: PAPER.initialPrefixes,
      lower_bound_one_prefix_per_as: PAPER.lowerBound,
      annual_growth: PAPER.annualGrowth,
      claims: ['10% of multihomed stub ASes deploy every 6 months: ~90K -> ~30K prefixes in 5 years, near the lower bound', '20% every 6 months: the same in ~2.5 years'],
    },
    assumptions: {
      initial_ases: inputs.population.initialAses,
      mean_prefixes_per_undeployed_as: inputs.population.meanPrefixesPerAs,
      step: 'half-year; newcomers (if growth) arrive undeployed, then that half-year\'s deployers are chosen',
      lower_bound: 'one prefix per multihomed stub AS existing at that time (grows with the population)',
      floor_tolerance: inputs.floorTolerance,
      reproduce_tolerance: inputs.reproduceTolerance,
      metric_horizon_years: inputs.metricHorizonYears,
      simulation: {
        seeds: inputs.seeds,
        prefix_count_distribution: `power law P(k) ~ k^-${round(inputs.prefixCountExponent, 3)} on 1..${inputs.maxPrefixesPerAs} (mean ${inputs.population.meanPrefixesPerAs})`,
        deployers: 'uniformly random among undeployed ASes',
      },
    },
    paper_reading: paper?.result.scenario.id ?? null,
    schedules: paper === null ? null : schedulesJson(paper.result),
    scenarios: verdicts.map((v) => ({
      id: v.result.scenario.id,
      label: v.result.scenario.label,
      reading: v.result.scenario.reading,
      prefixes_per_deployed_as: v.result.scenario.prefixesPerDeployedAs,
      growth: v.result.scenario.growth,
      reproduces_headline: v.reproducesHeadline,
      reproduces_all_claims: v.reproducesAll,
      claims: v.claims.map((c) => ({
        id: c.id,
        claim: c.claim,
        headline: c.headline,
        unit: c.unit,
        paper: c.paper,
        model: c.model === null ? null : round(c.model, 4),
        relative_error: c.relativeError === null ? null : round(c.relativeError, 4),
        holds: c.holds,
      })),
      schedules: schedulesJson(v.result),
    })),
  };
}

function schedulesJson(result: ScenarioResult): object {
  return {
    none: { share_per_half_year: 0, series: result.baseline.map(seriesPointJson) },
    '10pct': scheduleJson(result.slow),
    '20pct': scheduleJson(result.fast),
  };
}

function scheduleJson(s: ScheduleResult): object {
  return {
    share_per_half_year: s.sharePerHalfYear,
    final_prefixes_5y: round(s.prefixesAt5y, 1),
    prefixes_2_5y: round(s.prefixesAtFastYears, 1),
    deployed_share_5y: round(s.deployedShareAt5y, 4),
    years_to_within_5pct_of_floor: s.yearsToFloor,
    years_first_below_floor: s.yearsBelowFloor,
    series: s.series.map(seriesPointJson),
    simulation: simulationJson(s.simulation),
  };
}

function simulationJson(sim: SimulationSummary): object {
  return {
    seeds: sim.seeds.length,
    initial_prefixes: spreadJson(sim.initialPrefixes),
    final_prefixes_5y: spreadJson(sim.prefixesAt5y),
    prefixes_2_5y: spreadJson(sim.prefixesAtFastYears),
    years_to_within_5pct_of_floor: optionalSpreadJson(sim.yearsToFloor),
    series: sim.perHalfYear.map((p, k) => ({ years: k / 2, ...spreadJson(p) })),
  };
}

function seriesPointJson(p: SeriesPoint): object {
  return {
    years: p.years,
    prefixes: round(p.prefixes, 1),
    lower_bound: round(p.lowerBound, 1),
    ases: round(p.ases, 1),
    deployed_ases: round(p.deployedAses, 1),
  };
}

function spreadJson(s: Spread): object {
  return { mean: round(s.mean, 1), sd: round(s.sd, 1), min: round(s.min, 1), max: round(s.max, 1) };
}

function optionalSpreadJson(s: OptionalSpread): object {
  return { ...(s.spread === null ? { mean: null } : spreadJson(s.spread)), never_within_horizon: s.missing };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
