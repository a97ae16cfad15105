/**
 * Runs the strategies on two worker threads (the full run must fit in a few minutes on 2 cores).
 * Each lane rebuilds the identical scenario and runs its share of the strategies over it; the
 * results do not depend on the split, which only balances the work: the learned strategies cost
 * most per lookup (they classify on every fetch), all-push least.
 */
import { Worker } from 'node:worker_threads';
import type { MappingParams } from './hierarchy-params.ts';
import type { LaneMessage } from './simworker.ts';
import type { StrategyResult } from './tally.ts';

export const DEFAULT_LANES: readonly (readonly string[])[] = [
  ['all-push', 'push-followers', 'all-pull', 'all-cache'],
  ['hybrid', 'learned', 'learned-warm'],
];

/** lane index, sites done, sites in all */
export type LaneProgress = (lane: number, sitesDone: number, sites: number) => void;

export async function runLanes(params: MappingParams, lanes: readonly (readonly string[])[], progress: LaneProgress): Promise<StrategyResult[]> {
  const all = await Promise.all(lanes.map((names, lane) => runLane(params, names, (done, sites) => progress(lane, done, sites))));
  const byName = new Map(all.flat().map((r) => [r.name, r]));
  return lanes.flat().map((n) => {
    const r = byName.get(n);
    if (r === undefined) throw new RangeError(`no strategy named ${n}`);
    return r;
  });
}

function runLane(params: MappingParams, names: readonly string[], progress: (done: number, sites: number) => void): Promise<StrategyResult[]> {
  // The worker runs TypeScript: register tsx's loader inside it before importing the entry (tsx's
  // own loader does not reach worker threads on Node 20).
  const api = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./simworker.ts', import.meta.url).href;
  const shim = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
  const worker = new Worker(shim, { eval: true, workerData: { params, names } });
  return new Promise((resolve, reject) => {
    let results: StrategyResult[] | null = null;
    worker.on('message', (m: LaneMessage) => {
      if (m.kind === 'progress') progress(m.sitesDone, m.sites);
      else results = m.results;
    });
    worker.on('error', reject);
    worker.on('exit', (code) => {
      if (results !== null) resolve(results);
      else reject(new Error(`simulation worker for ${names.join(', ')} exited with code ${code} before reporting`));
    });
  });
}
