/**
 * npm run eval:routing — reproduces the paper's section V.A routing-table estimate under every
 * reading of its schedule, prints the tables, and writes bench-results/routing.{json,svg,png}
 * and bench-results/routing-readings.{svg,png}. Offline and deterministic (seeded).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { evaluateScenario, type EvaluationOptions } from './evaluate.ts';
import { headlineSpec, readingsSpec } from './figure.ts';
import {
  DEFAULT_POPULATION,
  FLOOR_TOLERANCE,
  HALF_YEARS_PER_YEAR,
  METRIC_HALF_YEARS,
  PAPER,
  REPORT_HALF_YEARS,
  REPRODUCE_TOLERANCE,
  SIMULATION,
} from './params.ts';
import { powerLawExponent, powerLawPrefixCount } from './prefix-distribution.ts';
import { toPng, toSvg, textRenders } from './render.ts';
import { buildReport, judge, paperReading, type ScenarioVerdict } from './report.ts';
import { SCENARIOS } from './scenarios.ts';
import { claimsTable, halfYearTable, prefixes, readingsTable } from './table.ts';

const OUT_DIR = new URL('../../bench-results/', import.meta.url);
const PNG_ZOOM = 2;
/** Panels of the comparison figure: the three readings that a reader could defend, two growths. */
const COMPARED = ['all-keep1', 'remaining-keep1', 'remaining-drop'];

async function main(): Promise<void> {
  const seeds = Array.from({ length: SIMULATION.seeds }, (_, i) => SIMULATION.firstSeed + i);
  const options: EvaluationOptions = {
    population: DEFAULT_POPULATION,
    prefixCounts: powerLawPrefixCount(DEFAULT_POPULATION.meanPrefixesPerAs, SIMULATION.maxPrefixesPerAs),
    seeds,
    reportHalfYears: REPORT_HALF_YEARS,
    metricHalfYears: METRIC_HALF_YEARS,
    floorTolerance: FLOOR_TOLERANCE,
  };
  const verdicts = judge(SCENARIOS.map((s) => evaluateScenario(s, options)));
  const paper = paperReading(verdicts);
  const byId = (id: string): ScenarioVerdict => {
    const found = verdicts.find((v) => v.result.scenario.id === id);
    if (found === undefined) throw new RangeError(`no scenario ${id}`);
    return found;
  };

  printSection('Which reading of the schedule reproduces the paper (prefixes; years to within 5% of 1 prefix/AS)');
  console.log(readingsTable(verdicts));
  const zeroFloor = byId('remaining-drop-nogrowth').result.slow.prefixesAt5y;
  console.log(
    `\nquick check: 90K x 0.9^10 = ${prefixes(PAPER.initialPrefixes * 0.9 ** 10)}; ` +
      `remaining-drop-nogrowth at 5 years = ${prefixes(zeroFloor)} (the reading in which a deployed AS announces nothing)`,
  );

  if (paper === null) {
    console.log('\nNo single reading reproduces every statement of the paper; see the table above.');
  } else {
    printSection(`The paper's reading: ${paper.result.scenario.label} [${paper.result.scenario.id}]`);
    console.log(halfYearTable(paper.result));
    console.log();
    console.log(claimsTable(paper.claims));
    const withGrowth = byId(paper.result.scenario.id.replace('nogrowth', 'linear'));
    printSection(`The same reading with the paper's growth: ${withGrowth.result.scenario.label}`);
    console.log(halfYearTable(withGrowth.result));
  }

  await mkdir(OUT_DIR, { recursive: true });
  const report = buildReport(
    {
      population: DEFAULT_POPULATION,
      prefixCountExponent: powerLawExponent(DEFAULT_POPULATION.meanPrefixesPerAs, SIMULATION.maxPrefixesPerAs),
      maxPrefixesPerAs: SIMULATION.maxPrefixesPerAs,
      seeds,
      floorTolerance: FLOOR_TOLERANCE,
      reproduceTolerance: REPRODUCE_TOLERANCE,
      metricHorizonYears: METRIC_HALF_YEARS / HALF_YEARS_PER_YEAR,
    },
    verdicts,
  );
  const written = [await writeOut('routing.json', `${JSON.stringify(report, null, 2)}\n`)];

  const headline = paper ?? byId('all-keep1-nogrowth');
  const headlineSvg = await toSvg(headlineSpec(headline.result, `${headline.result.scenario.label} (the paper's reading)`));
  const panels = COMPARED.flatMap((reading) =>
    ['nogrowth', 'linear'].map((growth) => {
      const v = byId(`${reading}-${growth}`);
      return { title: v.result.scenario.shortLabel, result: v.result };
    }),
  );
  const readingsSvg = await toSvg(readingsSpec(panels));
  written.push(
    await writeOut('routing.svg', headlineSvg),
    await writeOut('routing.png', toPng(headlineSvg, PNG_ZOOM)),
    await writeOut('routing-readings.svg', readingsSvg),
    await writeOut('routing-readings.png', toPng(readingsSvg, PNG_ZOOM)),
  );
  if (!textRenders()) {
    console.warn('\nwarning: no system font found, the PNGs have no text; install fonts-dejavu-core');
  }
  console.log(`\nwrote ${written.join(', ')}`);
}

function printSection(title: string): void {
  console.log(`\n## ${title}\n`);
}

async function writeOut(name: string, data: string | Buffer): Promise<string> {
  const url = new URL(name, OUT_DIR);
  await writeFile(url, data);
  return `bench-results/${name}`;
}

await main();
