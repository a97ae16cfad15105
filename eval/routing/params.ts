/**
 * The paper's numbers (section V.A, first-step deployment) and the assumptions the model adds.
 * Every number the evaluation starts from lives here, so that trying another assumption is a
 * one-line change; docs/routing-evaluation.md lists them side by side with the model's output.
 */

/** What the paper states; the model is judged against these. */
export const PAPER = {
  /** Prefixes announced by multihomed stub ASes at the start. */
  initialPrefixes: 90_000,
  /** "one prefix per multihomed AS" lower bound, i.e. the number of multihomed stub ASes. */
  lowerBound: 30_000,
  /** Multihomed stub ASes and their prefixes grow "roughly linearly, about 8.45% a year". */
  annualGrowth: 0.0845,
  /** 10% deploy every 6 months: ~90K to ~30K in 5 years ("whole deployment in 5 years"). */
  slowShare: 0.1,
  slowYears: 5,
  /** 20% every 6 months: "the same result takes about 2.5 years". */
  fastShare: 0.2,
  fastYears: 2.5,
  /** Both outcomes are "about 30K", close to the lower bound. */
  targetPrefixes: 30_000,
} as const;

export const HALF_YEARS_PER_YEAR = 2;

export type GrowthModel = 'none' | 'linear' | 'compound';

/**
 * How "10% deploy every 6 months" is read.
 * - share-of-all: after k half-years, min(1, k x share) of all multihomed stub ASes then existing
 *   have deployed, so deployment is whole after 1/share half-years, as the paper says.
 * - share-of-remaining: each half-year, share of the ASes not yet deployed deploy; deployment
 *   approaches but never reaches 100%.
 */
export type ScheduleReading = 'share-of-all' | 'share-of-remaining';

export interface PopulationParams {
  initialAses: number;
  /** Mean prefixes announced by an AS that has not deployed (the paper's 90K / 30K = 3). */
  meanPrefixesPerAs: number;
  annualGrowth: number;
  /**
   * 'linear' adds annualGrowth x initialAses a year ("roughly linearly"); 'compound' multiplies
   * by (1 + annualGrowth) a year. New ASes arrive undeployed with the same prefix distribution.
   */
  growth: GrowthModel;
}

export interface DeploymentSchedule {
  reading: ScheduleReading;
  sharePerHalfYear: number;
  /**
   * What a deployed AS still announces. 1 is the model and the paper's lower bound (one
   * aggregate per AS); 0 is the reading behind the "90K x 0.9^10 = 31.4K" check, in which a
   * deployed AS's prefixes leave the global table altogether.
   */
  prefixesPerDeployedAs: number;
}

export const NO_DEPLOYMENT_SHARE = 0;

export const DEFAULT_POPULATION: PopulationParams = {
  initialAses: PAPER.lowerBound,
  meanPrefixesPerAs: PAPER.initialPrefixes / PAPER.lowerBound,
  annualGrowth: PAPER.annualGrowth,
  growth: 'none',
};

/** The paper's window, and a longer one so that slow readings still get a time-to-floor. */
export const REPORT_HALF_YEARS = PAPER.slowYears * HALF_YEARS_PER_YEAR;
export const METRIC_HALF_YEARS = 20 * HALF_YEARS_PER_YEAR;

/** "Close to the lower bound" made testable: within 5% of one prefix per AS. */
export const FLOOR_TOLERANCE = 0.05;
/** The acceptance bar for the headline figures. */
export const REPRODUCE_TOLERANCE = 0.05;

export const SIMULATION = {
  seeds: 20,
  firstSeed: 1,
  /**
   * Per-AS prefix counts follow a discrete power law P(k) ~ k^-s on 1..maxPrefixesPerAs, with s
   * solved so the mean is meanPrefixesPerAs: most stub ASes announce one or two prefixes and a
   * few announce hundreds. The cap keeps the variance finite; 1,000 is an assumption, not data.
   */
  maxPrefixesPerAs: 1_000,
} as const;
