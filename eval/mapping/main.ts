/**
 * npm run eval:mapping [-- --hosts N --hours H --seed S --warmup H --serial]
 *
 * Discrete-event simulation of the 3-level mapping hierarchy (1 top, 10 middle, 1,000 site RMs,
 * 1M hosts, 24 h by default): every strategy over the same seeded trace; prints the tables and
 * the verdicts against the targets, writes bench-results/mapping-hierarchy.{json,svg,png}.
 * docs/mapping-hierarchy.md explains the model and the results.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { toPng, toSvg, textRenders } from '../routing/render.ts';
import { expectedAllPushStaleRatio, expectedTtlStaleRatio, rateForHitRatio, steadyHitRatio, zipfProbabilities } from './analytic.ts';
import { CLASS_NAMES, DEFAULT_PARAMS, scaledHierarchy, type MappingParams } from './hierarchy-params.ts';
import { DEFAULT_LANES, runLanes } from './lanes.ts';
import { buildPopulationFor, buildScenario, runAll } from './mapsim.ts';
import { tradeoffSpec } from './mapping-figure.ts';
import { buildJson, classTable, fillsTable, judge, messagesTable, missTable, resultsTable, TARGETS, verdictTable, type Checks } from './mapping-report.ts';
import { strategies } from './strategies.ts';
import type { StrategyResult } from './tally.ts';

const OUT_DIR = new URL('../../bench-results/', import.meta.url);
const PNG_ZOOM = 2;

function usage(message: string): never {
  console.error(`usage error: ${message}\nusage: npm run eval:mapping -- [--hosts N] [--hours H] [--seed S] [--warmup H] [--serial]`);
  process.exit(2);
}

function parseParams(argv: readonly string[]): { params: MappingParams; serial: boolean } {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        hosts: { type: 'string' },
        hours: { type: 'string' },
        seed: { type: 'string' },
        warmup: { type: 'string' },
        serial: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (e) {
    usage(e instanceof Error ? e.message : String(e));
  }
  const number = (name: string, raw: string | undefined, fallback: number, integer: boolean, min: number): number => {
    if (raw === undefined) return fallback;
    const v = Number(raw);
    if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) usage(`--${name} ${raw}: must be ${integer ? 'an integer' : 'a number'} >= ${min}`);
    return v;
  };
  const hosts = number('hosts', values.hosts, DEFAULT_PARAMS.hosts, true, 10);
  const params: MappingParams = {
    ...DEFAULT_PARAMS,
    hosts,
    ...scaledHierarchy(hosts),
    hours: number('hours', values.hours, DEFAULT_PARAMS.hours, false, 0.01),
    seed: number('seed', values.seed, DEFAULT_PARAMS.seed, true, 0),
    warmupHours: number('warmup', values.warmup, DEFAULT_PARAMS.warmupHours, false, 0),
  };
  return { params, serial: values.serial === true };
}

/** One progress line on stderr, rewritten in place on a terminal, every 10% otherwise. */
function progressLine(began: number, lanes: number): (lane: number, done: number, sites: number) => void {
  const done = new Array<number>(lanes).fill(0);
  let lastDecile = -1;
  return (lane, sitesDone, sites) => {
    done[lane] = sitesDone;
    const share = done.reduce((a, b) => a + b, 0) / (sites * lanes);
    const line = `simulating: ${done.map((d, i) => `lane ${i + 1} ${d}/${sites} sites`).join(', ')}  ${((performance.now() - began) / 1_000).toFixed(0)} s`;
    if (process.stderr.isTTY) process.stderr.write(`\r${line}`);
    else if (Math.floor(share * 10) > lastDecile) {
      lastDecile = Math.floor(share * 10);
      process.stderr.write(`${line}\n`);
    }
  };
}

function checksFor(p: MappingParams, results: readonly StrategyResult[]): Checks {
  const named = (n: string): StrategyResult => {
    const r = results.find((x) => x.name === n);
    if (r === undefined) throw new RangeError(`no strategy ${n}`);
    return r;
  };
  const pull = named('all-pull');
  const hybrid = named('hybrid');
  const pop = buildPopulationFor(p);
  const q = zipfProbabilities(p.hosts, p.zipfS);
  const hostsPerSite = p.hosts / p.bottoms;
  const ratePerSite = (p.lookupsPerHostHour * hostsPerSite) / 3_600;
  const hybridTtls = [p.staticTtlS, p.nomadicTtlS, p.followLeaseS];
  // A lookup of a host homed at the asking site (1 in `bottoms`) is always a hit; the model covers the rest.
  const local = 1 / p.bottoms;
  const withLocal = (h: number): number => local + (1 - local) * h;
  const needed = rateForHitRatio((TARGETS.hitRatioMin - local) / (1 - local), q, hybridTtls, p.classMix);
  return {
    allPullStale: { simulated: pull.staleRatio, analytic: expectedTtlStaleRatio(CLASS_NAMES.map((c) => pull.byClass[c].heldHours), p.pullTtlS, p) },
    allPushStale: { simulated: named('all-push').staleRatio, analytic: expectedAllPushStaleRatio(pop, p) },
    allPullHit: { simulated: pull.hitRatio, steadyState: withLocal(steadyHitRatio(q, ratePerSite, [p.pullTtlS, p.pullTtlS, p.pullTtlS], p.classMix)) },
    hybridHit: { simulated: hybrid.hitRatio, steadyState: withLocal(steadyHitRatio(q, ratePerSite, hybridTtls, p.classMix)) },
    hitTargetLookupsPerHostHour: needed === null ? null : (needed * 3_600) / hostsPerSite,
  };
}

async function main(): Promise<void> {
  const { params: p, serial } = parseParams(process.argv.slice(2));
  const began = performance.now();
  console.log(
    `Mapping hierarchy: 1 top, ${p.middles} middle, ${p.bottoms} site RMs; ${p.hosts.toLocaleString('en-US')} hosts ` +
      `(${p.classMix.map((m, i) => `${Math.round(m * 100)}% ${CLASS_NAMES[i]}`).join(', ')}); ${p.hours} h measured after ${p.warmupHours} h warm-up; seed ${p.seed}`,
  );
  console.log(`lookups: ${p.lookupsPerHostHour} per host-hour (${Math.round(p.lookupsPerHostHour * p.hosts * p.hours).toLocaleString('en-US')} in the window), Zipf s = ${p.zipfS}`);

  let results: StrategyResult[];
  if (serial) {
    const tick = progressLine(began, 1);
    results = runAll(buildScenario(p), strategies(p), p, (done, sites) => tick(0, done, sites));
  } else {
    results = await runLanes(p, DEFAULT_LANES, progressLine(began, DEFAULT_LANES.length));
  }
  const simulatedS = (performance.now() - began) / 1_000;
  if (process.stderr.isTTY) process.stderr.write('\n');
  console.error(`simulated in ${simulatedS.toFixed(1)} s`);

  const verdicts = judge(results);
  const checks = checksFor(p, results);
  section('Results (hit, stale and messages in the measured window)');
  console.log(resultsTable(results));
  section('Where the misses come from (share of all lookups)');
  console.log(missTable(results));
  section('By the target\'s true class');
  console.log(classTable(results));
  section('Messages per host-hour by exchange');
  console.log(messagesTable(results));
  for (const name of ['learned', 'learned-warm']) {
    const r = results.find((x) => x.name === name);
    if (r === undefined) continue;
    section(`Classes a learning home RM acted on (${name}; rows: true class)`);
    console.log(fillsTable(r));
  }
  section('Checks against closed forms');
  const rel = (a: number, b: number): string => `${(((a - b) / b) * 100).toFixed(1)}%`;
  console.log(`all-pull stale ratio: simulated ${pctS(checks.allPullStale.simulated)}, analytic ${pctS(checks.allPullStale.analytic)} (${rel(checks.allPullStale.simulated, checks.allPullStale.analytic)})`);
  console.log(`all-push stale ratio: simulated ${pctS(checks.allPushStale.simulated)}, analytic ${pctS(checks.allPushStale.analytic)} (${rel(checks.allPushStale.simulated, checks.allPushStale.analytic)})`);
  console.log(`all-pull hit ratio: simulated ${pctS(checks.allPullHit.simulated)}, steady-state model ${pctS(checks.allPullHit.steadyState)}`);
  console.log(`hybrid hit ratio: simulated ${pctS(checks.hybridHit.simulated)}, steady-state model ${pctS(checks.hybridHit.steadyState)} (follow approximated by one lease)`);
  const need = checks.hitTargetLookupsPerHostHour;
  console.log(
    need === null
      ? 'hybrid cannot reach a 95% hit ratio at any lookup rate in the steady-state model'
      : `hybrid would need about ${Math.round(need).toLocaleString('en-US')} lookups per host-hour (now ${p.lookupsPerHostHour}) for a 95% steady-state hit ratio`,
  );
  section('Targets (hybrid and learned; learned-warm for information)');
  console.log(verdictTable(verdicts));

  await mkdir(OUT_DIR, { recursive: true });
  const runtimeS = (performance.now() - began) / 1_000;
  const written = [await writeOut('mapping-hierarchy.json', `${JSON.stringify(buildJson(p, results, verdicts, checks, runtimeS), null, 2)}\n`)];
  const svg = await toSvg(tradeoffSpec(results, `${p.hosts.toLocaleString('en-US')} hosts, ${p.bottoms} sites, ${p.hours} h, seed ${p.seed}`));
  written.push(await writeOut('mapping-hierarchy.svg', svg), await writeOut('mapping-hierarchy.png', toPng(svg, PNG_ZOOM)));
  if (!textRenders()) console.warn('\nwarning: no system font found, the PNG has no text; install fonts-dejavu-core');
  console.log(`\nwrote ${written.join(', ')} (${((performance.now() - began) / 1_000).toFixed(1)} s in all)`);
}

function pctS(x: number): string {
  return x * 100 >= 0.1 ? `${(x * 100).toFixed(3)}%` : `${(x * 100).toPrecision(3)}%`;
}

function section(title: string): void {
  console.log(`\n## ${title}\n`);
}

async function writeOut(name: string, data: string | Buffer): Promise<string> {
  await writeFile(new URL(name, OUT_DIR), data);
  return `bench-results/${name}`;
}

await main();
