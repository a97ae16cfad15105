import { describe, expect, it } from 'vitest';
import { evaluateScenario, type EvaluationOptions } from './evaluate.ts';
import { DEFAULT_POPULATION } from './params.ts';
import { constantPrefixCount } from './prefix-distribution.ts';
import { judge, paperReading, type ScenarioVerdict } from './report.ts';
import { SCENARIOS } from './scenarios.ts';

// A homogeneous population and two seeds keep this fast; the claims are judged on the model.
const options: EvaluationOptions = {
  population: DEFAULT_POPULATION,
  prefixCounts: constantPrefixCount(3),
  seeds: [1, 2],
  reportHalfYears: 10,
  metricHalfYears: 40,
  floorTolerance: 0.05,
};
const verdicts = judge(SCENARIOS.map((s) => evaluateScenario(s, options)));
const verdict = (id: string): ScenarioVerdict => {
  const found = verdicts.find((v) => v.result.scenario.id === id);
  if (found === undefined) throw new Error(`no scenario ${id}`);
  return found;
};

describe("which reading is the paper's", () => {
  it('exactly one reading makes every statement of the paper hold: 10%/20% of all ASes, no growth', () => {
    expect(paperReading(verdicts)?.result.scenario.id).toBe('all-keep1-nogrowth');
  });

  it('reproduces both headline figures within 5% under that reading', () => {
    const paper = verdict('all-keep1-nogrowth');
    const headline = paper.claims.filter((c) => c.headline);
    expect(headline).toHaveLength(2);
    headline.forEach((c) => expect(Math.abs(c.relativeError ?? Infinity)).toBeLessThanOrEqual(0.05));
    expect(paper.result.slow.yearsToFloor).toBe(5);
    expect(paper.result.fast.yearsToFloor).toBe(2.5);
  });

  it('the 0.9^10 reading matches the headline numbers only by dropping below the one-prefix bound', () => {
    const zeroFloor = verdict('remaining-drop-nogrowth');
    expect(zeroFloor.reproducesHeadline).toBe(true);
    expect(zeroFloor.reproducesAll).toBe(false);
    expect(zeroFloor.result.slow.prefixesAt5y).toBeCloseTo(31_381, 0);
    expect(zeroFloor.result.fast.yearsBelowFloor).toBe(2.5);
  });

  it('10% of the not-yet-deployed, each keeping one prefix, does not reproduce (~51K after 5 years)', () => {
    const remaining = verdict('remaining-keep1-nogrowth');
    expect(remaining.reproducesHeadline).toBe(false);
    expect(remaining.result.slow.prefixesAt5y).toBeCloseTo(50_921, 0);
  });

  it('no reading reaches ~30K once the 8.45% yearly growth is included', () => {
    verdicts
      .filter((v) => v.result.scenario.growth !== 'none')
      .forEach((v) => expect(v.reproducesHeadline).toBe(false));
  });
});
