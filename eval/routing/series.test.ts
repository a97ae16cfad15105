import { describe, expect, it } from 'vitest';
import { point, prefixesAtYears, yearsBelowFloor, yearsToWithinOfFloor } from './series.ts';

describe('series metrics', () => {
  const series = [point(0, 100, 0, 300), point(1, 100, 50, 200), point(2, 100, 90, 104), point(3, 100, 100, 99)];

  it('finds the first half-year within the tolerance of one prefix per AS', () => {
    expect(yearsToWithinOfFloor(series, 0.05)).toBe(1);
    expect(yearsToWithinOfFloor(series, 0.01)).toBe(1.5);
    expect(yearsToWithinOfFloor(series.slice(0, 2), 0.05)).toBeNull();
  });

  it('reports when the series undershoots the bound', () => {
    expect(yearsBelowFloor(series)).toBe(1.5);
    expect(yearsBelowFloor(series.slice(0, 3))).toBeNull();
  });

  it('reads prefixes at a given time and refuses a time it does not have', () => {
    expect(prefixesAtYears(series, 0.5)).toBe(200);
    expect(() => prefixesAtYears(series, 0.25)).toThrow(RangeError);
  });
});
