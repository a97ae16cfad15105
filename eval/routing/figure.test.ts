import { describe, expect, it } from 'vitest';
import { evaluateScenario } from './evaluate.ts';
import { headlineSpec, readingsSpec } from './figure.ts';
import { DEFAULT_POPULATION } from './params.ts';
import { constantPrefixCount } from './prefix-distribution.ts';
import { toPng, toSvg } from './render.ts';
import { scenarioById } from './scenarios.ts';

const result = evaluateScenario(scenarioById('all-keep1-nogrowth'), {
  population: DEFAULT_POPULATION,
  prefixCounts: constantPrefixCount(3),
  seeds: [1],
  reportHalfYears: 10,
  metricHalfYears: 10,
  floorTolerance: 0.05,
});

describe('figures', () => {
  it('draws the four curves with title, axis titles and legend', async () => {
    const svg = await toSvg(headlineSpec(result, 'test subtitle'));
    for (const text of ['Multihomed stub-AS prefixes', 'years from the start of deployment', 'prefixes of multihomed stub ASes', 'no deployment', '10% per half-year', '20% per half-year', 'lower bound: 1 prefix per AS', '90K']) {
      expect(svg).toContain(text);
    }
    const png = toPng(svg, 1);
    expect(png.subarray(1, 4).toString('ascii')).toBe('PNG');
  });

  it('draws one panel per reading', async () => {
    const svg = await toSvg(readingsSpec([{ title: 'panel A', result }, { title: 'panel B', result }]));
    expect(svg).toContain('panel A');
    expect(svg).toContain('panel B');
  });
});
