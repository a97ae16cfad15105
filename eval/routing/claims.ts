/**
 * The paper's statements about the first deployment step, each checked against a scenario.
 * A scenario reproduces the paper when every statement holds; the headline figures are the two
 * the issue asks for (about 30K after 5 years at 10%, and after 2.5 years at 20%).
 */
import type { ScenarioResult } from './evaluate.ts';
import { PAPER, REPRODUCE_TOLERANCE } from './params.ts';
import { relativeError } from './stats.ts';

export interface ClaimCheck {
  id: string;
  claim: string;
  headline: boolean;
  /** null: the paper's value is "never" (the bound is never undershot). */
  paper: number | null;
  /** null: never, within the evaluation's 20-year window (METRIC_HALF_YEARS). */
  model: number | null;
  unit: 'prefixes' | 'years' | 'share';
  /** (model - paper) / paper; null when the model never reaches the state the claim describes. */
  relativeError: number | null;
  holds: boolean;
}

export const BOUND_CLAIM = 'bound-never-crossed';

export function checkClaims(result: ScenarioResult): ClaimCheck[] {
  const { slow, fast } = result;
  return [
    near('slow-prefixes-5y', '10%/half-year: ~90K falls to ~30K prefixes in 5 years', true, PAPER.targetPrefixes, slow.prefixesAt5y, 'prefixes'),
    near('fast-prefixes-2.5y', '20%/half-year: the same ~30K after ~2.5 years', true, PAPER.targetPrefixes, fast.prefixesAtFastYears, 'prefixes'),
    near('slow-years-to-floor', '10%/half-year: within 5% of the one-prefix-per-AS bound after 5 years', false, PAPER.slowYears, slow.yearsToFloor, 'years'),
    near('fast-years-to-floor', '20%/half-year: within 5% of the bound after 2.5 years', false, PAPER.fastYears, fast.yearsToFloor, 'years'),
    near('whole-deployment-5y', '10%/half-year: "whole deployment in 5 years"', false, 1, slow.deployedShareAt5y, 'share'),
    {
      id: BOUND_CLAIM,
      claim: 'one prefix per multihomed AS is a lower bound (never undershot, either schedule)',
      headline: false,
      paper: null,
      model: earliest(slow.yearsBelowFloor, fast.yearsBelowFloor),
      unit: 'years',
      relativeError: null,
      holds: slow.yearsBelowFloor === null && fast.yearsBelowFloor === null,
    },
  ];
}

function near(
  id: string,
  claim: string,
  headline: boolean,
  paper: number,
  model: number | null,
  unit: ClaimCheck['unit'],
): ClaimCheck {
  const error = model === null ? null : relativeError(model, paper);
  return { id, claim, headline, paper, model, unit, relativeError: error, holds: error !== null && Math.abs(error) <= REPRODUCE_TOLERANCE };
}

function earliest(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}

export function reproducesHeadline(claims: readonly ClaimCheck[]): boolean {
  return claims.filter((c) => c.headline).every((c) => c.holds);
}

export function reproducesAll(claims: readonly ClaimCheck[]): boolean {
  return claims.every((c) => c.holds);
}
