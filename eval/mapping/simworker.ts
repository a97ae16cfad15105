/**
 * A worker thread that runs some of the strategies (lanes.ts): it builds the same scenario from
 * the same parameters (deterministic, about a second at 1M hosts) and reports progress and results
 * to the main thread. Nothing but plain data crosses the thread boundary.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { MappingParams } from './hierarchy-params.ts';
import { buildScenario, runAll } from './mapsim.ts';
import { strategies } from './strategies.ts';
import type { StrategyResult } from './tally.ts';

export interface LaneInput {
  readonly params: MappingParams;
  readonly names: readonly string[];
}

export type LaneMessage = { kind: 'progress'; sitesDone: number; sites: number } | { kind: 'done'; results: StrategyResult[] };

function isLaneInput(x: unknown): x is LaneInput {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as { params?: unknown; names?: unknown };
  return typeof o.params === 'object' && o.params !== null && Array.isArray(o.names) && o.names.every((n) => typeof n === 'string');
}

if (parentPort !== null && isLaneInput(workerData)) {
  const port = parentPort;
  const { params, names } = workerData;
  const list = strategies(params).filter((s) => names.includes(s.name));
  const scenario = buildScenario(params);
  const results = runAll(scenario, list, params, (sitesDone, sites) => {
    // Every 1% of the sites is often enough for a progress line and cheap to post.
    if (sitesDone === sites || sitesDone % Math.max(1, Math.floor(sites / 100)) === 0) port.postMessage({ kind: 'progress', sitesDone, sites } satisfies LaneMessage);
  });
  port.postMessage({ kind: 'done', results } satisfies LaneMessage);
}
