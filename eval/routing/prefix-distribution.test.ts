import { describe, expect, it } from 'vitest';
import { powerLawExponent, powerLawPrefixCount } from './prefix-distribution.ts';
import { createRng } from './random.ts';

describe('heavy-tailed prefix counts', () => {
  const distribution = powerLawPrefixCount(3, 1_000);
  const rng = createRng(42);
  const draws = Array.from({ length: 200_000 }, () => distribution.draw(rng));

  it('has the paper-derived mean of 3 prefixes per AS', () => {
    expect(distribution.mean).toBeCloseTo(3, 9);
    expect(draws.reduce((a, b) => a + b, 0) / draws.length).toBeCloseTo(3, 0);
  });

  it('is heavy-tailed: most ASes announce one prefix, a few announce hundreds', () => {
    expect(draws.filter((d) => d === 1).length / draws.length).toBeGreaterThan(0.5);
    const largest = draws.reduce((a, b) => Math.max(a, b), 0);
    expect(largest).toBeGreaterThanOrEqual(200);
    expect(largest).toBeLessThanOrEqual(1_000);
    expect(draws.reduce((a, b) => Math.min(a, b), Infinity)).toBe(1);
    expect(powerLawExponent(3, 1_000)).toBeGreaterThan(2);
  });

  it('refuses a mean that no power law on the range can have', () => {
    expect(() => powerLawPrefixCount(1, 1_000)).toThrow(RangeError);
    expect(() => powerLawPrefixCount(600, 1_000)).toThrow(RangeError);
  });
});
