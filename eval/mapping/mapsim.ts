/**
 * The simulation's entry points: build the scenario (hosts, change trace, lookup stream) from the
 * parameters once, then run every strategy over that same scenario. The scenario is read-only.
 *
 * It is a discrete-event simulation without an event queue: the only events that interact are
 * one site's lookups and one target's changes, so each site's lookups are replayed in time order
 * against the (sorted, per-host) change trace, and a change's pushes are counted when the follow
 * that carried them closes. See ondemand.ts and treepush.ts.
 */
import { changeIndexAfter, generateChanges } from './churn.ts';
import { HOUR_S, type MappingParams } from './hierarchy-params.ts';
import { SiteCacheRun, type StrategyRun } from './ondemand.ts';
import { buildPopulation, ZipfTargets, type Population } from './population.ts';
import { LoadMeter } from './rmload.ts';
import { POPULATION_STREAM, Stream } from './streams.ts';
import type { Strategy } from './strategies.ts';
import { registerChanges, summarize, type Scenario, type StrategyResult } from './tally.ts';
import { TreePushRun } from './treepush.ts';
import { PoissonZipfLookups, siteRates } from './workload.ts';

export function buildScenario(p: MappingParams): Scenario {
  const rng = new Stream(p.seed, POPULATION_STREAM);
  const start = p.warmupHours * HOUR_S;
  const end = start + p.hours * HOUR_S;
  const pop = buildPopulation(p.hosts, p.bottoms, p.middles, p.classMix, rng);
  const trace = generateChanges(pop, p, end, rng);
  const targets = new ZipfTargets(p.hosts, p.zipfS, rng);
  const lookups = new PoissonZipfLookups(p.seed, siteRates(pop.home, p.bottoms, p.lookupsPerHostHour), end, targets);
  return { pop, trace, lookups, start, end };
}

/** The scenario's population alone (its first draws), for closed-form checks that need no trace. */
export function buildPopulationFor(p: MappingParams): Population {
  return buildPopulation(p.hosts, p.bottoms, p.middles, p.classMix, new Stream(p.seed, POPULATION_STREAM));
}

export type Progress = (sitesDone: number, sites: number) => void;

/**
 * Runs every strategy over the scenario in one pass: each site's lookups are drawn once and handed
 * to every strategy's run, so all strategies see the identical trace and the per-lookup work that
 * does not depend on the strategy (drawing the target, finding its changes) is done once.
 */
export function runAll(sc: Scenario, list: readonly Strategy[], p: MappingParams, progress: Progress = () => {}): StrategyResult[] {
  const began = performance.now();
  const runs: StrategyRun[] = list.map((st) => {
    const meter = new LoadMeter(sc.pop.bottoms, sc.pop.middles, sc.start, sc.end);
    const run = st.kind === 'push-all' ? new TreePushRun(sc, p.rmHopS, meter) : new SiteCacheRun(sc, st, p, meter);
    registerChanges(sc, run.tally, meter);
    return run;
  });
  const { home, cls, bottoms } = sc.pop;
  const { trace, start } = sc;
  const n = runs.length;
  let b = 0;
  const visit = (x: number, h: number): void => {
    const hb = home[h];
    const next = hb === b ? 0 : changeIndexAfter(trace, h, x);
    const k = cls[h];
    const counted = x >= start;
    for (let i = 0; i < n; i++) runs[i].lookup(x, h, k, hb, next, counted);
  };
  for (b = 0; b < bottoms; b++) {
    for (const run of runs) run.beginSite(b);
    sc.lookups.forEachLookup(b, visit);
    for (const run of runs) run.endSite();
    progress(b + 1, bottoms);
  }
  const wallS = (performance.now() - began) / 1_000;
  return runs.map((run, i) => summarize(run.tally, list[i].name, list[i].description, sc, run.meter.peak(), wallS));
}
